"""Face tracks of a video: link the faces detected in each frame into one track per person, offline.

A video is restored face by face, so each person needs one track: the frames it appears in, its detection and its
identity embedding in each of them. The track is what references are matched to (once per person, not once per
frame) and what landmark smoothing runs along (`honestface.video.smoothing`).

Known methods we build on (facts): SORT (Bewley et al., "Simple Online and Realtime Tracking", ICIP 2016) links
detections to tracks frame by frame with the Hungarian algorithm on box IoU; DeepSORT (Wojke et al., "Simple Online
and Realtime Tracking with a Deep Association Metric", ICIP 2017) adds an appearance embedding to the association
and matches by appearance before a final IoU stage.

Our choice (the rule `link_tracks` implements), frame by frame, in order:
- A track is alive at frame t when it was last seen at most `max_gap` missing frames before (t - last - 1 <= max_gap).
  Boxes are compared with the track's predicted box: with `motion=True` (default) its last box moved on by the
  displacement between its last two boxes, per frame (a constant-velocity guess, the simplest form of SORT's Kalman
  prediction; it keeps a face panning by about half its width per frame linked). A track seen on one frame only has
  no displacement yet and moves with the median displacement of the other tracks (a camera pan moves every face
  alike). With `motion=False`: its last box.
  A jump too fast for IoU is what stage 1 recovers.
- Stage 1, identity (only with embeddings and `identity_threshold` set): a pair (alive track, detection) is an
  identity match when both have an embedding and cos(track mean embedding, detection embedding) >= identity_threshold,
  wherever the box is (so a face that jumps after a cut or a fast pan rejoins its track). Identity matches are
  assigned first, by an optimal assignment (scipy `linear_sum_assignment`) maximising the number of matches, then
  the sum of (cosine + IoU). Hence identity wins over IoU when its evidence is strong: when two people swap places,
  a detection whose embedding passes the threshold for track A only goes to A, however much its box overlaps B's.
  If it passes for both tracks, the threshold is too low for that encoder and the cosine + IoU sum decides.
- Stage 2, IoU: the tracks and detections left are assigned the same way on IoU, for pairs with IoU >= iou_threshold.
  With `identity_veto` set, a pair whose embeddings are both known and have a cosine below it is not allowed here
  (a cut to another person framed at the same place then starts a new track instead of continuing the old one).
- Detections left start new tracks, in detection order. Tracks with fewer than `min_length` frames are dropped and
  ids are 0, 1, ... in order of first appearance (frame, then detection order). Everything is deterministic.

Thresholds belong to the identity encoder. Measured with MTCNN faces of insightface's t1.jpg group photo (six
people, 640 px wide; shifted, zoomed and mirrored copies), dlib's L2-normalised 128-D descriptors give 0.98-0.997
for the same person and 0.78-0.92 between different people: identity_threshold 0.95 and identity_veto 0.9 suit
dlib there (the veto then misses the closest pair of different people). Real footage (pose, blur, lighting) lowers
same-person cosines, so check them on your videos; other encoders (ArcFace) need their own values.

`FaceTrack.to_dict` / `from_dict` turn a track into JSON-safe plain lists (to cache an analysis on disk).
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from honestface.face.types import FaceDetection

_FORBIDDEN = 1e6  # assignment cost of a pair that is not allowed (finite: the solver rejects inf when infeasible)


@dataclass
class FaceTrack:
    """One person across a video: `frames` (strictly increasing frame indices) and, for each of them, its
    `detections` and `embeddings` (an L2-normalised identity embedding, or None where none was computed)."""

    id: int
    frames: list[int] = field(default_factory=list)
    detections: list[FaceDetection] = field(default_factory=list)
    embeddings: list[np.ndarray | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.frames = [int(f) for f in self.frames]
        if not len(self.detections) == len(self.embeddings) == len(self.frames):
            raise ValueError(f"track {self.id}: frames, detections and embeddings need one entry each per frame, got "
                             f"{len(self.frames)}, {len(self.detections)} and {len(self.embeddings)}")
        if any(b <= a for a, b in zip(self.frames, self.frames[1:])):
            raise ValueError(f"track {self.id}: frames must be strictly increasing, got {self.frames}")

    def __len__(self) -> int:
        return len(self.frames)

    def index(self, frame: int) -> int | None:
        """Position of `frame` in this track, or None when the face was not seen in that frame."""
        i = bisect.bisect_left(self.frames, int(frame))
        return i if i < len(self.frames) and self.frames[i] == int(frame) else None

    def boxes(self) -> np.ndarray:
        """(N, 4) float64 [x0, y0, x1, y1] per frame of the track."""
        return np.array([np.asarray(d.box, np.float64).reshape(4) for d in self.detections]).reshape(-1, 4)

    def points5(self) -> np.ndarray:
        """(N, 5, 2) float64 five points per frame of the track (FaceDetection.points5 order)."""
        for f, d in zip(self.frames, self.detections):
            if d.points5 is None:
                raise ValueError(f"track {self.id}: the detection at frame {f} has no points5; use a detector that "
                                 "gives five points (e.g. mtcnn) or fill them with honestface.face.detect_landmarks")
        return np.array([np.asarray(d.points5, np.float64).reshape(5, 2) for d in self.detections]).reshape(-1, 5, 2)

    def mean_embedding(self) -> np.ndarray | None:
        """L2-normalised mean of the track's embeddings (None when it has none)."""
        known = [np.asarray(e, np.float64) for e in self.embeddings if e is not None]
        if not known:
            return None
        mean = np.mean(known, axis=0)
        norm = np.linalg.norm(mean)
        return mean / norm if norm > 1e-12 else None

    def to_dict(self) -> dict:
        """JSON-safe plain data (`json.dumps` works on it); `from_dict` rebuilds an equal track.

        Each detection keeps box, score, points5 and, of `extra`, the values JSON holds (str, bool, int, finite
        float, None, numpy scalars, and lists / dicts of them; tuples come back as lists); numeric numpy arrays in
        `extra` (e.g. dlib's 68 landmarks) are kept as nested lists with their dtype and restored as arrays; any
        other value (a backend object, NaN) is dropped. Embeddings are stored as lists and restored with their
        dtype (float32 from the encoders).
        """
        dtypes = {str(np.asarray(e).dtype) for e in self.embeddings if e is not None}
        return {
            "id": int(self.id),
            "frames": list(self.frames),
            "detections": [_detection_to_dict(d) for d in self.detections],
            "embeddings": [None if e is None else np.asarray(e).tolist() for e in self.embeddings],
            "embedding_dtype": dtypes.pop() if len(dtypes) == 1 else "float64",
        }

    @classmethod
    def from_dict(cls, data: dict) -> FaceTrack:
        """The track `to_dict` wrote."""
        missing = [k for k in ("id", "frames", "detections", "embeddings") if k not in data]
        if missing:
            raise ValueError(f"not a FaceTrack dict (missing {', '.join(missing)}); write it with FaceTrack.to_dict")
        dtype = np.dtype(data.get("embedding_dtype", "float64"))
        return cls(
            id=int(data["id"]),
            frames=[int(f) for f in data["frames"]],
            detections=[_detection_from_dict(d) for d in data["detections"]],
            embeddings=[None if e is None else np.asarray(e, dtype=dtype) for e in data["embeddings"]],
        )


def _detection_to_dict(det: FaceDetection) -> dict:
    extra, arrays = {}, {}
    for key, value in det.extra.items():
        if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
            arrays[str(key)] = {"dtype": str(value.dtype), "data": value.tolist()}
            continue
        if isinstance(value, np.generic):
            value = value.item()
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            continue  # not JSON data: dropped (documented in FaceTrack.to_dict)
        extra[str(key)] = value
    return {
        "box": np.asarray(det.box, np.float64).reshape(4).tolist(),
        "score": float(det.score),
        "points5": None if det.points5 is None else np.asarray(det.points5, np.float64).reshape(5, 2).tolist(),
        "extra": extra,
        "extra_arrays": arrays,
    }


def _detection_from_dict(data: dict) -> FaceDetection:
    extra = dict(data.get("extra", {}))
    for key, arr in data.get("extra_arrays", {}).items():
        extra[key] = np.asarray(arr["data"], dtype=np.dtype(arr["dtype"]))
    points5 = data.get("points5")
    return FaceDetection(
        box=np.asarray(data["box"], np.float64),
        score=float(data["score"]),
        points5=None if points5 is None else np.asarray(points5, np.float64),
        extra=extra,
    )


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of (A, 4) and (B, 4) [x0, y0, x1, y1] boxes -> (A, B)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)[:, None]
    b = np.asarray(b, np.float64).reshape(-1, 4)[None]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = np.clip(a[..., 2] - a[..., 0], 0, None) * np.clip(a[..., 3] - a[..., 1], 0, None)
    area_b = np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _assign(score: np.ndarray, allowed: np.ndarray) -> list[tuple[int, int]]:
    """Allowed (row, col) pairs of the assignment with the most allowed pairs, then the highest total score."""
    if not allowed.any():
        return []
    cost = np.where(allowed, -score, _FORBIDDEN)
    rows, cols = linear_sum_assignment(cost)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if allowed[r, c]]


class _Builder:
    """A track while it is being linked (running embedding sum for its mean)."""

    def __init__(self, frame: int, det: FaceDetection, emb: np.ndarray | None) -> None:
        self.frames, self.detections, self.embeddings = [], [], []
        self.emb_sum: np.ndarray | None = None
        self.add(frame, det, emb)

    def add(self, frame: int, det: FaceDetection, emb: np.ndarray | None) -> None:
        self.frames.append(frame)
        self.detections.append(det)
        self.embeddings.append(emb)
        if emb is not None:
            self.emb_sum = emb.astype(np.float64) if self.emb_sum is None else self.emb_sum + emb.astype(np.float64)

    def step(self) -> np.ndarray | None:
        """The last per-frame box displacement (4,), or None for a track of one frame."""
        if len(self.frames) < 2:
            return None
        last, before = (np.asarray(d.box, dtype=np.float64) for d in self.detections[-1:-3:-1])
        return (last - before) / (self.frames[-1] - self.frames[-2])

    def predicted_box(self, frame: int, motion: bool, drift: np.ndarray | None) -> np.ndarray:
        """The box expected on `frame`: the last one, moved on at the track's last per-frame displacement with
        `motion` (a track of one frame moves with `drift`, the other tracks' median displacement, if any)."""
        last = np.asarray(self.detections[-1].box, dtype=np.float64)
        step = self.step() if motion else None
        step = drift if step is None and motion else step
        return last if step is None else last + step * (frame - self.frames[-1])

    def mean_embedding(self) -> np.ndarray | None:
        if self.emb_sum is None:
            return None
        norm = np.linalg.norm(self.emb_sum)
        return self.emb_sum / norm if norm > 1e-12 else None


def _check_inputs(detections, embeddings) -> list[list[np.ndarray | None]]:
    """Validate per-frame detections / embeddings; returns L2-normalised embeddings (None where missing)."""
    if embeddings is not None and len(embeddings) != len(detections):
        raise ValueError(f"{len(detections)} frames of detections but {len(embeddings)} of embeddings")
    out, dim = [], None
    for t, dets in enumerate(detections):
        for d in dets:
            if not isinstance(d, FaceDetection):
                raise TypeError(f"frame {t}: expected FaceDetection objects, got {type(d).__name__}")
        if embeddings is None:
            out.append([None] * len(dets))
            continue
        embs = embeddings[t]
        if len(embs) != len(dets):
            raise ValueError(f"frame {t}: {len(dets)} detections but {len(embs)} embeddings; give one per detection "
                             "(None where there is none)")
        row = []
        for e in embs:
            if e is None:
                row.append(None)
                continue
            e = np.asarray(e)
            dtype = e.dtype if e.dtype.kind == "f" else np.dtype(np.float64)
            e64 = e.astype(np.float64).reshape(-1)
            if dim is not None and e64.size != dim:
                raise ValueError(f"frame {t}: a {e64.size}-D embedding among {dim}-D ones; use one identity encoder")
            dim = e64.size
            norm = np.linalg.norm(e64)
            if not np.isfinite(norm) or norm == 0:
                raise ValueError(f"frame {t}: an embedding is zero or not finite; pass None for a face without one")
            row.append((e64 / norm).astype(dtype))
        out.append(row)
    return out


def link_tracks(
    detections: Sequence[Sequence[FaceDetection]],
    embeddings: Sequence[Sequence[np.ndarray | None]] | None = None,
    *,
    iou_threshold: float = 0.3,
    identity_threshold: float | None = None,
    identity_veto: float | None = None,
    max_gap: int = 5,
    min_length: int = 1,
    motion: bool = True,
) -> list[FaceTrack]:
    """Link per-frame detections into face tracks (rule in the module docstring).

    detections: one list per frame (frame index = position), each of FaceDetection.
    embeddings: None, or one list per frame with one identity embedding (or None) per detection. They are stored
        in the tracks (L2-normalised, dtype kept) and, with identity_threshold set, used for linking.
    iou_threshold: smallest box IoU with a track's predicted box that links by position, in (0, 1].
    motion: predict a track's box at its last per-frame displacement (True) or take its last box (False).
    identity_threshold: smallest cosine to a track's mean embedding that links by identity anywhere in the frame;
        None: link by IoU only.
    identity_veto: with identity_threshold set, forbid IoU links whose cosine is below this (None: no veto).
    max_gap: most missing frames a track may bridge. min_length: fewest frames a kept track has.
    Returns the tracks, ids 0, 1, ... in order of first appearance.
    """
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    if identity_threshold is not None and not -1 <= identity_threshold <= 1:
        raise ValueError(f"identity_threshold must be a cosine in [-1, 1] or None, got {identity_threshold}")
    if identity_veto is not None and (identity_threshold is None or identity_veto > identity_threshold):
        raise ValueError(f"identity_veto ({identity_veto}) needs identity_threshold set and must not exceed it "
                         f"(got {identity_threshold})")
    if int(max_gap) != max_gap or max_gap < 0:
        raise ValueError(f"max_gap must be an integer >= 0, got {max_gap}")
    if int(min_length) != min_length or min_length < 1:
        raise ValueError(f"min_length must be an integer >= 1, got {min_length}")
    embs = _check_inputs(detections, embeddings)
    use_identity = embeddings is not None and identity_threshold is not None

    builders: list[_Builder] = []  # every track, in order of first appearance
    alive: list[_Builder] = []  # the tracks still within max_gap, same order
    for t, dets in enumerate(detections):
        dets = list(dets)
        alive = [b for b in alive if t - b.frames[-1] - 1 <= max_gap]
        free_dets = list(range(len(dets)))
        if alive and dets:
            steps = [st for st in (b.step() for b in alive) if st is not None]
            drift = np.median(np.stack(steps), axis=0) if steps else None  # camera motion, seen by older tracks
            iou = box_iou([b.predicted_box(t, motion, drift) for b in alive], [d.box for d in dets])  # (A, D)
            cos = np.full(iou.shape, np.nan)
            if use_identity:
                for i, b in enumerate(alive):
                    mean = b.mean_embedding()
                    for j, e in enumerate(embs[t]):
                        if mean is not None and e is not None:
                            cos[i, j] = float(mean @ e)
            known = ~np.isnan(cos)
            pairs = []
            if use_identity:
                pairs = _assign(np.nan_to_num(cos) + iou, known & (np.nan_to_num(cos, nan=-2) >= identity_threshold))
            rows_used = {r for r, _ in pairs}
            cols_used = {c for _, c in pairs}
            allowed = iou >= iou_threshold
            if identity_veto is not None:
                allowed &= ~(known & (np.nan_to_num(cos, nan=2) < identity_veto))
            allowed[list(rows_used), :] = False
            allowed[:, list(cols_used)] = False
            pairs += _assign(iou, allowed)
            for r, c in pairs:
                alive[r].add(t, dets[c], embs[t][c])
            matched = {c for _, c in pairs}
            free_dets = [j for j in free_dets if j not in matched]
        for j in free_dets:  # new tracks in detection order
            builders.append(_Builder(t, dets[j], embs[t][j]))
            alive.append(builders[-1])

    kept = [b for b in builders if len(b.frames) >= min_length]
    return [FaceTrack(id=k, frames=b.frames, detections=b.detections, embeddings=b.embeddings)
            for k, b in enumerate(kept)]
