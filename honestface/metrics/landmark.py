"""Landmark fidelity metrics: LMD (mean landmark distance) and ALD (affine landmark distance, our definition).

Paper component: Table 1 of HonestFace (Wang et al., arXiv 2505.18469) reports an L2 landmark distance (L2-LD) and
"affine landmark distances" of the eyes and mouth (ALD-e, ALD-m). The paper does not publish the ALD formula, so the
definition below is **our choice** (docs/metrics.md):

    For a component c (eyes: both eyes' points; mouth: outer + inner lips; all: every point), fit by least squares
    the affine map A_c(p) = M_c p + t_c taking the ground-truth points g_i of c onto a canonical template T_c
    (a mean shape of c, centred, divided by its RMS radius and scaled to 100 units). Then

        ALD_c = mean_i || M_c (r_i - g_i) ||_2          (r_i: restored points)

    i.e. the displacement of each restored point measured in the component's canonical frame. It is 0 when
    r = g and unchanged when both point sets undergo the same affine map (face size, in-plane rotation, position),
    while a change of the component's own shape (an eye squashed or opened) moves it.

LMD (VQFR, Gu et al., ECCV 2022): mean over points of the pixel distance ||r_i - g_i||_2 between the landmarks of the
restored face and of its ground truth (VQFR uses AWing 98 points on 512 px faces; any scheme works here).

Templates: a built-in frontal reference shape per scheme. `dlib68`: measured by us with the bundled dlib HOG
detector and 68-point predictor on the bundled photos (`honestface.data.samples`: astronaut and grace_hopper, the
largest face each, and the six faces of insightface's t1.jpg), each face aligned with `extract_faces(size=512)`;
the 8 shapes and their mirror images (left/right index swap, x negated: a symmetric template) were averaged after
iterated Procrustes alignment (centre, unit RMS radius, optimal rotation), rotated so the eye centres are level,
and scaled to RMS radius 100. Schemes without a built-in shape (wflw98, insightface106, five, user schemes) use a
per-image canonical frame: the GT component itself, centred and scaled to RMS radius 100 (then M_c is a pure
scale and ALD_c = 100 * mean_i ||r_i - g_i|| / rms_radius(g_c)); `template=` overrides both. Components whose GT
points do not span an affine frame (fewer than 3 points, or collinear) fall back to a similarity fit (our choice).

`LandmarkMetrics` owns a detector and a landmarker. For aligned faces (restored pixel-aligned with its GT) the face
is detected once, on the GT, and the landmarks of both images are predicted inside that same box, so a failed
detection on a bad restoration does not make the metric undefined (`same_box=False` detects on each image).
"""

from __future__ import annotations

import numpy as np

from honestface.face.schemes import LandmarkScheme, get_scheme

# dlib68 mean frontal shape (x, y), RMS radius 100, image axes (y down); see the module docstring for how it was made.
DLIB68_MEAN_SHAPE = np.array([
    (-135.03, -71.16), (-133.93, -36.71), (-129.67, -1.56), (-121.59, 33.08), (-107.09, 65.01), (-86.78, 93.96),
    (-61.77, 119.49), (-33.92, 140.63), (0.00, 146.40), (33.92, 140.63), (61.77, 119.49), (86.78, 93.96),
    (107.09, 65.01), (121.59, 33.08), (129.67, -1.56), (133.93, -36.71), (135.03, -71.16), (-103.60, -98.81),
    (-87.64, -112.04), (-66.15, -114.59), (-43.85, -111.04), (-22.56, -101.23), (22.56, -101.23), (43.85, -111.04),
    (66.15, -114.59), (87.64, -112.04), (103.60, -98.81), (0.00, -73.92), (0.00, -49.54), (0.00, -24.60),
    (0.00, 0.29), (-27.48, 12.09), (-14.23, 18.50), (0.00, 23.10), (14.23, 18.50), (27.48, 12.09),
    (-77.65, -70.82), (-63.83, -76.56), (-48.36, -76.72), (-34.09, -68.48), (-49.09, -65.83), (-64.94, -65.79),
    (34.09, -68.48), (48.36, -76.72), (63.83, -76.56), (77.65, -70.82), (64.94, -65.79), (49.09, -65.83),
    (-53.87, 49.82), (-34.46, 44.00), (-14.77, 42.60), (0.00, 46.53), (14.77, 42.60), (34.46, 44.00),
    (53.87, 49.82), (35.42, 70.39), (15.99, 80.19), (0.00, 82.42), (-15.99, 80.19), (-35.42, 70.39),
    (-45.96, 51.82), (-14.83, 52.79), (0.00, 54.34), (14.83, 52.79), (45.96, 51.82), (14.79, 62.36),
    (0.00, 64.24), (-14.79, 62.36),
], dtype=np.float64)  # fmt: skip

MEAN_SHAPES: dict[str, np.ndarray] = {"dlib68": DLIB68_MEAN_SHAPE}
TEMPLATE_SCALE = 100.0
ALD_COMPONENTS = {"ald": "all", "ald_e": "eyes", "ald_m": "mouth"}


def _points(x, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} landmarks must be (P, 2) (x, y) points, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} landmarks contain NaN or inf")
    return arr


def normalise_shape(points: np.ndarray, scale: float = TEMPLATE_SCALE) -> np.ndarray:
    """Centre (P, 2) points and scale them to RMS radius `scale`."""
    centred = points - points.mean(0)
    rms = float(np.sqrt((centred**2).sum(1).mean()))
    if rms <= 1e-12:
        raise ValueError("cannot normalise a landmark shape whose points all coincide")
    return centred * (scale / rms)


def component_template(scheme: str | LandmarkScheme, component: str, template: np.ndarray | None = None):
    """Canonical template T_c (P_c, 2) of a component, or None when the scheme has no built-in mean shape.

    template: a user mean shape, either of the whole scheme (P, 2) or of the component alone (P_c, 2).
    """
    sch = get_scheme(scheme) if isinstance(scheme, str) else scheme
    idx = sch.indices(component)
    if template is None:
        mean = MEAN_SHAPES.get(sch.name)
        if mean is None:
            return None
        template = mean
    t = _points(template, "template")
    if len(t) == sch.num_points:
        t = t[idx]
    elif len(t) != len(idx):
        raise ValueError(f"template has {len(t)} points; scheme {sch.name!r} needs {sch.num_points} (whole face) or "
                         f"{len(idx)} (component {component!r})")
    return normalise_shape(t)


def _similarity_linear(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Linear part (2, 2) of the least-squares similarity taking src onto dst (Umeyama, no reflection)."""
    s0, d0 = src - src.mean(0), dst - dst.mean(0)
    var = (s0**2).sum()
    if var <= 1e-12:
        raise ValueError("cannot fit a landmark frame: the component's ground-truth points all coincide")
    u, sv, vt = np.linalg.svd(d0.T @ s0)
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    return (u @ d @ vt) * (np.trace(np.diag(sv) @ d) / var)


def fit_component_frame(gt: np.ndarray, template: np.ndarray) -> np.ndarray:
    """M_c (2, 2): linear part of the least-squares affine map taking GT points (n, 2) onto the template (n, 2).

    Falls back to a similarity fit when the GT points do not span an affine frame (n < 3 or collinear).
    """
    centred = gt - gt.mean(0)
    sv = np.linalg.svd(centred, compute_uv=False) if len(gt) >= 2 else np.zeros(1)
    if len(gt) < 3 or sv[-1] <= 1e-6 * max(sv[0], 1e-12):
        return _similarity_linear(gt, template)
    design = np.concatenate([gt, np.ones((len(gt), 1))], axis=1)  # (n, 3)
    sol, *_ = np.linalg.lstsq(design, template, rcond=None)  # (3, 2): [M^T; t^T]
    return sol[:2].T


def affine_landmark_distance(
    restored: np.ndarray,
    gt: np.ndarray,
    scheme: str | LandmarkScheme = "dlib68",
    component: str = "all",
    template: np.ndarray | None = None,
) -> float:
    """ALD_c = mean_i ||M_c (r_i - g_i)||, M_c the affine frame of the GT component (module docstring).

    restored, gt: (P, 2) landmarks of one face in one scheme. Units: template units (RMS radius 100).
    """
    sch = get_scheme(scheme) if isinstance(scheme, str) else scheme
    r, g = _points(restored, "restored"), _points(gt, "gt")
    if r.shape != g.shape or len(g) != sch.num_points:
        raise ValueError(f"restored {r.shape} and gt {g.shape} landmarks must both be ({sch.num_points}, 2) "
                         f"for scheme {sch.name!r}")
    idx = sch.indices(component)
    if len(idx) == 0:
        raise ValueError(f"scheme {sch.name!r} has no points for component {component!r}")
    g_c, r_c = g[idx], r[idx]
    t_c = component_template(sch, component, template)
    if t_c is None:  # per-image canonical frame: the GT component normalised
        t_c = normalise_shape(g_c)
    m = fit_component_frame(g_c, t_c)
    return float(np.linalg.norm((r_c - g_c) @ m.T, axis=1).mean())


def landmark_distance(restored: np.ndarray, gt: np.ndarray) -> float:
    """LMD: mean over points of the pixel distance ||r_i - g_i||_2 (VQFR). (P, 2), (P, 2) -> float."""
    r, g = _points(restored, "restored"), _points(gt, "gt")
    if r.shape != g.shape:
        raise ValueError(f"restored {r.shape} and gt {g.shape} landmarks must have the same shape")
    return float(np.linalg.norm(r - g, axis=1).mean())


def landmark_scores(restored: np.ndarray, gt: np.ndarray, scheme: str | LandmarkScheme = "dlib68") -> dict[str, float]:
    """{"lmd", "ald", "ald_e", "ald_m"} of one pair of (P, 2) landmark sets."""
    out = {"lmd": landmark_distance(restored, gt)}
    for key, comp in ALD_COMPONENTS.items():
        out[key] = affine_landmark_distance(restored, gt, scheme, comp)
    return out


def _box_from_points(points: np.ndarray, image_shape: tuple[int, ...]) -> np.ndarray:
    """A face box around landmarks (used when only GT landmarks are known): their extent, grown 10% (our choice)."""
    lo, hi = points.min(0), points.max(0)
    pad = 0.1 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    h, w = image_shape[:2]
    return np.array([max(lo[0], 0.0), max(lo[1], 0.0), min(hi[0], w), min(hi[1], h)], dtype=np.float64)


class LandmarkMetrics:
    """LMD and ALD (all, eyes, mouth) of restored faces against their ground truth, with one detector pair.

    Args:
        landmarker: landmark backend name (`build_landmarker`: dlib68, awing98, insightface106).
        detector: face detector name (`build_detector`: dlib, mtcnn, retinaface, scrfd).
        device: torch / onnxruntime device of the backends (None = CPU).
        same_box: detect on the GT only and predict both images' landmarks in that box (aligned faces).
        rule: which face to use when several are found (`select_faces` rule; default the largest).

    `landmarks(image)` -> (P, 2) or None (reason in `last_failure`). `__call__(restored, gt)` -> {"lmd", "ald",
    "ald_e", "ald_m"} or {"failed": reason}. Images: RGB (H, W, 3) uint8 or float in [0, 1].
    """

    def __init__(self, landmarker: str = "dlib68", detector: str = "dlib", device=None, same_box: bool = True,
                 rule: str = "largest") -> None:
        from honestface.face import build_detector, build_landmarker

        self.detector = build_detector(detector, device=device)
        self.landmarker = build_landmarker(landmarker, device=device)
        self.scheme: LandmarkScheme = self.landmarker.scheme
        self.same_box = bool(same_box)
        self.rule = rule
        self.last_failure: str | None = None

    @property
    def name(self) -> str:
        return f"{self.detector.name}+{self.landmarker.name}"

    def face_box(self, image: np.ndarray) -> np.ndarray | None:
        """(4,) box of the chosen face, or None (reason in `last_failure`)."""
        from honestface.face import select_faces

        dets = select_faces(self.detector.detect(image), self.rule, np.shape(image))
        if not dets:
            self.last_failure = f"no face detected by {self.detector.name}"
            return None
        self.last_failure = None
        return np.asarray(dets[0].box, dtype=np.float64)

    def predict(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """(P, 2) landmarks of the face inside `box`."""
        return self.landmarker.predict(image, np.asarray(box, np.float64)[None])[0]

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        """(P, 2) landmarks of the chosen (largest) face, or None when no face is found."""
        box = self.face_box(image)
        return None if box is None else self.predict(image, box)

    def __call__(self, restored: np.ndarray, gt: np.ndarray, gt_landmarks: np.ndarray | None = None) -> dict:
        if np.shape(restored)[:2] != np.shape(gt)[:2]:
            raise ValueError(f"restored {np.shape(restored)} and gt {np.shape(gt)} images must have the same size")
        box = self.face_box(gt)
        if gt_landmarks is not None:
            g = _points(gt_landmarks, "gt")
            if len(g) != self.scheme.num_points:
                raise ValueError(f"gt_landmarks have {len(g)} points; {self.landmarker.name} predicts "
                                 f"{self.scheme.num_points}")
            if box is None:
                box = _box_from_points(g, np.shape(gt))
        elif box is None:
            return {"failed": f"gt: {self.last_failure}"}
        else:
            g = self.predict(gt, box)
        if self.same_box:
            r = self.predict(restored, box)
        else:
            r_box = self.face_box(restored)
            if r_box is None:
                return {"failed": f"restored: {self.last_failure}"}
            r = self.predict(restored, r_box)
        return landmark_scores(r, g, self.scheme)
