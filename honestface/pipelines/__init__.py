"""Inference pipelines: `FaceRestorationPipeline` (the face handling every family shares), `HonestFacePipeline`
(aligned faces or whole photos, optional references) with its `ReferencePool`, `VSPBFRPipeline` (the same API for
a blind VSPBFR model) and colour correction (`color`). No
config is read here: the config-driven runner behind scripts/infer.py is `honestface.apps.infer`. Names are
imported lazily, so `import honestface.pipelines` stays light."""

from __future__ import annotations

import os

from honestface._lazy import lazy_exports

_EXPORTS = {
    "FaceInfo": "base",
    "FaceRestorationPipeline": "base",
    "HonestFacePipeline": "honestface_pipeline",
    "RestorationOutput": "base",
    "VSPBFRPipeline": "vspbfr_pipeline",
    "ReferencePool": "reference_pool",
    "adain_color_fix": "color",
    "wavelet_color_fix": "color",
}
# model family -> its pipeline class ("module:Class" in this package). A new family adds one entry here (and its
# `is_model_folder` config file) and one in honestface.released_table if it has released weights.
PIPELINES: dict[str, str] = {
    "honestface": "honestface_pipeline:HonestFacePipeline",
    "vspbfr": "vspbfr_pipeline:VSPBFRPipeline",
}


def pipeline_class(family: str) -> type:
    """The pipeline class of a model family (a key of `PIPELINES`)."""
    import importlib

    if family not in PIPELINES:
        raise ValueError(f"unknown model family {family!r}; allowed: {', '.join(PIPELINES)}")
    module, name = PIPELINES[family].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def family_of_folder(folder: str | os.PathLike | None) -> str | None:
    """The family whose saved-model config file `folder` holds, or None."""
    return next((f for f in PIPELINES if pipeline_class(f).is_model_folder(folder)), None)


__all__ = sorted([*_EXPORTS, "PIPELINES", "family_of_folder", "pipeline_class"])  # noqa: PLE0605

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
