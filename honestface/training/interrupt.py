"""Ctrl-C during training: finish the current step, then save and stop.

Our choice: the first SIGINT only sets a flag, so the run stops between two steps, where the weights, optimisers,
schedulers, data position and RNG states all belong to the same finished step and the checkpoint resumes exactly.
A second SIGINT raises KeyboardInterrupt at once (the trainer then saves only if no weight of the broken step was
updated yet). With several processes the flag is summed over them every step, so all stop at the same step.
Outside the main thread (where Python delivers no signals) nothing is installed.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import torch
from typing_extensions import Self  # typing.Self is Python 3.11+; we support 3.10 (a torch dependency)

from honestface.log import get_logger

logger = get_logger(__name__)


class DeferredInterrupt:
    """Context manager: while active, a first Ctrl-C sets `requested` instead of raising."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        logger.warning("Ctrl-C: stopping after this step and saving a checkpoint (Ctrl-C again to stop at once)")

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False

    def stop_now(self, accelerator: Any) -> bool:
        """Whether any process was asked to stop (a collective call with several processes)."""
        if accelerator.num_processes == 1:
            return self.requested
        flag = torch.tensor(float(self.requested), device=accelerator.device)
        return bool(accelerator.reduce(flag, reduction="sum") > 0)
