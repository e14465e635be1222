"""Reading checkpoint files safely: safetensors, or `torch.load(weights_only=True)`, so a file from the internet never
runs code.

`load_checkpoint(path)` reads a whole checkpoint (nested dicts, lists, tensors); `load_state_dict(path)` a flat
{name: tensor} dict (unwrapping Lightning's `state_dict`, basicsr's `params_ema` / `params`); `check_state_dict`
compares one with a model's in one line (missing, unexpected, wrong shape). Metadata that training scripts pickle
next to their tensors (argparse.Namespace, Lightning callbacks and hyper-parameters, OmegaConf containers) is read
as inert data by stand-in classes; any other pickled global (os.system, a model class, ...) makes the file refused
with a `WeightsError` naming it. Finding and downloading the files is `honestface.weights`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from honestface.weights import WeightsError

__all__ = [
    "STATE_DICT_WRAPPERS",
    "CheckpointNamespace",
    "check_state_dict",
    "load_checkpoint",
    "load_state_dict",
    "read_checkpoint",
]

PathLike = str | os.PathLike[str]

STATE_DICT_WRAPPERS = ("state_dict", "params_ema", "params", "model")

# Classes that training scripts pickle next to their tensors as plain data, read as inert holders (never imported):
# argparse.Namespace (the `args` of VSPBFR's training scripts), Lightning callbacks / hyper-parameter dicts and the
# OmegaConf containers and typing names inside them (old Lightning checkpoints such as OSDFace's associate_2.ckpt).
# Any other global (os.system, builtins.eval, subprocess.*, a model class, ...) makes the file refused.
NAMESPACE_GLOBALS = ("argparse.Namespace",)
INERT_GLOBAL_PREFIXES = ("pytorch_lightning.", "lightning.", "lightning_fabric.", "omegaconf.", "typing.")
DICT_GLOBAL_SUFFIXES = (".AttributeDict",)  # Lightning's hyper-parameter dict subclass: read as a plain dict


class _PlainDict:
    """Stand-in for a pickled dict subclass (Lightning's `AttributeDict`): unpickling builds a plain dict, whose
    items the weights-only loader can fill (it fills no other dict type)."""

    def __new__(cls, *args, **kwargs):
        return {}


class _Inert(dict):
    """Stand-in for a metadata class pickled into a checkpoint (Lightning callbacks, hyper-parameters).

    Built instead of the real class for the allowed globals above: it stores what it is given and never runs any
    code from the file.
    """

    __hash__ = object.__hash__

    def __new__(cls, *args, **kwargs):
        return dict.__new__(cls)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__()

    def __setstate__(self, state) -> None:
        self.state = state

    def append(self, item) -> None:
        self.setdefault("_items", []).append(item)

    def extend(self, items) -> None:
        self.setdefault("_items", []).extend(items)


class CheckpointNamespace(dict):
    """What a pickled `argparse.Namespace` (e.g. `args` in VSPBFR's checkpoints) reads back as: a dict of its
    attributes, also readable as attributes (`ns.size`). Built from the pickled state only; no code runs."""

    def __new__(cls, *args, **kwargs):
        return dict.__new__(cls)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(**{k: v for k, v in kwargs.items() if isinstance(k, str)})

    def __setstate__(self, state) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state) form
            state = state[0]
        if isinstance(state, dict):
            self.update(state)

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _refused(path: Path, names: list[str]) -> WeightsError:
    return WeightsError(f"{path}: refusing to load: the file references {', '.join(names[:4])}, which is neither a "
                        f"tensor nor known checkpoint metadata (a file can run code this way)")


def _allowed_stand_ins(path: Path, names: list[str]) -> list[tuple[type, str]]:
    """(stand-in class, pickled global name) for every global of the file, or WeightsError for a global outside
    NAMESPACE_GLOBALS / INERT_GLOBAL_PREFIXES."""
    refused = [n for n in names if n not in NAMESPACE_GLOBALS and not n.startswith(INERT_GLOBAL_PREFIXES)]
    if refused:
        raise _refused(path, refused)
    out = []
    for name in names:
        base = CheckpointNamespace if name in NAMESPACE_GLOBALS else _PlainDict if name.endswith(
            DICT_GLOBAL_SUFFIXES) else _Inert
        out.append((type(name.rsplit(".", 1)[-1], (base,), {"__module__": __name__}), name))
    return out


def load_checkpoint(path: PathLike, map_location: str = "cpu"):
    """The object stored in a checkpoint file, loaded without ever running code from it.

    `.safetensors` files load with safetensors; anything else with `torch.load(weights_only=True)`. Training scripts
    pickle a few metadata classes next to the tensors (argparse `args`, old Lightning callback / hyper-parameter
    classes), which a weights-only load refuses: those are read as holders (`CheckpointNamespace` for
    `argparse.Namespace`, a plain dict for Lightning's `AttributeDict`, inert placeholders for other Lightning /
    OmegaConf / typing names; torch >= 2.5), never imported. A file that references any other global is refused
    with a `WeightsError` naming it.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")

    def fail(err: BaseException) -> WeightsError:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found:  # a legacy (non-zip) file, whose globals torch cannot list before loading: name the first
            return _refused(path, [found.group(1)])
        first = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).splitlines()[0] if str(err) else ""
        return WeightsError(f"{path}: cannot be read as a weights-only checkpoint ({type(err).__name__}: {first})")

    if path.suffix == ".safetensors":  # no pickle at all; a damaged or disguised file is one line naming it
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device=map_location)
        except Exception as err:  # safetensors_rust.SafetensorError, or an OSError
            raise fail(err) from err

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        finder = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
        if finder is None:
            raise fail(err) from err
        try:
            names = finder(str(path))
        except Exception as err2:  # e.g. a legacy, non-zip file
            raise fail(err) from err2
        stand_ins = _allowed_stand_ins(path, names)
        try:
            with torch.serialization.safe_globals(stand_ins):
                return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as err2:
            raise fail(err2) from err2
    except Exception as err:  # truncated file, not a checkpoint at all
        raise fail(err) from err


def read_checkpoint(checkpoint: object, what: str = "checkpoint") -> tuple[dict, str]:
    """A checkpoint given as a path (read with `load_checkpoint`, weights-only) or as an already loaded dict ->
    (that dict, a name for error messages: the path, else `what`). Anything else is a one-line TypeError."""
    from collections.abc import Mapping

    source = what
    if isinstance(checkpoint, (str, os.PathLike)):
        source = str(checkpoint)
        checkpoint = load_checkpoint(checkpoint)
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f"{source}: expected a dict, got {type(checkpoint).__name__}")
    return checkpoint, source


def load_state_dict(path: PathLike, *, unwrap: tuple[str, ...] = STATE_DICT_WRAPPERS,
                    strip_prefix: str | None = "module.", map_location: str = "cpu") -> dict:
    """Tensors of a checkpoint file as a flat {name: tensor} dict (see `load_checkpoint` for how it is read).

    A dict that wraps the weights under one of `unwrap` (Lightning `state_dict`, basicsr `params_ema`/`params`)
    is unwrapped; `strip_prefix` (DistributedDataParallel's `module.`) is removed from every key that has it.
    Anything that is not a tensor at that level (an object smuggled in with the weights) is an error.
    """
    import torch

    state = load_checkpoint(path, map_location)
    for key in unwrap:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state dict, got {type(state).__name__}")
    odd = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if odd:
        raise WeightsError(f"{path}: expected a state dict of tensors, but {odd[0]!r} holds a "
                           f"{type(state[odd[0]]).__name__}")
    if strip_prefix:
        state = {k.removeprefix(strip_prefix): v for k, v in state.items()}
    return state


def check_state_dict(expected: object, state: dict, source: str = "state dict", what: str = "the model") -> None:
    """Raise one ValueError line listing missing / unexpected / wrongly shaped keys of `state`.

    `expected` is an nn.Module or a reference state dict.
    """
    ref = expected.state_dict() if hasattr(expected, "state_dict") else dict(expected)  # type: ignore[arg-type]
    missing = sorted(set(ref) - set(state))
    unexpected = sorted(set(state) - set(ref))
    wrong_shape = sorted(f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in ref.items()
                         if k in state and tuple(state[k].shape) != tuple(v.shape))
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
        if items:
            shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
            parts.append(f"{label} keys: {shown}")
    if parts:
        raise ValueError(f"{source} does not match {what}; " + "; ".join(parts))
