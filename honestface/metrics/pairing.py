"""Pairing of evaluation folders: restored / LQ folders with the ground truth by relative name, references per image.

A restored folder ("method") pairs with the ground-truth folder by relative path without extension (`a/b.png`
matches `a/b.jpg`); every GT image must have exactly one partner and there must be no extra ones, otherwise a
one-line `PairingError` lists the missing and extra names. References of an image follow the rule inference uses
(`honestface.data.reference_rule`: a mapping file, `refs/<relative stem>/`, the identity layout `refs/<parent>/`,
or one shared folder). Our choice: the published metric scripts pair
by sorted file name, which gives the same pairs when both folders hold the same names, the only case we accept.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["PairingError", "index_images", "pair_folder", "parse_methods"]


class PairingError(ValueError):
    """Restored / LQ folders do not hold the same images as the ground truth (one line: missing and extra names)."""


def index_images(folder: Path) -> dict[str, Path]:
    """{relative path without extension (posix): file} of every image under `folder`."""
    from honestface.io import list_images

    out: dict[str, Path] = {}
    for p in list_images(folder):
        key = p.relative_to(folder).with_suffix("").as_posix()
        if key in out:
            raise PairingError(f"two images with the same name in {folder}: {out[key].name} and {p.name}")
        out[key] = p
    return out


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:10])
    return shown + (f", ... ({len(items) - 10} more)" if len(items) > 10 else "")


def pair_folder(folder: Path, gt: dict[str, Path], what: str, gt_dir: Path) -> tuple[dict[str, Path], str | None]:
    """Index `folder` and compare it with the GT index: (index, None) or (index, one-line mismatch description)."""
    found = index_images(folder)
    missing = sorted(set(gt) - set(found))
    extra = sorted(set(found) - set(gt))
    if not missing and not extra:
        return found, None
    parts = [f"{len(missing)} missing ({_names(missing)})"] if missing else []
    parts += [f"{len(extra)} extra ({_names(extra)})"] if extra else []
    return found, f"{what} folder {folder} does not match the ground truth {gt_dir}: " + "; ".join(parts)


def parse_methods(restored: str | os.PathLike | Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike]
                  ) -> dict[str, Path]:
    """Folders (or `name=folder` items, or a {name: folder} mapping) -> {method name: folder}; the name defaults to
    the folder's name."""
    if isinstance(restored, Mapping):
        restored = [f"{name}={folder}" for name, folder in restored.items()]
    items = [restored] if isinstance(restored, (str, os.PathLike)) else list(restored)
    if not items:
        raise ValueError("no restored folder given (--restored DIR [DIR ...] or eval.restored=...)")
    methods: dict[str, Path] = {}
    for item in items:
        text = str(item)
        name, _, path = text.partition("=") if "=" in text and not Path(text).exists() else ("", "", text)
        folder = Path(path)
        name = name or folder.resolve().name
        if not folder.is_dir():
            raise FileNotFoundError(f"restored folder not found: {folder}")
        if name in methods:
            raise ValueError(f"two restored folders are both named {name!r}: give them names as name=path")
        methods[name] = folder
    return methods
