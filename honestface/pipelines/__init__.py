"""Inference pipelines: `HonestFacePipeline` (aligned faces or whole photos, optional references), its
`ReferencePool`, `VSPBFRPipeline` (the same API for a blind VSPBFR model), colour correction (`color`), and
`run_inference(cfg)` (the config-driven runner behind scripts/infer.py). Names are imported lazily, so
`import honestface.pipelines` stays light."""

from __future__ import annotations

from honestface._lazy import lazy_exports

_EXPORTS = {
    "FaceInfo": "honestface_pipeline",
    "HonestFacePipeline": "honestface_pipeline",
    "RestorationOutput": "honestface_pipeline",
    "VSPBFRPipeline": "vspbfr_pipeline",
    "ReferencePool": "reference_pool",
    "adain_color_fix": "color",
    "wavelet_color_fix": "color",
    "run_inference": "runner",
}
__all__ = sorted(_EXPORTS)  # noqa: PLE0605

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
