"""Released models by name (`honestface.models.released`): OSDFace's and VSPBFR's files laid out in a weights home
as the README says, in the released layouts (written from the released source by test_released_layouts*.py, tiny
sizes, random weights), found through the registry, converted once into a cached library folder, restored with.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from honestface.models.released import (
    build_released,
    convert_released,
    released_folder,
    released_sources,
    resolve_pretrained,
)
from honestface.weights import MissingWeightError

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest)


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"_layouts_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LAYOUTS = _module("test_released_layouts")
LAYOUTS_VSPBFR = _module("test_released_layouts_vspbfr")
LORA_RANK = 4


def write_sd21_base(folder: Path, cross_attention_dim: int, seed: int = 0) -> torch.nn.Module:
    """A diffusers SD folder at tiny widths with SD 2.1-base's structure where it matters here: an 8x VAE whose
    config says sample_size 768 (as the downloaded files do), DDIM scheduler config of SD 2.1."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    from honestface.models.presets import SD21_SCHEDULER_CONFIG, TINY_UNET_CONFIG

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**{**TINY_UNET_CONFIG, "sample_size": 96, "cross_attention_dim": cross_attention_dim})
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
                        block_out_channels=(8, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=8, sample_size=768,
                        scaling_factor=0.18215)
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    DDIMScheduler(**SD21_SCHEDULER_CONFIG).save_pretrained(folder / "scheduler")
    return unet


def write_osdface_home(home: Path) -> dict[str, dict[str, torch.Tensor]]:
    """$HONESTFACE_HOME/{stable-diffusion-2-1-base, osdface/{associate_2.ckpt, pytorch_lora_weights.safetensors,
    embedding_change_weights.pth}} with the released key layouts."""
    from safetensors.torch import save_file

    (home / "osdface").mkdir(parents=True)
    LAYOUTS.lightning_checkpoint(home / "osdface" / "associate_2.ckpt")  # tiny VQ: codebook 64 x 32
    proj = LAYOUTS.fill({"conv1.weight": (16, 32, 1), "conv1.bias": (16,), "conv2.weight": (24, 16, 1),
                         "conv2.bias": (24,)}, 9)  # TwoLayerConv1x1: 32 -> 16 -> 24 (the UNet's context width)
    torch.save(proj, home / "osdface" / "embedding_change_weights.pth")
    unet = write_sd21_base(home / "stable-diffusion-2-1-base", cross_attention_dim=24)
    targets = [n for n, m in unet.named_modules() if isinstance(m, torch.nn.Linear)
               and n.endswith(("attn1.to_q", "attn2.to_k", "attn2.to_v", "attn1.to_out.0", "proj_in"))]
    lora = LAYOUTS.fill(LAYOUTS.lora_table(unet, targets, LORA_RANK, "peft"), 3)
    save_file(lora, str(home / "osdface" / "pytorch_lora_weights.safetensors"))
    return {"unet": {k: v.clone() for k, v in unet.state_dict().items()}, "lora": lora, "projection": proj}


@pytest.fixture(scope="module")
def osdface_home(tmp_path_factory) -> tuple[Path, dict]:
    home = tmp_path_factory.mktemp("home")
    return home, write_osdface_home(home)


def face() -> np.ndarray:
    from honestface.data.samples import astronaut

    return np.ascontiguousarray(astronaut()[30:190, 150:310])  # the astronaut's face, 160 px


def test_osdface_by_name_converts_once_restores_at_512_and_equals_the_released_files(osdface_home, monkeypatch,
                                                                                     caplog) -> None:
    from honestface.pipelines import HonestFacePipeline

    home, _ = osdface_home
    monkeypatch.setenv("HONESTFACE_HOME", str(home))
    caplog.set_level("INFO", logger="honestface")
    pipe = HonestFacePipeline.from_pretrained("osdface", detector=None, identity=None)
    assert "converting released model 'osdface' once" in caplog.text
    caplog.clear()
    assert (pipe.resolution, pipe.resize, pipe.resolution_source) == (512, "bilinear", "model")
    assert pipe.model.generator.timestep == 399 and not pipe.model.use_ide
    folder = resolve_pretrained("osdface", "honestface")  # cached: no second conversion
    assert "converting" not in caplog.text
    assert folder.parent == home / "converted" and folder.name.startswith("osdface-float32-")
    manifest = json.loads((folder / "released.json").read_text())
    assert manifest["released"] == "osdface" and manifest["dtype"] == "float32"
    assert sorted(manifest["sources"]) == ["osdface_lora", "osdface_vre", "sd21_base"]
    assert all(len(f["sha256"]) == 64 for part in manifest["sources"].values() for f in part["files"])
    assert str(home) not in (folder / "honestface_config.json").read_text()  # no local path recorded
    # the converted folder restores as the released files built directly (LoRA unmerged) do
    out = pipe(face()).images[0]
    direct = HonestFacePipeline(build_released("osdface"))
    assert direct.resolution == 512
    want = direct(face()).images[0]
    assert out.shape == face().shape and np.abs(out.astype(int) - want.astype(int)).max() <= 1
    # the released VRE sizes were read from the files: codebook 64 x 32, projection 32 -> 16 -> 24
    cfg = pipe.model.vre.config
    assert (cfg.codebook_size, cfg.codebook_dim, cfg.proj_hidden, cfg.out_dim, cfg.num_tokens) == (64, 32, 16, 24, 77)


@pytest.mark.parametrize("unet_format", ["safetensors", "bin"])
def test_osdface_bf16_folder_holds_the_released_merge_order(osdface_home, monkeypatch, tmp_path, unet_format) -> None:
    """infer.py merges the LoRA into the float32 UNet, then casts: the bf16 folder holds exactly that, whether the
    merge is streamed from the UNet's safetensors file (peak memory: the merged UNet in bf16, not the float32 one)
    or, for a UNet stored in another format, done on the whole UNet in memory."""
    import shutil

    from safetensors.torch import load_file

    from honestface.models.generator import OneStepGenerator

    home, written = osdface_home
    if unet_format == "bin":  # the same weights as diffusers' pickle format (weights-only loadable)
        home = shutil.copytree(home, tmp_path / "home", ignore=shutil.ignore_patterns("converted"))
        unet_dir = home / "stable-diffusion-2-1-base" / "unet"
        torch.save(load_file(str(unet_dir / "diffusion_pytorch_model.safetensors")),
                   unet_dir / "diffusion_pytorch_model.bin")
        (unet_dir / "diffusion_pytorch_model.safetensors").unlink()
    else:
        monkeypatch.setattr(OneStepGenerator, "merge_lora", lambda self: pytest.fail("whole-UNet merge in memory"))
    monkeypatch.setenv("HONESTFACE_HOME", str(home))
    folder = released_folder("osdface", dtype=torch.bfloat16, quiet=True)
    assert folder.name.startswith("osdface-bfloat16-")
    frozen = load_file(str(folder / "frozen.safetensors"))
    want = LAYOUTS.released_merge(written["unet"], written["lora"], lora_alpha=16, lora_rank=LORA_RANK)
    unet = {k.removeprefix("generator.unet."): v for k, v in frozen.items() if k.startswith("generator.unet.")}
    assert unet.keys() == want.keys()
    assert all(torch.equal(unet[k], v.to(torch.bfloat16)) for k, v in want.items())
    assert frozen["vre.quantize.embedding.weight"].dtype == torch.float32  # code search stays float32
    assert not (folder / "lora.safetensors").exists()


def test_missing_released_parts_are_named_in_one_line(tmp_path, monkeypatch) -> None:
    (tmp_path / "osdface").mkdir()
    torch.save({}, tmp_path / "osdface" / "associate_2.ckpt")
    monkeypatch.setenv("HONESTFACE_HOME", str(tmp_path))
    with pytest.raises(MissingWeightError) as e:
        released_sources("osdface")
    message = str(e.value)
    assert "\n" not in message and "lacks 2 of its 3 parts" in message
    assert "'sd21_base'" in message and "'osdface_lora'" in message and "'osdface_vre'" not in message
    assert "weights.sd21_base" in message and "fetch --model osdface" in message
    with pytest.raises(ValueError, match="is a vspbfr model: load it with VSPBFR"):
        resolve_pretrained("vspbfr", "honestface")


def test_convert_refuses_a_used_folder_and_a_failure_leaves_nothing(osdface_home, tmp_path, monkeypatch) -> None:
    home, _ = osdface_home
    monkeypatch.setenv("HONESTFACE_HOME", str(home))
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        convert_released("osdface", used)
    assert (used / "keep.txt").read_text() == "mine"
    bad = tmp_path / "bad_lora"
    bad.mkdir()
    (bad / "pytorch_lora_weights.safetensors").write_bytes(b"not a safetensors file")
    (bad / "embedding_change_weights.pth").write_bytes((home / "osdface" / "embedding_change_weights.pth").read_bytes())
    with pytest.raises(Exception):  # noqa: B017 (whatever the reader raises)
        convert_released("osdface", tmp_path / "out", weights={"osdface_lora": bad})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad_lora", "used"]  # no output, no temporary folder


def test_vspbfr_by_name_converts_the_released_files(tmp_path, monkeypatch) -> None:
    from honestface.models.vspbfr.vspbfr import VSPBFR
    from honestface.pipelines import VSPBFRPipeline

    (tmp_path / "vspbfr").mkdir()
    LAYOUTS_VSPBFR.write_released_files(tmp_path / "vspbfr")
    monkeypatch.setenv("HONESTFACE_HOME", str(tmp_path))
    pipe = VSPBFRPipeline.from_pretrained("vspbfr", detector=None)
    assert pipe.resolution == 32  # the tiny preset, recognised from the files' shapes
    direct = LAYOUTS_VSPBFR.from_files(tmp_path / "vspbfr")
    out = pipe(face(), seed=3).images[0]
    assert (VSPBFRPipeline(direct)(face(), seed=3).images[0] == out).all()
    folder = resolve_pretrained("vspbfr", "vspbfr")
    assert VSPBFR.from_pretrained(folder, with_discriminator=True).discriminator is not None  # training continues
    with pytest.raises(ValueError, match="is a honestface model"):
        VSPBFR.from_pretrained("osdface")


def test_infer_script_runs_osdface_by_name(osdface_home, tmp_path) -> None:
    """`scripts/infer.py --model osdface` from a registry folder laid out as the README says: converted once in the
    run's precision, restored at 512, the name and folder in results.json; missing parts: exit 2, one line."""
    import os
    import subprocess
    import sys

    from PIL import Image

    home, _ = osdface_home
    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "lq").mkdir()
    Image.fromarray(face()).save(tmp_path / "lq" / "astronaut.png")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HONESTFACE_HOME": str(home)}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "scripts/infer.py", *args], cwd=repo, env=env, capture_output=True,
                              text=True, timeout=600, check=False)

    done = run("--model", "osdface", "--input", str(tmp_path / "lq"), "--output", str(tmp_path / "out"),
               "--dtype", "bf16")
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "results.json").read_text())
    assert summary["model"] == "osdface" and Path(summary["model_folder"]).name.startswith("osdface-bfloat16-")
    assert (summary["resolution"], summary["resolution_source"], summary["timestep"]) == (512, "model", 399)
    assert np.asarray(Image.open(tmp_path / "out" / "astronaut.png")).shape == face().shape
    env["HONESTFACE_HOME"] = str(tmp_path / "empty")
    missing = run("--model", "osdface", "--input", str(tmp_path / "lq"), "--output", str(tmp_path / "out2"))
    assert missing.returncode == 2
    (line,) = [x for x in missing.stderr.splitlines() if x.startswith("error:")]
    assert "lacks 3 of its 3 parts" in line and not (tmp_path / "out2").exists()


def test_weights_script_fetch_model_and_convert(osdface_home, tmp_path) -> None:
    """`weights.py fetch --model osdface` reports present parts and prints the manual steps for the parts that
    cannot be downloaded (no network is touched: sd21_base is present); `convert` writes a loadable folder."""
    import os
    import shutil
    import subprocess
    import sys

    from honestface.models import HonestFace

    home, _ = osdface_home
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "scripts/weights.py", *args], cwd=repo, env=env, capture_output=True,
                              text=True, timeout=600, check=False)

    partial = tmp_path / "partial"
    shutil.copytree(home / "stable-diffusion-2-1-base", partial / "stable-diffusion-2-1-base")
    done = run("fetch", "--model", "osdface", "--home", str(partial))
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("present  sd21_base:")
    steps = [x for x in lines if x.startswith("manual step")]
    assert len(steps) == 2 and "associate_2.ckpt" in steps[0] and "1Nci6KufB8t2Uj-6tobrw3S7kkfQUTLHV" in steps[0]
    assert "pytorch_lora_weights.safetensors" in steps[1] and str(partial / "osdface") in steps[1]
    assert run("fetch", "--model", "osdface", "--home", str(home)).returncode == 0
    assert run("fetch", "--model", "nope").returncode == 2
    out = tmp_path / "converted"
    done = run("convert", "osdface", "--output", str(out), "--dtype", "bf16", "--home", str(home))
    assert done.returncode == 0, done.stderr[-2000:]
    model = HonestFace.from_pretrained(out, with_discriminator=False)
    assert model.generator.unet.dtype == torch.bfloat16 and model.native_settings.resolution == 512
    again = run("convert", "osdface", "--output", str(out), "--home", str(home))
    assert again.returncode == 1 and again.stderr.startswith("error:") and "not an empty folder" in again.stderr
    assert again.stderr.count("\n") == 1  # refused before any model import
