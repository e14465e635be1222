"""The small-scale HonestFace recipe: stage "vae" -> stage "vre" -> stage "honestface" on one folder of faces.

HonestFace (arXiv 2505.18469) freezes a pretrained SD VAE and the OSDFace VRE and only tunes the UNet's LoRA and the
fusion. At tiny width neither frozen part exists, so this recipe (ours, docs/architecture.md "Two recipes") first
trains them as short earlier stages of the same trainer, then the HonestFace stage with `model.params.vae_path` /
`model.params.vre_path` pointing at their exports:

1. `configs/tiny/vae.yaml`: a small KL autoencoder on the HQ crops -> `<root>/vae/final/vae`;
2. `configs/tiny/vre.yaml`: the dual HQ/LQ VQ codebooks with association -> `<root>/vre/final/vre`;
3. `configs/tiny/honestface.yaml`: the one-step generator, IDE, fusion and latent discriminator -> `<root>/honestface/final`.

Each stage resumes from its latest checkpoint (`train.resume=latest`) and is skipped when its export already holds
the requested number of steps, so rerunning continues an interrupted run instead of starting over. Used by
`scripts/quickstart.py` and `examples/quickstart.ipynb`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

__all__ = ["STAGES", "StageResult", "default_config_dir", "recipe_stage_config", "run_small_scale_recipe"]

STAGES: tuple[str, ...] = ("vae", "vre", "honestface")


@dataclass
class StageResult:
    stage: str
    output_dir: Path
    final: Path  # the stage's export folder
    steps: int
    skipped: bool  # already trained to `steps` by an earlier run
    seconds: float


def default_config_dir() -> Path:
    """The configs shipped in the package (`honestface/configs/`, also the repository's `configs/`)."""
    from honestface.config import CONFIG_DIR

    if not (CONFIG_DIR / "tiny").is_dir():
        raise FileNotFoundError(f"the recipe configs are not at {CONFIG_DIR}; pass config_dir= (a folder with tiny/)")
    return CONFIG_DIR


def _finished(output_dir: Path, steps: int) -> bool:
    info = output_dir / "final" / "training.json"
    if not info.is_file():
        return False
    return int(json.loads(info.read_text()).get("step", -1)) == steps


def recipe_stage_config(stage: str, train_dir: str | os.PathLike, root: str | os.PathLike, steps: int,
                        overrides: Sequence[str] = (), config_dir: str | os.PathLike | None = None) -> DictConfig:
    """The validated config of recipe stage `stage`: its tiny YAML + data, output, steps and earlier exports."""
    from honestface.config import load_config

    if stage not in STAGES:
        raise ValueError(f"unknown recipe stage {stage!r}; allowed: {', '.join(STAGES)}")
    if steps < 1:
        raise ValueError(f"steps for stage {stage!r} must be >= 1, got {steps}")
    root = Path(root)
    config = Path(config_dir) if config_dir is not None else default_config_dir()
    items = [f"data.train_dir={Path(train_dir)}", f"train.output_dir={root / stage}", f"train.max_steps={steps}",
             "train.resume=latest", "train.report_to=tensorboard"]
    if stage == "honestface":
        items += [f"model.params.vae_path={root / 'vae' / 'final' / 'vae'}",
                  f"model.params.vre_path={root / 'vre' / 'final' / 'vre'}"]
    return load_config(config / "tiny" / f"{stage}.yaml", [*items, *overrides])


def run_small_scale_recipe(train_dir: str | os.PathLike, root: str | os.PathLike, steps: Mapping[str, int],
                           overrides: Mapping[str, Sequence[str]] | None = None,
                           config_dir: str | os.PathLike | None = None,
                           progress: Callable[[str], None] | None = print) -> dict[str, StageResult]:
    """Train the three stages in order under `root/<stage>`; returns each stage's result (export folder, time).

    steps: stage -> optimisation steps (every stage must be given). overrides: stage -> extra `key=value` items.
    """
    from honestface.training import run_training

    missing = [s for s in STAGES if s not in steps]
    if missing:
        raise ValueError(f"steps has no entry for stage {missing[0]!r}; give all of {', '.join(STAGES)}")
    results: dict[str, StageResult] = {}
    for stage in STAGES:
        cfg = recipe_stage_config(stage, train_dir, root, int(steps[stage]), (overrides or {}).get(stage, ()),
                                  config_dir)
        out = Path(cfg.train.output_dir)
        t0 = time.perf_counter()
        skipped = _finished(out, int(steps[stage]))
        if skipped:
            if progress:
                progress(f"[{stage}] already trained for {steps[stage]} steps: {out / 'final'}")
        else:
            if progress:
                progress(f"[{stage}] training {steps[stage]} steps -> {out}")
            code = run_training(cfg)
            if code != 0:
                raise RuntimeError(f"recipe stage {stage!r} stopped with exit code {code}; see {out}")
        results[stage] = StageResult(stage, out, out / "final", int(steps[stage]), skipped, time.perf_counter() - t0)
    return results
