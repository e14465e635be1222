"""Facial region masks from landmarks: polygons, no network weights.

Task: the region masks of the Masked Face Alignment loss (HonestFace, arXiv 2505.18469: per-region feature and
texture terms over eyes, brows, nose, lips, skin) and the "polygon" paste-back mask, built from any landmark
layout through `LandmarkScheme.indices(component)` (dlib 68, WFLW 98, a registered 106-point scheme, ...).
The same region names come out of the parsing networks (`honestface.face.parsing.parsing_region_masks`).

Regions (our definitions):
- face: convex hull of the jaw, the brows and the brows moved up by `forehead` x (eye-to-mouth distance)
  along the face's vertical axis (landmark layouts stop at the brows; the forehead is extrapolated).
- eyes, nose, inner_mouth: convex hull of each component (hulls make the result independent of point order and
  of extra points such as WFLW's pupil centres).
- brows: hull of each brow, thickened by a stroke of `brow_thickness` x inter-ocular distance (dlib's brows
  are a single arc of 5 points), minus the eyes.
- lips: hull of the outer mouth minus the inner mouth.
- skin: face minus eyes, brows, lips and inner mouth (the nose stays in the skin).
Before feathering, eyes / brows / lips / inner_mouth / skin are pairwise disjoint, and every region lies in face.

Masks are float32 (H, W) in [0, 1]. `dilate` grows each binary region by that many pixels; `feather` is the
sigma (pixels) of a Gaussian blur applied last. Polygons are rasterised by cv2.fillPoly with 4 sub-pixel bits.
The torch entry point rasterises on the CPU with OpenCV and moves the (B, R, H, W) result to the points'
device: rasterisation is not differentiable anyway, and at 512 px it costs about a millisecond per region.
"""

from __future__ import annotations

import cv2
import numpy as np

from honestface.face.schemes import LandmarkScheme, get_scheme

REGIONS = ("face", "skin", "brows", "eyes", "nose", "lips", "inner_mouth")
_SHIFT = 4  # sub-pixel bits for cv2.fillPoly


def _scheme(scheme: LandmarkScheme | str) -> LandmarkScheme:
    return get_scheme(scheme) if isinstance(scheme, str) else scheme


def _points(scheme: LandmarkScheme, points: np.ndarray, component: str, region: str) -> np.ndarray:
    idx = scheme.indices(component)
    if len(idx) < 3:
        raise ValueError(
            f"region {region!r} needs the {component!r} points, which scheme {scheme.name!r} lacks or has < 3 of"
        )
    return points[idx]


def _fill_hull(mask: np.ndarray, pts: np.ndarray) -> None:
    hull = cv2.convexHull(np.round(pts * (1 << _SHIFT)).astype(np.int32))
    cv2.fillPoly(mask, [hull], 1, lineType=cv2.LINE_8, shift=_SHIFT)


def _stroke(mask: np.ndarray, pts: np.ndarray, thickness: int) -> None:
    order = np.argsort(pts[:, 0])  # brows run left to right in every layout
    line = np.round(pts[order] * (1 << _SHIFT)).astype(np.int32)
    cv2.polylines(mask, [line], False, 1, thickness=max(1, thickness), lineType=cv2.LINE_8, shift=_SHIFT)


def _binary_regions(
    points: np.ndarray,
    scheme: LandmarkScheme,
    shape: tuple[int, int],
    regions: tuple[str, ...],
    forehead: float,
    brow_thickness: float,
) -> dict[str, np.ndarray]:
    """uint8 {0, 1} masks, before dilation and feathering (all regions are built: they depend on each other)."""

    def pts(component: str, region: str) -> np.ndarray:
        return _points(scheme, points, component, region)

    m = {name: np.zeros(shape, np.uint8) for name in REGIONS}
    eye_l, eye_r = pts("left_eye", "eyes"), pts("right_eye", "eyes")
    iod = float(np.linalg.norm(eye_r.mean(0) - eye_l.mean(0)))
    _fill_hull(m["eyes"], eye_l)
    _fill_hull(m["eyes"], eye_r)
    for side in ("left_brow", "right_brow"):
        _fill_hull(m["brows"], pts(side, "brows"))
        _stroke(m["brows"], pts(side, "brows"), int(np.rint(brow_thickness * iod)))
    m["brows"] &= 1 - m["eyes"]
    _fill_hull(m["nose"], pts("nose", "nose"))
    _fill_hull(m["inner_mouth"], pts("mouth_inner", "inner_mouth"))
    _fill_hull(m["lips"], pts("mouth_outer", "lips"))
    m["lips"] &= 1 - m["inner_mouth"]
    mouth = pts("mouth_outer", "face").mean(0)
    up = (eye_l.mean(0) + eye_r.mean(0)) / 2 - mouth  # mouth -> eyes: the face's "up", eye-to-mouth long
    brows = pts("brows", "face")
    _fill_hull(m["face"], np.concatenate([pts("jaw", "face"), brows, brows + forehead * up]))
    parts = m["eyes"] | m["brows"] | m["lips"] | m["inner_mouth"]
    m["face"] |= parts | m["nose"]  # every region lies inside the face, even on odd landmark sets
    m["skin"] = m["face"] & (1 - parts)
    return {r: m[r] for r in regions}


def region_masks(
    points: np.ndarray,
    scheme: LandmarkScheme | str,
    shape: tuple[int, ...],
    regions: tuple[str, ...] | list[str] = REGIONS,
    feather: float = 0.0,
    dilate: int = 0,
    forehead: float = 0.6,
    brow_thickness: float = 0.1,
) -> dict[str, np.ndarray]:
    """Region masks of one face: points (P, 2) in pixels of an image of `shape` (H, W[, C]).

    Returns {region: float32 (H, W) in [0, 1]} for the requested `regions` (names in REGIONS).
    """
    scheme = _scheme(scheme)
    pts = np.asarray(points, dtype=np.float64)
    if pts.shape != (scheme.num_points, 2):
        raise ValueError(f"scheme {scheme.name!r} expects points ({scheme.num_points}, 2), got shape {pts.shape}")
    if not np.all(np.isfinite(pts)):
        raise ValueError("region_masks: points contain NaN or inf")
    regions = tuple(regions)
    unknown = [r for r in regions if r not in REGIONS]
    if unknown:
        raise ValueError(f"unknown region(s) {unknown}; allowed: {', '.join(REGIONS)}")
    if feather < 0 or dilate < 0:
        raise ValueError(f"feather and dilate must be >= 0, got {feather}, {dilate}")
    h, w = int(shape[0]), int(shape[1])
    binary = _binary_regions(pts, scheme, (h, w), regions, forehead, brow_thickness)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate + 1, 2 * dilate + 1)) if dilate else None
    out = {}
    for name, m in binary.items():
        if kernel is not None:
            m = cv2.dilate(m, kernel)
        m = m.astype(np.float32)
        if feather > 0:
            m = cv2.GaussianBlur(m, (0, 0), sigmaX=feather, sigmaY=feather, borderType=cv2.BORDER_CONSTANT)
            m = np.clip(m, 0.0, 1.0)
        out[name] = m
    return out


def region_masks_torch(
    points,
    scheme: LandmarkScheme | str,
    shape: tuple[int, int],
    regions: tuple[str, ...] | list[str] = REGIONS,
    feather: float = 0.0,
    dilate: int = 0,
    forehead: float = 0.6,
    brow_thickness: float = 0.1,
    device=None,
):
    """Batch version: points (B, P, 2) tensor or array -> (B, R, H, W) float32 tensor, R in `regions` order.

    Rasterised on the CPU (OpenCV) and moved to `device` (default: the points' device, else CPU).
    """
    import torch

    if device is None:
        device = points.device if isinstance(points, torch.Tensor) else torch.device("cpu")
    pts = points.detach().cpu().double().numpy() if isinstance(points, torch.Tensor) else np.asarray(points, float)
    if pts.ndim != 3:
        raise ValueError(f"points must be (B, P, 2), got shape {pts.shape}")
    regions = tuple(regions)
    batch = np.zeros((len(pts), len(regions), int(shape[0]), int(shape[1])), np.float32)
    for b, p in enumerate(pts):
        masks = region_masks(p, scheme, shape, regions, feather, dilate, forehead, brow_thickness)
        batch[b] = np.stack([masks[r] for r in regions])
    return torch.from_numpy(batch).to(device)  # (B, R, H, W)
