"""Shared pieces of the video I/O (`honestface.video.io` documents the behaviour): the error type, the recognised
suffixes, `VideoInfo`, frame-rate parsing and the listing of frame folders.

Frame folders: the image files directly inside the folder (the suffixes of `honestface.io.IMAGE_EXTENSIONS`,
hidden files skipped, no recursion), in natural order of their names (our choice: `frame_2` before `frame_10`, as a
person numbering files without zero padding means; case-insensitive, ties broken by the plain name).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from honestface.io import IMAGE_EXTENSIONS

VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
DEFAULT_FOLDER_FPS = Fraction(25)  # frame rate of a frame folder when none is given (our choice: PAL's 25)
_DIGITS = re.compile(r"(\d+)")


class VideoError(ValueError):
    """A video (file or frame folder) that cannot be read or written; the message names the file and the fix."""


def is_video_file(path: str | os.PathLike) -> bool:
    """Whether `path` has a video suffix (VIDEO_SUFFIXES, case-insensitive). Looks at the name only."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class VideoInfo:
    """What `probe_video` found.

    width, height: of the frames `read_frames` yields (after the container's rotation is applied).
    fps: the frame rate as an exact fraction (30000/1001 for NTSC); the writer keeps it exactly.
    num_frames: the exact number of frames `read_frames` yields from the start to the end.
    has_audio: the file has an audio stream (always False for a frame folder).
    codec: FFmpeg's name of the video codec ("h264", "ffv1", ...); "png" or "frames" for a frame folder.
    """

    path: str
    width: int
    height: int
    fps: Fraction
    num_frames: int
    has_audio: bool
    codec: str

    @property
    def duration(self) -> float:
        """Seconds of video: num_frames / fps."""
        return float(self.num_frames / self.fps)


def to_fraction(fps: Fraction | float | str, what: str = "fps") -> Fraction:
    """A positive frame rate as a Fraction. Floats close to an NTSC rate (29.97, 23.976, 59.94, ...) become the exact
    NTSC fraction (n*1000/1001, our choice); other floats are taken as written (12.5 -> 25/2)."""
    if isinstance(fps, bool):
        raise VideoError(f"{what} must be a number, got {fps!r}")
    try:
        if isinstance(fps, float):
            ntsc = Fraction(round(fps * 1.001)) * Fraction(1000, 1001)
            value = ntsc if abs(float(ntsc) - fps) < 5e-4 and round(fps) != fps else Fraction(str(fps))
        else:
            value = Fraction(fps)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        raise VideoError(f"{what} must be a positive number such as 25 or 30000/1001, got {fps!r}") from None
    if value <= 0:
        raise VideoError(f"{what} must be positive, got {fps!r}")
    return value


def natural_key(name: str) -> tuple:
    """Sort key of `name` in natural order: digit runs compare as numbers (frame_2 < frame_10)."""
    parts = _DIGITS.split(name.lower())
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), name


def list_frames(folder: str | os.PathLike) -> list[Path]:
    """The frame files of a frame folder in natural order (module docstring). VideoError when there are none."""
    root = Path(folder)
    files = [p for p in root.iterdir()
             if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS]
    if not files:
        raise VideoError(f"frame folder {root} holds no image files ({', '.join(IMAGE_EXTENSIONS)}); "
                         "give a folder of frames or a video file")
    return sorted(files, key=lambda p: natural_key(p.name))
