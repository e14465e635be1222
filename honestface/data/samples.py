"""Real face photos that ship inside installed packages: the bundled, offline sample data of the library.

Used by tests, demos and the quickstart; nothing here downloads. Every loader returns an RGB uint8 array
(H, W, 3) and raises FileNotFoundError naming the package when that package is not installed.

| name              | source                                                   | size       | faces |
|-------------------|----------------------------------------------------------|------------|-------|
| astronaut         | scikit-image `skimage.data.astronaut()` (Eileen Collins) | 512x512    | 1     |
| grace_hopper      | matplotlib `mpl-data/sample_data/grace_hopper.jpg`       | 600x512    | 1     |
| group_t1          | insightface `data/images/t1.jpg`                         | 886x1280   | 6     |
| tom_hanks_aligned | insightface `data/images/Tom_Hanks_54745.png`            | 112x112    | 1 (ArcFace-aligned) |
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"sample photo needs the package {package!r}, which is not installed")
    return Path(spec.submodule_search_locations[0])


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    if not path.is_file():
        raise FileNotFoundError(f"sample photo not found: {path}")
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def astronaut() -> np.ndarray:
    """(512, 512, 3) uint8, one face."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def grace_hopper() -> np.ndarray:
    """(600, 512, 3) uint8, one face."""
    return _read_rgb(_package_dir("matplotlib") / "mpl-data" / "sample_data" / "grace_hopper.jpg")


def group_t1() -> np.ndarray:
    """(886, 1280, 3) uint8 group photo with six faces."""
    return _read_rgb(_package_dir("insightface") / "data" / "images" / "t1.jpg")


def tom_hanks_aligned() -> np.ndarray:
    """(112, 112, 3) uint8, a face already aligned to the ArcFace 112 template."""
    return _read_rgb(_package_dir("insightface") / "data" / "images" / "Tom_Hanks_54745.png")


SAMPLES = {
    "astronaut": astronaut,
    "grace_hopper": grace_hopper,
    "group_t1": group_t1,
    "tom_hanks_aligned": tom_hanks_aligned,
}


def load_sample(name: str) -> np.ndarray:
    """Load a bundled sample photo by name (see the table above)."""
    if name not in SAMPLES:
        raise KeyError(f"unknown sample photo {name!r}; allowed: {', '.join(SAMPLES)}")
    return SAMPLES[name]()
