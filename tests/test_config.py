"""Config system: YAML inheritance, key=value overrides, validation errors, saving, and every shipped YAML."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from honestface.config import ConfigError, load_config, save_config

REPO = Path(__file__).resolve().parents[1]
# configs/accelerate/ holds `accelerate launch --config_file` files, not run configs (tests/test_accelerate_configs.py)
CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml") if p.parent != REPO / "configs" / "accelerate")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_without_file():
    cfg = load_config()
    assert cfg.model.name == "honestface"
    assert cfg.train.output_dir == "runs/honestface"  # interpolation resolved
    assert cfg.data.resolution == 512


def test_inheritance_merge_order_and_overrides(tmp_path):
    write(tmp_path / "base.yaml", "train:\n  max_steps: 10\n  seed: 3\nloss:\n  mfa: 2.0\n")
    write(tmp_path / "mid.yaml", "defaults: [base.yaml]\ntrain:\n  max_steps: 20\n")
    child = write(tmp_path / "sub" / "child.yaml", "defaults: [../mid.yaml]\nloss:\n  identity: 0.5\n")
    cfg = load_config(child, ["train.seed=7", "loss.perceptual_type=lpips_vgg"])
    assert cfg.train.max_steps == 20  # mid beats base
    assert cfg.train.seed == 7  # override beats files
    assert cfg.loss.mfa == 2.0 and cfg.loss.identity == 0.5
    assert cfg.loss.perceptual_type == "lpips_vgg"


def test_overrides_of_lists_and_free_dicts():
    cfg = load_config(None, ["eval.metrics=[psnr,ald]", "model.params.lora_rank=8", "weights.sd21_base=/data/sd"])
    assert list(cfg.eval.metrics) == ["psnr", "ald"]
    assert cfg.model.params.lora_rank == 8
    assert cfg.weights.sd21_base == "/data/sd"


@pytest.mark.parametrize(
    "override, expected",
    [
        ("loss.perceptual_type=foo", ["loss.perceptual_type", "foo", "ea_dists", "lpips_vgg"]),
        ("train.max_step=3", ["unknown config key 'train.max_step'", "train.max_steps"]),
        ("train.max_steps=abc", ["train.max_steps", "abc"]),
        ("train.max_steps=0", ["train.max_steps", "> 0"]),
        ("data.reference_dropout=1.5", ["data.reference_dropout"]),
        ("data.resolution=100", ["data.resolution", "multiple of 8"]),
        ("loss.mfa=-1", ["loss.mfa", ">= 0"]),
        ("notakeyvalue", ["key=value"]),
        ("model.name=stylegan", ["model.name", "honestface", "vspbfr"]),
    ],
)
def test_validation_errors_name_key_and_allowed(override, expected):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    message = str(info.value)
    assert "\n" not in message
    for part in expected:
        assert part in message


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = write(tmp_path / "bad.yaml", "train: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)
    unknown = write(tmp_path / "unknown.yaml", "trian:\n  max_steps: 3\n")
    with pytest.raises(ConfigError, match=r"unknown.yaml.*'trian'.*did you mean train"):
        load_config(unknown)
    write(tmp_path / "a.yaml", "defaults: [b.yaml]\n")
    write(tmp_path / "b.yaml", "defaults: [a.yaml]\n")
    with pytest.raises(ConfigError, match="loop"):
        load_config(tmp_path / "a.yaml")


def test_save_config_round_trip(tmp_path):
    cfg = load_config(None, ["train.max_steps=42", "loss.mfa=0.25"])
    path = save_config(cfg, tmp_path / "run")
    assert path.name == "config.yaml"
    again = load_config(path)
    assert OmegaConf.to_container(again) == OmegaConf.to_container(cfg)
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]  # no temp files left


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(REPO)) for p in CONFIGS])
def test_every_shipped_yaml_validates_and_names_its_command(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith(("# python scripts/", "# accelerate launch scripts/")), first
    assert str(path.relative_to(REPO)) in first, "the command must name this config file"
    load_config(path)


def test_configs_exist():
    assert {"honestface_sd21.yaml", "honestface.yaml"} <= {p.name for p in CONFIGS}


@pytest.mark.parametrize("script", ["train", "infer", "evaluate"])
def test_scripts_print_usage_and_reject_bad_config(script):
    help_run = subprocess.run([sys.executable, f"scripts/{script}.py", "--help"], cwd=REPO, capture_output=True,
                              text=True, timeout=120, check=False)
    assert help_run.returncode == 0
    assert "key=value" in help_run.stdout and "--config" in help_run.stdout
    bad = subprocess.run([sys.executable, f"scripts/{script}.py", "loss.mfa=-1"], cwd=REPO, capture_output=True,
                         text=True, timeout=120, check=False)
    assert bad.returncode == 2
    assert "loss.mfa" in bad.stderr and "Traceback" not in bad.stderr
