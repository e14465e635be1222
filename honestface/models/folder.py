"""Model folders: what `HonestFace` and `VSPBFR` share to save and load themselves.

A model folder is one JSON config (with a `format` field naming the model family) next to safetensors files.
Saving (our choice, so an interrupted save never leaves a folder that loads as something it is not): every file is
written into a hidden sibling folder first; a new folder is then renamed into place in one step, and an existing
one gets the new files by `os.replace`, weights first and the config last, after which the files of the family
that this save did not write (e.g. a frozen-weights file a new save no longer needs) are removed. Other files in
the folder (a training run's notes, a README) are left alone.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

__all__ = ["read_folder_config", "save_model_folder", "state_to_save"]


def state_to_save(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous tensors, as `safetensors.torch.save_file` wants them."""
    return {k: v.detach().contiguous() for k, v in state.items()}


def read_folder_config(folder: str | os.PathLike, config_file: str, fmt: str, what: str) -> dict[str, Any]:
    """The JSON config of a model folder; a missing file, invalid JSON or another `format` is a one-line error."""
    path = Path(folder) / config_file
    if not path.is_file():
        raise FileNotFoundError(f"not a {what} folder (no {config_file}): {folder}")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(config, dict) or config.get("format") != fmt:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise ValueError(f"{path}: not a {what} config (format {found!r})")
    return config


def save_model_folder(directory: str | os.PathLike, config_file: str, config: dict[str, Any],
                      write_weights: Callable[[Path], None], family_files: Iterable[str]) -> Path:
    """Write a model folder atomically (module docstring): `write_weights(tmp)` writes the weight files into a
    temporary folder, the config is written last; `family_files` are the file names this model family may own
    (removed from an existing folder when this save did not write them). Returns the folder."""
    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"cannot save a model into {out}: it is a file")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.saving-", dir=out.parent))
    try:
        write_weights(tmp)
        (tmp / config_file).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        if not out.exists():
            os.replace(tmp, out)
            return out
        written = sorted(p.name for p in tmp.iterdir())
        for name in [n for n in written if n != config_file] + [config_file]:
            os.replace(tmp / name, out / name)
        for name in set(family_files) - set(written):
            (out / name).unlink(missing_ok=True)
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
