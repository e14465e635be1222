"""The demo clip of the video tests and benchmarks: a short video made from the real photos that ship inside installed
packages (`honestface.data.samples`), so nothing is downloaded.

Three shots, with a cut between each (frame counts for the default 24 frames):
1. a slow pan with a little zoom across insightface's t1.jpg group photo (six people; two or three faces of about
   50 px in every frame at 320x240; faces enter and leave at the frame edges): 14 frames;
2. a slow tilt over the space-shuttle model of scikit-image's astronaut photo, which holds no face: 4 frames
   (`DemoClip.face_free`);
3. a zoom on the astronaut's face (about 75 px growing to 140 px at 320x240): 6 frames.
The windows are chosen so that MTCNN (facenet-pytorch, the library's default detector) finds faces in every frame of
shots 1 and 3, in the clean and the degraded frames, and none in shot 2 (checked in tests/test_video_io.py at the
default size; a much smaller `size` makes the faces too small for it).

Degradation (our choice): the `tiny` preset of `honestface.data.degradation` on the whole frame. Its blur, downscale
and JPEG quality are drawn once per clip (a camera's degradation does not change from frame to frame) from
`sample_seed(seed, 0)`; the noise of frame i is drawn from `sample_seed(seed, i, 1)`. So every frame depends only on
(seed, frame index) and the same call gives byte-identical frames.

Files: `demo_gt.mp4` (clean frames) and `demo_lq.mp4` (degraded frames), both lossless (H.264 RGB, qp 0: decoding
gives back the exact frames), at `fps` (12 by default); with `audio=True` both carry the same 440 Hz sine tone
(48 kHz mono AAC, the clip's length), so audio copying can be tested.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from honestface.video.common import VideoError, VideoInfo, to_fraction
from honestface.video.reader import probe_video
from honestface.video.writer import VideoWriter

DEFAULT_SIZE = (320, 240)  # (width, height)
DEFAULT_FPS = Fraction(12)
TONE_HZ = 440.0
TONE_RATE = 48000
GT_NAME, LQ_NAME = "demo_gt.mp4", "demo_lq.mp4"

# crop windows in source pixels: (centre x, centre y, width) at the start and at the end of each shot
_PAN = ((320.0, 255.0, 640.0), (980.0, 255.0, 600.0))  # t1.jpg (1280x886): its faces lie in y 62..474
_FREE = ((422.0, 70.0, 180.0), (422.0, 200.0, 180.0))  # astronaut (512x512): the shuttle model, right of her hair
_ZOOM = ((224.0, 117.0, 360.0), (224.0, 117.0, 200.0))  # astronaut: her face box is about x 181..268, y 62..172


@dataclass(frozen=True)
class DemoClip:
    """gt / lq: the clean and degraded videos; info: their `VideoInfo` (both share it); face_free: indices of the
    frames without a face; cuts: the first frame of each shot after the first."""

    gt: Path
    lq: Path
    info: VideoInfo
    face_free: list[int] = field(default_factory=list)
    cuts: list[int] = field(default_factory=list)


def shot_lengths(num_frames: int) -> tuple[int, int, int]:
    """(pan, face-free, zoom) frame counts of a clip of `num_frames` (at least 3)."""
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 3:
        raise VideoError(f"the demo clip needs num_frames >= 3 (one per shot), got {num_frames!r}")
    free, zoom = max(1, round(num_frames / 6)), max(1, round(num_frames / 4))
    return num_frames - free - zoom, free, zoom


def _crop(src: np.ndarray, window: tuple[float, float, float], size: tuple[int, int]) -> np.ndarray:
    """The window (centre x, centre y, width; height from the frame's aspect) of `src`, kept inside the photo and
    resized to `size` with area averaging."""
    import cv2

    out_w, out_h = size
    cx, cy, w = window
    w = min(w, src.shape[1], src.shape[0] * out_w / out_h)
    h = w * out_h / out_w
    x0 = round(min(max(cx - w / 2, 0.0), src.shape[1] - w))
    y0 = round(min(max(cy - h / 2, 0.0), src.shape[0] - h))
    patch = src[y0 : y0 + round(h), x0 : x0 + round(w)]
    interp = cv2.INTER_AREA if patch.shape[1] >= out_w else cv2.INTER_CUBIC
    return cv2.resize(patch, (out_w, out_h), interpolation=interp)


def _shot(src: np.ndarray, ends: tuple, n: int, size: tuple[int, int]) -> Iterator[np.ndarray]:
    a, b = np.asarray(ends[0]), np.asarray(ends[1])
    for i in range(n):
        t = i / (n - 1) if n > 1 else 0.0
        yield _crop(src, tuple(a + (b - a) * t), size)


def clean_frames(num_frames: int = 24, size: tuple[int, int] = DEFAULT_SIZE) -> Iterator[np.ndarray]:
    """The clean frames of the demo clip, RGB uint8 (height, width, 3), one shot after the other."""
    from honestface.data.samples import load_sample

    if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 16 for v in size):
        raise VideoError(f"the demo clip size must be (width, height), each an integer >= 16, got {size!r}")
    pan, free, zoom = shot_lengths(num_frames)
    yield from _shot(load_sample("group_t1"), (_PAN[0], _PAN[1]), pan, size)
    astronaut = load_sample("astronaut")
    yield from _shot(astronaut, (_FREE[0], _FREE[1]), free, size)
    yield from _shot(astronaut, (_ZOOM[0], _ZOOM[1]), zoom, size)


class _Degrader:
    """The `tiny` degradation with one draw of blur / scale / JPEG per clip and fresh noise per frame."""

    def __init__(self, seed: int) -> None:
        import torch

        from honestface.data.degradation import Degradation, sample_seed

        self.torch, self.sample_seed, self.seed = torch, sample_seed, int(seed)
        self.deg = Degradation("tiny")
        self.params = self.deg.sample_params([sample_seed(self.seed, 0)])

    def __call__(self, frame: np.ndarray, index: int) -> np.ndarray:
        torch = self.torch
        params = dict(self.params, noise_seed=torch.tensor([self.sample_seed(self.seed, index, 1)]))
        hq = torch.from_numpy(frame).permute(2, 0, 1)[None].float().div(255)
        lq = self.deg.apply(hq, params)[0]
        return lq.mul(255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def write_tone(path: str | os.PathLike, seconds: float, hz: float = TONE_HZ) -> Path:
    """An audio-only AAC file (.m4a) with a sine tone of `seconds`: 48 kHz mono, amplitude 0.25."""
    import av

    path = Path(path)
    n = max(1, round(seconds * TONE_RATE))
    wave = (0.25 * np.sin(2 * np.pi * hz * np.arange(n) / TONE_RATE)).astype(np.float32)
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("aac", rate=TONE_RATE, layout="mono")
        for start in range(0, n, 1024):
            frame = av.AudioFrame.from_ndarray(wave[None, start : start + 1024], format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = TONE_RATE, start, Fraction(1, TONE_RATE)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def make_demo_clip(folder: str | os.PathLike, *, num_frames: int = 24, size: tuple[int, int] = DEFAULT_SIZE,
                   fps: Fraction | float = DEFAULT_FPS, seed: int = 0, audio: bool = True) -> DemoClip:
    """Write the demo clip (module docstring) into `folder` (created if needed) as demo_gt.mp4 and demo_lq.mp4."""
    rate = to_fraction(fps)
    pan, free, _ = shot_lengths(num_frames)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    gt_path, lq_path = folder / GT_NAME, folder / LQ_NAME
    tone = folder / f".demo_tone.{secrets.token_hex(4)}.m4a"
    try:
        if audio:
            write_tone(tone, float(num_frames / rate))
        source = tone if audio else None
        degrade = _Degrader(seed)
        with VideoWriter(gt_path, rate, lossless=True, audio_from=source) as gt, \
                VideoWriter(lq_path, rate, lossless=True, audio_from=source) as lq:
            for i, frame in enumerate(clean_frames(num_frames, size)):
                gt.write(frame)
                lq.write(degrade(frame, i))
    finally:
        tone.unlink(missing_ok=True)
    return DemoClip(gt=gt_path, lq=lq_path, info=probe_video(lq_path),
                    face_free=list(range(pan, pan + free)), cuts=[pan, pan + free])
