"""Writing videos and frame folders: `VideoWriter` and `write_video` (the behaviour is documented in
`honestface.video.io`; this module holds the code)."""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import shutil
from collections.abc import Iterable, Mapping
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, Interpolation, VideoReformatter
from typing_extensions import Self  # typing.Self is Python 3.11+; we support 3.10

from honestface.io import IMAGE_EXTENSIONS
from honestface.log import get_logger
from honestface.video.common import VIDEO_SUFFIXES, VideoError, to_fraction
from honestface.video.reader import VideoNotFoundError, _reason

logger = get_logger(__name__)

# suffix -> (default encoder, lossless encoder); every lossless one decodes to the identical uint8 RGB frames
_DEFAULT_ENCODERS = {
    ".mp4": ("libx264", "libx264rgb"), ".mov": ("libx264", "libx264rgb"), ".m4v": ("libx264", "libx264rgb"),
    ".mkv": ("ffv1", "ffv1"), ".avi": ("ffv1", "ffv1"), ".webm": ("libvpx-vp9", "libvpx-vp9"),
}
ENCODERS = ("libx264", "libx264rgb", "ffv1", "png", "libvpx-vp9")
_VP9_SPEED = {"deadline": "good", "cpu-used": "4", "row-mt": "1"}  # our choice: libvpx's default speed is very slow
_RGB_TO_YUV_INTERP = Interpolation.BICUBIC | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INP
_ITU709 = 1  # AVCOL_PRI_BT709 / AVCOL_TRC_BT709: the tags of our YUV streams (with BT.709 matrix, limited range)
_DEFAULT_LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1", 8: "7.1"}
PNG_COMPRESS_LEVEL = 1  # frame folders (our choice: fast; PNG stays lossless at any level)


def _encoder_settings(encoder: str, crf: int, lossless: bool, where: Path) -> tuple[str, dict[str, str]]:
    """(pixel format, encoder options) of `encoder`."""
    if encoder in ("libx264", "libx264rgb") and crf > 51 and not lossless:
        raise VideoError(f"cannot write {where}: {encoder} takes crf 0..51, got {crf}")
    if encoder == "libx264":
        if lossless:
            raise VideoError(f"cannot write {where} losslessly with libx264 (its YUV 4:2:0 changes RGB values); "
                             "use codec='libx264rgb' or leave codec unset")
        return "yuv420p", {"crf": str(crf)}
    if encoder == "libx264rgb":
        # lossless: x264's ultrafast preset (our choice): ~5x faster to encode and to decode, ~12% larger files
        return "rgb24", ({"qp": "0", "preset": "ultrafast"} if lossless else {"crf": str(crf)})
    if encoder == "ffv1":
        return "bgr0", {"level": "3", "slicecrc": "1"}  # version 3: sliced (threads) with a CRC per slice
    if encoder == "png":
        return "rgb24", {}
    if encoder == "libvpx-vp9":
        return ("gbrp", {"lossless": "1", **_VP9_SPEED}) if lossless else \
            ("yuv420p", {"crf": str(crf), "b": "0", **_VP9_SPEED})
    raise VideoError(f"cannot write {where}: unknown video codec {encoder!r}; allowed: {', '.join(ENCODERS)}")


class _Audio:
    """The first audio stream of a source file, copied packet by packet into the output (re-encoded when the output
    container cannot hold its codec), with timestamps shifted by the source video's start time."""

    def __init__(self, source: Path) -> None:
        try:
            self.input = av.open(str(source))
        except av.FFmpegError as e:
            raise VideoError(f"cannot read the audio of {source} ({_reason(e)}); give a media file as audio_from"
                             ) from None
        self.source = source
        self.in_stream = self.input.streams.audio[0] if self.input.streams.audio else None
        if self.in_stream is None:
            logger.info("%s has no audio stream: the output has no sound", source)
            self.input.close()

    def _muxer_accepts(self, format_name: str) -> bool:
        """Whether the muxer takes the stream as it is: its first packet written to a throwaway in-memory file (the
        codec lists of FFmpeg's muxers are not enough: mp4 lists PCM but refuses a layout without channel order)."""
        try:
            with av.open(str(self.source)) as src, av.open(io.BytesIO(), mode="w", format=format_name) as probe:
                stream = probe.add_stream_from_template(src.streams.audio[0])
                for packet in src.demux(src.streams.audio[0]):
                    if packet.size:
                        packet.stream = stream
                        probe.mux(packet)
                        break
        except (av.FFmpegError, ValueError):
            return False
        return True

    def attach(self, out: Any, suffix: str, target: Path) -> None:
        ia = self.in_stream
        name = ia.codec_context.name
        self.out, self.copy = out, name in out.supported_codecs and self._muxer_accepts(out.format.name)
        if self.copy:
            self.stream = out.add_stream_from_template(ia)
        else:
            encoder = "libopus" if suffix == ".webm" else "aac"
            logger.warning("the %s container of %s cannot hold %s audio: re-encoding the audio of %s to %s",
                           suffix, target, name, self.source, encoder)
            layout = ia.layout.name
            if layout.endswith(" channels"):  # channel count without an order: FFmpeg's usual order for it
                layout = _DEFAULT_LAYOUTS.get(ia.layout.nb_channels, layout)
            try:
                self.stream = out.add_stream(encoder, rate=48000 if encoder == "libopus" else ia.rate, layout=layout)
            except (av.FFmpegError, ValueError) as e:
                raise VideoError(f"cannot re-encode the {layout} {name} audio of {self.source} for {target} "
                                 f"({_reason(e)}); write a .mkv, which holds it as it is") from None
        video = next(iter(self.input.streams.video), None)
        start = video.start_time * video.time_base if video is not None and video.start_time is not None else 0
        self.shift = round(Fraction(start) / ia.time_base)  # in the audio's time base
        self.packets = self.input.demux(ia)
        self.pending: Any = None
        self.done = False

    def pump(self, until: float | None) -> None:
        """Write the source's audio packets up to `until` seconds of output time (None: all that are left)."""
        while not self.done:
            if self.pending is None:
                self.pending = next(self.packets, None)
                if self.pending is None:
                    self.done = True
                    break
            p = self.pending
            if p.dts is None or not p.size:  # the demuxer's final empty packet
                self.pending = None
                continue
            t = float(((p.pts if p.pts is not None else p.dts) - self.shift) * p.time_base)
            if until is not None and t > until:
                break
            self.pending = None
            self._emit(p)

    def _emit(self, p: Any) -> None:
        if self.copy:
            if self.shift:
                p.pts, p.dts = (None if p.pts is None else p.pts - self.shift), p.dts - self.shift
            p.stream = self.stream
            self.out.mux(p)
            return
        for frame in p.decode():  # PyAV's encoder resamples and re-frames as the encoder needs
            frame.pts = None if frame.pts is None else frame.pts - self.shift
            self.out.mux(self.stream.encode(frame))

    def finish(self) -> None:
        self.pump(None)
        if not self.copy:
            self.out.mux(self.stream.encode(None))
        self.close()

    def close(self) -> None:
        self.input.close()


class VideoWriter:
    """Write RGB uint8 frames to a video file or a frame folder, atomically (see `honestface.video.io`).

    >>> with VideoWriter("out.mp4", info.fps, audio_from="in.mp4") as w:
    ...     for frame in frames:
    ...         w.write(frame)

    path: a file with a suffix of VIDEO_SUFFIXES, or a folder (any other name, or an existing folder).
    fps: the exact frame rate (Fraction, float or int; 29.97 is read as 30000/1001).
    crf: quality of the lossy encoders (libx264 0-51, libvpx-vp9 0-63; lower is better).
    lossless: write an encoder whose frames decode to the identical uint8 RGB values.
    codec: one of ENCODERS instead of the container's default. audio_from: the file whose first audio stream is
    copied into the output. options: extra encoder options (FFmpeg names, string values), applied last.
    overwrite: replace an existing file at `path` on success (an existing non-empty folder is never replaced).
    """

    def __init__(self, path: str | os.PathLike, fps: Fraction | float, *, crf: int = 18,
                 lossless: bool = False, codec: str | None = None, audio_from: str | os.PathLike | None = None,
                 options: Mapping[str, str] | None = None, overwrite: bool = True) -> None:
        self.path = Path(path)
        self.fps = to_fraction(fps)
        self.frames_written = 0
        self.suffix = self.path.suffix.lower()
        self.folder = self.path.is_dir() or self.suffix not in VIDEO_SUFFIXES
        if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 63:
            raise VideoError(f"cannot write {self.path}: crf must be an integer in 0..63 (libx264: 0..51), got {crf!r}")
        if self.folder and self.suffix in IMAGE_EXTENSIONS:
            raise VideoError(f"cannot write a video to {self.path}: give a video file ({', '.join(VIDEO_SUFFIXES)}) "
                             "or a folder path for PNG frames")
        self._check_target(overwrite)
        self.overwrite = overwrite
        if self.folder:
            if codec not in (None, "png"):
                raise VideoError(f"a frame folder ({self.path}) is written as PNG; codec={codec!r} needs a video file")
            self.codec, self._pix_fmt, self._options = "png", "rgb24", {}
        else:
            self.codec = codec or _DEFAULT_ENCODERS[self.suffix][bool(lossless)]
            self._pix_fmt, self._options = _encoder_settings(self.codec, crf, bool(lossless), self.path)
            self._options.update({str(k): str(v) for k, v in (options or {}).items()})
        self._audio: _Audio | None = None
        if audio_from is not None:
            source = Path(audio_from)
            if not source.is_file():
                raise VideoNotFoundError(f"audio source not found: {source} (give an existing media file)")
            if self.folder:
                logger.warning("audio of %s is not written: the frame folder %s holds no sound", source, self.path)
            else:
                audio = _Audio(source)
                self._audio = audio if audio.in_stream is not None else None
        self._size: tuple[int, int] | None = None
        self._pad = (0, 0)
        self._state = "open"
        self._tmp = self.path.parent / f".{self.path.name}.{secrets.token_hex(4)}.partial{'' if self.folder else self.suffix}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._open_output()
        except BaseException:
            self.abort()
            raise

    # ---------------------------------------------------------------------------------------------- set-up
    def _check_target(self, overwrite: bool) -> None:
        p = self.path
        if self.folder:
            if p.exists() and (not p.is_dir() or any(p.iterdir())):
                raise VideoError(f"cannot write frames to {p}: it exists and is not an empty folder; "
                                 "give a new folder path (existing frames are never replaced)")
        elif p.is_dir():
            raise VideoError(f"cannot write video {p}: it is a folder")
        elif p.exists() and not overwrite:
            raise FileExistsError(f"refusing to overwrite existing file {p} (pass overwrite=True)")

    def _open_output(self) -> None:
        if self.folder:
            self._tmp.mkdir()
            self._container = None
            return
        opts = {"movflags": "+faststart"} if self.suffix in (".mp4", ".mov", ".m4v") else {}
        try:
            self._container = av.open(str(self._tmp), mode="w", options=opts)
        except (av.FFmpegError, OSError) as e:
            raise VideoError(f"cannot create {self.path} ({_reason(e)}); check the folder is writable") from None
        codec_name = av.codec.Codec(self.codec, "w").name
        if codec_name not in self._container.supported_codecs:
            raise VideoError(f"the {self.suffix} container cannot hold {self.codec} video ({self.path}); "
                             "use .mkv, or leave codec unset")

    def _start(self, h: int, w: int) -> None:
        """Create the streams at the first frame (their size is known now)."""
        self._size = (h, w)
        if self._container is None:
            return
        if self.codec == "libx264" and (h % 2 or w % 2):  # x264's 4:2:0 needs even sizes: pad by the edge pixels
            self._pad = (h % 2, w % 2)
            logger.warning("%s: %dx%d frames are padded to %dx%d by repeating the last row/column (H.264 4:2:0 needs "
                           "even sizes; lossless=True or .mkv keeps the size)", self.path, w, h, w + w % 2, h + h % 2)
        stream = self._container.add_stream(self.codec, rate=self.fps, options=self._options)
        stream.width, stream.height = w + self._pad[1], h + self._pad[0]
        stream.pix_fmt = self._pix_fmt
        if self._pix_fmt == "yuv420p":  # tag what _encode converts with, so players convert back the same way
            cc = stream.codec_context
            cc.colorspace, cc.color_range = Colorspace.ITU709, ColorRange.MPEG
            cc.color_primaries, cc.color_trc = _ITU709, _ITU709
        self._stream, self._reformatter = stream, VideoReformatter()
        if self._audio is not None:
            self._audio.attach(self._container, self.suffix, self.path)

    # ---------------------------------------------------------------------------------------------- writing
    def write(self, frame: np.ndarray) -> None:
        """Append one frame: RGB uint8 (H, W, 3), the size of the first frame."""
        if self._state != "open":
            raise VideoError(f"cannot write to {self.path}: the writer is {self._state}")
        a = np.asarray(frame)
        n = self.frames_written
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
            raise VideoError(f"frame {n} for {self.path} must be an RGB uint8 (H, W, 3) array, "
                             f"got {a.dtype} {tuple(a.shape)}")
        if self._size is None:
            try:
                self._start(*a.shape[:2])
            except BaseException:  # half-made streams cannot be used: drop the output
                self.abort()
                raise
        elif a.shape[:2] != self._size:
            (h, w), (h0, w0) = a.shape[:2], self._size
            raise VideoError(f"frame {n} for {self.path} is {w}x{h} but the video is {w0}x{h0}; "
                             "all frames of a video must have one size")
        if self._container is None:
            from PIL import Image

            Image.fromarray(a).save(self._tmp / f"frame_{n:06d}.png", compress_level=PNG_COMPRESS_LEVEL)
        else:
            self._encode(a, n)
        self.frames_written += 1

    def _encode(self, a: np.ndarray, n: int) -> None:
        if any(self._pad):
            a = np.pad(a, ((0, self._pad[0]), (0, self._pad[1]), (0, 0)), mode="edge")
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(a), format="rgb24")
        if self._pix_fmt == "yuv420p":
            vf = self._reformatter.reformat(vf, format="yuv420p", dst_colorspace=Colorspace.ITU709,
                                            src_color_range=ColorRange.JPEG, dst_color_range=ColorRange.MPEG,
                                            interpolation=_RGB_TO_YUV_INTERP)
        vf.pts, vf.time_base = n, 1 / self.fps
        try:
            self._container.mux(self._stream.encode(vf))
            if self._audio is not None:
                self._audio.pump(float(n / self.fps))
        except av.FFmpegError as e:
            self.abort()
            raise VideoError(f"cannot write frame {n} to {self.path} ({_reason(e)})") from None

    # ---------------------------------------------------------------------------------------------- finishing
    def close(self) -> Path:
        """Finish the file and move it to `path` (returned). Does nothing after `abort()` or a previous close."""
        if self._state != "open":
            return self.path
        if self.frames_written == 0:
            self.abort()
            raise VideoError(f"no frames were written: {self.path} was not created")
        try:
            if self._container is not None:
                self._container.mux(self._stream.encode(None))
                if self._audio is not None:
                    self._audio.finish()
                self._container.close()
            self._check_target(self.overwrite)  # the target may have appeared meanwhile
            if self.folder and self.path.is_dir():
                self.path.rmdir()  # empty (checked): os.replace of a folder needs the name free on every system
            os.replace(self._tmp, self.path)
        except av.FFmpegError as e:
            self.abort()
            raise VideoError(f"cannot finish {self.path} ({_reason(e)})") from None
        except BaseException:
            self.abort()
            raise
        self._state = "closed"
        return self.path

    def abort(self) -> None:
        """Stop without output: the temp file or folder is removed, an existing file at `path` is left as it was."""
        if self._state != "open":
            return
        self._state = "aborted"
        for close in (getattr(self, "_container", None), self._audio):
            if close is not None:
                try:
                    close.close()
                except (av.FFmpegError, OSError, ValueError):
                    pass  # the output is being thrown away; the original error is the one to report
        if self._tmp.is_dir():
            shutil.rmtree(self._tmp, ignore_errors=True)
        else:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:  # a writer dropped without close(): leave no temp file behind
        if getattr(self, "_state", None) == "open":
            with contextlib.suppress(Exception):  # interpreter shutdown may have torn down what abort() uses
                self.abort()


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: Fraction | float,
                **kwargs: Any) -> Path:
    """Write all `frames` (RGB uint8 (H, W, 3)) to `path` with a VideoWriter (kwargs: its options); returns path."""
    with VideoWriter(path, fps, **kwargs) as writer:
        for frame in frames:
            writer.write(frame)
    return writer.path
