"""Native inference settings of a model: the face resolution it works at, how an input face is resized to it, and
its fixed timestep. They travel with the model (presets, saved folders) so a pipeline runs released weights the way
their authors' inference code does, without guessing from other parts (e.g. the SD VAE's `sample_size`, which is
768 in the SD 2.1-base files people download while OSDFace works at 512).

Released steps followed (facts, read from the authors' code):
- OSDFace (jkwang28/OSDFace `infer.py`, `main_worker`): `lq = to_tensor(image) * 2 - 1`, then, for a square image,
  `F.interpolate(lq, (512, 512), mode="bilinear", align_corners=True)`; one UNet call at t = 399 (`OSDFace_test`).
  Here: resolution 512, resize "bilinear", timestep 399.
- VSPBFR (LonglongaaaGo/VSPBFR `restoration_test.py` with `dataset.py:ImageFolder_restore_test_no_gt`): the image is
  scaled with PIL's LANCZOS filter to `--size` (512) and normalised with `Normalize(0.5, 0.5)`; no timestep (the
  code diffuser's T = 4 chain is part of the model). Here: resolution = the restoration size, resize "lanczos".

Our choices: "area_cubic" (OpenCV INTER_AREA to shrink, INTER_CUBIC to enlarge, on uint8) for models whose authors
publish no inference code (HonestFace at tiny scale and our own trained models); a non-square input is stretched to
the square resolution by every method (OSDFace leaves non-square inputs unresized, VSPBFR centre-crops them: both
would break the pipeline's return to the input size); "bilinear" resizes the [-1, 1] float image, as OSDFace does,
so there is no uint8 rounding on the way.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["RESIZE_METHODS", "NativeSettings", "face_tensor", "fallback_native_settings", "read_native_settings"]

RESIZE_METHODS = ("area_cubic", "bilinear", "lanczos")


@dataclass(frozen=True)
class NativeSettings:
    """resolution: face side in pixels (multiple of 8 for the VAE models); resize: one of RESIZE_METHODS;
    timestep: the one-step timestep (None for models without one, e.g. VSPBFR)."""

    resolution: int
    resize: str = "area_cubic"
    timestep: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.resolution, bool) or not isinstance(self.resolution, int) or self.resolution < 8:
            raise ValueError(f"native resolution must be an int >= 8, got {self.resolution!r}")
        if self.resize not in RESIZE_METHODS:
            raise ValueError(f"native resize must be one of {', '.join(RESIZE_METHODS)}, got {self.resize!r}")

    def replace(self, **changes: Any) -> NativeSettings:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> NativeSettings:
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown native setting {unknown[0]!r}; allowed: resolution, resize, timestep")
        return cls(**values)


def fallback_native_settings(vre_config: Mapping[str, Any]) -> NativeSettings:
    """Native settings of a HonestFace folder saved before they were recorded (or a model built from parts): the
    VRE's input size (else its build resolution), with OSDFace's bilinear resize when the VRE is OSDFace's
    (`input_transform="osdface"`), else "area_cubic". Never the VAE's `sample_size`."""
    size = vre_config.get("input_size") or vre_config.get("resolution")
    resize = "bilinear" if vre_config.get("input_transform") == "osdface" else "area_cubic"
    return NativeSettings(int(size), resize)


def read_native_settings(folder: str | os.PathLike) -> NativeSettings:
    """The native settings of a saved HonestFace or VSPBFR folder, read from its config file alone (no weights)."""
    folder = Path(folder)
    if (folder / "vspbfr_config.json").is_file():
        cfg = json.loads((folder / "vspbfr_config.json").read_text())
        native = cfg.get("native") or {"resolution": int(cfg["restoration"]["size"]), "resize": "lanczos"}
        return NativeSettings.from_dict(native)
    if (folder / "honestface_config.json").is_file():
        cfg = json.loads((folder / "honestface_config.json").read_text())
        timestep = int(cfg["generator"]["timestep"])
        if cfg.get("native"):
            return NativeSettings.from_dict(cfg["native"]).replace(timestep=timestep)
        return fallback_native_settings(cfg["vre"]).replace(timestep=timestep)
    raise FileNotFoundError(f"not a HonestFace or VSPBFR model folder (no config file): {folder}")


def face_tensor(image: np.ndarray, size: int, method: str) -> torch.Tensor:
    """(H, W, 3) uint8 face -> (3, size, size) float32 in [-1, 1], resized by `method` (see the module docstring)."""
    import cv2

    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"face_tensor expects an (H, W, 3) uint8 image, got {image.dtype} {image.shape}")
    if method not in RESIZE_METHODS:
        raise ValueError(f"resize must be one of {', '.join(RESIZE_METHODS)}, got {method!r}")
    h, w = image.shape[:2]
    if method == "bilinear":
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(255) * 2 - 1  # (3, H, W)
        if (h, w) == (size, size):
            return x
        return torch.nn.functional.interpolate(x[None], (size, size), mode="bilinear", align_corners=True)[0]
    if (h, w) != (size, size):
        if method == "lanczos":
            from PIL import Image

            image = np.array(Image.fromarray(image).resize((size, size), Image.Resampling.LANCZOS))
        else:
            shrink = size < h or size < w
            image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0 * 2 - 1
