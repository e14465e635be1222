"""The pipelines' shared shape (honestface/pipelines/base.py): face models built only when first needed, one
`optimize(...)` for both families, the table that picks a family's pipeline, and nothing kept on the pipeline
between calls."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import honestface.face
from honestface.data import samples
from honestface.models.cpu_prepack import PrepackedConv2d
from honestface.pipelines import (
    PIPELINES,
    FaceRestorationPipeline,
    HonestFacePipeline,
    VSPBFRPipeline,
    family_of_folder,
    pipeline_class,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def vspbfr_dir(tmp_path_factory):
    from honestface.models.vspbfr import build_vspbfr

    return build_vspbfr("tiny").save_pretrained(tmp_path_factory.mktemp("tiny_vspbfr"))


@pytest.fixture
def built(monkeypatch):
    """Counts the face models the pipelines build by name."""
    calls = {"detector": 0, "identity": 0}
    real_detector, real_identity = honestface.face.build_detector, honestface.face.build_identity_encoder

    def detector(*args, **kwargs):
        calls["detector"] += 1
        return real_detector(*args, **kwargs)

    def identity(*args, **kwargs):
        calls["identity"] += 1
        return real_identity(*args, **kwargs)

    monkeypatch.setattr(honestface.face, "build_detector", detector)
    monkeypatch.setattr(honestface.face, "build_identity_encoder", identity)
    return calls


def _face(size: int = 64) -> np.ndarray:
    import cv2

    return cv2.resize(samples.astronaut()[30:230, 150:350], (size, size), interpolation=cv2.INTER_AREA)


def test_face_models_are_built_when_first_needed(tiny_honestface_dir, built):
    pipe = HonestFacePipeline.from_pretrained(tiny_honestface_dir, detector="mtcnn", identity="dlib")
    assert built == {"detector": 0, "identity": 0}  # loading builds neither
    pipe(_face())  # an aligned face without references needs neither
    assert built == {"detector": 0, "identity": 0}
    pipe(samples.astronaut()[:256, 100:356], mode="photo", min_face_size=20)  # photo mode: the detector, once
    pipe(samples.astronaut()[:256, 100:356], mode="photo", min_face_size=20)
    assert built["detector"] == 1 and built["identity"] == 0
    pipe(_face(), references=[_face()])  # references: the identity encoder, once
    assert built == {"detector": 1, "identity": 1}
    assert pipe.use_detector("dlib") is pipe.detector  # it has one: kept
    bare = HonestFacePipeline.from_pretrained(tiny_honestface_dir, detector=None)
    with pytest.raises(ValueError, match="photo mode needs a face detector"):
        bare(samples.astronaut(), mode="photo")
    assert bare.use_detector("mtcnn") is bare.detector is not None and built["detector"] == 2


def test_optimize_is_one_call_for_both_families(tiny_honestface_dir, vspbfr_dir):
    pipe = HonestFacePipeline.from_pretrained(tiny_honestface_dir, detector=None)
    before = pipe(_face()).images[0]
    assert pipe.optimize(channels_last=True, vae_slicing=True) is pipe
    conv = next(m for m in pipe.model.vae.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and pipe.model.vae.use_slicing
    after = pipe(_face()).images[0]
    assert np.abs(after.astype(int) - before.astype(int)).max() <= 1  # the same restoration, another layout
    state = {k: v.clone() for k, v in pipe.model.state_dict().items()}
    assert pipe.optimize(prepack_cpu=True) is pipe  # on this CPU: weights packed for oneDNN
    packed = [m for m in pipe.model.modules() if isinstance(m, PrepackedConv2d)]
    assert packed and all(m.weight.is_mkldnn for m in packed)
    assert np.abs(pipe(_face()).images[0].astype(int) - before.astype(int)).max() <= 1
    assert all(torch.equal(v, state[k]) for k, v in pipe.model.state_dict().items())  # what saving writes
    vpipe = VSPBFRPipeline.from_pretrained(vspbfr_dir, detector=None)
    with pytest.warns(UserWarning, match="compile is not supported"):
        assert vpipe.optimize(channels_last=True, vae_slicing=True, compile=True) is vpipe


def test_the_table_picks_each_familys_pipeline(tiny_honestface_dir, vspbfr_dir, tmp_path):
    assert set(PIPELINES) == {"honestface", "vspbfr"}
    for family in PIPELINES:
        assert issubclass(pipeline_class(family), FaceRestorationPipeline)
    assert family_of_folder(tiny_honestface_dir) == "honestface" and family_of_folder(vspbfr_dir) == "vspbfr"
    assert family_of_folder(tmp_path) is None and family_of_folder(None) is None
    with pytest.raises(ValueError, match="unknown model family 'myfr'"):
        pipeline_class("myfr")


def test_a_call_leaves_no_state_behind(vspbfr_dir):
    """VSPBFR's per-call mixing travels with the call: the pipeline's default stays, and a call with the default
    after one with another value gives what a fresh pipeline gives."""
    pipe = VSPBFRPipeline.from_pretrained(vspbfr_dir, detector=None)
    fresh = pipe(_face(32), seed=3).images[0]
    other = pipe(_face(32), seed=3, mixing=1.0).images[0]
    assert pipe.mixing == 0.5
    np.testing.assert_array_equal(pipe(_face(32), seed=3).images[0], fresh)
    assert other.shape == fresh.shape
