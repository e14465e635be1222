"""Per-image metadata sidecars: `<image stem>.json` next to an aligned face, written by data preparation.

The MFA loss and the landmark metrics need landmarks (and optionally a parsing mask) of every training and test
face; computing them once at preparation time keeps the training loop free of face detection. A sidecar holds:

    {"scheme": "dlib68", "landmarks": [[x, y], ...],   # dense landmarks in crop pixels
     "points5": [[x, y] x 5], "size": [H, W],            # 5 points in crop pixels, crop size
     "source": "photo.jpg", "box": [x0, y0, x1, y1],     # where the face came from (photo pixels)
     "matrix": [[a, b, c], [d, e, f]],                   # photo pixels -> crop pixels
     "parsing": "name_parsing.png"}                      # optional label map, relative to the sidecar

Every key is optional; readers take what they need.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from honestface.io import atomic_write_text

SIDECAR_SUFFIX = ".json"


def sidecar_path(image_path: str | os.PathLike) -> Path:
    """The sidecar of an image: same folder, same stem, `.json`."""
    return Path(image_path).with_suffix(SIDECAR_SUFFIX)


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def write_sidecar(image_path: str | os.PathLike, meta: dict[str, Any]) -> Path:
    """Write the sidecar of `image_path` atomically (numpy arrays become lists)."""
    return atomic_write_text(sidecar_path(image_path), json.dumps(_plain(meta)))


def read_sidecar(image_path: str | os.PathLike) -> dict[str, Any] | None:
    """The sidecar of `image_path` with `landmarks`/`points5`/`matrix`/`box` as float64 arrays; None if absent.

    A sidecar that is not valid JSON raises ValueError naming the file.
    """
    path = sidecar_path(image_path)
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: sidecar is not valid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: sidecar must be a JSON object")  # noqa: TRY004  (bad file content)
    for key in ("landmarks", "points5", "matrix", "box"):
        if meta.get(key) is not None:
            meta[key] = np.asarray(meta[key], dtype=np.float64)
    return meta
