"""Learning-rate schedules of a run, recorded in each checkpoint so a resume continues the same schedule.

Our choices:
- `optim.scheduler` is one of diffusers' "constant", "cosine", "linear", each with `optim.warmup_steps` of linear
  warm-up ("constant" with warm-up is diffusers' "constant_with_warmup": diffusers' plain "constant" would ignore
  the warm-up silently).
- A checkpoint records the schedule it was stepped on: the scheduler, the warm-up and, for the schedules whose
  shape depends on it (cosine, linear), `train.max_steps`. A resume whose schedule differs stops with a one-line
  error naming the recorded values (it does not re-fit a schedule mid-run). `train.max_steps` may change freely
  with "constant" (the schedule does not depend on it), so a constant-rate run can be extended.
"""

from __future__ import annotations

from typing import Any

import torch

DEPENDS_ON_MAX_STEPS = ("cosine", "linear")


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, warmup_steps: int, max_steps: int,
                    num_processes: int) -> Any:
    """The diffusers scheduler; its step counts are multiplied by `num_processes` because accelerate steps a
    prepared scheduler once per process."""
    from diffusers.optimization import get_scheduler

    if name == "constant" and warmup_steps > 0:
        name = "constant_with_warmup"
    return get_scheduler(name, optimizer, num_warmup_steps=warmup_steps * num_processes,
                         num_training_steps=max_steps * num_processes)


def schedule_record(scheduler: str, warmup_steps: int, max_steps: int) -> dict[str, Any]:
    """What a checkpoint records of the schedule (max_steps only where the schedule depends on it)."""
    record: dict[str, Any] = {"scheduler": scheduler, "warmup_steps": int(warmup_steps)}
    if scheduler in DEPENDS_ON_MAX_STEPS:
        record["max_steps"] = int(max_steps)
    return record


def check_same_schedule(recorded: dict[str, Any] | None, current: dict[str, Any], directory: Any) -> None:
    """Raise a one-line ValueError when resuming `directory` with another schedule than the one it recorded
    (checkpoints without a record, written before schedules were recorded, are not checked)."""
    if recorded is None or recorded == current:
        return
    keys = {"scheduler": "optim.scheduler", "warmup_steps": "optim.warmup_steps", "max_steps": "train.max_steps"}
    was = " ".join(f"{keys[k]}={v}" for k, v in recorded.items())
    now = " ".join(f"{keys[k]}={v}" for k, v in current.items())
    raise ValueError(f"{directory} was trained on the learning-rate schedule {was}, this resume asks for {now}; "
                     f"resume with {was}, or start a new run (train.overwrite=true or another train.output_dir)")
