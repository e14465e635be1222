"""FaceRestorationPipeline: what every restoration pipeline does around its model call, in one place.

The face handling of HonestFace and VSPBFR inference is the same (common face-restoration practice: detect, align
to the FFHQ template, restore, colour-correct, paste back with a soft mask; GFPGAN / CodeFormer via facexlib,
OSDFace's wavelet colour fix): inputs in any form, aligned or photo mode, batching, per-face seeds, colour fix,
upscaling and paste-back, the lazily built detector, moving and dtype. A family's pipeline adds its model call
(`_predict`) and, if it uses references, the hooks `_input_pools` (step 1), `_choose_references` (step 3) and
`_face_done` (step 6); everything a call needs travels in its `options` dict, never on the pipeline object.

Our choices: the output of aligned mode is resized back to the input size (area / cubic); in photo mode every
pixel outside the pasted faces' masks is kept bit for bit (without upscaling), and `RestorationOutput.masks` holds
the union of the pasted masks. Resolution and input resize are the model's native settings
(`model.native_settings`, `honestface.models.native`) unless `resolution=` / `resize=` override them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from diffusers.utils import BaseOutput

from honestface.models.native import RESIZE_METHODS, face_tensor
from honestface.pipelines.color import COLOR_FIXES, apply_color_fix
from honestface.pipelines.reference_pool import ReferencePool, load_rgb, to_uint8

__all__ = ["DTYPES", "MODES", "FaceInfo", "FaceRestorationPipeline", "RestorationOutput", "build_face_models"]

MODES = ("aligned", "photo")
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass
class FaceInfo:
    """One face of one input image (see the module docstring for how the similarities are measured)."""

    box: list[float] | None
    score: float | None
    restored: bool
    reason: str | None
    references: list[str] = field(default_factory=list)
    blind: bool = True
    output_ref_similarity: float | None = None
    input_ref_similarity: float | None = None


@dataclass
class RestorationOutput(BaseOutput):
    """images: (H, W, 3) uint8, one per input (photo mode with upscaling: the upscaled size); faces: per input;
    masks: per input, the (H, W) float32 union of pasted face masks (photo mode) or None (aligned mode)."""

    images: list[np.ndarray]
    faces: list[list[FaceInfo]]
    masks: list[np.ndarray | None] | None = None


@dataclass
class _Job:
    """Work item for one face: its LQ crop at the model resolution and everything needed to put it back."""

    image: int
    lq: np.ndarray  # (H, W, 3) uint8 input face (aligned mode: the input; photo mode: the aligned crop)
    info: FaceInfo
    photo: np.ndarray | None = None  # photo mode: the uint8 photo, to embed the face at full resolution
    detection: Any = None
    matrix: np.ndarray | None = None  # photo pixels -> crop pixels
    pool: ReferencePool | None = None
    chosen: list[int] = field(default_factory=list)
    lq_embedding: np.ndarray | None = None  # aligned mode: the identity embedding of lq, computed once
    restored: np.ndarray | None = None  # (h, w, 3) uint8 output face (same size as lq)


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    if img.shape[:2] == (h, w):
        return img
    shrink = h < img.shape[0] or w < img.shape[1]
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def _flatten_inputs(images: Any) -> list[Any]:
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        return list(images.unbind(0))
    if isinstance(images, (list, tuple)):
        return [x for item in images for x in _flatten_inputs(item)]
    return [images]


def build_face_models(detector: Any, landmarker: Any, identity: Any, device: Any = None,
                      detector_threshold: float = 0.9) -> tuple[Any, Any, Any]:
    """(detector, landmarker, identity encoder): names are built on `device`, objects and None pass through."""
    from honestface.face import build_detector, build_identity_encoder, build_landmarker

    if isinstance(detector, str):
        opts = {"threshold": detector_threshold} if detector == "mtcnn" else {}
        detector = build_detector(detector, device=device, **opts)
    if isinstance(landmarker, str):
        landmarker = build_landmarker(landmarker, device=device)
    if isinstance(identity, str):
        identity = build_identity_encoder(identity, device=device)
    return detector, landmarker, identity


class FaceRestorationPipeline:
    """The shared part of the restoration pipelines (module docstring). Parts: model (with `native_settings`),
    detector (an object, a name built on first use, or None), landmarker, resolution / resize (default: the
    model's native settings), detector_threshold (MTCNN, when the detector is given by name)."""

    model_config_file = ""  # the config file that marks a saved folder of the family (set by each pipeline)
    family_label = "this"  # the family's name in messages
    uses_references = True  # False: a blind family (given references are ignored with a warning)
    resolution_override = True  # False: the model works at its own size only (`resolution=` must equal it)

    @classmethod
    def is_model_folder(cls, folder: str | os.PathLike | None) -> bool:
        """Whether `folder` holds a saved model of this pipeline's family (its config file is there)."""
        return bool(cls.model_config_file) and folder is not None and (Path(folder) / cls.model_config_file).is_file()

    def __init__(self, model: Any, detector: Any = None, landmarker: Any = None, resolution: int | None = None,
                 resize: str | None = None, detector_threshold: float = 0.9) -> None:
        self.model = model.eval()
        self.model.requires_grad_(False)
        self._detector, self.landmarker, self.detector_threshold = detector, landmarker, float(detector_threshold)
        native = model.native_settings
        self.resolution = int(native.resolution if resolution is None else resolution)
        self.resolution_source = "model" if resolution is None else "override"
        self.resize = native.resize if resize is None else resize
        if self.resolution < 8 or self.resolution % 8:
            raise ValueError(f"resolution must be a positive multiple of 8, got {self.resolution}")
        if self.resize not in RESIZE_METHODS:
            raise ValueError(f"resize must be one of {', '.join(RESIZE_METHODS)}, got {self.resize!r}")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def default_batch_size(self) -> int:
        """Faces per model call when the caller gives none (`batch_size=None`): 4 on a GPU, 1 on a CPU.

        Our choice (issue 17), measured on the 2-core Xeon with SD 2.1-size OSDFace in bf16
        (`python benchmarks/infer.py --from osdface-files --batches 4 --repeats 3`, 2026-12-07): four faces per call
        cost 8.09 s per face against 8.10-9.01 s one at a time in the runs of the same day, and raised the peak RSS
        restoring faces from 3.70-3.94 to 4.42 GiB (mostly the VRE's 512 px maps for four faces at once)."""
        return 1 if self.device.type == "cpu" else 4

    @property
    def detector(self) -> Any:
        """The face detector (photo mode, unaligned references), built from its name on first use; None: none."""
        if isinstance(self._detector, str):
            self._detector = build_face_models(self._detector, None, None, self.device, self.detector_threshold)[0]
        return self._detector

    @detector.setter
    def detector(self, value: Any) -> None:
        self._detector = value

    def use_detector(self, default: str) -> Any:
        """The pipeline's detector, or a `default` one (by name) built now and kept when it has none."""
        if self.detector is None:
            self._detector = default
        return self.detector

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> FaceRestorationPipeline:
        """Move the model; dtype float32 / float16 / bfloat16."""
        if dtype is not None and dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(map(str, DTYPES))}, got {dtype}")
        if device is not None or dtype is not None:
            self.model.to(device=device, dtype=dtype)
        return self

    def merge_lora(self) -> None:
        """Fold a LoRA into its base weights before inference (nothing to do for a model without one)."""

    # ------------------------------------------------------------------------------------------------ the call
    def _run(self, images: Any, mode: str, batch_size: int | None, color_fix: str | None, seed: int, min_face_size: int,
             upscale: float, background_upsampler: Callable[[np.ndarray], np.ndarray] | None, mask_kind: str,
             options: dict[str, Any]) -> RestorationOutput:
        """The restoration steps every pipeline shares; `options` holds the family's own call arguments."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; allowed: {', '.join(MODES)}")
        color_fix = color_fix or ("wavelet" if mode == "photo" else "none")
        if color_fix not in COLOR_FIXES:
            raise ValueError(f"unknown color_fix {color_fix!r}; allowed: {', '.join(COLOR_FIXES)}")
        batch_size = self.default_batch_size if batch_size is None else batch_size
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if mode == "aligned" and (upscale != 1 or background_upsampler is not None):
            raise ValueError("upscale / background_upsampler apply to photo mode only")
        if mode == "photo" and self.detector is None:
            raise ValueError(f"photo mode needs a face detector ({type(self).__name__}(detector=...))")

        # 1. prepare inputs: float32 (H, W, 3) in [0, 1] -> uint8, and one reference pool (or None) per input
        inputs = [to_uint8(load_rgb(x)) for x in _flatten_inputs(images)]
        if not inputs:
            raise ValueError("no input images given")
        pools = self._input_pools(len(inputs), options)

        # 2. find and align faces (aligned mode: each input is one face)
        jobs = self._aligned_jobs(inputs) if mode == "aligned" else self._photo_jobs(inputs, min_face_size)

        # 3. choose references per face (families with references) -> FaceInfo.references / blind
        for job in jobs:
            if job.info.restored:
                self._choose_references(job, pools[job.image], options)

        # 4. LQ face -> the model -> restored face, in batches; colour fix per crop
        todo = [j for j in jobs if j.info.restored]
        for start in range(0, len(todo), batch_size):
            self._restore_batch(todo[start:start + batch_size], seed, color_fix, options)

        # 5. post-process: aligned -> back to the input size; photo -> paste into the (upscaled) photo
        out_images, masks = [], []
        for i, img in enumerate(inputs):
            mine = [j for j in jobs if j.image == i]
            if mode == "aligned":
                out_images.append(_resize(mine[0].restored, *img.shape[:2]))
                masks.append(None)
            else:
                pasted, mask = self._paste(img, [j for j in mine if j.info.restored], upscale, background_upsampler,
                                           mask_kind)
                out_images.append(pasted)
                masks.append(mask)
        if mode == "aligned":
            for job, out in zip(jobs, out_images):
                job.restored = out

        # 6. per-face results of the family (HonestFace: identity similarities to the references)
        for job in jobs:
            self._face_done(job)
        faces = [[j.info for j in jobs if j.image == i] for i in range(len(inputs))]
        return RestorationOutput(images=out_images, faces=faces, masks=masks)

    # ------------------------------------------------------------------------------------- hooks of a family
    def _input_pools(self, n: int, options: dict[str, Any]) -> list[ReferencePool | None]:
        """One reference pool (or None) per input; a blind family has none."""
        return [None] * n

    def _choose_references(self, job: _Job, pool: ReferencePool | None, options: dict[str, Any]) -> None:
        """Pick the face's references from its pool (a blind family keeps every face blind)."""

    def _predict(self, lq: torch.Tensor, jobs: list[_Job], seed: int, options: dict[str, Any]) -> torch.Tensor:
        """The model call: lq (B, 3, R, R) in [-1, 1] on the model's device/dtype -> (B, 3, R, R) in [-1, 1]."""
        raise NotImplementedError(f"{type(self).__name__} does not define its model call (_predict)")

    def _face_done(self, job: _Job) -> None:
        """Anything a family records per face once its output exists."""

    # ------------------------------------------------------------------------------------------------ steps
    def _aligned_jobs(self, inputs: list[np.ndarray]) -> list[_Job]:
        return [_Job(image=i, lq=img, info=FaceInfo(box=None, score=None, restored=True, reason=None))
                for i, img in enumerate(inputs)]

    def _photo_jobs(self, inputs: list[np.ndarray], min_face_size: int) -> list[_Job]:
        from honestface.face import extract_faces

        jobs = []
        for i, img in enumerate(inputs):
            for face in extract_faces(img, self.detector, self.landmarker, size=self.resolution, template="ffhq"):
                det = face.detection
                side = float(min(det.box[2] - det.box[0], det.box[3] - det.box[1]))
                small = side < min_face_size
                info = FaceInfo(box=[float(v) for v in det.box], score=float(det.score), restored=not small,
                                reason=f"too small: {side:.0f} px < min_face_size {min_face_size}" if small else None)
                jobs.append(_Job(image=i, lq=face.crop, info=info, photo=img, detection=det, matrix=face.matrix))
        return jobs

    def _face_tensor(self, face: np.ndarray) -> torch.Tensor:
        """(h, w, 3) uint8 face -> (3, R, R) float32 in [-1, 1] by the pipeline's resize (the model's native one)."""
        return face_tensor(face, self.resolution, self.resize)

    def _restore_batch(self, jobs: list[_Job], seed: int, color_fix: str, options: dict[str, Any]) -> None:
        lq = torch.stack([self._face_tensor(j.lq) for j in jobs])  # (B, 3, R, R) float32 in [-1, 1]
        lq01 = (lq + 1) / 2
        x_hat = self._predict(lq.to(self.device, self.dtype), jobs, seed, options)  # (B, 3, R, R) in [-1, 1]
        out = (x_hat.float().clamp(-1, 1) + 1) / 2
        out = apply_color_fix(color_fix, out, lq01.to(out.device)).clamp(0, 1)  # (B, 3, R, R) in [0, 1]
        out_np = out.permute(0, 2, 3, 1).cpu().numpy()  # (B, R, R, 3)
        for job, o in zip(jobs, out_np):
            job.restored = _resize(to_uint8(o), *job.lq.shape[:2])  # photo mode: the crop is R already

    def _paste(self, photo: np.ndarray, jobs: list[_Job], upscale: float,
               upsampler: Callable[[np.ndarray], np.ndarray] | None, mask_kind: str) -> tuple[np.ndarray, np.ndarray]:
        from honestface.face import paste_back

        h, w = photo.shape[:2]
        if upsampler is not None:
            base = to_uint8(load_rgb(upsampler(photo)))
        elif upscale != 1:
            if upscale <= 0:
                raise ValueError(f"upscale must be > 0, got {upscale}")
            base = cv2.resize(photo, (round(w * upscale), round(h * upscale)), interpolation=cv2.INTER_CUBIC)
        else:
            base = photo
        sx, sy = base.shape[1] / w, base.shape[0] / h
        if not jobs:
            return base.copy(), np.zeros(base.shape[:2], np.float32)
        mats = []
        for j in jobs:  # crop <- photo <- upscaled photo: photo x = (X + 0.5) / s - 0.5 (pixel centres)
            m = j.matrix.astype(np.float64).copy()
            m[:, 2] += m[:, 0] * (0.5 / sx - 0.5) + m[:, 1] * (0.5 / sy - 0.5)
            m[:, 0] /= sx
            m[:, 1] /= sy
            mats.append(m)
        return paste_back(base, [j.restored for j in jobs], np.stack(mats), mask_kind=mask_kind, template="ffhq",
                          return_mask=True)
