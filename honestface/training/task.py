"""What the trainer trains: a `TrainingTask` owns its networks, losses, data and one optimisation step.

The `Trainer` (trainer.py) is generic: accelerate set-up, optimisers, the loop, logging, checkpoints, resume,
guards. A task plugs into it. Three tasks share it:

- `honestface`: the HonestFace generator / latent-discriminator alternation (tasks/honestface.py);
- `vae`: a small SD-style VAE trained on face crops, for the small-scale recipe (tasks/vae.py);
- `vre`: the VRE's dual HQ/LQ VQ autoencoders with the association loss, exported as a frozen VRE (tasks/vre.py).

Contract (the trainer calls, in this order):
1. `__init__(cfg)`: build everything on the CPU from the config (no device, no accelerate yet).
2. `module`: one `nn.Module` holding every network and loss the step uses; the trainer wraps it with
   `accelerator.prepare` (DDP, mixed precision). Its `forward(batch, phase)` computes one phase and returns
   `(loss, logs, carry)`: the scalar to backpropagate, scalars to log, and tensors handed to the step's later
   phases (merged into their batch, e.g. the generator's detached fake latents for the discriminator phase).
   All parameters that should train must be reachable from it.
3. `param_groups()`: optimiser name ("generator", "discriminator", ...) -> its parameters. One optimiser and one
   scheduler per name; they step in the order given by `phases(step)`.
4. `phases(step)`: the phases of this step, e.g. ["generator", "discriminator"]; each phase name is also the
   optimiser it steps.
5. `train_dataset()` / `val_dataset()` and `collate`: what the loader iterates; `prepare_batch(batch, step)` turns a
   collated CPU batch (already moved to the device) into model inputs (degradation on the device, seeding by
   (seed, step) so a resumed run draws exactly the same numbers).
6. `images(module, batch)`: named image tensors in [-1, 1] for the validation grid.
7. `export(module, directory)`: write the final, loadable result (e.g. `HonestFace.save_pretrained`).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import Dataset


class TrainingTask(abc.ABC):
    """Base class of the tasks; see the module docstring for the contract."""

    name: str = "task"

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg

    @property
    @abc.abstractmethod
    def module(self) -> nn.Module: ...

    @abc.abstractmethod
    def param_groups(self) -> dict[str, list[nn.Parameter]]: ...

    def phases(self, step: int) -> list[str]:
        return list(self.param_groups())

    def learning_rates(self) -> dict[str, float]:
        """Learning rate per optimiser (default: optim.lr for every one)."""
        return {name: float(self.cfg.optim.lr) for name in self.param_groups()}

    @abc.abstractmethod
    def train_dataset(self) -> Dataset: ...

    def val_dataset(self) -> Dataset | None:
        return None

    def collate(self) -> Callable[[list[dict]], dict] | None:
        return None

    def prepare_batch(self, batch: dict[str, Any], step: int) -> dict[str, Any]:
        return batch

    @torch.no_grad()
    def images(self, module: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {}

    @abc.abstractmethod
    def export(self, module: nn.Module, directory: Path) -> None: ...
