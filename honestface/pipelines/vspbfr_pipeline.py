"""VSPBFRPipeline: restore aligned faces or every face of whole photos with a VSPBFR model.

Paper: Lu et al., "Visual Style Prompt Learning Using Diffusion Models for Blind Face Restoration" (arXiv
2412.21042): style encoder -> code diffuser (visual style prompt w0) -> StyleGAN2 feature bank -> restoration
network, see `honestface.models.vspbfr.vspbfr`. The user API is `HonestFacePipeline`'s (same `from_pretrained`,
`__call__`, `RestorationOutput` / `FaceInfo`), and everything around the model call (input forms, face detection
and FFHQ alignment, colour fix, paste-back with a soft mask, upscaling) is the shared `FaceRestorationPipeline`:
this class adds only the model call.

Our choices:
- VSPBFR is blind: `references` are accepted so both pipelines are interchangeable, ignored with a one-time
  warning, and every face says so (`FaceInfo.blind=True`, no references, `reason` names the ignored references).
- The working resolution is the model's (`model.size`, 512 for the released model); faces are resized to it
  with the model's native resize (the released test loader's Lanczos, `model.native_settings`) unless `resize=`.
- Seeded: each face gets its own CPU `torch.Generator(seed)` for the diffusion start codes, the random codes z,
  style mixing and every noise injection, so a face's output depends on neither its batch neighbours nor the batch
  size (see the model's docstring for how the batch is kept out of it).
- Style mixing of the random codes with probability `mixing` (default 0.5, the released test script's default).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from honestface.pipelines.base import FaceRestorationPipeline, RestorationOutput, _Job, build_face_models

__all__ = ["VSPBFRPipeline"]

_IGNORED = "VSPBFR is blind: the references were ignored"


class VSPBFRPipeline(FaceRestorationPipeline):
    """Restoration with a VSPBFR model (`__call__`, with `HonestFacePipeline.__call__`'s arguments). Build with
    `from_pretrained(model_dir)` or from parts: model (VSPBFR), detector / landmarker (photo mode), resolution
    (must be the model's size when given), mixing (default style-mixing probability of the random codes).
    `identity_encoder` and `cache_size` are accepted so code written for HonestFacePipeline runs unchanged."""

    model_config_file = "vspbfr_config.json"  # = honestface.models.vspbfr.CONFIG_FILE (tested)
    family_label = "VSPBFR"
    uses_references = False
    resolution_override = False

    def __init__(self, model: Any, detector: Any = None, landmarker: Any = None, identity_encoder: Any = None,
                 resolution: int | None = None, cache_size: int = 64, mixing: float = 0.5,
                 resize: str | None = None, detector_threshold: float = 0.9) -> None:
        if resolution is not None and int(resolution) != model.size:
            raise ValueError(f"VSPBFR works at its model size {model.size}; got resolution={resolution}")
        if not 0.0 <= mixing <= 1.0:
            raise ValueError(f"mixing must be a probability in [0, 1], got {mixing}")
        super().__init__(model, detector, landmarker, resolution, resize, detector_threshold)
        self.mixing = float(mixing)
        self._warned = False

    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike, weights: dict | None = None, detector: Any = "mtcnn",
                        identity: Any = None, *, landmarker: Any = None, device: Any = None,
                        dtype: torch.dtype | None = None, detector_threshold: float = 0.9, revision: str | None = None,
                        cache_dir: str | os.PathLike | None = None, token: str | bool | None = None,
                        local_files_only: bool = False, channels_last: bool = False, **kw: Any) -> VSPBFRPipeline:
        """Load a `VSPBFR.save_pretrained` folder (or the released model name "vspbfr", or a Hugging Face Hub id
        "org/name" at `revision`: `VSPBFR.from_pretrained`) plus a face detector
        ("mtcnn", "dlib", "retinaface", "scrfd", an object, or None; built when first used) and an optional
        landmarker. `weights` (registry name -> path, for the face models), `identity` and `channels_last` are
        accepted for interchangeability with HonestFacePipeline; VSPBFR needs no identity encoder and keeps its
        weights' layout (see `optimize`)."""
        from honestface.models.vspbfr.vspbfr import VSPBFR

        model = VSPBFR.from_pretrained(model_dir, with_discriminator=False, dtype=dtype, weights=weights,
                                       revision=revision, cache_dir=cache_dir, token=token,
                                       local_files_only=local_files_only)
        landmarker = build_face_models(None, landmarker, None, device)[1]
        return cls(model, detector, landmarker, detector_threshold=detector_threshold, **kw).to(device, dtype)

    def optimize(self, channels_last: bool = False, vae_slicing: bool = False, compile: bool = False,
                 prepack_cpu: bool = False) -> VSPBFRPipeline:
        """The same switches as `HonestFacePipeline.optimize`, for interchangeable code: VSPBFR keeps its weights'
        layout (channels-last and oneDNN packing were not measured for its modulated convolutions, which build
        their weights per face), has no VAE to slice, and runs
        eagerly (`compile` warns: its per-sample noise hooks do not compile). Returns the pipeline."""
        if compile:
            warnings.warn("compile is not supported for VSPBFR models (per-sample noise hooks); running eagerly",
                          stacklevel=2)
        return self

    @torch.no_grad()
    def __call__(self, images: Any, references: Any = None, *, mode: str = "aligned", batch_size: int | None = None,
                 color_fix: str | None = None, seed: int = 0, min_face_size: int = 32,
                 background_upsampler: Callable[[np.ndarray], np.ndarray] | None = None, upscale: float = 1,
                 mask_kind: str = "ellipse", mixing: float | None = None, max_references: int = 4,
                 ref_threshold: float | None = None, references_aligned: bool | None = None) -> RestorationOutput:
        """Restore `images` like `HonestFacePipeline.__call__` (mode, batch_size, color_fix, seed, min_face_size,
        upscale, background_upsampler, mask_kind); `references`, max_references, ref_threshold and
        references_aligned are accepted and ignored (VSPBFR is blind). mixing: style-mixing probability (default:
        the pipeline's)."""
        ignored = references is not None
        if ignored and not self._warned:
            warnings.warn(f"{_IGNORED} (pass references=None to silence this)", stacklevel=2)
            self._warned = True
        if mixing is not None and not 0.0 <= mixing <= 1.0:
            raise ValueError(f"mixing must be a probability in [0, 1], got {mixing}")
        options = {"mixing": self.mixing if mixing is None else float(mixing)}
        out = self._run(images, mode, batch_size, color_fix, seed, min_face_size, upscale, background_upsampler,
                        mask_kind, options)
        if ignored:
            for faces in out.faces:
                for info in faces:
                    info.reason = info.reason or _IGNORED
        return out

    def _predict(self, lq: torch.Tensor, jobs: list[_Job], seed: int, options: dict[str, Any]) -> torch.Tensor:
        generators = [torch.Generator().manual_seed(int(seed)) for _ in jobs]  # one per face: batch-independent
        return self.model(lq, generator=generators, mixing=options["mixing"]).image  # (B, 3, R, R) in [-1, 1]
