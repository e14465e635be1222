"""Landmark schemes: which point indices make up each facial component, for every landmark layout we support.

Metrics (LMD, ALD) and losses (MFA region masks) are written once against these names, whatever detector
produced the points. Component names:

    jaw, left_brow, right_brow, nose, left_eye, right_eye, mouth_outer, mouth_inner
    + derived groups: eyes, brows, mouth, all

"left"/"right" follow the image (left = smaller x in a frontal face, i.e. the subject's right), which is
also the convention of `FaceDetection.points5`.

Index sources:
- dlib / iBUG 300-W 68-point markup (Sagonas et al., 300 Faces in-the-Wild, 2013).
- WFLW 98-point markup (Wu et al., "Look at Boundary", CVPR 2018), used by facexlib's AWing FAN.
- 5-point: eye centres, nose tip, mouth corners (RetinaFace / SCRFD / MTCNN order).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_BASE_COMPONENTS = ("jaw", "left_brow", "right_brow", "nose", "left_eye", "right_eye", "mouth_outer", "mouth_inner")
_GROUPS = {
    "eyes": ("left_eye", "right_eye"),
    "brows": ("left_brow", "right_brow"),
    "mouth": ("mouth_outer", "mouth_inner"),
}


@dataclass(frozen=True)
class LandmarkScheme:
    """A named landmark layout: number of points and the index set of each component.

    Components absent from a layout (e.g. the jaw of the 5-point layout) are empty tuples. `mirror[i]` is the
    point that takes point i's role in the horizontally flipped face (empty: the layout cannot be flipped).
    """

    name: str
    num_points: int
    components: dict[str, tuple[int, ...]] = field(default_factory=dict)
    mirror: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for comp, idx in self.components.items():
            if comp not in _BASE_COMPONENTS:
                raise ValueError(f"scheme {self.name!r}: unknown component {comp!r}; allowed: {_BASE_COMPONENTS}")
            if idx and (min(idx) < 0 or max(idx) >= self.num_points):
                raise ValueError(f"scheme {self.name!r}: component {comp!r} has indices outside 0..{self.num_points - 1}")
        if self.mirror and sorted(self.mirror) != list(range(self.num_points)):
            raise ValueError(f"scheme {self.name!r}: mirror must be a permutation of 0..{self.num_points - 1}")

    def swap_sides(self, points: np.ndarray) -> np.ndarray:
        """Reindex landmarks (..., P, 2) whose positions were mirrored, so that each point has its role again
        (after a flip the subject's right eye sits where the left one was)."""
        if not self.mirror:
            raise ValueError(f"scheme {self.name!r} has no mirror permutation; its landmarks cannot be flipped")
        return np.asarray(points)[..., list(self.mirror), :]

    def flip(self, points: np.ndarray, width: float) -> np.ndarray:
        """Landmarks (..., P, 2) of the face mirrored in an image `width` pixels wide (x -> width - 1 - x)."""
        out = np.array(self.swap_sides(points), dtype=np.float64)
        out[..., 0] = width - 1 - out[..., 0]
        return out

    def indices(self, component: str) -> np.ndarray:
        """Indices of a component, a group (eyes, brows, mouth) or `all`, as an int64 array."""
        if component == "all":
            return np.arange(self.num_points, dtype=np.int64)
        if component in _GROUPS:
            parts = [self.components.get(c, ()) for c in _GROUPS[component]]
            return np.array(sorted(set().union(*parts)), dtype=np.int64)
        if component not in _BASE_COMPONENTS:
            allowed = (*_BASE_COMPONENTS, *_GROUPS, "all")
            raise KeyError(f"unknown landmark component {component!r}; allowed: {', '.join(allowed)}")
        return np.array(self.components.get(component, ()), dtype=np.int64)

    def select(self, points: np.ndarray, component: str) -> np.ndarray:
        """Points of one component: (..., P, 2) -> (..., P_c, 2)."""
        if points.shape[-2] != self.num_points:
            raise ValueError(f"scheme {self.name!r} expects {self.num_points} points, got {points.shape[-2]}")
        return points[..., self.indices(component), :]

    def eye_centers(self, points: np.ndarray) -> np.ndarray:
        """(..., P, 2) -> (..., 2, 2): mean of the left-eye points and of the right-eye points."""
        return np.stack(
            [self.select(points, "left_eye").mean(-2), self.select(points, "right_eye").mean(-2)], axis=-2
        )

    def to_five(self, points: np.ndarray) -> np.ndarray:
        """(..., P, 2) -> (..., 5, 2) in the FaceDetection.points5 order (eyes, nose tip, mouth corners)."""
        if self.name == "five":
            return points
        five = _FIVE_FROM.get(self.name)
        if five is None:
            raise ValueError(f"scheme {self.name!r} has no 5-point reduction")
        eyes = self.eye_centers(points)
        rest = points[..., list(five), :]
        return np.concatenate([eyes, rest], axis=-2)


def _r(a: int, b: int) -> tuple[int, ...]:
    """Inclusive index range."""
    return tuple(range(a, b + 1))


DLIB68 = LandmarkScheme(
    name="dlib68",
    num_points=68,
    components={
        "jaw": _r(0, 16),
        "left_brow": _r(17, 21),
        "right_brow": _r(22, 26),
        "nose": _r(27, 35),
        "left_eye": _r(36, 41),
        "right_eye": _r(42, 47),
        "mouth_outer": _r(48, 59),
        "mouth_inner": _r(60, 67),
    },
    # iBUG 300-W flip pairs: jaw 0-16, brows 17-26, nostrils 31-35, eyes 36-45 / 37-44 / 38-43 / 39-42 / 40-47 /
    # 41-46, outer lips 48-54 / 49-53 / 50-52 / 55-59 / 56-58, inner lips 60-64 / 61-63 / 65-67; the midline
    # points (8, 27-30, 33, 51, 57, 62, 66) map to themselves.
    mirror=(*range(16, -1, -1), *range(26, 16, -1), 27, 28, 29, 30, 35, 34, 33, 32, 31,
            45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
            54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65),
)

WFLW98 = LandmarkScheme(
    name="wflw98",
    num_points=98,
    components={
        "jaw": _r(0, 32),
        "left_brow": _r(33, 41),
        "right_brow": _r(42, 50),
        "nose": _r(51, 59),
        "left_eye": _r(60, 67) + (96,),
        "right_eye": _r(68, 75) + (97,),
        "mouth_outer": _r(76, 87),
        "mouth_inner": _r(88, 95),
    },
)

FIVE = LandmarkScheme(
    name="five",
    num_points=5,
    components={"left_eye": (0,), "right_eye": (1,), "nose": (2,), "mouth_outer": (3, 4)},
    mirror=(1, 0, 2, 4, 3),
)

# For to_five: indices of (nose tip, left mouth corner, right mouth corner) in each layout.
_FIVE_FROM: dict[str, tuple[int, int, int]] = {
    "dlib68": (30, 48, 54),
    "wflw98": (54, 76, 82),
}

SCHEMES: dict[str, LandmarkScheme] = {s.name: s for s in (DLIB68, WFLW98, FIVE)}


def register_scheme(scheme: LandmarkScheme, five_from: tuple[int, int, int] | None = None) -> LandmarkScheme:
    """Add a scheme (e.g. a user's own detector layout) so it can be named in config."""
    SCHEMES[scheme.name] = scheme
    if five_from is not None:
        _FIVE_FROM[scheme.name] = five_from
    return scheme


def get_scheme(name: str) -> LandmarkScheme:
    if name not in SCHEMES:
        raise KeyError(f"unknown landmark scheme {name!r}; allowed: {', '.join(sorted(SCHEMES))}")
    return SCHEMES[name]


# insightface 2d106det (coordinate regression, 106 points; "2d106markup" in insightface alignment/coordinate_reg).
# insightface documents the markup only as an image, so the index groups below come from the 106 -> iBUG-68
# correspondence used with this model by 1996scarlet/OpenVtuber (PythonClient/SolvePnPHeadPoseEstimation.py)
# and, for jaw / brows / nose, by ByteDance LatentSync (LMK_ADAPT_ORIGIN_ORDER):
#   contour 0-32 (0 = chin), image-left eye 33-42, image-left brow 43-51, mouth 52-71, nose 72-86 (86 = tip),
#   image-right eye 87-96, image-right brow 97-105.
# Mouth split: the 12 points that correspond to iBUG outer-lip points 48-59 form mouth_outer (52 and 61 are
# the corners) and the 8 that correspond to iBUG inner-lip points 60-67 form mouth_inner. This split rests on
# that third-party correspondence, not on an insightface document.
INSIGHTFACE106 = register_scheme(
    LandmarkScheme(
        name="insightface106",
        num_points=106,
        components={
            "jaw": _r(0, 32),
            "left_brow": _r(43, 51),
            "right_brow": _r(97, 105),
            "nose": _r(72, 86),
            "left_eye": _r(33, 42),
            "right_eye": _r(87, 96),
            "mouth_outer": (52, 53, 55, 56, 58, 59, 61, 63, 64, 67, 68, 71),
            "mouth_inner": (54, 57, 60, 62, 65, 66, 69, 70),
        },
    ),
    five_from=(86, 52, 61),
)
