"""A pool of reference faces (possibly of many people) with identity embeddings computed once.

HonestFace (Wang et al., arXiv 2505.18469) conditions the restoration on high-quality reference photos of the same
person. In practice a user has a folder of photos of several people; the pool embeds each reference once with an
identity encoder (dlib's bundled 128-D descriptor by default, `honestface.face.identity`) and, for each face to
restore, `match` returns the K references of the most similar identity above a threshold. No reference above the
threshold means the face is restored blind, which is the honest choice: a wrong person's reference would
hallucinate a wrong identity.

Our choices: references are either FFHQ-aligned face crops (square; embedded with the FFHQ template's five points
at their size) or whole photos whose largest face a detector aligns to the FFHQ template at `size` px (embedded
from the full-resolution photo). One rule decides which, for `scripts/infer.py` and the pipelines alike: unless
told (`aligned=True/False`), a pool whose images are all square is aligned crops, and a pool with any other
image runs all of them through the detector. Each reference has a readable id (its path, or `ref<i>`) for reports
and a content key (SHA-1 of the aligned crop) the pipeline uses to cache model-side features across pools.
Thresholds are in the encoder's cosine space: with dlib, different people commonly reach 0.8-0.9 and views of the
same face 0.93+, with ArcFace different people stay below ~0.3 (measured on the bundled photos / published
verification practice), so pick `threshold` for the encoder in use.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["ReferencePool", "ffhq_points", "load_rgb", "to_uint8"]


def load_rgb(image: Any) -> np.ndarray:
    """A path, PIL image, numpy array or tensor (3, H, W) / (1, 3, H, W) in [0, 1] -> float32 (H, W, 3) in [0, 1]."""
    from honestface.io import read_image, to_numpy

    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    return to_numpy(image)


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8))


def ffhq_points(height: int, width: int) -> np.ndarray:
    """(5, 2) FFHQ template points of an aligned crop of (height, width) px."""
    from honestface.face.alignment import template

    return template("ffhq", 512) / 512.0 * np.array([width, height], dtype=np.float64)


class ReferencePool:
    """Reference faces with cached identity embeddings.

    Args:
        images: paths, PIL images, numpy arrays (H, W, 3) or tensors (3, H, W) in [0, 1]; one item is also accepted.
        identity_encoder: an `honestface.face.identity` encoder (default: the bundled dlib one).
        detector: the face detector for photos, or a function of no arguments that builds one (called only when a
            photo needs aligning). A photo without a face raises ValueError.
        aligned: True = every image is an FFHQ-aligned square crop; False = every image is a photo whose largest
            face is used; None = aligned when every image is square (the module's rule).
        ids: readable ids (default: the path, or `ref<i>`). size: crop side for photos aligned here.
        landmarker: optional dense landmarker for photos whose detector gives no five points.
    """

    def __init__(self, images: Sequence[Any] | Any, identity_encoder: Any = None, detector: Any = None, *,
                 ids: Sequence[str] | None = None, size: int = 512, landmarker: Any = None,
                 aligned: bool | None = None) -> None:
        from honestface.face import build_identity_encoder, extract_faces

        items = list(images) if isinstance(images, (list, tuple)) else [images]
        if not items:
            raise ValueError("ReferencePool needs at least one reference image")
        if ids is not None and len(ids) != len(items):
            raise ValueError(f"ids: {len(ids)} given for {len(items)} reference image(s)")
        names = [str(ids[i]) if ids is not None else os.fspath(x) if isinstance(x, (str, os.PathLike)) else f"ref{i}"
                 for i, x in enumerate(items)]
        rgbs = [to_uint8(load_rgb(x)) for x in items]  # (H, W, 3) uint8 each
        if aligned is None:
            aligned = all(r.shape[0] == r.shape[1] for r in rgbs)
        if not aligned:
            detector = detector() if callable(detector) and not hasattr(detector, "detect") else detector
            if detector is None:
                raise ValueError(f"reference {names[0]} and the others are photos, not aligned square face crops: "
                                 "aligning them needs a face detector")
        self.identity_encoder = identity_encoder if identity_encoder is not None else build_identity_encoder("dlib")
        self.ids: list[str] = names
        self.crops: list[np.ndarray] = []  # FFHQ-aligned uint8 (S, S, 3)
        embeddings = []
        for name, rgb in zip(names, rgbs):
            if aligned:
                if rgb.shape[0] != rgb.shape[1]:
                    raise ValueError(f"reference {name} is {rgb.shape[1]}x{rgb.shape[0]}: aligned references must "
                                     "be square FFHQ crops (or pass aligned=False with a detector for photos)")
                crop, emb = rgb, self.identity_encoder.embed_image(rgb, ffhq_points(*rgb.shape[:2]))
            else:
                faces = extract_faces(rgb, detector, landmarker, size=size, template="ffhq", rule="largest")
                if not faces:
                    raise ValueError(f"no face found in reference {name}")
                crop, emb = faces[0].crop, self.identity_encoder.embed_image(rgb, faces[0].detection)
            self.crops.append(crop)
            embeddings.append(emb[0])
        self.aligned = bool(aligned)
        self.embeddings = np.stack(embeddings).astype(np.float32)  # (N, dim), unit rows
        self.keys: list[str] = [hashlib.sha1(c.tobytes() + str(c.shape).encode()).hexdigest() for c in self.crops]

    @classmethod
    def from_paths(cls, paths: Sequence[str | os.PathLike[str]], identity_encoder: Any = None,
                   detector: Any | Callable[[], Any] = None, *, aligned: bool | None = None, size: int = 512,
                   landmarker: Any = None) -> ReferencePool | None:
        """A pool of the readable files among `paths` (ids: the paths), or None when none is readable. Unreadable
        files are left out with one warning each; which references belong to an image is
        `honestface.data.reference_rule.resolve_references`, how they are aligned is the class's rule."""
        from honestface.io import read_image

        images, used = [], []
        for p in paths:
            try:
                images.append(read_image(p))
                used.append(os.fspath(p))
            except (OSError, ValueError) as e:
                warnings.warn(f"skipping reference {os.fspath(p)}: {e}", stacklevel=2)
        if not images:
            return None
        return cls(images, identity_encoder, detector, ids=used, size=size, landmarker=landmarker, aligned=aligned)

    def __len__(self) -> int:
        return len(self.crops)

    def __repr__(self) -> str:
        return f"ReferencePool({len(self)} references, encoder={type(self.identity_encoder).__name__})"

    def similarities(self, face_embedding: np.ndarray) -> np.ndarray:
        """Cosine similarity of one identity embedding (dim,) to every reference -> (N,)."""
        e = np.asarray(face_embedding, dtype=np.float64).reshape(-1)
        if e.shape[0] != self.embeddings.shape[1]:
            raise ValueError(f"face embedding has {e.shape[0]} values; this pool's encoder gives "
                             f"{self.embeddings.shape[1]}")
        e = e / max(float(np.linalg.norm(e)), 1e-12)
        return self.embeddings.astype(np.float64) @ e

    def match(self, face_embedding: np.ndarray, k: int, threshold: float) -> list[int]:
        """Indices of the (at most) k most similar references with similarity >= threshold, best first."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        sims = self.similarities(face_embedding)
        order = np.argsort(-sims, kind="stable")
        return [int(i) for i in order[:k] if sims[i] >= threshold]

    def embed_face(self, image: np.ndarray, face: Any = None) -> np.ndarray:
        """Identity embedding (dim,) of a face with this pool's encoder: an aligned FFHQ crop (face=None) or one
        face of a photo (`face`: a FaceDetection or (5, 2) points)."""
        rgb = image if image.dtype == np.uint8 else to_uint8(image)
        return self.identity_encoder.embed_image(rgb, ffhq_points(*rgb.shape[:2]) if face is None else face)[0]
