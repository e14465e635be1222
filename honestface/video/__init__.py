"""Video restoration (issue 23, docs/video.md): video input/output (`io`), face tracks across frames (`tracks`),
temporal smoothing of their landmarks (`smoothing`), the analysis pass (`analysis`), `restore_video` (`restore`)
and the demo clip of the tests and benchmarks (`demo_clip`). Names are imported lazily, so `import
honestface.video` stays light."""

from __future__ import annotations

from honestface._lazy import lazy_exports

_EXPORTS = {
    "VIDEO_SUFFIXES": "io",
    "VideoError": "io",
    "VideoInfo": "io",
    "VideoNotFoundError": "io",
    "VideoWriter": "io",
    "is_video_file": "io",
    "probe_video": "io",
    "read_frames": "io",
    "write_video": "io",
    "DemoClip": "demo_clip",
    "make_demo_clip": "demo_clip",
    "SMOOTHING_METHODS": "smoothing",
    "smooth_points": "smoothing",
    "smooth_track": "smoothing",
    "FaceTrack": "tracks",
    "box_iou": "tracks",
    "link_tracks": "tracks",
    "TrackingOptions": "analysis",
    "VideoAnalysis": "analysis",
    "analyse_video": "analysis",
    "VideoRestorationOutput": "restore",
    "restore_video": "restore",
}

__all__ = sorted(_EXPORTS)  # noqa: PLE0605

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
