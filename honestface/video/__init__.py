"""Video restoration support: video input/output (io.py) and the demo clip of the tests and benchmarks
(demo_clip.py)."""

from __future__ import annotations

from honestface.video.demo_clip import DemoClip, make_demo_clip
from honestface.video.io import (
    VIDEO_SUFFIXES,
    VideoError,
    VideoInfo,
    VideoNotFoundError,
    VideoWriter,
    is_video_file,
    probe_video,
    read_frames,
    write_video,
)

__all__ = [
    "VIDEO_SUFFIXES",
    "DemoClip",
    "VideoError",
    "VideoInfo",
    "VideoNotFoundError",
    "VideoWriter",
    "is_video_file",
    "make_demo_clip",
    "probe_video",
    "read_frames",
    "write_video",
]
