"""Inference pipelines: `HonestFacePipeline` (aligned faces or whole photos, optional references), its
`ReferencePool`, colour correction (`color`), and `run_inference(cfg)` (the config-driven runner behind
scripts/infer.py). Names are imported lazily, so `import honestface.pipelines` stays light."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FaceInfo": "honestface_pipeline",
    "HonestFacePipeline": "honestface_pipeline",
    "RestorationOutput": "honestface_pipeline",
    "ReferencePool": "reference_pool",
    "adain_color_fix": "color",
    "wavelet_color_fix": "color",
    "run_inference": "runner",
}
__all__ = sorted(_EXPORTS)  # noqa: PLE0605


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'honestface.pipelines' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"honestface.pipelines.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
