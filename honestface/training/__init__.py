"""Training: `run_training(cfg)` is what `scripts/train.py` calls. See trainer.py (the loop) and task.py (what a
stage plugs in)."""

from __future__ import annotations

from omegaconf import DictConfig


def run_training(cfg: DictConfig) -> int:
    """Train the stage named by `train.stage` with the config; returns the process exit code."""
    from honestface.training.tasks import build_task
    from honestface.training.trainer import Trainer

    task = build_task(cfg.train.stage, cfg)
    return Trainer(cfg, task).train()


__all__ = ["run_training"]
