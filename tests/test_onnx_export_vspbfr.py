"""ONNX export of VSPBFR (honestface.export): `honestface-export` on a VSPBFR folder writes the four graphs (style
encoder, one code-diffuser step, feature bank, restoration network) with a dynamic batch, and `OnnxPipeline` /
`honestface-infer --onnx` restore real faces (aligned and whole photos) as the torch fp32 pipeline does
(PSNR >= 45 dB), drawing the same random numbers from the same seeds, without calling any torch module.

The model is the tiny preset with a one-block code diffuser. Why not the default four blocks: at random
initialisation the denoiser's channel attention is almost uniform, so the LayerNorm after it amplifies float
round-off ~100x per block; with 4 blocks x 4 steps a 1e-6 change of w_hat changes w0 by O(1) (measured), so no
second runtime can reproduce it, and torch itself does not across batch sizes (hence its per-face chain). With one
block the whole chain's gain is ~400 (measured) and the ONNX output matches at 63-77 dB.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from honestface.data import samples
from honestface.export import OnnxPipeline, read_manifest
from honestface.pipelines import VSPBFRPipeline

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest)

VSPBFR_GRAPHS = {"style_encoder", "code_diffuser_step", "feature_bank", "restoration"}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from honestface.models.vspbfr import build_vspbfr

    out = tmp_path_factory.mktemp("tiny_vspbfr")
    build_vspbfr("tiny", code_diffuser={"n_blocks": 1}).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def export(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model exported by `honestface-export` from a copy of its folder, the copy deleted afterwards."""
    from honestface.apps.cli.export import main as export_main

    root = tmp_path_factory.mktemp("onnx_vspbfr")
    copy = shutil.copytree(model_dir, root / "model")
    assert export_main(["--model", str(copy), "--format", "onnx", "--output", str(root / "export")]) == 0
    shutil.rmtree(copy)
    return root / "export"


@pytest.fixture(scope="module")
def torch_pipe(model_dir: Path, mtcnn_detector) -> VSPBFRPipeline:
    return VSPBFRPipeline.from_pretrained(model_dir, detector=mtcnn_detector)


@pytest.fixture(scope="module")
def onnx_pipe(export: Path, torch_pipe: VSPBFRPipeline) -> OnnxPipeline:
    return OnnxPipeline.from_pretrained(export, detector=torch_pipe.detector, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def faces(mtcnn_detector) -> list[np.ndarray]:
    """Real FFHQ-aligned faces of three people at four sizes (the pipeline resizes them to the model's 32 px)."""
    from honestface.face import extract_faces

    crops = [extract_faces(samples.load_sample(name), mtcnn_detector, size=size, template="ffhq")[0].crop
             for name, size in (("astronaut", 96), ("grace_hopper", 64), ("astronaut", 48))]
    return [*crops, samples.load_sample("tom_hanks_aligned")]


def test_vspbfr_export_holds_four_checked_graphs_with_a_dynamic_batch(export: Path, torch_pipe: VSPBFRPipeline,
                                                                      faces: list[np.ndarray]) -> None:
    from honestface.export.onnx_model import OnnxGraphs

    manifest = read_manifest(export)
    assert manifest["family"] == "vspbfr" and manifest["opset"] == 18 and set(manifest["graphs"]) == VSPBFR_GRAPHS
    assert manifest["native"] == {"resolution": 32, "resize": "lanczos", "timestep": None}
    assert manifest["model_config"]["format"] == "vspbfr"
    facts = manifest["vspbfr"]
    assert facts["num_timesteps"] == 4 and facts["codes"] == [10, 32] and facts["bank_resolutions"] == [8, 16, 32]
    for name, graph in manifest["graphs"].items():
        model = onnx.load(str(export / graph["file"]))
        onnx.checker.check_model(model)
        for value in [*model.graph.input, *model.graph.output]:
            first = value.type.tensor_type.shape.dim[0]
            assert first.dim_param, f"{name}: {value.name} has a fixed batch axis ({first.dim_value})"
        assert [i.name for i in model.graph.input] == graph["inputs"]
        assert [o.name for o in model.graph.output] == graph["outputs"]
    # batch 3 in one call = each face alone (the runtime calls these two per face), and = the torch model's step
    graphs, model = OnnxGraphs(export, manifest, ["CPUExecutionProvider"]), torch_pipe.model
    lq = torch.stack([torch_pipe._face_tensor(f) for f in faces[:3]])
    (w_hat,) = graphs.run("style_encoder", lq=lq)
    alone = np.concatenate([graphs.run("style_encoder", lq=lq[i:i + 1])[0] for i in range(3)])
    np.testing.assert_allclose(w_hat, alone, atol=1e-6)
    with torch.no_grad():
        np.testing.assert_allclose(w_hat, model.encode_lq(lq).numpy(), atol=1e-5)
        x = torch.randn(3, 10, 32, generator=torch.Generator().manual_seed(0))
        t = torch.tensor([3, 1, 0])
        want = model.diffusion.posterior_mean(model.code_diffuser(x, torch.from_numpy(w_hat), t), x, t)
    (step,) = graphs.run("code_diffuser_step", x_t=x, w_hat=w_hat, t=t.numpy())
    np.testing.assert_allclose(step, want.numpy(), rtol=1e-4, atol=1e-4)  # round-off x the LayerNorm gain


def test_onnx_vspbfr_matches_torch_on_aligned_faces_without_torch_modules(
        onnx_pipe: OnnxPipeline, torch_pipe: VSPBFRPipeline, faces: list[np.ndarray],
        monkeypatch: pytest.MonkeyPatch) -> None:
    want = torch_pipe(faces, batch_size=3, seed=5).images
    want_unmixed = torch_pipe(faces[:1], seed=5, mixing=0.0).images[0]

    def no_torch(self, *args, **kwargs):
        raise AssertionError(f"torch module {type(self).__name__} called by the ONNX pipeline")

    monkeypatch.setattr(torch.nn.Module, "__call__", no_torch)
    got = onnx_pipe(faces, batch_size=3, seed=5).images
    one_by_one = onnx_pipe(faces, batch_size=1, seed=5).images
    unmixed = onnx_pipe(faces[:1], seed=5, mixing=0.0).images[0]
    other_seed = onnx_pipe(faces[:1], seed=6).images[0]
    monkeypatch.undo()
    assert all(f[0].blind and f[0].restored for f in onnx_pipe(faces[:1]).faces)
    for a, b, c, face in zip(want, got, one_by_one, faces):
        assert a.shape == b.shape == face.shape
        assert psnr(a, b) >= 45
        assert np.abs(b.astype(int) - c).max() <= 1  # a face's output does not depend on its batch
    assert psnr(want_unmixed, unmixed) >= 45 and psnr(unmixed, got[0]) < 40  # the style mixing draw reaches z
    assert psnr(other_seed, got[0]) < 40  # the seed reaches the ONNX runtime's draws


def test_onnx_vspbfr_restores_whole_photos_like_torch(onnx_pipe: OnnxPipeline,
                                                      torch_pipe: VSPBFRPipeline) -> None:
    photo = samples.load_sample("astronaut")
    want = torch_pipe(photo, mode="photo", seed=2)
    got = onnx_pipe(photo, mode="photo", seed=2)
    assert [f.box for f in got.faces[0]] == [f.box for f in want.faces[0]]
    assert sum(f.restored for f in got.faces[0]) == 1
    face = got.masks[0] > 0  # the pasted face: PSNR where the model's output is, not over the kept background
    assert face.sum() > 1000 and not np.array_equal(got.images[0][face], photo[face])
    assert psnr(want.images[0][face], got.images[0][face]) >= 45


def test_infer_onnx_runs_a_vspbfr_export_like_the_torch_model(export: Path, model_dir: Path,
                                                               faces: list[np.ndarray], tmp_path: Path) -> None:
    from honestface.apps.cli.infer import main as infer_main
    from honestface.io import read_image, write_image

    lq, out_onnx, out_torch = tmp_path / "lq", tmp_path / "onnx", tmp_path / "torch"
    for i, f in enumerate(faces[:2]):
        write_image(lq / f"{i}.png", f)
    assert infer_main(["--onnx", str(export), "--input", str(lq), "--output", str(out_onnx), "-q"]) == 0
    assert infer_main(["--model", str(model_dir), "--input", str(lq), "--output", str(out_torch), "-q"]) == 0
    summary = json.loads((out_onnx / "results.json").read_text())
    assert summary["architecture"] == "vspbfr" and summary["onnx"] == str(export)
    assert summary["counts"]["ok"] == 2 and summary["resolution"] == 32 and summary["resize"] == "lanczos"
    for name in ("0.png", "1.png"):
        assert psnr(read_image(out_onnx / name), read_image(out_torch / name)) >= 45
    assert infer_main(["--onnx", str(export), "--input", str(lq), "--output", str(tmp_path / "r64"),
                       "--resolution", "64"]) == 2  # VSPBFR works at its own size only: one error line
    assert not (tmp_path / "r64").exists()
