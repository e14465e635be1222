"""Training tasks by `train.stage` name (an explicit table, not discovered from file names): the table
`honestface.config` validates `train.stage` against, so a new stage is its file plus one entry here."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the table stays light to import: honestface.config validates train.stage against it
    from honestface.training.task import TrainingTask

TASKS: dict[str, str] = {
    "honestface": "honestface.training.tasks.honestface:HonestFaceTask",
    "vae": "honestface.training.tasks.vae:AutoencoderTask",
    "vre": "honestface.training.tasks.vre:VRETask",
    "vspbfr_encoder": "honestface.training.tasks.vspbfr_encoder:VSPBFREncoderTask",
    "vspbfr_diffuser": "honestface.training.tasks.vspbfr_diffuser:VSPBFRDiffuserTask",
    "vspbfr_restoration": "honestface.training.tasks.vspbfr_restoration:VSPBFRRestorationTask",
}


def build_task(stage: str, cfg) -> TrainingTask:
    """The task of `stage`, built after seeding every RNG with `train.seed` (random initialisations repeat)."""
    from accelerate.utils import set_seed

    if stage not in TASKS:
        raise ValueError(f"unknown train.stage {stage!r}; allowed: {', '.join(TASKS)}")
    module, name = TASKS[stage].split(":")
    set_seed(int(cfg.train.seed))
    return getattr(importlib.import_module(module), name)(cfg)
