"""Paste-back: align -> (unmodified) crop -> paste reproduces the photo; untouched pixels stay bit-identical."""

from __future__ import annotations

import numpy as np
import pytest

from honestface.data import samples
from honestface.face.alignment import align_face
from honestface.face.paste import crop_mask, paste_back


@pytest.fixture(scope="module")
def detector():
    from honestface.face.detection import build_detector

    return build_detector("mtcnn", threshold=0.95)


@pytest.fixture(scope="module")
def astronaut(detector):
    img = samples.astronaut()
    dets = detector.detect(img)
    assert len(dets) == 1
    return img, dets[0].points5


def _psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2)[where].mean()
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


@pytest.mark.parametrize("kind", ["ellipse", "square"])
def test_unmodified_crop_reproduces_astronaut(astronaut, kind):
    img, pts = astronaut
    crop, M = align_face(img, pts, "ffhq", 512)
    out, mask = paste_back(img, crop, M, mask_kind=kind, return_mask=True)
    assert out.dtype == np.uint8 and out.shape == img.shape and out is not img
    face = mask > 0.5
    assert face.sum() > 5000  # the face region is really pasted (about 13k px for the ellipse)
    assert _psnr(out, img, face) > 40  # measured 43.8 dB (ellipse), 43.3 dB (square)
    assert np.array_equal(out[mask == 0], img[mask == 0])  # bit-identical outside the mask
    # pixels far from the face are never touched, and the pasted area is what return_mask says
    assert np.array_equal(out[300:], img[300:])


def test_all_faces_of_the_group_photo_pasted_in_sequence(detector):
    img = samples.group_t1()
    dets = detector.detect(img)
    assert len(dets) == 6
    crops, mats = zip(*[align_face(img, d.points5, "ffhq", 512) for d in dets])
    out, mask = paste_back(img, list(crops), np.stack(mats), return_mask=True)
    assert _psnr(out, img, mask > 0.5) > 40  # measured 49.5 dB
    assert np.array_equal(out[mask == 0], img[mask == 0])
    for d in dets:  # every face got pasted
        cx, cy = d.center.astype(int)
        assert mask[cy, cx] > 0.99


def test_restored_content_lands_in_the_face_only(astronaut):
    img, pts = astronaut
    crop, M = align_face(img, pts, "ffhq", 512)
    white = np.full_like(crop, 255)
    out, mask = paste_back(img, white, M, return_mask=True)
    # the face centre becomes the restored value, the mask edge is a soft blend, the rest is untouched
    cx, cy = np.mean(pts, axis=0).astype(int)
    assert (out[cy, cx] == 255).all() and mask[cy, cx] == pytest.approx(1.0)
    soft = (mask > 0.05) & (mask < 0.95)
    assert soft.sum() > 500
    changed = np.any(out != img, axis=-1)
    assert not changed[mask == 0].any()
    # float crops into a uint8 photo, and a float photo keeps its dtype
    out_f = paste_back(img, white.astype(np.float32) / 255, M)
    np.testing.assert_array_equal(out_f, out)
    img_f = img.astype(np.float32) / 255
    out_ff = paste_back(img_f, crop, M)
    assert out_ff.dtype == np.float32
    assert np.array_equal(out_ff[mask == 0], img_f[mask == 0])


def test_face_partly_outside_the_frame(astronaut):
    img, pts = astronaut
    cut = np.ascontiguousarray(img[:, 215:])  # cuts the face in half
    pts_cut = pts - [215, 0]
    crop, M = align_face(cut, pts_cut, "ffhq", 512, border="reflect")
    out, mask = paste_back(cut, crop, M, return_mask=True)
    assert out.shape == cut.shape
    assert mask[:, 0].max() > 0.99  # the face reaches the left edge
    assert _psnr(out, cut, mask > 0.5) > 40
    assert np.array_equal(out[mask == 0], cut[mask == 0])
    # a face entirely outside changes nothing
    far = M.copy()
    far[:, 2] += 5000
    assert np.array_equal(paste_back(cut, crop, far), cut)


def test_crop_masks():
    for kind in ("ellipse", "square"):
        m = crop_mask(512, kind)
        assert m.dtype == np.float32 and m.shape == (512, 512)
        assert m.max() == pytest.approx(1.0) and m.min() == 0.0
        # exactly zero on the crop's border band: no seam after the inverse warp
        assert not m[:2].any() and not m[-2:].any() and not m[:, :2].any() and not m[:, -2:].any()
        assert ((m > 0) & (m < 1)).sum() > 1000  # feathered
    hard = crop_mask(512, "ellipse", feather=0.0)
    assert set(np.unique(hard)) == {0.0, 1.0}
    # the ellipse is centred on the face of the template: eyes and mouth inside, corners outside
    ell = crop_mask(512, "ellipse")
    assert ell[240, 193] == pytest.approx(1.0) and ell[371, 256] == pytest.approx(1.0)
    assert ell[20, 20] == 0 and ell[500, 500] == 0
    # the ellipse adapts to the ArcFace template
    arc = crop_mask(112, "ellipse", template="arcface")
    assert arc[52, 38] == pytest.approx(1.0, abs=0.01) and arc[92, 56] == pytest.approx(1.0, abs=0.01)
    # user mask, parsing labels, polygon from landmarks
    user = np.zeros((64, 64), np.float32)
    user[10:50, 10:50] = 1
    assert crop_mask(64, mask=user, feather=0)[30, 30] == 1 and crop_mask(64, mask=user, feather=0)[5, 5] == 0
    labels = np.zeros((64, 64), np.int64)
    labels[16:48, 16:48] = 1  # skin (BiSeNet table)
    labels[16:20, 16:48] = 18  # hat: not pasted
    pm = crop_mask(64, "parsing", labels=labels, feather=0)
    assert pm[30, 30] == 1 and pm[17, 30] == 0
    with pytest.raises(ValueError, match="polygon"):
        crop_mask(512, "polygon")
    with pytest.raises(ValueError, match="labels"):
        crop_mask(512, "parsing")
    with pytest.raises(ValueError, match="kind"):
        crop_mask(512, "blob")
    with pytest.raises(ValueError, match="too large"):
        crop_mask(32, "square", feather=0.3)


def test_polygon_mask_from_landmarks(astronaut):
    from honestface.face.landmarks import build_landmarker

    img, pts = astronaut
    crop, M = align_face(img, pts, "ffhq", 512)
    lm = build_landmarker("dlib68").predict(crop, np.array([[150.0, 150, 370, 420]]))[0]
    out, mask = paste_back(img, crop, M, mask_kind="polygon", landmarks=lm, return_mask=True)
    assert (mask > 0.5).sum() > 3000
    assert _psnr(out, img, mask > 0.5) > 40
    assert np.array_equal(out[mask == 0], img[mask == 0])


def test_paste_back_errors(astronaut):
    img, pts = astronaut
    crop, M = align_face(img, pts, "ffhq", 128)
    with pytest.raises(ValueError, match="M must be"):
        paste_back(img, [crop, crop], M[None])
    with pytest.raises(ValueError, match="channel"):
        paste_back(img, crop[..., :1], M)
    with pytest.raises(ValueError, match="mask"):
        paste_back(img, [crop], M[None], mask=[None, None])
