"""Aligned face crops of a photo: detect → (landmarks) → align, keeping everything needed to paste back.

This is the "prepare" step shared by data preparation, whole-photo inference and evaluation: each face of a
photo becomes an `AlignedFace` with its crop, the affine matrix (photo pixels → crop pixels), and its dense
landmarks in both frames. Our choice: dense landmarks are predicted on the photo (where the detector's box
lives) and mapped into the crop with the same matrix, so crop landmarks need no second detection pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from honestface.face.alignment import align_face
from honestface.face.detection import as_rgb_uint8, select_faces
from honestface.face.types import FaceDetection


@dataclass
class AlignedFace:
    """One face of a photo, aligned to a template.

    crop: (S, S, 3) uint8; matrix: (2, 3) photo pixels -> crop pixels; detection: in photo pixels;
    landmarks / crop_landmarks: (P, 2) in photo / crop pixels (None without a landmark detector).
    """

    crop: np.ndarray
    matrix: np.ndarray
    detection: FaceDetection
    landmarks: np.ndarray | None = None
    crop_landmarks: np.ndarray | None = None
    scheme: str | None = None

    @property
    def points5(self) -> np.ndarray:
        """(5, 2) five points in crop pixels."""
        return transform_points(self.detection.points5, self.matrix)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine to (..., 2) points."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def extract_faces(
    image: np.ndarray,
    detector,
    landmarker=None,
    size: int = 512,
    template: str = "ffhq",
    rule: str = "all",
    border: str = "reflect",
) -> list[AlignedFace]:
    """All faces chosen by `rule` (see `select_faces`), aligned to `template` at `size` px, in detector order.

    image: RGB (H, W, 3) uint8 or float in [0, 1]. Faces without five points (and no landmark detector to
    derive them) are skipped, since they cannot be aligned.
    """
    rgb = as_rgb_uint8(image)  # (H, W, 3) uint8
    dets = select_faces(detector.detect(rgb), rule, rgb.shape)
    dense = landmarker.predict(rgb, np.stack([d.box for d in dets])) if (dets and landmarker) else None  # (N, P, 2)
    faces = []
    for i, det in enumerate(dets):
        points5 = det.points5
        if points5 is None and dense is not None:
            points5 = landmarker.scheme.to_five(dense[i])
        if points5 is None:
            continue
        det = FaceDetection(box=det.box.copy(), score=det.score, points5=np.asarray(points5, float), extra=det.extra)
        crop, matrix = align_face(rgb, det.points5, template=template, size=size, border=border)
        lm = None if dense is None else dense[i]
        faces.append(
            AlignedFace(
                crop=crop,
                matrix=matrix,
                detection=det,
                landmarks=lm,
                crop_landmarks=None if lm is None else transform_points(lm, matrix),
                scheme=None if landmarker is None else landmarker.scheme.name,
            )
        )
    return faces
