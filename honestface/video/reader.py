"""Reading videos and frame folders: `probe_video` and `read_frames` (the behaviour is documented in
`honestface.video.io`; this module holds the code)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.video.reformatter import ColorRange, Interpolation, VideoReformatter

from honestface.io import IMAGE_EXTENSIONS, ImageReadError, read_image
from honestface.log import get_logger
from honestface.video.common import (
    DEFAULT_FOLDER_FPS,
    VIDEO_SUFFIXES,
    VideoError,
    VideoInfo,
    list_frames,
    to_fraction,
)

logger = get_logger(__name__)

# YUV -> RGB: bicubic chroma upsampling with accurate rounding (our choice). swscale's default fast path darkens
# by about one grey level on average; this keeps the mean error of an RGB -> YUV 4:2:0 -> RGB trip near zero.
_YUV_INTERP = Interpolation.BICUBIC | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT


class VideoNotFoundError(VideoError, FileNotFoundError):
    """The video file or frame folder does not exist (a VideoError and a FileNotFoundError)."""


def _reason(e: BaseException) -> str:
    return str(getattr(e, "strerror", None) or e).strip().rstrip(".")


def _check_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise VideoNotFoundError(f"video not found: {p} (give an existing video file or folder of frames)")
    if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
        raise VideoError(f"{p} is an image, not a video; give a video file ({', '.join(VIDEO_SUFFIXES)}) "
                         "or a folder of frames")
    return p


def _open(path: Path) -> Any:
    try:
        return av.open(str(path), mode="r")
    except av.FFmpegError as e:
        raise VideoError(f"cannot open {path} as a video ({_reason(e)}); give a video file "
                         f"({', '.join(VIDEO_SUFFIXES)}) or a folder of frames") from None


def _video_stream(container: Any, path: Path) -> Any:
    """The first real video stream (cover art of a music file is not one)."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    what = "it holds audio only" if container.streams.audio else "it holds no video stream"
    raise VideoError(f"{path} is not a video: {what}; give a file with a video stream")


def _stream_fps(stream: Any, path: Path) -> Fraction:
    """The average frame rate (our choice: frames / duration, so a re-timed copy keeps the length and audio sync),
    else FFmpeg's guess, else the stream's base rate."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return Fraction(rate)
    raise VideoError(f"{path}: the video stream states no frame rate; re-encode it with a fixed rate")


def _rotation(frame: Any) -> int:
    """Quarter turns (counter-clockwise) that display `frame` upright, from the container's display matrix."""
    return round((frame.rotation or 0) / 90) % 4


def _to_rgb(frame: Any, reformatter: VideoReformatter) -> np.ndarray:
    """A decoded frame -> (H, W, 3) uint8 RGB, full range, upright."""
    full = frame.color_range == ColorRange.JPEG
    rgb = reformatter.reformat(frame, format="rgb24", interpolation=_YUV_INTERP,
                               src_color_range=ColorRange.JPEG if full else ColorRange.MPEG,
                               dst_color_range=ColorRange.JPEG).to_ndarray()
    k = _rotation(frame)
    return np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb


def _check_fps_for_file(fps: Any, path: Path) -> None:
    if fps is not None:
        raise VideoError(f"fps={fps!r} applies to frame folders only; the video file {path} keeps its own rate "
                         "(leave fps unset)")


# ------------------------------------------------------------------------------------------------ probe
def _frame_size(path: Path, index: int, folder: Path) -> tuple[int, int]:
    """(width, height) of a frame file as `read_image` returns it (EXIF rotation applied), from its header."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise VideoError(f"cannot read frame {index} ({path.name}) of {folder}: {_reason(e)}") from None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _probe_folder(folder: Path, fps: Any) -> VideoInfo:
    files = list_frames(folder)
    size = _frame_size(files[0], 0, folder)
    for i, f in enumerate(files[1:], start=1):
        other = _frame_size(f, i, folder)
        if other != size:
            raise VideoError(f"frame {i} ({f.name}) of {folder} is {other[0]}x{other[1]} but frame 0 is "
                             f"{size[0]}x{size[1]}; all frames of a video must have one size")
    codec = "png" if all(f.suffix.lower() == ".png" for f in files) else "frames"
    rate = DEFAULT_FOLDER_FPS if fps is None else to_fraction(fps)
    return VideoInfo(str(folder), size[0], size[1], rate, len(files), False, codec)


def _probe_file(path: Path) -> VideoInfo:
    container = _open(path)
    try:
        stream = _video_stream(container, path)
        rate, codec, has_audio = _stream_fps(stream, path), stream.codec_context.name, bool(container.streams.audio)
        first, count = None, 0
        for packet in container.demux(stream):  # one pass: count the frames' packets, decode until the 1st frame
            if packet.size and not packet.is_discard:
                count += 1
            if first is None:
                first = next(iter(packet.decode()), None)
    except av.FFmpegError as e:
        raise VideoError(f"cannot read {path} ({_reason(e)}); the file is damaged or not a video") from None
    finally:
        container.close()
    if first is None:
        raise VideoError(f"{path} has a video stream but no frame could be decoded; the file is damaged or empty")
    w, h = (first.height, first.width) if _rotation(first) % 2 else (first.width, first.height)
    return VideoInfo(str(path), w, h, rate, count, has_audio, codec)


def probe_video(path: str | os.PathLike, fps: Fraction | float | None = None) -> VideoInfo:
    """Size, exact frame rate, exact frame count, audio and codec of a video file or a folder of frames.

    fps: the frame rate of a frame folder (default 25); a video file keeps its own rate (VideoError if given).
    The frame count of a file is counted by demuxing its video packets (one frame each; packets the container
    marks for discarding, as an edit list does, are not counted): one read of the file, nothing decoded but the
    first frame. Raises VideoError (a ValueError; also FileNotFoundError when the path is missing).
    """
    p = _check_path(path)
    if p.is_dir():
        return _probe_folder(p, fps)
    _check_fps_for_file(fps, p)
    return _probe_file(p)


# ------------------------------------------------------------------------------------------------ read
def _read_folder(folder: Path, start: int, stop: int | None) -> Iterator[np.ndarray]:
    files = list_frames(folder)
    first_size = None
    for i in range(start, len(files) if stop is None else min(stop, len(files))):
        try:
            img = read_image(files[i])
        except (ImageReadError, OSError) as e:
            raise VideoError(f"cannot read frame {i} ({files[i].name}) of {folder}: {_reason(e)}") from None
        frame = np.round(img * 255.0).astype(np.uint8)
        size = frame.shape[:2]
        if first_size is None:
            first_size = size
        elif size != first_size:
            raise VideoError(f"frame {i} ({files[i].name}) of {folder} is {size[1]}x{size[0]} but frame {start} is "
                             f"{first_size[1]}x{first_size[0]}; all frames of a video must have one size")
        yield frame


def _lost_frame(path: Path, packet_pts: list, frame_pts: set, decoded: int) -> VideoError | None:
    """The error for a frame the decoder dropped without an error (its packet's timestamp never came out)."""
    if None not in packet_pts and None not in frame_pts:
        expected = sorted(set(packet_pts))
        missing = [i for i, t in enumerate(expected) if t not in frame_pts]
        if missing:
            return VideoError(f"frame {missing[0]} of {path} could not be decoded ({len(missing)} frame(s) missing); "
                              "the file is damaged: repair or re-encode it")
        return None
    if decoded < len(packet_pts):
        return VideoError(f"only {decoded} of the {len(packet_pts)} frames of {path} could be decoded; "
                          "the file is damaged: repair or re-encode it")
    return None


def _display_index(pts: Any, seen: list, rest: Iterator[Any], decoded: int) -> int:
    """Display index of the packet with timestamp `pts` among all packets (the rest are demuxed, not decoded);
    `decoded` (the frames delivered so far) when timestamps are missing."""
    every = seen + [p.pts for p in rest if p.size and not p.is_discard]
    if pts is None or None in every:
        return decoded
    return sorted(set(every)).index(pts)


def _read_file(path: Path, start: int, stop: int | None, allow_concealed: bool) -> Iterator[np.ndarray]:
    container = _open(path)
    try:
        stream = _video_stream(container, path)
        # single-threaded decoding (our choice): with FFmpeg's default slice threading H.264 damage is concealed
        # without any flag; without threads concealed frames carry AV_FRAME_FLAG_CORRUPT (is_corrupt) and a decoder
        # error surfaces at the damaged packet (frame threading reports it some packets later). Decoding is still
        # far faster than restoring the frames.
        stream.thread_type = "NONE"
        reformatter = VideoReformatter()
        packet_pts: list = []
        frame_pts: set = set()
        index = 0
        packets = container.demux(stream)
        for packet in packets:
            if packet.size and not packet.is_discard:
                packet_pts.append(packet.pts)
            try:
                frames = packet.decode()
            except av.FFmpegError as e:
                bad = _display_index(packet.pts, packet_pts, packets, index)
                raise VideoError(f"cannot decode frame {bad} of {path} ({_reason(e)}); the file is damaged: "
                                 "repair or re-encode it") from None
            for frame in frames:
                if stop is not None and index >= stop:
                    return
                if index >= start:
                    if frame.is_corrupt:
                        msg = f"frame {index} of {path} is damaged (FFmpeg decoded it only by concealing errors)"
                        if not allow_concealed:
                            raise VideoError(msg + "; repair or re-encode the file, or pass allow_concealed=True")
                        logger.warning("%s; kept as decoded", msg)
                    yield _to_rgb(frame, reformatter)
                frame_pts.add(frame.pts)
                index += 1
        error = _lost_frame(path, packet_pts, frame_pts, index)
        if error is not None:
            raise error
    finally:
        container.close()


def read_frames(path: str | os.PathLike, start: int = 0, stop: int | None = None,
                fps: Fraction | float | None = None, *, allow_concealed: bool = False) -> Iterator[np.ndarray]:
    """Frames start..stop-1 of a video file or frame folder as RGB uint8 (H, W, 3) arrays, in display order.

    The file is decoded once, sequentially (frames before `start` are decoded and dropped). A frame that cannot be
    decoded raises VideoError naming its index, never a silent skip: a decoder error, a frame FFmpeg repaired by
    error concealment (unless `allow_concealed=True`, which keeps it with a warning) and, when reading to the end,
    a frame the decoder dropped. fps: accepted for frame folders like `probe_video` (frames do not depend on it);
    VideoError for a video file. A missing or unreadable path raises at the call, damaged frames while iterating.
    """
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise VideoError(f"start must be a frame index >= 0, got {start!r}")
    if stop is not None and (isinstance(stop, bool) or not isinstance(stop, int) or stop < start):
        raise VideoError(f"stop must be None or a frame index >= start ({start}), got {stop!r}")
    p = _check_path(path)
    if p.is_dir():
        if fps is not None:
            to_fraction(fps)
        return _read_folder(p, start, stop)
    _check_fps_for_file(fps, p)
    container = _open(p)  # fail here, not on the first next(), when the file is no video
    try:
        _video_stream(container, p)
    finally:
        container.close()
    return _read_file(p, start, stop, allow_concealed)
