"""Face detection backends on real bundled photos (dlib HOG, MTCNN) and wrapper paths with random weights
(RetinaFace, SCRFD), plus the shared selection / input-handling behaviour."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from honestface.data import samples
from honestface.face.detection import as_rgb_uint8, box_iou, build_detector, select_faces
from honestface.face.types import FaceDetection, FaceDetector

# Reference face boxes, measured by eye and with both bundled detectors (dlib HOG and MTCNN agree to IoU > 0.8).
ASTRONAUT_FACE = np.array([178.0, 70.0, 268.0, 170.0])
HOPPER_FACE = np.array([175.0, 130.0, 365.0, 335.0])


@pytest.fixture(scope="module")
def dlib_det(dlib_detector):
    return dlib_detector


@pytest.fixture(scope="module")
def mtcnn_det(mtcnn_detector):
    return mtcnn_detector


@pytest.fixture(scope="module", params=["dlib", "mtcnn"])
def det(request, dlib_det, mtcnn_det):
    return {"dlib": dlib_det, "mtcnn": mtcnn_det}[request.param]


@pytest.fixture(scope="module")
def astronaut():
    return samples.astronaut()


@pytest.fixture(scope="module")
def group():
    return samples.group_t1()


@pytest.fixture(scope="module")
def group_dets(dlib_det, mtcnn_det, group):
    return {"dlib": dlib_det.detect(group), "mtcnn": mtcnn_det.detect(group)}


def _boxes(dets):
    return np.array([d.box for d in dets]).reshape(-1, 4)


def test_detectors_satisfy_protocol(det):
    assert isinstance(det, FaceDetector)
    assert det.name in ("dlib", "mtcnn")


@pytest.mark.parametrize("name,ref", [("astronaut", ASTRONAUT_FACE), ("grace_hopper", HOPPER_FACE)])
def test_finds_the_portrait_face(det, name, ref):
    img = samples.load_sample(name)
    dets = det.detect(img)
    assert dets, f"{det.name} found no face on {name}"
    face = select_faces(dets, "largest")[0]
    assert box_iou(face.box, ref) > 0.6, face.box
    assert all(isinstance(d, FaceDetection) and d.box.shape == (4,) and d.box.dtype == np.float64 for d in dets)
    scores = [d.score for d in dets]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("rule", ["largest", "score", "center"])
def test_astronaut_selection_picks_the_face_not_the_patch(dlib_det, mtcnn_det, astronaut, rule):
    # dlib HOG (upsample 1) also fires on the mission patch; every single-face rule must still pick the face.
    dlib_dets = dlib_det.detect(astronaut)
    assert len(dlib_dets) == 2 and box_iou(dlib_dets[1].box, ASTRONAUT_FACE) == 0.0
    for dets in (dlib_dets, mtcnn_det.detect(astronaut)):
        chosen = select_faces(dets, rule, astronaut.shape)
        assert len(chosen) == 1 and box_iou(chosen[0].box, ASTRONAUT_FACE) > 0.6


def test_group_photo_counts(group_dets, group):
    hog = group_dets["dlib"]
    assert len(hog) == 6
    mt = group_dets["mtcnn"]
    # MTCNN at facenet's default thresholds finds the 6 faces plus 2 weak table-top false positives (p ~ 0.87).
    assert len(mt) >= 6
    strict = build_detector("mtcnn", threshold=0.9).detect(group)
    assert len(strict) == 6
    for h in hog:  # the same six people
        assert max(box_iou(h.box, m.box) for m in strict) > 0.5


def _check_points5(dets):
    for d in dets:
        p = d.points5
        assert p is not None and p.shape == (5, 2) and p.dtype == np.float64
        le, re, nose, lm, rm = p
        assert le[0] < re[0] and lm[0] < rm[0], p  # image-left first
        assert (le[1] + re[1]) / 2 < nose[1] < (lm[1] + rm[1]) / 2, p  # eyes above nose above mouth
        x0, y0, x1, y1 = d.box
        assert np.all((p[:, 0] >= x0) & (p[:, 0] <= x1) & (p[:, 1] >= y0) & (p[:, 1] <= y1)), (p, d.box)


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper", "group_t1"])
def test_points5_order_and_inside_box(det, name, group_dets):
    if name == "group_t1":
        dets = group_dets[det.name][:6]  # the six real faces (highest scores)
    else:
        dets = select_faces(det.detect(samples.load_sample(name)), "largest")
    _check_points5(dets)


def test_dlib_points5_agree_with_mtcnn(dlib_det, mtcnn_det, astronaut):
    a = select_faces(dlib_det.detect(astronaut), "largest")[0]
    b = mtcnn_det.detect(astronaut)[0]
    iod = np.linalg.norm(b.points5[1] - b.points5[0])
    assert np.max(np.linalg.norm(a.points5 - b.points5, axis=1)) < 0.15 * iod
    assert a.extra["landmark_scheme"] == "dlib68" and a.extra["landmarks"].shape == (68, 2)


def test_no_face_gives_empty_list(det):
    from skimage import data

    assert det.detect(np.full((240, 320, 3), 128, np.uint8)) == []
    assert det.detect(data.coffee()) == []
    assert det.detect_batch([np.zeros((64, 64, 3), np.uint8)]) == [[]]


def test_tiny_face(dlib_det, mtcnn_det, astronaut):
    from PIL import Image

    tiny = np.asarray(Image.fromarray(astronaut).resize((64, 64), Image.BILINEAR))  # face is ~11x12 px
    # dlib HOG cannot see faces below ~40 px at upsample=1: nothing found, no error.
    assert dlib_det.detect(tiny) == []
    # MTCNN still finds it (box regression goes below min_face_size), at the right place.
    found = mtcnn_det.detect(tiny)
    assert len(found) == 1 and found[0].score > 0.9  # measured: one face, score 0.97
    cx, cy = found[0].center
    ref = ASTRONAUT_FACE / 8
    assert ref[0] <= cx <= ref[2] and ref[1] <= cy <= ref[3]
    assert build_detector("mtcnn", min_size=16).detect(tiny) == []


def test_min_size_filter(group_dets, group):
    all_faces = group_dets["dlib"]
    kept = build_detector("dlib", points5=False, min_size=100).detect(group)
    expected = [d for d in all_faces if min(d.width, d.height) >= 100]
    assert 0 < len(kept) < len(all_faces)  # the 90 px face at the back is dropped
    assert np.array_equal(_boxes(kept), _boxes(expected))
    assert all(d.points5 is None for d in kept)


def test_grayscale_and_rgba_inputs(det, astronaut):
    from skimage.color import rgb2gray

    gray = rgb2gray(astronaut)  # (H, W) float in [0, 1]
    face = select_faces(det.detect(gray), "largest")
    assert face and box_iou(face[0].box, ASTRONAUT_FACE) > 0.5
    gray_u8 = (gray * 255).round().astype(np.uint8)[..., None]  # (H, W, 1)
    assert np.array_equal(_boxes(det.detect(gray_u8)), _boxes(det.detect(gray)))
    rgba = np.concatenate([astronaut, np.full(astronaut.shape[:2] + (1,), 255, np.uint8)], axis=2)
    assert np.array_equal(_boxes(det.detect(rgba)), _boxes(det.detect(astronaut)))


def test_uint8_and_float_inputs_match(det, astronaut):
    ref = det.detect(astronaut)
    for dtype in (np.float32, np.float64):
        out = det.detect(astronaut.astype(dtype) / 255.0)
        assert np.array_equal(_boxes(out), _boxes(ref))
        assert [d.score for d in out] == [d.score for d in ref]


def test_deterministic(det, group, group_dets):
    a, b = group_dets[det.name], det.detect(group)
    assert np.array_equal(_boxes(a), _boxes(b))
    assert all(np.array_equal(x.points5, y.points5) for x, y in zip(a, b))


def test_detect_batch_matches_single(det, astronaut):
    hopper = samples.grace_hopper()
    flipped = np.ascontiguousarray(astronaut[:, ::-1])
    images = [astronaut, hopper, flipped, np.full_like(astronaut, 128)]  # MTCNN batches the three 512 px images
    batch = det.detect_batch(images)
    assert len(batch) == 4 and batch[3] == []
    for im, dets in zip(images, batch):
        single = det.detect(im)
        assert len(dets) == len(single)
        assert np.allclose(_boxes(dets), _boxes(single), atol=0.5)
    # the mirrored astronaut's face mirrors the box
    face = select_faces(batch[2], "largest")[0]
    mirrored = np.array([512 - ASTRONAUT_FACE[2], ASTRONAUT_FACE[1], 512 - ASTRONAUT_FACE[0], ASTRONAUT_FACE[3]])
    assert box_iou(face.box, mirrored) > 0.6


def _fd(box, score):
    return FaceDetection(box=np.array(box, dtype=np.float64), score=score)


def test_select_faces_rules():
    big_weak = _fd([0, 0, 100, 100], 0.5)
    small_strong = _fd([190, 190, 210, 210], 0.9)
    dets = [small_strong, big_weak]
    assert select_faces(dets, "all") == dets
    assert select_faces(dets, "score") == [small_strong]
    assert select_faces(dets, "largest") == [big_weak]
    assert select_faces(dets, "center", image_shape=(400, 400, 3)) == [small_strong]
    assert select_faces([], "largest") == []
    with pytest.raises(ValueError, match="image_shape"):
        select_faces(dets, "center")
    with pytest.raises(ValueError, match="biggest"):
        select_faces(dets, "biggest")


def test_bad_inputs():
    with pytest.raises(ValueError, match="nope"):
        build_detector("nope")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        as_rgb_uint8(np.full((8, 8, 3), 255.0))
    with pytest.raises(ValueError, match="shape"):
        as_rgb_uint8(np.zeros((8, 8, 2), np.uint8))
    with pytest.raises(ValueError, match="dtype"):
        as_rgb_uint8(np.zeros((8, 8, 3), np.uint16))
    with pytest.raises(ValueError, match="weights"):
        build_detector("mtcnn", weights="x.pt")
    with pytest.raises(ValueError, match="min_size"):
        build_detector("dlib", min_size=-1)


# ---- backends whose real weights are not available offline -----------------------------------------------------


@pytest.mark.parametrize(
    "name,kwargs,key,filename",
    [
        ("retinaface", {"network": "resnet50"}, "retinaface_resnet50", "detection_Resnet50_Final.pth"),
        ("retinaface", {"network": "mobilenet0.25"}, "retinaface_mobilenet0.25", "detection_mobilenet0.25_Final.pth"),
        ("scrfd", {}, "scrfd_10g", "det_10g.onnx"),
    ],
)
def test_missing_weights_raise_registry_error(monkeypatch, tmp_path, name, kwargs, key, filename):
    from honestface.weights import MissingWeightError

    monkeypatch.setenv("HONESTFACE_HOME", str(tmp_path))
    with pytest.raises(MissingWeightError) as err:
        build_detector(name, **kwargs)
    msg = str(err.value)
    assert filename in msg and key in msg
    with pytest.raises(FileNotFoundError, match="nope"):  # an explicit path that does not exist
        build_detector(name, weights=str(tmp_path / "nope.bin"), **kwargs)


def test_retinaface_wrapper_with_random_weights(tmp_path, astronaut):
    import torch
    from facexlib.detection.retinaface import RetinaFace

    torch.manual_seed(0)
    net = RetinaFace(network_name="mobile0.25", half=False, device="cpu")
    path = tmp_path / "random_retinaface.pth"
    torch.save({"module." + k: v for k, v in net.state_dict().items()}, path)  # DataParallel-style keys

    det = build_detector("retinaface", network="mobilenet0.25", weights=str(path), threshold=0.5)
    dets = det.detect(astronaut)  # random weights: garbage boxes, but the right types
    assert isinstance(dets, list)
    for d in dets:
        assert d.box.shape == (4,) and d.points5.shape == (5, 2) and d.score > 0.5
    assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)
    assert (
        build_detector("retinaface", network="mobilenet0.25", weights=str(path), threshold=1.0).detect(astronaut) == []
    )


def _toy_scrfd_onnx(path):
    """A random network with SCRFD's ONNX output layout: scores, boxes, keypoints at strides 8/16/32, 2 anchors."""
    import torch
    from torch import nn

    class ToySCRFD(nn.Module):
        def __init__(self):
            super().__init__()
            self.heads = nn.ModuleList([nn.Conv2d(3, 2 * 15, 1) for _ in range(3)])

        def forward(self, x):
            scores, boxes, kps = [], [], []
            for stride, head in zip((8, 16, 32), self.heads):
                y = head(nn.functional.avg_pool2d(x, stride)).permute(0, 2, 3, 1).reshape(-1, 15)
                scores.append(torch.sigmoid(y[:, :1]))
                boxes.append(y[:, 1:5].abs() + 1.0)
                kps.append(y[:, 5:])
            return (*scores, *boxes, *kps)

    torch.manual_seed(0)
    torch.onnx.export(
        ToySCRFD().eval(),
        torch.zeros(1, 3, 640, 640),
        str(path),
        input_names=["input.1"],
        output_names=[f"out{i}" for i in range(9)],
        dynamo=False,
    )


def test_scrfd_wrapper_with_random_onnx(tmp_path, astronaut):
    path = tmp_path / "toy_scrfd.onnx"
    with warnings.catch_warnings():  # torch's notice about the legacy (TorchScript) exporter
        warnings.simplefilter("ignore")
        _toy_scrfd_onnx(path)
    det = build_detector("scrfd", weights=str(path), threshold=0.6, min_size=4)
    dets = det.detect(astronaut)
    assert dets and all(d.points5.shape == (5, 2) and d.score >= 0.6 for d in dets)
    assert all(min(d.width, d.height) >= 4 for d in dets)
    assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)
    with pytest.raises(ValueError, match="multiples of 32"):
        build_detector("scrfd", weights=str(path), input_size=(600, 600))
