"""Inference pipelines: `HonestFacePipeline` (aligned faces or whole photos, optional references), its
`ReferencePool`, colour correction (`color`), and `run_inference(cfg)` (the config-driven runner behind
scripts/infer.py, imported lazily so `import honestface.pipelines` stays light)."""

from __future__ import annotations

from typing import Any

from honestface.pipelines.color import adain_color_fix, wavelet_color_fix
from honestface.pipelines.honestface_pipeline import FaceInfo, HonestFacePipeline, RestorationOutput
from honestface.pipelines.reference_pool import ReferencePool

__all__ = ["FaceInfo", "HonestFacePipeline", "ReferencePool", "RestorationOutput", "adain_color_fix",
           "run_inference", "wavelet_color_fix"]


def run_inference(cfg: Any) -> Any:
    """Run inference from a config (see `honestface.pipelines.runner.run_inference`)."""
    from honestface.pipelines.runner import run_inference as r

    return r(cfg)
