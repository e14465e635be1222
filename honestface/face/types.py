"""Common data types and interfaces of the face toolkit.

Every backend of a task (detection, landmarks, identity, parsing) returns these types, so the rest of the
library never depends on which backend a user picked in config.

Image convention for every numpy entry point of the toolkit: an RGB array (H, W, 3), either uint8 in [0, 255]
or float in [0, 1] (what `honestface.io.read_image` returns). Coordinates are (x, y) in pixels of that image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass
class FaceDetection:
    """One detected face.

    box: (4,) float [x0, y0, x1, y1] in pixels.
    score: detector confidence (backend-specific scale; higher is more confident).
    points5: (5, 2) float, in the order left eye, right eye, nose tip, left mouth corner, right mouth corner,
        where "left" means the image-left side (the subject's right), as in the ArcFace/FFHQ templates.
        None when the backend gives no points.
    """

    box: np.ndarray
    score: float
    points5: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def center(self) -> np.ndarray:
        return np.array([(self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2], dtype=np.float64)


@runtime_checkable
class FaceDetector(Protocol):
    """Finds faces in one RGB image. `detect` returns detections sorted by descending score."""

    name: str

    def detect(self, image: np.ndarray) -> list[FaceDetection]: ...


@runtime_checkable
class LandmarkDetector(Protocol):
    """Predicts a fixed landmark scheme for each given face box. Returns (N, P, 2) float, one row per box."""

    name: str
    scheme: LandmarkScheme  # noqa: F821 (defined in honestface.face.schemes)

    def predict(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray: ...
