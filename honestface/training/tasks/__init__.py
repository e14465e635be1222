"""Training tasks by `train.stage` name (an explicit table, not discovered from file names)."""

from __future__ import annotations

import importlib

from honestface.training.task import TrainingTask

TASKS: dict[str, str] = {
    "honestface": "honestface.training.tasks.honestface:HonestFaceTask",
    "vae": "honestface.training.tasks.autoencoder:AutoencoderTask",
    "vre": "honestface.training.tasks.vre:VRETask",
}


def build_task(stage: str, cfg) -> TrainingTask:
    if stage not in TASKS:
        raise ValueError(f"unknown train.stage {stage!r}; allowed: {', '.join(TASKS)}")
    module, name = TASKS[stage].split(":")
    return getattr(importlib.import_module(module), name)(cfg)
