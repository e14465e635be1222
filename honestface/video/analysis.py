"""Video analysis: the faces of a clip as tracks, with temporally smoothed alignment (pass 1 of `restore_video`).

Every frame is decoded once; the faces are detected (the pipeline's detector), embedded (an identity encoder), linked
into tracks (`honestface.video.tracks.link_tracks`: IoU plus identity, SORT / DeepSORT style) and each track's five
points are smoothed over time (`honestface.video.smoothing.smooth_points`). Restoration (pass 2) aligns every face
with its smoothed points, so the crop, the model's input and the paste-back mask move smoothly with the face.

Our choices:
- Faces without five points cannot be aligned and are left out (as in photo mode, `honestface.face.extract_faces`).
- A track is restored or left as it is as a whole: it is restored when the median short side of its boxes is at
  least `min_face_size` pixels, so a face near the size limit does not blink in and out of restoration.
- The analysis is a plain JSON document (`VideoAnalysis.to_dict`) so an interrupted run reuses it; `settings`
  records everything it depends on and a resumed run with other settings starts afresh.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from honestface.video.io import VideoInfo, read_frames
from honestface.video.smoothing import SMOOTHING_METHODS, smooth_points
from honestface.video.tracks import FaceTrack, link_tracks

__all__ = ["TRACK_THRESHOLDS", "TrackingOptions", "VideoAnalysis", "analyse_video"]

# (identity_threshold, identity_veto) of `link_tracks` per identity encoder. dlib, measured on shifted, zoomed and
# mirrored copies of t1.jpg: one person 0.98-0.997, different people 0.78-0.92 (honestface/video/tracks.py).
TRACK_THRESHOLDS: dict[str, tuple[float | None, float | None]] = {"dlib": (0.95, None)}


@dataclass(frozen=True)
class TrackingOptions:
    """How faces become tracks and how their alignment is smoothed (config section `video`, docs/video.md).

    iou_threshold / identity_threshold / identity_veto / max_gap / min_track_length: `link_tracks`
    (identity_threshold / identity_veto None: the identity encoder's defaults, `TRACK_THRESHOLDS`). smoothing: "none" | "gaussian" (zero-lag, sigma in frames) | "one_euro" (causal: min_cutoff in
    Hz, beta). min_face_size: a track whose median box short side is smaller is not restored.
    """

    iou_threshold: float = 0.3
    identity_threshold: float | None = None
    identity_veto: float | None = None
    max_gap: int = 5
    min_track_length: int = 1
    smoothing: str = "gaussian"
    sigma: float = 1.5
    min_cutoff: float = 1.0
    beta: float = 0.0
    min_face_size: int = 32

    def __post_init__(self) -> None:
        if self.smoothing not in SMOOTHING_METHODS:
            raise ValueError(f"unknown smoothing {self.smoothing!r}; allowed: {', '.join(SMOOTHING_METHODS)}")
        if self.max_gap < 0 or self.min_track_length < 1 or self.sigma < 0:
            raise ValueError(f"max_gap >= 0, min_track_length >= 1 and sigma >= 0 are required, got {self.max_gap}, "
                             f"{self.min_track_length}, {self.sigma}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class VideoAnalysis:
    """The tracks of a clip. smoothed[k]: (len(tracks[k]), 5, 2) smoothed points of tracks[k]; restored[k]: whether
    tracks[k] is restored."""

    num_frames: int
    fps: float
    tracks: list[FaceTrack]
    smoothed: list[np.ndarray]
    restored: list[bool]
    settings: dict[str, Any] = field(default_factory=dict)

    def track_summary(self) -> list[dict[str, Any]]:
        """One JSON-safe line per track: id, first / last frame, length, restored."""
        return [{"id": int(tr.id), "first_frame": int(tr.frames[0]), "last_frame": int(tr.frames[-1]),
                 "length": len(tr), "restored": bool(r)} for tr, r in zip(self.tracks, self.restored)]

    def to_dict(self) -> dict[str, Any]:
        return {"version": 1, "num_frames": self.num_frames, "fps": self.fps, "settings": self.settings,
                "tracks": [t.to_dict() for t in self.tracks], "smoothed": [s.tolist() for s in self.smoothed],
                "restored": list(self.restored)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VideoAnalysis:
        return cls(num_frames=int(d["num_frames"]), fps=float(d["fps"]),
                   tracks=[FaceTrack.from_dict(t) for t in d["tracks"]],
                   smoothed=[np.asarray(s, dtype=np.float64).reshape(-1, 5, 2) for s in d["smoothed"]],
                   restored=[bool(r) for r in d["restored"]], settings=dict(d.get("settings", {})))


def _faces_of(frame: np.ndarray, detector: Any, identity: Any) -> tuple[list[Any], list[np.ndarray | None]]:
    """Detections with five points on one frame and their identity embeddings (None without an encoder)."""
    dets = [d for d in detector.detect(frame) if d.points5 is not None]
    if not dets:
        return [], []
    if identity is None:
        return dets, [None] * len(dets)
    emb = np.asarray(identity.embed_image(frame, dets), dtype=np.float64)  # (K, dim)
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    return dets, list(emb)


def analyse_video(source: str, detector: Any, identity_encoder: Any = None, options: TrackingOptions | None = None,
                  *, info: VideoInfo, progress: Callable[[int], None] | None = None) -> VideoAnalysis:
    """Pass 1 (module docstring): decode `source` (a video file or a folder of frames described by `info`), detect
    and embed its faces, link tracks, smooth their points; `progress(n)` is called after each frame."""
    opts = options or TrackingOptions()
    detections, embeddings = [], []
    fps = float(info.fps)
    for frame in read_frames(source, fps=None if Path(source).is_file() else info.fps):  # a folder: its rate
        dets, embs = _faces_of(frame, detector, identity_encoder)
        detections.append(dets)
        embeddings.append(embs)
        if progress is not None:
            progress(1)
    threshold, veto = TRACK_THRESHOLDS.get(getattr(identity_encoder, "name", ""), (None, None))
    threshold = opts.identity_threshold if opts.identity_threshold is not None else threshold
    veto = opts.identity_veto if opts.identity_veto is not None else veto
    tracks = link_tracks(detections, embeddings if identity_encoder is not None else None,
                         iou_threshold=opts.iou_threshold, identity_threshold=threshold, identity_veto=veto,
                         max_gap=opts.max_gap, min_length=opts.min_track_length)
    smoothed, restored = [], []
    for track in tracks:
        smoothed.append(smooth_points(track.frames, track.points5(), opts.smoothing, sigma=opts.sigma,
                                      min_cutoff=opts.min_cutoff, beta=opts.beta, fps=fps, max_gap=opts.max_gap))
        boxes = track.boxes()  # (N, 4)
        side = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        restored.append(bool(np.median(side) >= opts.min_face_size))
    settings = {**opts.to_dict(), "identity_threshold_used": threshold, "identity_veto_used": veto}
    return VideoAnalysis(num_frames=len(detections), fps=fps, tracks=tracks, smoothed=smoothed, restored=restored,
                         settings=settings)
