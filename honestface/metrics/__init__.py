"""Evaluation metrics of face restoration: landmark fidelity (LMD, ALD), identity (IDS, Deg., reference honesty) and
image quality (PSNR, SSIM, LPIPS, DISTS, NIQE, MUSIQ, MANIQA, CLIPIQA, FID). Definitions: docs/metrics.md.

Names are imported lazily, so `import honestface.metrics` loads neither torch, dlib nor pyiqa.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "affine_landmark_distance": "landmark",
    "landmark_distance": "landmark",
    "landmark_scores": "landmark",
    "component_template": "landmark",
    "LandmarkMetrics": "landmark",
    "DLIB68_MEAN_SHAPE": "landmark",
    "IdentityMetrics": "identity",
    "IQA_METRICS": "iqa",
    "IQAMetricInfo": "iqa",
    "IQAMetrics": "iqa",
    "available_metrics": "iqa",
    "load_fid_statistics": "iqa",
}

__all__ = sorted([*_EXPORTS, "run_evaluation"])  # noqa: PLE0605


def run_evaluation(cfg):
    """Evaluate a folder of restorations (see `honestface.metrics.evaluate`)."""
    from .evaluate import run_evaluation as r

    return r(cfg)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'honestface.metrics' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"honestface.metrics.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
