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


def test_weight_keys_must_name_known_weights(tmp_path):
    """A misspelt `weights.<name>` used to be kept and silently ignored; now the loader names it and the closest
    registry name, whether it comes from an override or a file (the file's `defaults` included)."""
    with pytest.raises(ConfigError) as info:
        load_config(None, ["weights.sd21_bsae=/data/sd"])
    assert str(info.value) == ("override 'weights.sd21_bsae=/data/sd': unknown config key 'weights.sd21_bsae' "
                               "(did you mean weights.sd21_base?)")
    write(tmp_path / "base.yaml", "weights:\n  vgg16_imagnet: /w/vgg.pth\n")
    child = write(tmp_path / "child.yaml", "defaults: [base.yaml]\n")
    with pytest.raises(ConfigError, match=r"base.yaml: unknown config key 'weights.vgg16_imagnet' \(did you mean "
                                          r"weights.vgg16_imagenet\?\)"):
        load_config(child)
    with pytest.raises(ConfigError, match=r"'weights.zzz'.*scripts/weights.py list"):
        load_config(None, ["weights.zzz=/x"])
    cfg = load_config(None, ["weights.retinaface_mobilenet0_25=/r.pth", "weights.dlib_resnet=/d.dat",
                             "weights.AWING_FAN=/a.pth"])  # `.` written `_`, a bundled weight, any case
    assert dict(cfg.weights) == {"retinaface_mobilenet0_25": "/r.pth", "dlib_resnet": "/d.dat", "AWING_FAN": "/a.pth"}


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


def _choices(section: type, key: str) -> set[str]:
    """The names a config key's Literal type allows (None dropped)."""
    import typing

    hint = typing.get_type_hints(section)[key]
    if typing.get_origin(hint) is not typing.Literal:  # Literal[...] | None
        hint = next(a for a in typing.get_args(hint) if typing.get_origin(a) is typing.Literal)
    return set(typing.get_args(hint))


def test_config_choices_are_the_library_tables():
    """Every name list a config validates against is the table the code builds from: a new detector, preset or
    stage added to its table and not to the config (or the reverse) fails here instead of at a user's run."""
    from honestface import config as c
    from honestface.data.degradation_presets import PRESETS
    from honestface.face.detection import DETECTORS
    from honestface.face.identity import IDENTITY_ENCODERS
    from honestface.face.landmarks import LANDMARKERS
    from honestface.face.parsing import ARCHS
    from honestface.losses.adversarial import ADVERSARIAL_KINDS
    from honestface.losses.perceptual import PERCEPTUAL_KINDS
    from honestface.metrics.protocols import PROTOCOLS
    from honestface.pipelines.honestface_pipeline import MODES
    from honestface.training.tasks import TASKS

    pairs = {
        ("face", "detector"): (c.FaceConfig, "detector", set(DETECTORS)),
        ("face", "landmarks"): (c.FaceConfig, "landmarks", set(LANDMARKERS)),
        ("face", "identity"): (c.FaceConfig, "identity", set(IDENTITY_ENCODERS)),
        ("face", "parsing"): (c.FaceConfig, "parsing", {"none", *ARCHS}),
        ("degradation", "preset"): (c.DegradationConfig, "preset", set(PRESETS)),
        ("loss", "perceptual_type"): (c.LossConfig, "perceptual_type", set(PERCEPTUAL_KINDS)),
        ("loss", "adversarial_type"): (c.LossConfig, "adversarial_type", set(ADVERSARIAL_KINDS)),
        ("train", "stage"): (c.TrainConfig, "stage", set(TASKS)),
        ("infer", "mode"): (c.InferConfig, "mode", set(MODES)),
        ("eval", "protocol"): (c.EvalConfig, "protocol", set(PROTOCOLS)),
    }
    for (section, key), (cls, field, table) in pairs.items():
        assert _choices(cls, field) == table, f"{section}.{key}"


def test_only_apps_and_training_read_configs():
    """The libraries (pipelines, metrics, models, data, face, losses) take plain typed arguments: no module outside
    honestface/apps, honestface/training and the config module itself imports the config machinery."""
    import re

    package = Path(__file__).resolve().parents[1] / "honestface"
    pattern = re.compile(r"^\s*(from omegaconf|import omegaconf|from honestface\.config|from honestface import config)",
                         re.MULTILINE)
    readers = sorted(p.relative_to(package).as_posix() for p in package.rglob("*.py") if pattern.search(p.read_text()))
    assert [r for r in readers if not r.startswith(("apps/", "training/")) and r != "config.py"] == []
    assert "apps/infer.py" in readers and "apps/evaluate.py" in readers  # the rule is not vacuous


def test_shipped_configs_load_by_name_from_any_folder(tmp_path, monkeypatch):
    """`--config tiny/honestface` is the YAML shipped in the package (what an installed `honestface-train` reads from
    any folder); an existing path of that name wins; an unknown name lists the shipped ones."""
    from honestface.config import CONFIG_DIR, shipped_configs

    assert (REPO / "configs").resolve() == CONFIG_DIR  # the repository's configs/ is the package data
    assert "tiny/honestface" in shipped_configs() and not any(n.startswith("accelerate/") for n in shipped_configs())
    monkeypatch.chdir(tmp_path)
    by_name = load_config("tiny/honestface", ["train.max_steps=5"])
    assert OmegaConf.to_container(by_name) == OmegaConf.to_container(
        load_config(REPO / "configs" / "tiny" / "honestface.yaml", ["train.max_steps=5"]))
    write(tmp_path / "tiny" / "honestface", "train:\n  max_steps: 7\n")
    assert load_config("tiny/honestface").train.max_steps == 7
    with pytest.raises(ConfigError, match=r"config file not found: .*tiny/honestfac .*tiny/honestface, tiny/vae"):
        load_config("tiny/honestfac")
