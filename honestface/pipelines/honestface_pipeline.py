"""HonestFacePipeline: restore aligned faces or every face of whole photos with a HonestFace model.

Paper: Wang et al., "HonestFace: Towards Honest Face Restoration with One-Step Diffusion Model", arXiv 2505.18469
(one UNet step at a fixed timestep on the VAE latent of the LQ face, conditioned on VRE tokens and, when
references are given, identity/feature tokens of the same person). The face-photo steps follow common
face-restoration practice (detect, align to the FFHQ template, restore, colour-correct, paste back with a soft
mask; GFPGAN/CodeFormer via facexlib, OSDFace's wavelet colour fix). Shapes in docs/architecture.md.

Our choices:
- The VAE posterior is sampled with one CPU `torch.Generator(seed)` per face (diffusers' list-of-generators
  sampling), so a face's result does not depend on its batch neighbours and is the same on every device.
- Reference features (`model.encode_references`) are cached per reference set (keyed by the references' content
  hashes), so many faces of one person cost one encoding; identity embeddings are cached by the `ReferencePool`.
- References are matched per face against a pool (`ref_threshold`, `max_references`); with no reference above the
  threshold the face is restored blind and FaceInfo says why. Similarities for the report are computed on the
  aligned input/output crops (same size) with the pool's identity encoder.
- Photo mode: the output keeps every pixel outside the pasted faces' masks bit for bit (without upscaling);
  `RestorationOutput.masks` holds the union of the pasted masks.
- Resolution and input resize are the model's native settings (`model.native_settings`: OSDFace 512 px with its
  bilinear resize, see `honestface.models.native`); `resolution=` / `resize=` override them
  (`resolution_source` says which). The VAE's `sample_size` is never used as the face size. Outputs of aligned
  mode are resized back to the input size (area / cubic).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch
from diffusers.utils import BaseOutput

from honestface.models.native import RESIZE_METHODS, face_tensor
from honestface.pipelines.color import COLOR_FIXES, apply_color_fix

# Default reference-matching thresholds (identity cosine) per identity encoder. Measured on the bundled photos for
# dlib (different people 0.81-0.91, views of one face 0.93-0.99); ArcFace's usual same-person cosine is ~0.3-0.4.
REF_THRESHOLDS = {"dlib": 0.93, "arcface_onnx": 0.35, "iresnet": 0.35}
from honestface.pipelines.reference_pool import ReferencePool, load_rgb, to_uint8

__all__ = ["FaceInfo", "HonestFacePipeline", "RestorationOutput"]

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


class HonestFacePipeline:
    """Restoration with a HonestFace model (`__call__`). Build with `from_pretrained(model_dir)` or from parts:
    model (HonestFace), detector / landmarker (photo mode), identity_encoder (reference matching and similarities;
    default: dlib, built when first needed), resolution / resize (default: the model's native settings)."""

    def __init__(self, model: Any, detector: Any = None, landmarker: Any = None, identity_encoder: Any = None,
                 resolution: int | None = None, cache_size: int = 64, resize: str | None = None) -> None:
        self.model = model.eval()
        self.model.requires_grad_(False)
        self.detector, self.landmarker, self.identity_encoder = detector, landmarker, identity_encoder
        native = model.native_settings
        self.resolution = int(native.resolution if resolution is None else resolution)
        self.resolution_source = "model" if resolution is None else "override"
        self.resize = native.resize if resize is None else resize
        if self.resolution < 8 or self.resolution % 8:
            raise ValueError(f"resolution must be a positive multiple of 8, got {self.resolution}")
        if self.resize not in RESIZE_METHODS:
            raise ValueError(f"resize must be one of {', '.join(RESIZE_METHODS)}, got {self.resize!r}")
        self.cache_size = int(cache_size)
        self._ref_cache: OrderedDict[tuple[str, ...], Any] = OrderedDict()

    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike, weights: dict | None = None, detector: Any = "mtcnn",
                        identity: Any = "dlib", *, landmarker: Any = None, device: Any = None,
                        dtype: torch.dtype | None = None, detector_threshold: float = 0.9,
                        **kw: Any) -> HonestFacePipeline:
        """Load a `HonestFace.save_pretrained` folder (or the released model name "osdface") plus a face detector ("mtcnn", "dlib", "retinaface", "scrfd",
        an object, or None), an optional landmarker and an identity encoder ("dlib", "arcface_onnx", "iresnet", an
        object, or None). `weights`: registry name -> path for the frozen parts and face models."""
        from honestface.models import HonestFace

        if dtype is not None and dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(map(str, DTYPES))}, got {dtype}")
        model = HonestFace.from_pretrained(model_dir, weights=dict(weights or {}), with_discriminator=False,
                                           torch_dtype=dtype)  # read straight into `dtype`: no float32 copy
        faces = build_face_models(detector, landmarker, identity, device, detector_threshold)
        return cls(model, *faces, **kw).to(device, dtype)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.unet.dtype

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> HonestFacePipeline:
        """Move the model; dtype float32 / float16 / bfloat16 (the VRE keeps its code search in float32)."""
        if dtype is not None and dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(map(str, DTYPES))}, got {dtype}")
        if device is not None or dtype is not None:
            self.model.to(device=device, dtype=dtype)
            self._ref_cache.clear()
        return self

    def enable_channels_last(self) -> HonestFacePipeline:
        """Store every convolution weight channels-last (NHWC), the layout oneDNN and tensor cores prefer: measured
        on the 2-core CPU in bf16 at 512 px, VAE decode 5.6 -> 4.2 s, encode 2.6 -> 2.0 s (benchmarks/infer.py)."""
        from honestface.models.loading import release_free_memory

        self.model.to(memory_format=torch.channels_last)
        release_free_memory()  # the replaced NCHW weights
        return self

    def enable_vae_slicing(self) -> HonestFacePipeline:
        """VAE encode / decode one face at a time inside a batch (diffusers' slicing): the same output with the
        peak activation memory of batch 1; on a CPU batching the VAE gains nothing (benchmarks/infer.py)."""
        self.model.vae.enable_slicing()
        return self

    def merge_lora(self) -> None:
        """Fold the LoRA into the UNet weights (faster inference; do it once)."""
        gen = self.model.generator
        if gen.has_lora and not gen.lora_merged:
            self.model.merge_lora()

    def _encoder(self) -> Any:
        if self.identity_encoder is None:
            from honestface.face import build_identity_encoder

            self.identity_encoder = build_identity_encoder("dlib")
        return self.identity_encoder

    # ------------------------------------------------------------------------------------------------ the call
    @torch.no_grad()
    def __call__(self, images: Any, references: Any = None, *, mode: str = "aligned", batch_size: int = 4,
                 color_fix: str | None = None, seed: int = 0, max_references: int = 4, min_face_size: int = 32,
                 ref_threshold: float | None = None, background_upsampler: Callable[[np.ndarray], np.ndarray] | None = None,
                 upscale: float = 1, references_aligned: bool = True, mask_kind: str = "ellipse"
                 ) -> RestorationOutput:
        """Restore `images` (a path, PIL, numpy (H, W, 3), tensor (3, H, W) / (B, 3, H, W) in [0, 1], or a list).

        references: None (blind); a list of reference images for every input; a list with one entry per input
        (a list of images, a ReferencePool or None); or a ReferencePool of many people (matched per face).
        mode: "aligned" (each input is one FFHQ-aligned face) or "photo" (every face of each photo).
        color_fix: "wavelet" | "adain" | "none"; default "wavelet" in photo mode, "none" in aligned mode.
        ref_threshold: minimum identity cosine for a reference to be used; default per identity encoder
        (`REF_THRESHOLDS`: dlib's normalised 128-D embedding separates people only above ~0.93).
        references_aligned: list references are aligned crops (True) or photos run through the detector (False).
        """
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; allowed: {', '.join(MODES)}")
        color_fix = color_fix or ("wavelet" if mode == "photo" else "none")
        if ref_threshold is None:
            ref_threshold = REF_THRESHOLDS.get(getattr(self._encoder(), "name", ""), 0.5)
        if color_fix not in COLOR_FIXES:
            raise ValueError(f"unknown color_fix {color_fix!r}; allowed: {', '.join(COLOR_FIXES)}")
        if batch_size < 1 or max_references < 1:
            raise ValueError(f"batch_size and max_references must be >= 1, got {batch_size}, {max_references}")
        if mode == "aligned" and (upscale != 1 or background_upsampler is not None):
            raise ValueError("upscale / background_upsampler apply to photo mode only")
        if mode == "photo" and self.detector is None:
            raise ValueError("photo mode needs a face detector (HonestFacePipeline(detector=...))")

        # 1. prepare inputs: float32 (H, W, 3) in [0, 1] -> uint8, and one reference pool (or None) per input
        inputs = [to_uint8(load_rgb(x)) for x in _flatten_inputs(images)]
        if not inputs:
            raise ValueError("no input images given")
        pools = self._pools(references, len(inputs), references_aligned)

        # 2. find and align faces (aligned mode: each input is one face)
        jobs = self._aligned_jobs(inputs) if mode == "aligned" else self._photo_jobs(inputs, min_face_size)

        # 3. choose references per face (identity match against its pool) -> FaceInfo.references / blind
        for job in jobs:
            if job.info.restored:
                self._choose_references(job, pools[job.image], max_references, ref_threshold)

        # 4. LQ -> VAE latent + VRE/IDE tokens -> one UNet step -> decode, in batches; colour fix per crop
        todo = [j for j in jobs if j.info.restored]
        for start in range(0, len(todo), batch_size):
            self._restore_batch(todo[start:start + batch_size], max_references, seed, color_fix)

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

        # 6. identity similarities of output and input faces to their references
        for job in jobs:
            if job.chosen:
                self._similarities(job)
        faces = [[j.info for j in jobs if j.image == i] for i in range(len(inputs))]
        return RestorationOutput(images=out_images, faces=faces, masks=masks)

    # ------------------------------------------------------------------------------------------------ steps
    def _pools(self, references: Any, n: int, aligned: bool) -> list[ReferencePool | None]:
        """references (see __call__) -> one pool or None per input; identical lists share one pool."""
        if references is None:
            return [None] * n
        if isinstance(references, ReferencePool):
            return [references] * n
        detector = None if aligned else self.detector
        if not aligned and detector is None:
            raise ValueError("references_aligned=False needs a face detector to align the reference photos")
        items = list(references) if isinstance(references, (list, tuple)) else [references]
        per_input = bool(items) and all(x is None or isinstance(x, (list, tuple, ReferencePool)) for x in items)
        if not per_input:
            return [ReferencePool(items, self._encoder(), detector)] * n
        if len(items) != n:
            raise ValueError(f"references: {len(items)} per-input entries for {n} input image(s)")
        built: dict[int, ReferencePool | None] = {}
        for x in items:
            if id(x) not in built:
                blind = x is None or (not isinstance(x, ReferencePool) and len(x) == 0)
                built[id(x)] = None if blind else x if isinstance(x, ReferencePool) else \
                    ReferencePool(list(x), self._encoder(), detector)
        return [built[id(x)] for x in items]

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

    def _choose_references(self, job: _Job, pool: ReferencePool | None, k: int, threshold: float) -> None:
        if pool is None:
            return
        if not self.model.use_ide:
            job.info.reason = "model has no identity embedder (use_ide=False): references not used"
            return
        emb = pool.embed_face(job.photo, job.detection) if job.photo is not None else pool.embed_face(job.lq)
        job.pool, job.chosen = pool, pool.match(emb, k, threshold)
        job.lq_embedding = emb if job.photo is None else None  # aligned: the same call as embed_face(job.lq)
        if not job.chosen:
            job.info.reason = "no reference above threshold"
            return
        job.info.references = [pool.ids[i] for i in job.chosen]
        job.info.blind = False

    def _reference_features(self, job: _Job) -> Any:
        """Cached `model.encode_references` of the job's chosen references: embeddings (1, k, id), tokens
        (1, k, T, C)."""
        chosen = sorted(job.chosen)  # the model is order-invariant over references: one cache entry per set
        key = tuple(job.pool.keys[i] for i in chosen)
        if key in self._ref_cache:
            self._ref_cache.move_to_end(key)
            return self._ref_cache[key]
        refs = torch.stack([self._face_tensor(job.pool.crops[i]) for i in chosen])[None]  # (1, k, 3, R, R)
        feats = self.model.encode_references(refs.to(self.device, self.dtype))
        self._ref_cache[key] = feats
        while len(self._ref_cache) > self.cache_size:
            self._ref_cache.popitem(last=False)
        return feats

    def _face_tensor(self, face: np.ndarray) -> torch.Tensor:
        """(h, w, 3) uint8 face -> (3, R, R) float32 in [-1, 1] by the pipeline's resize (the model's native one)."""
        return face_tensor(face, self.resolution, self.resize)

    def _restore_batch(self, jobs: list[_Job], k_max: int, seed: int, color_fix: str) -> None:
        lq = torch.stack([self._face_tensor(j.lq) for j in jobs])  # (B, 3, R, R) float32 in [-1, 1]
        lq01 = (lq + 1) / 2
        x_hat = self._predict(lq.to(self.device, self.dtype), jobs, k_max, seed)  # (B, 3, R, R) in [-1, 1]
        out = (x_hat.float().clamp(-1, 1) + 1) / 2
        out = apply_color_fix(color_fix, out, lq01.to(out.device)).clamp(0, 1)  # (B, 3, R, R) in [0, 1]
        out_np = out.permute(0, 2, 3, 1).cpu().numpy()  # (B, R, R, 3)
        for job, o in zip(jobs, out_np):
            job.restored = _resize(to_uint8(o), *job.lq.shape[:2])  # photo mode: the crop is R already

    def _predict(self, lq: torch.Tensor, jobs: list[_Job], k_max: int, seed: int) -> torch.Tensor:
        """The model call: lq (B, 3, R, R) in [-1, 1] on the model's device/dtype -> (B, 3, R, R) in [-1, 1]."""
        kwargs: dict[str, Any] = {}
        if any(j.chosen for j in jobs):
            feats = [self._reference_features(j) if j.chosen else None for j in jobs]
            like = next(f for f in feats if f is not None)
            emb, tok, mask = [], [], []
            for f in feats:  # pad every face's references to (1, k_max, ...); blind faces get an all-False mask
                e = torch.zeros((1, k_max, *like.embeddings.shape[2:]), dtype=like.embeddings.dtype,
                                device=self.device)
                t = torch.zeros((1, k_max, *like.tokens.shape[2:]), dtype=like.tokens.dtype, device=self.device)
                m = torch.zeros((1, k_max), dtype=torch.bool, device=self.device)
                if f is not None:
                    k = f.embeddings.shape[1]
                    e[:, :k], t[:, :k], m[:, :k] = f.embeddings, f.tokens, f.mask
                emb.append(e)
                tok.append(t)
                mask.append(m)
            kwargs = {"ref_embeddings": torch.cat(emb), "ref_tokens": torch.cat(tok), "ref_mask": torch.cat(mask)}
        generators = [torch.Generator().manual_seed(int(seed)) for _ in jobs]  # one per face: batch-independent
        return self.model(lq, generator=generators, **kwargs).x_hat  # (B, 3, R, R) in [-1, 1]

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

    def _similarities(self, job: _Job) -> None:
        refs = job.pool.embeddings[job.chosen]  # (k, dim)
        for attr, face in (("output_ref_similarity", job.restored), ("input_ref_similarity", job.lq)):
            reuse = face is job.lq and job.lq_embedding is not None
            emb = job.lq_embedding if reuse else job.pool.embed_face(face)
            setattr(job.info, attr, float(np.mean(refs.astype(np.float64) @ emb.astype(np.float64))))

