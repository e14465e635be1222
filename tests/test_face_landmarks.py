"""Landmark backends: dlib 68 points on real bundled photos; AWing FAN and insightface 2d106 wrapper paths with
random weights (their real weights are not available offline); the insightface106 scheme."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from honestface.data import samples
from honestface.face.detection import build_detector
from honestface.face.landmarks import (
    _square_crop_matrix,
    _uncrop,
    build_landmarker,
    decode_heatmaps,
    detect_landmarks,
)
from honestface.face.schemes import DLIB68, INSIGHTFACE106, get_scheme
from honestface.face.types import LandmarkDetector


@pytest.fixture(scope="module")
def dlib68():
    return build_landmarker("dlib68")


@pytest.fixture(scope="module")
def detectors():
    return {"dlib": build_detector("dlib", points5=False), "mtcnn": build_detector("mtcnn", threshold=0.9)}


def _enlarge(box, frac=0.25):
    x0, y0, x1, y1 = box
    dw, dh = frac * (x1 - x0), frac * (y1 - y0)
    return np.array([x0 - dw, y0 - dh, x1 + dw, y1 + dh])


@pytest.mark.parametrize("detector", ["dlib", "mtcnn"])
@pytest.mark.parametrize("name,count", [("astronaut", 1), ("grace_hopper", 1), ("group_t1", 6)])
def test_dlib68_lands_on_the_faces(dlib68, detectors, detector, name, count):
    img = samples.load_sample(name)
    faces = detect_landmarks(img, detectors[detector], dlib68, rule="largest" if count == 1 else "all")
    assert len(faces) == count
    for f in faces:
        pts = f.extra["landmarks"]
        assert f.extra["landmark_scheme"] == "dlib68" and pts.shape == (68, 2) and pts.dtype == np.float64
        x0, y0, x1, y1 = _enlarge(f.box)
        assert np.all((pts[:, 0] >= x0) & (pts[:, 0] <= x1) & (pts[:, 1] >= y0) & (pts[:, 1] <= y1))
        eyes_y = DLIB68.select(pts, "eyes")[:, 1].mean()
        assert eyes_y < DLIB68.select(pts, "nose")[:, 1].mean() < DLIB68.select(pts, "mouth")[:, 1].mean()
        left, right = DLIB68.eye_centers(pts)
        assert left[0] < right[0]
        assert f.points5 is not None and f.points5.shape == (5, 2)  # derived from the landmarks when missing


def test_predict_matches_detector_landmarks_and_mtcnn_points(dlib68):
    img = samples.astronaut()
    dlib_face = build_detector("dlib").detect(img)[0]
    pts = dlib68.predict(img, dlib_face.box[None])  # (1, 68, 2)
    assert np.array_equal(pts[0], dlib_face.extra["landmarks"])  # same box convention both ways
    mt = build_detector("mtcnn").detect(img)[0]
    five = DLIB68.to_five(dlib68.predict(img, mt.box[None])[0])
    iod = np.linalg.norm(mt.points5[1] - mt.points5[0])
    assert np.max(np.linalg.norm(five - mt.points5, axis=1)) < 0.15 * iod


def test_predict_edge_cases(dlib68):
    img = samples.astronaut()
    assert isinstance(dlib68, LandmarkDetector) and dlib68.scheme is DLIB68
    assert dlib68.predict(img, np.zeros((0, 4))).shape == (0, 68, 2)
    box = np.array([[175.0, 76.0, 266.0, 167.0]])
    a = dlib68.predict(img, box)
    assert np.array_equal(a, dlib68.predict(img, box))  # deterministic
    assert np.array_equal(a, dlib68.predict(img.astype(np.float32) / 255.0, box))  # float input
    assert np.abs(dlib68.predict(img.mean(axis=2) / 255.0, box) - a).max() < 6  # grayscale: close
    with pytest.raises(ValueError, match="shape"):
        dlib68.predict(img, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="x1 > x0"):
        dlib68.predict(img, np.array([[10.0, 10.0, 5.0, 20.0]]))
    with pytest.raises(ValueError, match="nope"):
        build_landmarker("nope")


def test_detect_landmarks_without_faces(dlib68, detectors):
    assert detect_landmarks(np.full((200, 200, 3), 0.5), detectors["mtcnn"], dlib68) == []


def test_decode_heatmaps_subpixel():
    hm = np.zeros((1, 2, 64, 64), np.float32)
    hm[0, 0, 20, 10], hm[0, 0, 20, 11] = 1.0, 0.5  # peak at x=10, y=20, right neighbour stronger
    hm[0, 1, 5, 40], hm[0, 1, 4, 40] = 1.0, 0.5  # peak at x=40, y=5, upper neighbour stronger
    pts = decode_heatmaps(hm)
    assert np.allclose(pts[0, 0], [10.75, 20.5]) and np.allclose(pts[0, 1], [40.5, 5.25])


def test_crop_matrix_round_trip():
    m = _square_crop_matrix(100.0, 50.0, 80.0, 256)
    pts = np.array([[60.0, 10.0], [140.0, 90.0], [100.0, 50.0]])  # square corners and centre
    crop = pts @ m[:, :2].T + m[:, 2]
    assert np.allclose(crop, [[0, 0], [256, 256], [128, 128]])
    assert np.allclose(_uncrop(crop, m), pts)


def test_insightface106_scheme():
    s = get_scheme("insightface106")
    assert s is INSIGHTFACE106 and s.num_points == 106
    parts = [s.indices(c) for c in ("jaw", "left_brow", "right_brow", "nose", "left_eye", "right_eye", "mouth")]
    assert sorted(np.concatenate(parts).tolist()) == list(range(106))  # a partition of all points
    assert len(s.indices("mouth_outer")) == 12 and len(s.indices("mouth_inner")) == 8
    pts = np.arange(212, dtype=np.float64).reshape(106, 2)
    five = s.to_five(pts)
    assert np.array_equal(five[2:], pts[[86, 52, 61]])
    assert np.allclose(five[0], pts[33:43].mean(0)) and np.allclose(five[1], pts[87:97].mean(0))


@pytest.mark.parametrize(
    "name,key,filename",
    [("awing98", "awing_fan", "alignment_WFLW_4HG.pth"), ("insightface106", "landmark_2d106", "2d106det.onnx")],
)
def test_missing_weights_raise_registry_error(monkeypatch, tmp_path, name, key, filename):
    from honestface.weights import MissingWeightError

    monkeypatch.setenv("HONESTFACE_HOME", str(tmp_path))
    with pytest.raises(MissingWeightError) as err:
        build_landmarker(name)
    assert key in str(err.value) and filename in str(err.value)


def _inside_crops(points, boxes, crop_box):
    for pts, box in zip(points, boxes):
        x0, y0, x1, y1 = crop_box(box)
        assert np.all((pts[:, 0] >= x0 - 1e-6) & (pts[:, 0] <= x1 + 1e-6))
        assert np.all((pts[:, 1] >= y0 - 1e-6) & (pts[:, 1] <= y1 + 1e-6))


def test_awing_wrapper_with_random_weights(tmp_path):
    import torch
    from facexlib.alignment.awing_arch import FAN

    torch.manual_seed(0)
    path = tmp_path / "random_awing.pth"
    torch.save({"state_dict": FAN(num_modules=4, num_landmarks=98, device="cpu").state_dict()}, path)
    lm = build_landmarker("awing98", weights=str(path))
    assert lm.scheme.name == "wflw98"
    img = samples.astronaut()
    boxes = np.array([[175.0, 76.0, 266.0, 167.0], [126.0, 335.0, 216.0, 426.0]])
    pts = lm.predict(img, boxes)
    assert pts.shape == (2, 98, 2) and pts.dtype == np.float64 and np.all(np.isfinite(pts))

    def awing_crop(b):  # the crop square the points must come from (random weights: anywhere inside it)
        w, h = b[2] - b[0], b[3] - b[1]
        cx, cy, side = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2 - 0.12 * h, 200 * (w + h) / 195
        return cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2

    _inside_crops(pts, boxes, awing_crop)
    assert np.array_equal(pts, lm.predict(img, boxes))


def _toy_2d106_onnx(path):
    """A random network with the 2d106det interface: (1, 3, 192, 192) -> (1, 212) in [-1, 1]."""
    import torch
    from torch import nn

    net = nn.Sequential(
        nn.Conv2d(3, 8, 4, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(128, 212), nn.Tanh()
    )
    torch.manual_seed(0)
    with warnings.catch_warnings():  # torch's notice about the legacy (TorchScript) exporter
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net.eval(), torch.zeros(1, 3, 192, 192), str(path), input_names=["data"], output_names=["fc1"], dynamo=False
        )


def test_insightface106_wrapper_with_random_onnx(tmp_path):
    path = tmp_path / "toy_2d106.onnx"
    _toy_2d106_onnx(path)
    lm = build_landmarker("insightface106", weights=str(path))
    assert lm.scheme is INSIGHTFACE106 and lm.input_size == 192
    img = samples.grace_hopper()
    boxes = np.array([[180.0, 139.0, 367.0, 326.0], [10.0, 20.0, 60.0, 90.0]])
    pts = lm.predict(img, boxes)
    assert pts.shape == (2, 106, 2) and pts.dtype == np.float64

    def crop(b):
        side = 1.5 * max(b[2] - b[0], b[3] - b[1])
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        return cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2

    _inside_crops(pts, boxes, crop)
    faces = detect_landmarks(img, build_detector("dlib", points5=False), lm, rule="largest")
    assert len(faces) == 1 and faces[0].extra["landmark_scheme"] == "insightface106"
    assert faces[0].points5.shape == (5, 2)


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_dlib68_mirror_permutation_matches_a_flipped_photo(dlib68, detectors, name):
    """Landmarks found on the mirrored photo equal the original's through DLIB68.flip (each point keeps its role:
    the flipped training views of `build_sample_identities(flip=True)` rely on it)."""
    img = samples.load_sample(name)
    width = img.shape[1]
    pts = detect_landmarks(img, detectors["dlib"], dlib68)[0].extra["landmarks"]
    mirrored = detect_landmarks(np.ascontiguousarray(img[:, ::-1]), detectors["dlib"], dlib68)[0].extra["landmarks"]
    expected = DLIB68.flip(pts, width)
    iod = np.linalg.norm(np.subtract(*DLIB68.eye_centers(pts)))
    err = np.linalg.norm(mirrored - expected, axis=1)
    assert np.median(err) < 0.05 * iod and err.max() < 0.2 * iod
    # without the reindexing the sides are swapped: far off
    naive = pts.copy()
    naive[:, 0] = width - 1 - naive[:, 0]
    assert np.median(np.linalg.norm(mirrored - naive, axis=1)) > 0.2 * iod
    assert np.array_equal(DLIB68.swap_sides(DLIB68.swap_sides(pts)), pts)  # an involution
    with pytest.raises(ValueError, match="no mirror permutation"):
        get_scheme("wflw98").swap_sides(np.zeros((98, 2)))
