"""VSPBFRPipeline on the tiny random VSPBFR (32 px working size): aligned faces, whole photos with paste-back,
seeding and batch independence, bf16, ignored references, and scripts/infer.py --arch vspbfr end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from honestface.apps.infer import model_architecture, run_inference
from honestface.config import load_config
from honestface.data.samples import load_sample
from honestface.face import build_detector
from honestface.io import list_images, read_image, write_image
from honestface.models.vspbfr import CONFIG_FILE, build_vspbfr
from honestface.pipelines import VSPBFRPipeline

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny_vspbfr")
    build_vspbfr("tiny").save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def pipe(model_dir) -> VSPBFRPipeline:
    return VSPBFRPipeline.from_pretrained(model_dir, detector=None)


@pytest.fixture(scope="module")
def faces(sample_identities) -> list[np.ndarray]:
    """Five aligned 64 px faces of different people (uint8)."""
    folders = sorted(p for p in sample_identities.iterdir() if p.is_dir())[:5]
    return [np.round(read_image(list_images(f)[0]) * 255).astype(np.uint8) for f in folders]


def test_aligned_faces_seeded_and_batch_independent(pipe, faces):
    assert pipe.resolution == 32 and pipe.dtype == torch.float32
    out = pipe(faces, batch_size=1)
    assert len(out.images) == len(out.faces) == 5 and out.masks == [None] * 5
    for img, res, info in zip(faces, out.images, out.faces):
        assert res.shape == img.shape == (64, 64, 3) and res.dtype == np.uint8
        assert len(info) == 1 and info[0].restored and info[0].blind and info[0].references == []
        assert info[0].reason is None and info[0].box is None
    assert np.abs(out.images[0].astype(int) - faces[0]).mean() > 1  # the model did change the face
    batched = pipe(faces, batch_size=3)  # other batching, same seed: the same faces
    for a, b in zip(out.images, batched.images):
        assert np.abs(a.astype(int) - b).max() <= 1
    again = pipe(faces[1:2], seed=0)
    np.testing.assert_array_equal(again.images[0], out.images[1])
    other = pipe(faces[1:2], seed=1)
    assert np.abs(other.images[0].astype(int) - out.images[1]).mean() > 1
    no_mix = pipe(faces[1:2], mixing=0.0)
    assert not np.array_equal(no_mix.images[0], out.images[1])  # style mixing of z is on by default (p = 0.5)


def test_references_are_ignored_with_one_warning(pipe, faces):
    fresh = VSPBFRPipeline(pipe.model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fresh(faces[:2], references=[faces[3], faces[4]], max_references=2)
        fresh(faces[:1], references=[faces[3]])
    assert sum("VSPBFR is blind" in str(w.message) for w in caught) == 1
    assert all(f[0].blind and not f[0].references and "ignored" in f[0].reason for f in out.faces)
    np.testing.assert_array_equal(out.images[0], fresh(faces[:1]).images[0])


def test_bf16_and_bad_arguments(model_dir, faces):
    bf = VSPBFRPipeline.from_pretrained(model_dir, detector=None, dtype=torch.bfloat16)
    assert bf.dtype == torch.bfloat16 and bf.model.stylegan.conv1.conv.weight.dtype == torch.bfloat16
    out = bf(faces[:3], batch_size=2)
    assert all(r.shape == (64, 64, 3) and r.dtype == np.uint8 for r in out.images)
    with pytest.raises(ValueError, match="works at its model size 32"):
        VSPBFRPipeline(bf.model, resolution=64)
    with pytest.raises(ValueError, match="mixing"):
        bf(faces[:1], mixing=2.0)
    with pytest.raises(ValueError, match="photo mode needs a face detector"):
        bf(faces[:1], mode="photo")
    bf.merge_lora()  # a no-op, kept for interchangeability


def test_photo_mode_pastes_back(model_dir):
    photo = load_sample("group_t1")  # (886, 1280, 3)
    small = cv2.resize(photo, (640, 443), interpolation=cv2.INTER_AREA)
    pipe = VSPBFRPipeline.from_pretrained(model_dir, detector=build_detector("mtcnn", threshold=0.9,
                                                                             min_face_size=20))
    out = pipe(small, mode="photo", min_face_size=20)
    (image,), (infos,), (mask,) = out.images, out.faces, out.masks
    assert image.shape == small.shape and image.dtype == np.uint8 and mask.shape == small.shape[:2]
    assert len(infos) == 6 and all(f.restored and f.blind and f.box is not None for f in infos)
    outside = mask == 0
    assert outside.mean() > 0.5 and (mask > 0).mean() > 0.01
    np.testing.assert_array_equal(image[outside], small[outside])  # the background is kept bit for bit
    assert np.abs(image[mask > 0.99].astype(int) - small[mask > 0.99]).mean() > 1  # the faces were replaced
    up = pipe(small, mode="photo", min_face_size=20, upscale=2)
    assert up.images[0].shape == (886, 1280, 3)


def test_runner_picks_the_architecture(model_dir, tmp_path):
    from honestface.models.honestface_folder import CONFIG_FILE as HONESTFACE_CONFIG_FILE
    from honestface.pipelines import PIPELINES, HonestFacePipeline, family_of_folder, pipeline_class

    assert CONFIG_FILE == VSPBFRPipeline.model_config_file  # the pipelines tell folders apart without loading them
    assert HONESTFACE_CONFIG_FILE == HonestFacePipeline.model_config_file
    assert {f: pipeline_class(f) for f in PIPELINES} == {"honestface": HonestFacePipeline, "vspbfr": VSPBFRPipeline}
    assert family_of_folder(model_dir) == "vspbfr" and family_of_folder(tmp_path) is None
    detected = load_config(None, [f"model.pretrained={model_dir}"])
    assert model_architecture(detected) == "vspbfr"  # model.name left at its default
    other = tmp_path / "not_vspbfr"
    other.mkdir()
    assert model_architecture(load_config(None, [f"model.pretrained={other}"])) == "honestface"
    write_image(tmp_path / "lq" / "a.png", np.zeros((32, 32, 3), np.float32))
    cfg = load_config(None, [f"model.pretrained={other}", "model.name=vspbfr", f"infer.input={tmp_path / 'lq'}",
                             f"infer.output={tmp_path / 'out'}"])
    assert run_inference(cfg) == 2  # one-line setup error, nothing written
    assert not (tmp_path / "out").exists()


def test_infer_script_end_to_end(model_dir, faces, tmp_path):
    lq, refs, out = tmp_path / "lq", tmp_path / "refs", tmp_path / "out"
    for i, f in enumerate(faces[:3]):
        write_image(lq / f"f{i}.png", f)
    write_image(refs / "r.png", faces[4])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "scripts/infer.py", "--arch", "vspbfr", "--model", str(model_dir),
                          "--input", str(lq), "--output", str(out), "--refs", str(refs), "--batch-size", "2",
                          "--dtype", "bf16", "--seed", "3"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "VSPBFR is blind" in run.stderr
    res = json.loads((out / "results.json").read_text())
    assert res["architecture"] == "vspbfr" and res["precision"] == "bf16" and res["seed"] == 3
    assert res["counts"] == {"ok": 3, "failed": 0, "skipped": 0}
    for i, f in enumerate(res["files"]):
        assert f["faces"][0]["blind"] and f["faces"][0]["references"] == []
        assert read_image(out / f"f{i}.png").shape == (64, 64, 3)
