"""Face alignment: templates, similarity estimation, OpenCV crops on real photos, and the differentiable warp."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from honestface.data import samples
from honestface.face.alignment import (
    ARCFACE_112,
    FFHQ_512,
    align_face,
    align_faces_torch,
    estimate_similarity,
    estimate_similarity_torch,
    inverse_affine,
    template,
    warp_affine,
    warp_affine_torch,
    warp_back,
)


@pytest.fixture(scope="module")
def detector(mtcnn_detector):
    return mtcnn_detector


@pytest.fixture(scope="module")
def faces(detector):
    """{name: (image uint8, points5 (5, 2))} for the two single-face sample photos."""
    out = {}
    for name in ("astronaut", "grace_hopper"):
        img = samples.load_sample(name)
        dets = detector.detect(img)
        assert len(dets) == 1 and dets[0].score > 0.99, name
        out[name] = (img, dets[0].points5)
    return out


def _random_similarity(rng: np.random.Generator) -> np.ndarray:
    s, th = rng.uniform(0.3, 3.0), rng.uniform(-np.pi, np.pi)
    return np.array([[s * np.cos(th), -s * np.sin(th), rng.uniform(-50, 50)],
                     [s * np.sin(th), s * np.cos(th), rng.uniform(-50, 50)]])


def _apply(M: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ M[:, :2].T + M[:, 2]


# ------------------------------------------------------------------------------------------------ templates


def test_templates_are_the_published_numbers_and_scale(monkeypatch):
    assert template("arcface").shape == (5, 2)
    np.testing.assert_allclose(template("arcface", 112), ARCFACE_112)
    np.testing.assert_allclose(template("ffhq"), FFHQ_512)
    np.testing.assert_allclose(template("ffhq", 1024), 2 * FFHQ_512)
    np.testing.assert_allclose(template("ffhq", 256), FFHQ_512 / 2)
    np.testing.assert_allclose(template("arcface", 224)[0], [76.5892, 103.3926])
    # the upstream constants themselves, read from the installed packages
    from insightface.utils.face_align import arcface_dst

    np.testing.assert_allclose(template("arcface"), arcface_dst)
    from facexlib.utils import face_restoration_helper as frh

    monkeypatch.setattr(frh, "init_detection_model", lambda *a, **k: None)  # no weight downloads
    monkeypatch.setattr(frh, "init_parsing_model", lambda *a, **k: None)
    for size in (512, 1024):
        helper = frh.FaceRestoreHelper(1, face_size=size, device="cpu")
        np.testing.assert_allclose(template("ffhq", size), helper.face_template, atol=1e-9)
    # left eye is image-left, eyes above the nose above the mouth
    for name in ("arcface", "ffhq"):
        t = template(name)
        assert t[0, 0] < t[1, 0] and t[3, 0] < t[4, 0]
        assert t[:2, 1].max() < t[2, 1] < t[3:, 1].min()
    custom = np.arange(10.0).reshape(5, 2)
    np.testing.assert_array_equal(template(custom), custom)
    with pytest.raises(KeyError, match="nope"):
        template("nope")
    with pytest.raises(ValueError):
        template("ffhq", 0)


# ------------------------------------------------------------------------------------- similarity estimation


def test_similarity_recovers_exact_transform_and_batches():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 300, size=(8, 5, 2))
    Ms = np.stack([_random_similarity(rng) for _ in range(8)])
    dst = np.stack([_apply(M, s) for M, s in zip(Ms, src)])
    est = estimate_similarity(src, dst)  # batched (8, 2, 3)
    np.testing.assert_allclose(est, Ms, atol=1e-9)
    np.testing.assert_allclose(estimate_similarity(src[3], dst[3]), Ms[3], atol=1e-9)
    # the same template broadcasts against a batch of points
    np.testing.assert_allclose(estimate_similarity(src, template("arcface"))[2],
                               estimate_similarity(src[2], template("arcface")), atol=1e-12)


def test_similarity_matches_opencv_least_squares():
    rng = np.random.default_rng(1)
    for _ in range(10):
        src = rng.uniform(50, 400, size=(5, 2))
        dst = _apply(_random_similarity(rng), src) + rng.normal(0, 2.0, size=(5, 2))
        ours = estimate_similarity(src, dst)
        # a huge RANSAC threshold keeps every point an inlier, then OpenCV refines by least squares
        cv, inliers = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=1e4)
        assert inliers.all()
        np.testing.assert_allclose(ours, cv, atol=1e-4, rtol=1e-5)
        # and ours is the least-squares optimum: OpenCV's refined answer is never better
        sq_err = [((_apply(M, src) - dst) ** 2).sum() for M in (ours, cv)]
        assert sq_err[0] <= sq_err[1] + 1e-9


def test_similarity_never_reflects_and_rejects_bad_input():
    src = np.array([[0.0, 0], [1, 0], [0, 1], [1, 1], [0.5, 0.2]])
    mirrored = src * [-1, 1]
    M = estimate_similarity(src, mirrored)
    assert np.linalg.det(M[:, :2]) > 0  # a rotation+scale, not a mirror
    with pytest.raises(ValueError, match="one location"):
        estimate_similarity(np.ones((5, 2)), src)
    with pytest.raises(ValueError, match="dst_pts"):
        estimate_similarity(src, src[:4])


def test_similarity_torch_matches_numpy_and_is_differentiable():
    rng = np.random.default_rng(2)
    src = rng.uniform(0, 300, size=(4, 5, 2))
    dst = src @ np.array([[0.9, 0.2], [-0.2, 0.9]]).T + rng.normal(0, 3, size=(4, 5, 2))
    src_t = torch.tensor(src, requires_grad=True)
    M_t = estimate_similarity_torch(src_t, torch.tensor(dst))
    np.testing.assert_allclose(M_t.detach().numpy(), estimate_similarity(src, dst), atol=1e-9)
    M_t.sum().backward()
    assert src_t.grad is not None and src_t.grad.abs().sum() > 0


def test_inverse_affine():
    rng = np.random.default_rng(3)
    M = np.stack([_random_similarity(rng) for _ in range(3)])
    inv = inverse_affine(M)
    pts = rng.uniform(0, 100, size=(6, 2))
    for m, i in zip(M, inv):
        np.testing.assert_allclose(_apply(i, _apply(m, pts)), pts, atol=1e-9)
        np.testing.assert_allclose(i, cv2.invertAffineTransform(m), atol=1e-12)


# ------------------------------------------------------------------------------------- crops of real photos


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_ffhq_crop_puts_the_eyes_on_the_template(faces, detector, name):
    img, pts = faces[name]
    crop, M = align_face(img, pts, template="ffhq", size=512)
    assert crop.shape == (512, 512, 3) and crop.dtype == np.uint8
    redet = detector.detect(crop)
    assert len(redet) >= 1
    eyes = redet[0].points5[:2]
    # measured: astronaut 4.4 / 1.4 px, grace_hopper 3.4 / 1.7 px (the least-squares fit of 5 points cannot
    # put every point on the template; the eye-to-eye distance of the template is 126 px)
    err = np.linalg.norm(eyes - template("ffhq", 512)[:2], axis=1)
    assert err.max() < 6.0, err
    # the re-detected eyes are where the warp sent the originally detected eyes
    np.testing.assert_allclose(eyes, _apply(M, pts[:2]), atol=4.0)
    # the crop is the OpenCV warp of the photo, and the 1024 crop is the same face at twice the scale
    crop1k, M1k = align_face(img, pts, template="ffhq", size=1024)
    assert crop1k.shape == (1024, 1024, 3)
    np.testing.assert_allclose(M1k, 2 * M, atol=1e-9)


def test_arcface_crop_of_an_aligned_face_is_near_identity(detector):
    img = samples.tom_hanks_aligned()  # already an ArcFace-112 crop
    dets = detector.detect(img)
    assert dets, "MTCNN should find the face of the aligned ArcFace sample"
    _, M = align_face(img, dets[0].points5, template="arcface", size=112)
    scale = np.sqrt(abs(np.linalg.det(M[:, :2])))
    assert abs(scale - 1) < 0.1 and abs(np.arctan2(M[1, 0], M[0, 0])) < 0.1
    centre = np.array([56.0, 56.0])
    assert np.linalg.norm(_apply(M, centre) - centre) < 3.0  # measured 2.1 px (MTCNN points != insightface's)


def test_align_face_borders_and_errors(faces):
    img, pts = faces["astronaut"]
    shifted = pts - [170, 0]  # move the face to the left edge: part of the crop is outside the photo
    refl, _ = align_face(img, shifted, size=256, border="reflect")
    const, _ = align_face(img, shifted, size=256, border="constant", border_value=(0, 0, 0))
    assert (const[:, :10] == 0).all() and (refl[:, :10] > 0).any()
    crop_f, _ = align_face(img.astype(np.float32) / 255, pts, size=128)
    assert crop_f.dtype == np.float32 and 0 <= crop_f.min() and crop_f.max() <= 1
    with pytest.raises(ValueError, match="border"):
        align_face(img, pts, border="wrap")
    with pytest.raises(ValueError, match="points5"):
        align_face(img, pts[:3])
    # warp_back undoes align_face inside the crop footprint
    crop, M = align_face(img, pts, size=512)
    back = warp_back(crop, M, img.shape)
    assert back.shape == img.shape
    y0, y1, x0, x1 = 80, 160, 190, 260  # inside the face
    diff = np.abs(back[y0:y1, x0:x1].astype(float) - img[y0:y1, x0:x1])
    assert diff.mean() < 2.0


# ----------------------------------------------------------------------------------------- torch alignment


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)[None].contiguous()


@pytest.mark.parametrize("border", ["constant", "replicate", "reflect", "reflect101"])
def test_torch_arcface_alignment_matches_opencv(faces, border):
    for name in ("astronaut", "grace_hopper"):
        img, pts = faces[name]
        x = _to_tensor(img)
        out = align_faces_torch(x, torch.tensor(pts, dtype=torch.float32)[None], template="arcface", size=112,
                                border=border)
        assert out.shape == (1, 3, 112, 112)
        ref, _ = align_face(img.astype(np.float32) / 255, pts.astype(np.float32), "arcface", 112, border=border)
        err = np.abs(out[0].permute(1, 2, 0).numpy() - ref).max()
        assert err < 1e-3, (name, border, err)
        # a face half outside the crop exercises the border handling
        M = estimate_similarity(pts, template("arcface", 112))
        M[:, 2] += [50, -40]
        ref = warp_affine(img.astype(np.float32) / 255, M, (112, 112), border=border)
        out = warp_affine_torch(x, torch.tensor(M)[None], (112, 112), border=border)
        assert np.abs(out[0].permute(1, 2, 0).numpy() - ref).max() < 1e-3


def test_torch_alignment_batch_gradients_and_ffhq(faces):
    a, pa = faces["astronaut"]
    g, pg = faces["grace_hopper"]
    g = g[:512]  # same size as the astronaut, so they batch
    x = torch.cat([_to_tensor(a), _to_tensor(g)]).requires_grad_(True)
    pts = torch.tensor(np.stack([pa, pg]), dtype=torch.float32, requires_grad=True)
    out = align_faces_torch(x, pts, template="arcface", size=112)
    assert out.shape == (2, 3, 112, 112)
    (out * torch.linspace(0, 1, 112)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert x.grad[0].abs().sum() > 0 and x.grad[1].abs().sum() > 0
    assert pts.grad is not None and pts.grad.abs().sum() > 0
    # precomputed matrices give the same crops; FFHQ 512 crops also match OpenCV
    M = estimate_similarity(np.stack([pa, pg]), template("arcface"))
    out_m = align_faces_torch(x.detach(), matrices=torch.tensor(M))
    np.testing.assert_allclose(out_m.numpy(), out.detach().numpy(), atol=1e-5)
    np.testing.assert_array_equal(align_faces_torch(x.detach(), torch.tensor(M)).numpy(), out_m.numpy())
    big = align_faces_torch(x.detach()[:1], torch.tensor(pa)[None], template="ffhq", size=512, border="reflect")
    ref, _ = align_face(a.astype(np.float32) / 255, pa, "ffhq", 512, border="reflect")
    assert np.abs(big[0].permute(1, 2, 0).numpy() - ref).max() < 1e-3
    with pytest.raises(ValueError, match="exactly one"):
        align_faces_torch(x, pts, matrices=torch.tensor(M))
    with pytest.raises(ValueError, match="border"):
        align_faces_torch(x, pts, border="wrap")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_torch_warp_in_half_precision_matches_float32(dtype):
    """A bf16 / fp16 model (HonestFace's identity backbone in a bf16 pipeline) crops like float32, up to rounding;
    CPU grid_sample in bf16 once gave values of 1e34 here."""
    from honestface.face.alignment import align_faces_torch, template

    torch.manual_seed(0)
    images = torch.rand(2, 3, 512, 512) * 2 - 1
    m = torch.as_tensor(template("ffhq", 512), dtype=torch.float64)[None].expand(2, 5, 2)
    ref = align_faces_torch(images, m, template="arcface", size=112, border_value=-1.0)
    half = align_faces_torch(images.to(dtype), m, template="arcface", size=112, border_value=-1.0)
    assert half.dtype == dtype
    assert (half.float() - ref).abs().max() < 0.02
