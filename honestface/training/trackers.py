"""Experiment trackers: `train.report_to` names one of accelerate's trackers, or "none".

Our choices: the allowed names are accelerate's own list (`accelerate.utils.LoggerType`: tensorboard, wandb,
mlflow, comet_ml, aim, clearml, dvclive, swanlab, trackio, and "all" = every installed one), checked before the
run starts. A named tracker whose package is not installed is an error (accelerate alone would drop it with a
debug message and the run would log nothing). Scalars go to every tracker through `accelerator.log`; the
validation image grid goes to each tracker that can take images (tensorboard, wandb, aim, clearml, swanlab) and is
left out of the others.
"""

from __future__ import annotations

from typing import Any

import torch

from honestface.log import get_logger

logger = get_logger(__name__)


def check_report_to(report_to: str) -> str | None:
    """`train.report_to` -> what `Accelerator(log_with=...)` takes (None for "none"); a one-line ValueError for a
    name accelerate does not know or a tracker whose package is not installed."""
    from accelerate.tracking import get_available_trackers
    from accelerate.utils import LoggerType

    if report_to == "none":
        return None
    names = [t.value for t in LoggerType]
    if report_to not in names:
        raise ValueError(f"bad value for 'train.report_to': {report_to!r}; allowed: none, {', '.join(names)}")
    installed = [str(t.value) for t in get_available_trackers()]
    if report_to != "all" and report_to not in installed:
        raise ValueError(f"train.report_to={report_to} needs the {report_to} package, which is not installed; install "
                         f"it or use one of: none, {', '.join(installed) or '(no tracker installed)'}")
    return report_to


def log_image_grid(trackers: list[Any], tag: str, grid: torch.Tensor, step: int) -> int:
    """Log a (3, H, W) image in [0, 1] to every tracker that takes images; returns how many took it."""
    done = 0
    for tracker in trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_image(tag, grid, step)
        elif hasattr(tracker, "log_images"):
            image = (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()  # (H, W, 3)
            tracker.log_images({tag: [image]}, step=step)
        else:
            logger.debug("tracker %s takes no images; validation grid not logged to it", tracker.name)
            continue
        done += 1
    return done
