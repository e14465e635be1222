"""No checkpoint the library reads can run code (issue 20): every load path is given a malicious file whose
unpickling would create a marker file; the load must fail with an error naming the problem and the marker must
never appear. A control loads the same files without restriction and sees the marker appear, so the payloads
really do run code when a loader lets them.

Load paths (grep torch.load / load_checkpoint / load_state_dict / safe_open / load_file): `honestface.checkpoints`
(used by every face, metric, loss, VRE and VSPBFR loader), the FID statistics reader, the TorchScript reader of
the CLIP IQA metrics, dlib's format (our parser and dlib's own), safetensors readers and accelerate's
`load_state` (what `Trainer._load` resumes with).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
import torch


class _Touch:
    """Unpickling this calls `Path.touch(marker)`: the stand-in for any code a checkpoint could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def _payload(marker: Path) -> dict:
    """Shaped like the checkpoints the loaders expect (state_dict / g_ema / params_ema / FID mean, cov), with the
    code riding along as metadata, as a Lightning hyper-parameter or an `args` entry would."""
    w = {"weight": torch.zeros(2, 2)}
    return {"state_dict": dict(w), "g_ema": dict(w), "params_ema": dict(w), "mean": torch.zeros(2),
            "cov": torch.eye(2), "hyper_parameters": _Touch(marker)}


def _write(path: Path, marker: Path, fmt: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npz":  # numpy's format: the code rides in an object array, pickled inside mu.npy
        import numpy as np

        np.savez(path, mu=np.array([_Touch(marker)], dtype=object), sigma=np.eye(2))
    elif fmt == "zip":  # torch.save's format (also the layout of TorchScript and Lightning files)
        torch.save(_payload(marker), path)
    elif fmt == "legacy":  # torch < 1.6 files: a bare pickle stream with tensor storages
        torch.save(_payload(marker), path, _use_new_zipfile_serialization=False)
    else:  # a plain pickle
        with open(path, "wb") as f:
            pickle.dump(_payload(marker), f, protocol=2)
    return path


def _tiny_vspbfr():
    from honestface.models.vspbfr.vspbfr import build_vspbfr

    return build_vspbfr("tiny")


def _vspbfr_folder(path: Path) -> Path:
    """A saved tiny VSPBFR folder whose weights file is the malicious file."""
    folder = path.parent / "vspbfr_model"
    _tiny_vspbfr().save_pretrained(folder)
    (folder / "vspbfr.safetensors").write_bytes(path.read_bytes())
    return folder


# id -> (file suffix, the library call that reads it); every call goes through a public entry point. The error of
# `honestface.checkpoints` (all but the last few) names the file and says why; the others are the readers' own.
ENTRY_POINTS: dict[str, tuple[str, Callable[[Path], object]]] = {
    "checkpoint.pth": (".pth", lambda p: __import__("honestface.checkpoints").checkpoints.load_checkpoint(p)),
    "state_dict.bin": (".bin", lambda p: __import__("honestface.checkpoints").checkpoints.load_state_dict(p)),
    "lightning-osdface-vre.ckpt": (".ckpt", lambda p: _import("honestface.models.vre")
                                   .VisualRepresentationEmbedder.from_osdface(vre_checkpoint=p)),
    "vspbfr-official-encoder": (".pt", lambda p: _import("honestface.models.vspbfr.official").load_official_weights(
        _tiny_vspbfr(), {"vspbfr_style_encoder": p, "vspbfr_code_diffuser": p, "vspbfr_restoration": p})),
    "vspbfr-official-restoration": (".pt", lambda p: _import("honestface.models.released").vspbfr_preset_of(p)),
    "facexlib-retinaface": (".pth", lambda p: _import("honestface.face.detection").RetinaFaceDetector(
        "mobilenet0.25", weights=p)),
    "facexlib-parsing": (".pth", lambda p: _import("honestface.face.parsing").build_parser("bisenet", weights=p)),
    "facexlib-awing": (".pth", lambda p: _import("honestface.face.landmarks").AWingLandmarker(weights=p)),
    "iresnet-arcface": (".pth", lambda p: _import("honestface.face.iresnet").IResNet.from_checkpoint(p)),
    "resnet-face18": (".pth", lambda p: _import("honestface.face.resnet_face").resnet_face18_state(
        p, torch.nn.Linear(1, 1))),
    "lpips-backbone": (".pth", lambda p: _import("honestface.metrics.iqa_networks").LPIPSMetric("alex", p)),
    "torchvision-features": (".pth", lambda p: _import("honestface.losses.features").load_torchvision_features(
        torch.nn.Sequential(), p, "features")),
    "iqa-network": (".pth", lambda p: _import("honestface.metrics.iqa_networks").load_into(
        torch.nn.Linear(1, 1), p, "a network")),
    "clip-torchscript": (".pt", lambda p: _import("honestface.metrics.iqa_networks").read_torchscript_tensors(p)),
    "fid-statistics.pth": (".pth", lambda p: _import("honestface.metrics.fid").load_fid_statistics(p)),
    "fid-statistics.npz": (".npz", lambda p: _import("honestface.metrics.fid").load_fid_statistics(p)),
    "dlib-resnet.dat": (".dat", lambda p: _import("honestface.face.dlib_resnet").DlibFaceResNet.from_dlib(p)),
    "dlib-shape-predictor.dat": (".dat", lambda p: _import("honestface.face.detection").load_dlib_shape_predictor(
        str(p))),
    "safetensors-checkpoint": (".safetensors",
                               lambda p: __import__("honestface.checkpoints").checkpoints.load_checkpoint(p)),
    "safetensors-reader": (".safetensors", lambda p: _import("honestface.models.loading").read_safetensors(p)),
    "vspbfr-folder": (".safetensors", lambda p: _import("honestface.models.vspbfr.vspbfr").VSPBFR.from_pretrained(
        _vspbfr_folder(p))),
}


MESSAGES = {"clip-torchscript": "not a tensor type", ("clip-torchscript", "legacy"): "not a zip file",
            ("clip-torchscript", "pickle"): "not a zip file", "fid-statistics.pth": "Weights only load failed",
            "fid-statistics.npz": "allow_pickle=False", "dlib-resnet.dat": "evil.dat: bad integer",
            "dlib-shape-predictor.dat": "Error deserializing", "safetensors-checkpoint": "evil.safetensors: cannot be "
            "read", "safetensors-reader": "deserializing header", "vspbfr-folder": "deserializing header"}
MULTI_LINE = {"fid-statistics.pth"}  # torch's own message (honestface/metrics/fid.py calls torch.load directly)


def _import(name: str):
    import importlib

    return importlib.import_module(name)


@pytest.mark.parametrize("fmt", ["zip", "legacy", "pickle"])
def test_the_payloads_run_code_when_loaded_without_restriction(tmp_path: Path, fmt: str) -> None:
    marker = tmp_path / "MARKER"
    path = _write(tmp_path / "evil.pth", marker, fmt)
    if fmt == "pickle":
        with open(path, "rb") as f:
            pickle.load(f)
    else:
        torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()
    import numpy as np

    with np.load(_write(tmp_path / "evil.npz", marker, fmt), allow_pickle=True) as f:
        f["mu"]
    assert marker.exists()


# every entry point with torch.save's format; the older formats through each distinct reader (the other entry
# points reach the reader of checkpoint.pth)
CASES = [(e, "zip") for e in ENTRY_POINTS] + [(e, f) for e in ("checkpoint.pth", "fid-statistics.pth",
                                                                 "clip-torchscript") for f in ("legacy", "pickle")]


@pytest.mark.parametrize(("entry", "fmt"), CASES)
def test_no_load_path_runs_code_from_a_file(tmp_path: Path, entry: str, fmt: str) -> None:
    suffix, load = ENTRY_POINTS[entry]
    marker = tmp_path / "MARKER"
    path = _write(tmp_path / "files" / f"evil{suffix}", marker, fmt)
    with pytest.raises(Exception) as info:  # each reader has its own error type: the message is checked
        load(path)
    message = str(info.value)
    assert not marker.exists(), f"{entry} ran code from the file"
    assert not isinstance(info.value, (AttributeError, TypeError, KeyError, NameError)), message
    assert entry in MULTI_LINE or len(message.splitlines()) == 1, message  # one line, saying what is wrong
    expected = MESSAGES.get((entry, fmt), MESSAGES.get(entry, f"{path}: refusing to load: the file references "))
    assert expected in message, message


# ------------------------------------------------------------------------- training states (accelerate load_state)
class _LoadedWithoutError(Exception):
    """The load went on without an error (the marker is checked before this is raised)."""


@pytest.fixture(scope="module")
def saved_state(tmp_path_factory):
    """An accelerate state (model, SGD with momentum, scheduler, RNG) saved as Trainer.save does, and the
    accelerator that loads it back (as Trainer._load does, without custom objects)."""
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1)
    model, opt, sched = acc.prepare(model, opt, sched)
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    sched.step()
    folder = tmp_path_factory.mktemp("state") / "step_1"
    acc.save_state(str(folder), safe_serialization=True)
    return acc, folder


@pytest.mark.parametrize("name", [
    "model.safetensors", "optimizer.bin", "scheduler.bin", "custom_checkpoint_0.pkl", "random_states_0.pkl"])
def test_resuming_a_training_state_runs_no_code(saved_state, tmp_path: Path, name: str) -> None:
    """What Trainer._load runs: the random-state check (accelerate alone only logs a bad RNG file and goes on),
    then accelerate's load_state."""
    import shutil

    from honestface.training.checkpoint import check_random_states

    acc, folder = saved_state
    copy = tmp_path / "step_1"
    shutil.copytree(folder, copy)
    marker = tmp_path / "MARKER"
    _write(copy / name, marker, "zip")
    try:
        check_random_states(copy, acc.process_index)
        acc.load_state(str(copy))
        error = None
    except Exception as err:  # noqa: BLE001 (accelerate's and torch's own error types)
        error = err
    assert not marker.exists(), f"resuming with a malicious {name} ran code"
    if error is None:
        raise _LoadedWithoutError(name)
    assert "Weights only load failed" in str(error) or "deserializing header" in str(error) or \
        "Number of custom checkpoints" in str(error) or "not a weights-only random-state file" in str(error), \
        str(error)
