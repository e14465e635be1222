"""HonestFacePipeline: restore aligned faces or every face of whole photos with a HonestFace model.

Paper: Wang et al., "HonestFace: Towards Honest Face Restoration with One-Step Diffusion Model", arXiv 2505.18469
(one UNet step at a fixed timestep on the VAE latent of the LQ face, conditioned on VRE tokens and, when
references are given, identity/feature tokens of the same person). The face-photo steps follow common
face-restoration practice (detect, align to the FFHQ template, restore, colour-correct, paste back with a soft
mask; GFPGAN/CodeFormer via facexlib, OSDFace's wavelet colour fix; shared with VSPBFR in `base.py`). Shapes in
docs/architecture.md.

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
from typing import Any

import numpy as np
import torch

from honestface.pipelines.base import (
    DTYPES,
    MODES,
    FaceInfo,
    FaceRestorationPipeline,
    RestorationOutput,
    _Job,
    build_face_models,
)
from honestface.pipelines.reference_pool import ReferencePool

# Default reference-matching thresholds (identity cosine) per identity encoder. Measured on the bundled photos for
# dlib (different people 0.81-0.91, views of one face 0.93-0.99); ArcFace's usual same-person cosine is ~0.3-0.4.
REF_THRESHOLDS = {"dlib": 0.93, "arcface_onnx": 0.35, "iresnet": 0.35}

__all__ = ["DTYPES", "MODES", "REF_THRESHOLDS", "FaceInfo", "HonestFacePipeline", "RestorationOutput"]


class HonestFacePipeline(FaceRestorationPipeline):
    """Restoration with a HonestFace model (`__call__`). Build with `from_pretrained(model_dir)` or from parts:
    model (HonestFace), detector / landmarker (photo mode), identity_encoder (reference matching and similarities),
    resolution / resize (default: the model's native settings). The detector and the identity encoder may be given
    by name ("mtcnn", "dlib", ...): they are built on the pipeline's device when first used (`detector`,
    `identity_encoder`), so a run that never needs them never loads them; the identity encoder defaults to dlib."""

    model_config_file = "honestface_config.json"  # = honestface.models.honestface_folder.CONFIG_FILE (tested)
    family_label = "HonestFace"

    def __init__(self, model: Any, detector: Any = None, landmarker: Any = None, identity_encoder: Any = "dlib",
                 resolution: int | None = None, cache_size: int = 64, resize: str | None = None,
                 detector_threshold: float = 0.9) -> None:
        super().__init__(model, detector, landmarker, resolution, resize, detector_threshold)
        self.identity_encoder = identity_encoder
        self.cache_size = int(cache_size)
        self._ref_cache: OrderedDict[tuple[str, ...], Any] = OrderedDict()

    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike, weights: dict | None = None, detector: Any = "mtcnn",
                        identity: Any = "dlib", *, landmarker: Any = None, device: Any = None,
                        dtype: torch.dtype | None = None, detector_threshold: float = 0.9, revision: str | None = None,
                        cache_dir: str | os.PathLike | None = None, token: str | bool | None = None,
                        local_files_only: bool = False, channels_last: bool = False, **kw: Any
                        ) -> HonestFacePipeline:
        """Load a `HonestFace.save_pretrained` folder (or the released model name "osdface", or a Hugging Face Hub
        id "org/name" at `revision`: `HonestFace.from_pretrained`) plus a face detector ("mtcnn", "dlib",
        "retinaface", "scrfd", an object, or None), an optional landmarker and an identity encoder ("dlib",
        "arcface_onnx", "iresnet", an object, or None). `weights`: registry name -> path for the frozen parts and
        face models. `channels_last=True`: what `enable_channels_last()` does, with the folder's convolution
        weights read straight into that layout (one copy fewer while loading)."""
        from honestface.models import HonestFace

        if dtype is not None and dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(map(str, DTYPES))}, got {dtype}")
        model = HonestFace.from_pretrained(model_dir, weights=dict(weights or {}), with_discriminator=False,
                                           dtype=dtype,  # read straight into `dtype`: no float32 copy
                                           revision=revision, cache_dir=cache_dir, token=token,
                                           local_files_only=local_files_only, channels_last=channels_last)
        landmarker = build_face_models(None, landmarker, None, device)[1]
        pipe = cls(model, detector, landmarker, identity, detector_threshold=detector_threshold, **kw).to(device, dtype)
        return pipe.enable_channels_last() if channels_last else pipe

    @property
    def identity_encoder(self) -> Any:
        """The identity encoder (reference matching, similarities), built from its name on first use."""
        if isinstance(self._identity_encoder, str):
            self._identity_encoder = build_face_models(None, None, self._identity_encoder, self.device)[2]
        return self._identity_encoder

    @identity_encoder.setter
    def identity_encoder(self, value: Any) -> None:
        self._identity_encoder = "dlib" if value is None else value

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

    def enable_cpu_prepacking(self) -> int:
        """On a CPU, pack the UNet's frozen convolution and linear weights for oneDNN once instead of on every call
        (`honestface.models.cpu_prepack`: the bf16 UNet at 512 px took 0.70-0.85x the time; packing it takes 1-1.5
        s). Only the UNet: the VAE and VRE, large in pixels and small in weights, were no faster packed and raised the
        peak memory. Merges the LoRA first; does nothing on a GPU. Returns how many layers were packed; `.to(...)`
        still works."""
        from honestface.models.cpu_prepack import prepack_cpu_weights
        from honestface.models.loading import release_free_memory

        self.merge_lora()
        if self.device.type != "cpu":
            return 0
        packed = prepack_cpu_weights(self.model.generator.unet)
        release_free_memory()  # the plain weights
        return packed

    def optimize(self, channels_last: bool = False, vae_slicing: bool = False, compile: bool = False,
                 prepack_cpu: bool = False) -> HonestFacePipeline:
        """Inference speed-ups, each off by default: channels-last weights (`enable_channels_last`), VAE slicing
        (`enable_vae_slicing`), weights packed for oneDNN on a CPU (`enable_cpu_prepacking`; not with `compile`,
        which picks its own kernels), `torch.compile` of the UNet (the first call compiles). Returns the pipeline."""
        if channels_last:
            self.enable_channels_last()
        if vae_slicing:
            self.enable_vae_slicing()
        if prepack_cpu and not compile:
            self.enable_cpu_prepacking()
        if compile:
            self.model.generator.unet = torch.compile(self.model.generator.unet)
        return self

    # ------------------------------------------------------------------------------------------------ the call
    @torch.no_grad()
    def __call__(self, images: Any, references: Any = None, *, mode: str = "aligned", batch_size: int | None = None,
                 color_fix: str | None = None, seed: int = 0, max_references: int = 4, min_face_size: int = 32,
                 ref_threshold: float | None = None, background_upsampler: Callable[[np.ndarray], np.ndarray] | None = None,
                 upscale: float = 1, references_aligned: bool | None = None, mask_kind: str = "ellipse"
                 ) -> RestorationOutput:
        """Restore `images` (a path, PIL, numpy (H, W, 3), tensor (3, H, W) / (B, 3, H, W) in [0, 1], or a list).

        references: None (blind); a list of reference images for every input; a list with one entry per input
        (a list of images, a ReferencePool or None); or a ReferencePool of many people (matched per face).
        mode: "aligned" (each input is one FFHQ-aligned face) or "photo" (every face of each photo).
        batch_size: faces per model call; default `default_batch_size` (1 on a CPU, 4 on a GPU).
        color_fix: "wavelet" | "adain" | "none"; default "wavelet" in photo mode, "none" in aligned mode.
        ref_threshold: minimum identity cosine for a reference to be used; default per identity encoder
        (`REF_THRESHOLDS`: dlib's normalised 128-D embedding separates people only above ~0.93).
        references_aligned: list references are aligned crops (True) or photos run through the detector (False);
        None: aligned crops when every one is square, else photos (the rule `scripts/infer.py` follows too).
        """
        if ref_threshold is None:
            name = self._identity_encoder if isinstance(self._identity_encoder, str) else \
                getattr(self._identity_encoder, "name", "")  # by name: the encoder is built only when references come
            ref_threshold = REF_THRESHOLDS.get(name, 0.5)
        if (batch_size is not None and batch_size < 1) or max_references < 1:
            raise ValueError(f"batch_size and max_references must be >= 1, got {batch_size}, {max_references}")
        options = {"references": references, "references_aligned": references_aligned, "k": max_references,
                   "threshold": ref_threshold}
        # the shared steps (FaceRestorationPipeline._run): 1. inputs and reference pools, 2. faces, 3. references
        # per face, 4. VAE latent + VRE/IDE tokens -> one UNet step -> decode, 5. paste back, 6. similarities
        return self._run(images, mode, batch_size, color_fix, seed, min_face_size, upscale, background_upsampler,
                         mask_kind, options)

    # ------------------------------------------------------------------------------------------------ steps
    def _input_pools(self, n: int, options: dict[str, Any]) -> list[ReferencePool | None]:
        """references (see __call__) -> one pool or None per input; identical lists share one pool."""
        references, aligned = options["references"], options["references_aligned"]
        if references is None:
            return [None] * n
        if isinstance(references, ReferencePool):
            return [references] * n

        def detector() -> Any:  # built only when a reference photo needs aligning
            return self.detector

        items = list(references) if isinstance(references, (list, tuple)) else [references]
        per_input = bool(items) and all(x is None or isinstance(x, (list, tuple, ReferencePool)) for x in items)
        if not per_input:
            return [ReferencePool(items, self.identity_encoder, detector, aligned=aligned)] * n
        if len(items) != n:
            raise ValueError(f"references: {len(items)} per-input entries for {n} input image(s)")
        built: dict[int, ReferencePool | None] = {}
        for x in items:
            if id(x) not in built:
                blind = x is None or (not isinstance(x, ReferencePool) and len(x) == 0)
                built[id(x)] = None if blind else x if isinstance(x, ReferencePool) else \
                    ReferencePool(list(x), self.identity_encoder, detector, aligned=aligned)
        return [built[id(x)] for x in items]

    def _choose_references(self, job: _Job, pool: ReferencePool | None, options: dict[str, Any]) -> None:
        k, threshold = options["k"], options["threshold"]
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

    def _predict(self, lq: torch.Tensor, jobs: list[_Job], seed: int, options: dict[str, Any]) -> torch.Tensor:
        """The model call: lq (B, 3, R, R) in [-1, 1] on the model's device/dtype -> (B, 3, R, R) in [-1, 1]."""
        k_max = options["k"]
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

    def _face_done(self, job: _Job) -> None:
        """Identity similarities of the output and input faces to the chosen references."""
        if not job.chosen:
            return
        refs = job.pool.embeddings[job.chosen]  # (k, dim)
        for attr, face in (("output_ref_similarity", job.restored), ("input_ref_similarity", job.lq)):
            reuse = face is job.lq and job.lq_embedding is not None
            emb = job.lq_embedding if reuse else job.pool.embed_face(face)
            setattr(job.info, attr, float(np.mean(refs.astype(np.float64) @ emb.astype(np.float64))))

