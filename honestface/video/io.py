"""Video input/output of honestface: probe and read videos or frame folders, write videos atomically.

Reading (`probe_video`, `read_frames`; PyAV, i.e. FFmpeg's libraries bundled in the `av` wheel):
- Input: any file FFmpeg opens that has a video stream (cover art of a music file is not one), or a folder of
  frames (the image files directly inside it, natural order: frame_2 before frame_10; frame rate 25 unless given).
- Frames come out as RGB uint8 (H, W, 3) in display order, upright: the container's rotation (phone videos) is
  applied, as FFmpeg's command line does; mirroring in the display matrix and the sample aspect ratio are not.
  YUV is converted with the stream's colour matrix and range (limited range unless tagged full), bicubic chroma
  with accurate rounding (our choice). More than 8 bits per sample are rounded to 8; HDR is not tone-mapped.
- `VideoInfo.fps` is the stream's average frame rate as an exact fraction (our choice: frames / duration, so a
  variable-rate source re-timed at this constant rate keeps its length and its sync with the audio).
  `num_frames` counts the video packets (one frame each; those an edit list marks for discarding are left out).
- Never a silent skip: a decoder error, a frame FFmpeg could only decode by concealing errors, or (when reading to
  the end) a frame the decoder dropped raises VideoError naming the frame's display index. We decode without
  threads (our choice): with FFmpeg's default slice threading H.264 damage is concealed and not reported at all, and
  with frame threading an error surfaces some packets after the damaged one; one thread still decodes far faster
  than the frames are restored. Detected (tests/test_video_io.py): damaged H.264 slices (FFmpeg flags the concealed
  frame corrupt), H.264 or PNG-codec packets the decoder rejects. Not detected: damage that still decodes as valid
  data (in our trials some small H.264 B-frames), and FFV1 slice-CRC mismatches (FFmpeg only logs them, repairs
  the slice from the previous frame and flags nothing).

Writing (`VideoWriter`, `write_video`):
- Codecs (our choice): .mp4 / .mov / .m4v: H.264 (libx264, preset medium) YUV 4:2:0 at `crf` (18 by default),
  BT.709 limited range, tagged so players convert back the same way; mp4-family files get `+faststart`.
  x264's 4:2:0 needs even sizes: odd frames are padded by repeating the last row / column (our choice, with a
  warning; `lossless=True` or .mkv keeps the size). .mkv and .avi: FFV1 (lossless, version 3 with slice CRCs).
  .webm: VP9 (libvpx-vp9) YUV 4:2:0 at `crf` (VP9's 0-63 scale). `codec=` picks another of `writer.ENCODERS`.
- `lossless=True`: an encoder whose frames decode to the identical uint8 RGB values (checked byte for byte in the
  tests): H.264 RGB (libx264rgb, qp 0, preset ultrafast: ~5x faster to encode and decode than medium, ~12% larger)
  in .mp4 / .mov / .m4v, FFV1 in .mkv / .avi, VP9 lossless RGB in .webm.
- Frame rate: exactly `fps` (a Fraction such as 30000/1001 survives: probing the output gives it back), constant
  frame timing (frame n at n / fps, to the container's time resolution: 1 ms for Matroska / WebM).
- Audio (`audio_from`): the source's first audio stream is copied packet by packet (no re-encoding; timestamps kept,
  shifted by the source video's start time so the lip sync of the source is kept; all of it, even if longer than
  the video). When the output's muxer does not take that stream as it is (tried on its first packet in memory:
  e.g. AAC in .webm, PCM without channel order in .mp4) it is re-encoded (AAC; Opus for .webm) with a warning.
  A source without audio gives a silent output; a frame folder output holds no audio (warning).
- Atomicity: the output is written to a hidden temp file (`.NAME.XXXXXXXX.partial.SUFFIX`) in the target folder and
  moved into place by `os.replace` when `close()` succeeds; an exception inside `with VideoWriter(...)`, a failed
  `close()` or `abort()` removes the temp file and leaves an existing file at `path` as it was. An existing file is
  replaced on success (`overwrite=False` refuses it).
- Frame folder output (a path without a video suffix): `frame_000000.png`, ... (PNG, compression level 1) written to
  a hidden temp folder beside it and renamed into place at close. An existing non-empty folder is never replaced.

Errors are `VideoError` (a ValueError), one line naming the file (and the frame index) and what to do; a missing
input is a `VideoNotFoundError` (also a FileNotFoundError).
"""

from __future__ import annotations

from honestface.video.common import VIDEO_SUFFIXES, VideoError, VideoInfo, is_video_file
from honestface.video.reader import VideoNotFoundError, probe_video, read_frames
from honestface.video.writer import VideoWriter, write_video

__all__ = [
    "VIDEO_SUFFIXES", "VideoError", "VideoInfo", "VideoNotFoundError", "VideoWriter", "is_video_file", "probe_video",
    "read_frames", "write_video",
]
