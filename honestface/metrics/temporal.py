"""Temporal consistency of restored face videos: `face_warp_error`, a warping error on face crops.

The warping error of Lai et al. ("Learning Blind Video Temporal Consistency", ECCV 2018) measures flicker:

    E_warp = 1 / (T − 1) Σ_t  (1 / Σ_i M_t(i)) Σ_i M_t(i) ‖V_t(i) − V̂_{t+1}(i)‖²

where V̂_{t+1} is frame t+1 warped back onto frame t with the optical flow between the two frames and M_t is a
non-occlusion mask. Their released code (phoenix104104/fast_blind_video_consistency: compute_flow_occlusion.py,
evaluate_WarpError.py, utils.detect_occlusion) computes the flow with FlowNet2 on the *unprocessed input* video,
not on the evaluated output, marks as occluded the pixels failing the forward-backward consistency check of
Sundaram et al. (ECCV 2010) as used by Ruder et al. ("Artistic style transfer for videos", GCPR 2016),

    |w(x) + ŵ(x + w(x))|² > 0.01 (|w(x)|² + |ŵ(x + w(x))|²) + 0.5

(w the flow from the frame the mask lives on, ŵ the flow back), plus Ruder et al.'s motion boundaries
|∇u|² + |∇v|² > 0.01 |w|² + 0.002 (forward differences of w = (u, v)), reads RGB frames in [0, 1] and divides the
masked sum of squares by the number of mask entries of a 3-channel mask, i.e. averages over pixels *and* channels.

What we do differently, so the number gets its own name, `face_warp_error` (never "E_warp"):
- the flow is OpenCV's DIS optical flow (Kroeger et al., ECCV 2016; `cv2.DISOpticalFlow`, preset MEDIUM refined
  down to full resolution, finest scale 0, on grey frames): no network weights, runs offline. (The preset's own
  finest scale 1 let up to 60% of a newly uncovered strip pass the occlusion check in our tests; scale 0 none on
  textured backgrounds.) It is computed on a *guide* video (the ground truth, or the input
  when there is none), so the same flow and mask judge the input and every restoration;
- the error is measured only on face crops: for each face box of frame t that overlaps (IoU ≥ 0.3) a box of frame
  t − 1, the union of the two boxes grown by `margin` of its size on every side, clipped to the frame;
- we warp frame t − 1 onto frame t (flow from t to t − 1, mask on frame t); Lai et al. warp t + 1 onto t;
- pixels whose flow leaves the crop count as occluded (the crop has no value there);
- the value is the mean over all (pair, face) crops of the masked mean squared error over pixels and channels
  (as the released code averages), of RGB in [0, 1], **reported ×10³** (`SCALE`) everywhere: `value`, and every
  `per_pair` error. A crop whose mask is empty, or smaller than `MIN_CROP` pixels, gets no value (NaN, not counted).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["FLOW_METHOD", "MIN_CROP", "SCALE", "TemporalResult", "face_warp_error", "face_warp_errors", "non_occlusion_mask",
           "optical_flow", "warp_with_flow"]

SCALE = 1000.0  # face_warp_error is reported x1e3 (mean squared error of RGB in [0, 1], times 1000)
MIN_CROP = 16  # pixels: a smaller crop gives DIS too little to match
MATCH_IOU = 0.3  # a face of frame t continues a face of frame t - 1 when their boxes overlap this much
FLOW_METHOD = "OpenCV DIS optical flow (preset MEDIUM, finest scale 0) on grey guide frames"


def _grey(image: np.ndarray) -> np.ndarray:
    import cv2

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"optical_flow needs RGB uint8 frames of shape (H, W, 3), got {image.dtype} {image.shape}")
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)


def optical_flow(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(H, W, 2) float32 flow mapping pixels of `src` to `dst`: src(x) ≈ dst(x + flow(x)), (dx, dy) in pixels.
    Both RGB uint8 (H, W, 3) of the same size; DIS (preset MEDIUM, finest scale 0) on their grey versions."""
    import cv2

    if src.shape != dst.shape:
        raise ValueError(f"optical_flow needs two frames of the same size, got {src.shape} and {dst.shape}")
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    dis.setFinestScale(0)
    return dis.calc(_grey(src), _grey(dst), None).astype(np.float32, copy=False)


def _sample_grid(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return xs + flow[..., 0], ys + flow[..., 1]


def warp_with_flow(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Backward warping: out(x) = image(x + flow(x)), bilinear (cv2.remap); outside the image the border pixel is
    repeated. `flow` (H, W, 2) lives on the output grid (e.g. `optical_flow(frame_t, frame_prev)` to bring
    frame_prev onto frame_t). Same dtype and channels as `image`."""
    import cv2

    if flow.ndim != 3 or flow.shape[2] != 2 or flow.shape[:2] != image.shape[:2]:
        raise ValueError(f"warp_with_flow needs a (H, W, 2) flow of the image's size, got flow {flow.shape} for "
                         f"an image {image.shape}")
    map_x, map_y = _sample_grid(flow.astype(np.float32, copy=False))
    return cv2.remap(np.ascontiguousarray(image), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def non_occlusion_mask(flow_fw: np.ndarray, flow_bw: np.ndarray, *, alpha1: float = 0.01, alpha2: float = 0.5,
                       beta1: float = 0.01, beta2: float = 0.002, motion_boundaries: bool = True) -> np.ndarray:
    """(H, W) bool on frame A: True where a pixel of A is seen in B and its flow can be trusted.

    flow_fw: flow from A to B (on A's grid); flow_bw: flow from B to A (on B's grid). A pixel x is dropped when
    - its flow leaves B (x + flow_fw(x) outside the frame),
    - forward and backward flow disagree: |w + ŵ|² > alpha1 (|w|² + |ŵ|²) + alpha2, with w = flow_fw(x) and
      ŵ = flow_bw(x + w) (Sundaram et al. 2010; Ruder et al. 2016),
    - with `motion_boundaries`, it lies on a motion boundary: |∇u|² + |∇v|² > beta1 |w|² + beta2 (Ruder et al.
      2016; forward differences, as Lai et al.'s code).
    """
    if flow_fw.shape != flow_bw.shape or flow_fw.ndim != 3 or flow_fw.shape[2] != 2:
        raise ValueError(f"non_occlusion_mask needs two (H, W, 2) flows of one size, got {flow_fw.shape} and "
                         f"{flow_bw.shape}")
    h, w = flow_fw.shape[:2]
    fw = flow_fw.astype(np.float32, copy=False)
    map_x, map_y = _sample_grid(fw)
    inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
    back = warp_with_flow(flow_bw.astype(np.float32, copy=False), fw)
    mag = lambda f: (f ** 2).sum(axis=-1)
    consistent = mag(fw + back) <= alpha1 * (mag(fw) + mag(back)) + alpha2
    mask = inside & consistent
    if motion_boundaries:
        grad = np.zeros((h, w), dtype=np.float32)
        for c in range(2):
            grad[:, :-1] += np.diff(fw[..., c], axis=1) ** 2
            grad[:-1, :] += np.diff(fw[..., c], axis=0) ** 2
        mask &= grad <= beta1 * mag(fw) + beta2
    return mask


@dataclass
class TemporalResult:
    """`value`: mean face_warp_error (x1e3, `SCALE`) over every counted (pair, face) crop; NaN when `count` is 0.
    `per_pair`: one dict per crop looked at: t (the later frame), box [x0, y0, x1, y1] (the crop, pixels),
    error (x1e3; NaN when not counted), valid (fraction of the crop's pixels in the non-occlusion mask) and,
    when not counted, why."""

    value: float
    count: int
    per_pair: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"value": self.value, "count": self.count, "per_pair": self.per_pair}


def _boxes_of(boxes: Sequence[np.ndarray] | None, t: int, shape: tuple[int, ...]) -> np.ndarray:
    if boxes is None:
        return np.array([[0.0, 0.0, shape[1], shape[0]]])
    b = np.asarray(boxes[t], dtype=np.float64)
    if b.size == 0:
        return np.zeros((0, 4))
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"face_warp_error: boxes[{t}] must be a (K, 4) array of [x0, y0, x1, y1], got {b.shape}")
    return b


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one box `a` with every box of `b` (K, 4)."""
    iw = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = iw * ih
    area = lambda x: np.clip(x[..., 2] - x[..., 0], 0, None) * np.clip(x[..., 3] - x[..., 1], 0, None)
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _crop_region(a: np.ndarray, b: np.ndarray, margin: float, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """Union of two boxes grown by `margin` of its width / height per side, clipped; integer [x0, y0, x1, y1)."""
    x0, y0 = min(a[0], b[0]), min(a[1], b[1])
    x1, y1 = max(a[2], b[2]), max(a[3], b[3])
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    h, w = shape[:2]
    return (max(0, math.floor(x0 - mx)), max(0, math.floor(y0 - my)), min(w, math.ceil(x1 + mx)),
            min(h, math.ceil(y1 + my)))


def _frame(frames: Sequence[np.ndarray], t: int, what: str, shape: tuple[int, ...] | None) -> np.ndarray:
    f = np.asarray(frames[t])
    if f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8:
        raise ValueError(f"face_warp_error: {what} frame {t} must be RGB uint8 (H, W, 3), got {f.dtype} {f.shape}")
    if shape is not None and f.shape != shape:
        raise ValueError(f"face_warp_error: {what} frame {t} is {f.shape[1]}x{f.shape[0]}, the guide's frames are "
                         f"{shape[1]}x{shape[0]}; every frame must have one size")
    return f


def _guide_flow(guide_prev: np.ndarray, guide_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flow from t to t - 1, non-occlusion mask on t) of one guide crop pair."""
    to_t = optical_flow(guide_t, guide_prev)  # pixels of t -> t - 1: warps t - 1 onto t
    return to_t, non_occlusion_mask(to_t, optical_flow(guide_prev, guide_t))


def _crop_error(out_prev: np.ndarray, out_t: np.ndarray, to_t: np.ndarray, mask: np.ndarray) -> float:
    """Masked mean squared error (x1e3, over pixels and channels) of output t against output t - 1 warped onto t."""
    if not mask.any():
        return float("nan")
    warped = warp_with_flow(out_prev.astype(np.float32) / 255.0, to_t)
    diff = (out_t.astype(np.float32) / 255.0 - warped)[mask]  # (n, 3)
    return float((diff.astype(np.float64) ** 2).mean() * SCALE)


def face_warp_error(outputs: Sequence[np.ndarray], guide: Sequence[np.ndarray],
                    boxes: Sequence[np.ndarray] | None = None, *, margin: float = 0.2) -> TemporalResult:
    """face_warp_error (x1e3) of a video `outputs` with the flow of the `guide` video (module docstring).

    outputs, guide: same-length sequences of RGB uint8 (H, W, 3) frames, all of one size. boxes: boxes[t] is a
    (K_t, 4) array of face boxes [x0, y0, x1, y1] on frame t (typically detected on the guide); None: the whole
    frame is one box. margin: the crop grows by this fraction of the boxes' union per side.
    Mismatched lengths or sizes raise ValueError (one line).
    """
    return face_warp_errors({"outputs": outputs}, guide, boxes, margin=margin)["outputs"]


def face_warp_errors(videos: Mapping[str, Sequence[np.ndarray]], guide: Sequence[np.ndarray],
                     boxes: Sequence[np.ndarray] | None = None, *, margin: float = 0.2) -> dict[str, TemporalResult]:
    """`face_warp_error` of several videos (e.g. the input and each restoration) judged by one guide: the flow and
    mask of each crop are computed once and shared. Returns {name: TemporalResult}."""
    n = len(guide)
    for name, frames in videos.items():
        if len(frames) != n:
            raise ValueError(f"face_warp_error: the {name} have {len(frames)} frames and the guide {n}; "
                             "they must have the same number")
    if boxes is not None and len(boxes) != n:
        raise ValueError(f"face_warp_error: boxes are given for {len(boxes)} frames, the guide has {n}")
    if not margin >= 0:
        raise ValueError(f"face_warp_error: margin must be >= 0, got {margin}")
    per_pair: dict[str, list[dict[str, Any]]] = {name: [] for name in videos}
    if n:
        shape = _frame(guide, 0, "guide", None).shape
        g_prev, b_prev = _frame(guide, 0, "guide", shape), _boxes_of(boxes, 0, shape)
        o_prev = {name: _frame(frames, 0, name, shape) for name, frames in videos.items()}
    for t in range(1, n):
        g_t, b_t = _frame(guide, t, "guide", shape), _boxes_of(boxes, t, shape)
        o_t = {name: _frame(frames, t, name, shape) for name, frames in videos.items()}
        for box in b_t:
            ious = _iou(box, b_prev) if len(b_prev) else np.zeros(0)
            if not len(ious) or ious.max() < MATCH_IOU:
                continue
            x0, y0, x1, y1 = _crop_region(box, b_prev[int(ious.argmax())], margin, shape)
            entry: dict[str, Any] = {"t": t, "box": [x0, y0, x1, y1]}
            if min(x1 - x0, y1 - y0) < MIN_CROP:
                for rows in per_pair.values():
                    rows.append({**entry, "error": float("nan"), "valid": 0.0,
                                 "why": f"crop smaller than {MIN_CROP} pixels"})
                continue
            region = np.s_[y0:y1, x0:x1]
            to_t, mask = _guide_flow(g_prev[region], g_t[region])
            entry["valid"] = float(mask.mean())
            for name, rows in per_pair.items():
                err = _crop_error(o_prev[name][region], o_t[name][region], to_t, mask)
                rows.append({**entry, "error": err, **({"why": "every pixel occluded"} if math.isnan(err) else {})})
        g_prev, b_prev, o_prev = g_t, b_t, o_t
    out = {}
    for name, rows in per_pair.items():
        errors = [p["error"] for p in rows if not math.isnan(p["error"])]
        out[name] = TemporalResult(float(np.mean(errors)) if errors else float("nan"), len(errors), rows)
    return out
