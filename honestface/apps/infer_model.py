"""The model side of `scripts/infer.py` (images and videos alike): which family a config names, the checks of
`model.pretrained` (a folder, a released name, a Hub id) or `infer.onnx`, and the loading of the pipeline on its
device. The run behaviour is described in honestface/apps/infer.py."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from honestface.apps.infer_plan import InferenceSetupError

__all__ = ["finish_model_setup", "model_architecture", "require_keys", "setup_model"]

log = logging.getLogger("honestface.apps")
_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def _resolve_device(name: str, state: Any) -> Any:
    import torch

    if name == "auto":
        return state.device if state.num_processes > 1 else torch.device("cuda" if torch.cuda.is_available()
                                                                         else "cpu")
    if name == "cuda" and state.num_processes > 1:
        return state.device  # one GPU per process
    return torch.device(name)


def _weights(cfg: DictConfig) -> dict[str, str]:
    """The config's `weights:` section as registry name -> path."""
    return {str(k): str(v) for k, v in cfg.weights.items()}


def model_architecture(cfg: DictConfig) -> str:
    """"vspbfr" when `model.name` says so or `model.pretrained` is a VSPBFR folder (or the released name
    "vspbfr"), else "honestface"."""
    from honestface.released_table import RELEASED_MODELS, is_released_name

    if is_released_name(cfg.model.pretrained):
        family = RELEASED_MODELS[cfg.model.pretrained].family
        if cfg.model.name is not None and cfg.model.name != family:
            raise InferenceSetupError(f"model.name={cfg.model.name}, but the released model "
                                      f"'{cfg.model.pretrained}' is a {family} model (--arch)")
        return family
    from honestface.pipelines import family_of_folder, pipeline_class

    folder = Path(cfg.model.pretrained) if cfg.model.pretrained is not None else None
    found = family_of_folder(folder)
    if cfg.model.name != "honestface":  # asked for explicitly (the default family is the folder's own)
        if folder is not None and folder.is_dir() and found != cfg.model.name:
            config_file = pipeline_class(cfg.model.name).model_config_file
            raise InferenceSetupError(f"model.name={cfg.model.name}, but {folder} is not a {cfg.model.name} model "
                                      f"folder (no {config_file}; model.pretrained / --model)")
        return cfg.model.name
    return found or "honestface"


def _load_pipeline(cfg: DictConfig, device: Any) -> Any:
    import torch

    from honestface.pipelines import pipeline_class

    cls = pipeline_class(model_architecture(cfg))
    if cfg.infer.onnx is not None:  # an ONNX export on onnxruntime (honestface.export.OnnxPipeline)
        from honestface.export import OnnxPipeline

        return OnnxPipeline.from_pretrained(cfg.infer.onnx, detector=cfg.face.detector, identity=cfg.face.identity,
                                            resolution=cfg.infer.resolution)
    # detector and identity encoder by name: each is built when first used (aligned faces need no detector)
    pipe = cls.from_pretrained(cfg.model.pretrained, weights=_weights(cfg) or None, detector=cfg.face.detector,
                               identity=cfg.face.identity, device=device,
                               dtype=getattr(torch, _DTYPES[cfg.infer.precision]), resolution=cfg.infer.resolution,
                               channels_last=cfg.infer.channels_last)  # read straight into that layout
    pipe.merge_lora()
    icfg = cfg.infer
    slicing = icfg.vae_slicing == "on" or (icfg.vae_slicing == "auto" and pipe.device.type == "cpu")
    if icfg.reuse_cpu_memory and pipe.device.type == "cpu":  # after loading: loading's buffers went back
        from honestface.models.loading import reuse_large_allocations

        reuse_large_allocations()
    return pipe.optimize(channels_last=icfg.channels_last, vae_slicing=slicing, compile=icfg.compile,
                         prepack_cpu=icfg.prepack_cpu_weights)


def _reference_pool(pipe: Any, cfg: DictConfig, paths: list[str], cache: dict[Any, Any]) -> tuple[Any, list[str]]:
    """`ReferencePool.from_paths` of `paths` (None if none is readable), cached per list -> (pool, used paths).
    The detector is built only when a reference is not an aligned square crop."""
    from honestface.pipelines import ReferencePool

    key = tuple(paths)
    if key not in cache:
        pool = ReferencePool.from_paths(paths, pipe.identity_encoder, lambda: pipe.use_detector(cfg.face.detector))
        cache[key] = (pool, pool.ids if pool is not None else [])
    return cache[key]


def _released_name(cfg: DictConfig) -> str | None:
    """The released model name in `model.pretrained`, with its parts checked (one line naming all missing)."""
    from honestface.released_table import is_released_name, released_sources
    from honestface.weights import MissingWeightError

    if not is_released_name(cfg.model.pretrained):
        return None
    try:
        released_sources(cfg.model.pretrained, _weights(cfg))
    except MissingWeightError as e:
        raise InferenceSetupError(str(e)) from None
    return str(cfg.model.pretrained)


def _model_folder(cfg: DictConfig) -> str:
    """`model.pretrained` as a local folder: a folder as it is; a Hub id at `model.revision` from the Hugging Face
    cache, downloaded there on first use (`honestface.hub`)."""
    from honestface.hub import is_hub_id, resolve_model_dir
    from honestface.released_table import RELEASED_MODELS

    if not is_hub_id(cfg.model.pretrained) and cfg.model.revision is None:
        if not Path(cfg.model.pretrained).is_dir():
            raise InferenceSetupError(f"model folder not found: {cfg.model.pretrained} (model.pretrained / --model; "
                                      f"or a released model name: {', '.join(RELEASED_MODELS)}; or a Hugging Face "
                                      "Hub id org/name)")
        return cfg.model.pretrained
    try:
        return str(resolve_model_dir(cfg.model.pretrained, revision=cfg.model.revision))
    except (OSError, ValueError) as e:
        raise InferenceSetupError(str(e)) from None


def _onnx_setup(cfg: DictConfig) -> None:
    """infer.onnx: the export folder is the model (its family from its manifest); fp32 only."""
    from honestface.export import read_manifest

    if cfg.model.pretrained is not None:
        raise InferenceSetupError("give either model.pretrained (--model) or infer.onnx (--onnx), not both")
    if cfg.infer.precision != "fp32":
        raise InferenceSetupError(f"infer.precision={cfg.infer.precision}: an ONNX export runs in fp32 (--dtype)")
    try:
        cfg.model.name = read_manifest(cfg.infer.onnx)["family"]
    except (OSError, ValueError) as e:
        raise InferenceSetupError(str(e)) from None


def require_keys(cfg: DictConfig) -> None:
    """infer.input, infer.output and a model (model.pretrained, or infer.onnx) are given."""
    icfg = cfg.infer
    for key, value in (("infer.input", icfg.input), ("infer.output", icfg.output),
                       ("model.pretrained", cfg.model.pretrained if icfg.onnx is None else icfg.onnx)):
        if value is None:
            raise InferenceSetupError(f"'{key}' is required (see scripts/infer.py --help)")


def setup_model(cfg: DictConfig) -> tuple[type, str | None]:
    """The model part of the checks (any input kind): the ONNX export, released name, folder or Hub id; the
    references a blind family ignores -> (pipeline class, released model name or None)."""
    icfg = cfg.infer
    released = None
    if icfg.onnx is not None:
        _onnx_setup(cfg)
    else:
        released = _released_name(cfg)
    if icfg.onnx is None and (released is None or cfg.model.revision is not None):
        cfg.model.pretrained = _model_folder(cfg)
    from honestface.pipelines import pipeline_class

    pipeline = pipeline_class(model_architecture(cfg))
    if not pipeline.uses_references and icfg.references is not None:
        if int(os.environ.get("RANK", "0")) == 0:
            log.warning("%s is blind: ignoring the references %s (infer.references)", pipeline.family_label,
                        icfg.references)
        icfg.references, icfg.reference_mode = None, "auto"
    if icfg.references is not None and not Path(icfg.references).exists():
        raise InferenceSetupError(f"references not found: {icfg.references}")
    return pipeline, released


def finish_model_setup(cfg: DictConfig, pipeline: type, released: str | None) -> None:
    """A released model converted once into its cached folder (`model.pretrained` then names it); a resolution
    override checked against a family that runs at its own size only."""
    icfg = cfg.infer
    if released is not None:
        import torch

        from honestface.models.released import released_folder

        weights = _weights(cfg)
        try:
            folder = released_folder(released, weights=weights, dtype=getattr(torch, _DTYPES[icfg.precision]),
                                     quiet=int(os.environ.get("RANK", "0")) != 0)
        except (OSError, ValueError, TypeError) as e:  # MissingWeightError is an OSError
            raise InferenceSetupError(str(e)) from None
        cfg.model.pretrained = str(folder)
    if not pipeline.resolution_override and icfg.resolution is not None:
        from honestface.export import read_manifest
        from honestface.models.native import read_native_settings

        size = read_manifest(icfg.onnx)["native"]["resolution"] if icfg.onnx is not None else \
            read_native_settings(cfg.model.pretrained).resolution
        if int(icfg.resolution) != size:
            raise InferenceSetupError(f"infer.resolution={icfg.resolution}: a {pipeline.family_label} model runs at "
                                      f"its restoration size {size} only (--resolution)")
