"""Video input/output (honestface.video.io) and the demo clip (honestface.video.demo_clip)."""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from honestface.video import (
    VideoError,
    VideoWriter,
    make_demo_clip,
    probe_video,
    read_frames,
    write_video,
)
from honestface.video.demo_clip import write_tone

NTSC = Fraction(30000, 1001)


def _noise_frames(n: int = 10, h: int = 48, w: int = 64, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def _moving_frames(n: int = 24, h: int = 96, w: int = 128, texture: bool = True) -> list[np.ndarray]:
    """Moving gradients, with fine texture (bits flipped at random) or without."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for i in range(n):
        f = np.stack([(xx * 2 + i * 5) % 256, (yy * 3 + i * 7) % 256, ((xx + yy) // 2 + i * 11) % 256], -1)
        f = f.astype(np.uint8)
        out.append(f ^ np.random.default_rng(i).integers(0, 32, (h, w, 1), dtype=np.uint8) if texture else f)
    return out


def _audio_packets(path: Path) -> list[tuple[Fraction, bytes]]:
    """(time relative to the first video frame, bytes) of each audio packet."""
    with av.open(str(path)) as c:
        video = c.streams.video[0]
        start = (video.start_time or 0) * video.time_base
        return [(p.pts * p.time_base - start, bytes(p)) for p in c.demux(c.streams.audio[0]) if p.size]


def _hidden(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    return make_demo_clip(tmp_path_factory.mktemp("demo"))


# ------------------------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize(("suffix", "fps"), [(".mp4", NTSC), (".mkv", NTSC), (".mp4", Fraction(12)),
                                             (".webm", Fraction(12))])
def test_lossless_round_trip_is_exact(tmp_path: Path, suffix: str, fps: Fraction) -> None:
    frames = _noise_frames()
    path = write_video(tmp_path / f"clip{suffix}", frames, fps, lossless=True)
    info = probe_video(path)
    assert (info.width, info.height, info.num_frames, info.fps, info.has_audio) == (64, 48, 10, fps, False)
    back = list(read_frames(path))
    assert len(back) == 10 and all(np.array_equal(a, b) for a, b in zip(frames, back))
    assert all(np.array_equal(a, b) for a, b in zip(frames[3:7], read_frames(path, start=3, stop=7)))
    with av.open(str(path)) as c:  # constant frame timing: frame i at i / fps (Matroska/WebM store milliseconds)
        times = [f.time for f in c.decode(video=0)]
    assert np.allclose(times, [float(i / fps) for i in range(10)], atol=6e-4)
    assert _hidden(tmp_path) == []


def test_default_mp4_is_tagged_h264_420_and_pads_odd_sizes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    frames = _moving_frames(6, 47, 63, texture=False)
    caplog.set_level("WARNING", logger="honestface")
    path = write_video(tmp_path / "odd.mp4", frames, 25)
    assert "padded to 64x48" in caplog.text
    info = probe_video(path)
    assert (info.codec, info.width, info.height, info.num_frames) == ("h264", 64, 48, 6)
    with av.open(str(path)) as c:
        frame = next(c.decode(video=0))
        assert (frame.format.name, frame.colorspace, frame.color_range) == ("yuv420p", 1, 1)  # BT.709, limited
    back = list(read_frames(path))
    err = np.mean([np.abs(b[:47, :63].astype(int) - a).mean() for a, b in zip(frames, back)])
    assert err < 6, err  # crf 18
    last = back[0].astype(int)  # the padding repeats the edge pixels (up to the lossy coding)
    assert np.abs(last[47] - last[46]).mean() < 4 and np.abs(last[:, 63] - last[:, 62]).mean() < 4
    exact = write_video(tmp_path / "odd.mkv", frames, 25)  # FFV1 keeps the odd size, losslessly
    assert (probe_video(exact).width, probe_video(exact).height) == (63, 47)
    assert all(np.array_equal(a, b) for a, b in zip(frames, read_frames(exact)))


def test_rotated_video_is_read_upright(tmp_path: Path) -> None:
    frames = _noise_frames(3)
    path = tmp_path / "phone.mp4"
    with av.open(str(path), mode="w") as out:  # a phone-style file: stored landscape, display matrix -90 degrees
        stream = out.add_stream("libx264rgb", rate=25, options={"qp": "0"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "rgb24"
        stream.set_display_rotation(-90)
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts, vf.time_base = i, Fraction(1, 25)
            out.mux(stream.encode(vf))
        out.mux(stream.encode(None))
    info = probe_video(path)
    assert (info.width, info.height) == (48, 64)
    assert all(np.array_equal(np.rot90(a, -1), b) for a, b in zip(frames, read_frames(path)))


# ------------------------------------------------------------------------------------------------ audio
def test_audio_is_copied_without_re_encoding(tmp_path: Path, demo) -> None:
    frames = list(read_frames(demo.lq))
    source = _audio_packets(demo.gt)
    for suffix in (".mp4", ".mkv"):
        out = write_video(tmp_path / f"restored{suffix}", frames, demo.info.fps, audio_from=demo.gt)
        assert probe_video(out).has_audio and probe_video(out).num_frames == 24
        with av.open(str(out)) as c:
            assert c.streams.audio[0].codec_context.name == "aac"
        copied = _audio_packets(out)
        assert [b for _, b in copied] == [b for _, b in source]  # the same bytes: remuxed, not re-encoded
        assert all(abs(t - s) <= Fraction(1, 1000) for (t, _), (s, _) in zip(copied, source))  # same A/V timing


def test_audio_is_re_encoded_when_the_container_cannot_hold_it(tmp_path: Path, demo,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="honestface")
    out = write_video(tmp_path / "clip.webm", _noise_frames(24), 12, audio_from=demo.gt)
    assert "re-encoding the audio" in caplog.text
    with av.open(str(out)) as c:
        audio = c.streams.audio[0]
        assert audio.codec_context.name == "opus"
        duration = sum(f.samples for f in c.decode(audio)) / audio.rate
    assert abs(duration - 2.0) < 0.05  # the 2 s tone of the demo clip


def test_no_audio_source_stream_gives_a_silent_video(tmp_path: Path) -> None:
    silent = write_video(tmp_path / "silent.mp4", _noise_frames(), 25)
    out = write_video(tmp_path / "out.mp4", _noise_frames(), 25, audio_from=silent)
    assert not probe_video(out).has_audio


# ------------------------------------------------------------------------------------------------ frame folders
def test_frame_folder_in_and_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    frames = _noise_frames(12)
    caplog.set_level("WARNING", logger="honestface")
    folder = write_video(tmp_path / "frames", frames, 25, audio_from=write_tone(tmp_path / "tone.m4a", 0.5))
    assert "holds no sound" in caplog.text
    assert sorted(p.name for p in folder.iterdir())[:2] == ["frame_000000.png", "frame_000001.png"]
    info = probe_video(folder, fps=NTSC)
    assert (info.num_frames, info.width, info.height, info.fps, info.codec) == (12, 64, 48, NTSC, "png")
    assert probe_video(folder).fps == 25
    assert all(np.array_equal(a, b) for a, b in zip(frames, read_frames(folder)))
    assert _hidden(tmp_path) == []


def test_frame_folder_natural_order_and_size_check(tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "numbered"
    folder.mkdir()
    for n in (10, 2, 1):  # lexicographic order would be 1, 10, 2
        Image.fromarray(np.full((8, 8, 3), n, np.uint8)).save(folder / f"f_{n}.png")
    assert [int(f[0, 0, 0]) for f in read_frames(folder)] == [1, 2, 10]
    Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(folder / "f_11.png")
    with pytest.raises(VideoError, match=r"frame 3 \(f_11.png\) .* is 8x9 but frame 0 is 8x8"):
        probe_video(folder)
    with pytest.raises(VideoError, match="frame 3"):
        list(read_frames(folder))
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoError, match="holds no image files"):
        probe_video(tmp_path / "empty")


# ------------------------------------------------------------------------------------------------ errors
def test_unreadable_inputs_give_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(VideoError, match="video not found") as missing:
        probe_video(tmp_path / "nope.mp4")
    assert isinstance(missing.value, FileNotFoundError)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 50)
    for call in (probe_video, read_frames):
        with pytest.raises(VideoError, match=r"cannot open .*notes.mp4 as a video"):
            call(text)
    audio_only = write_tone(tmp_path / "tone.m4a", 0.5)
    with pytest.raises(VideoError, match="holds audio only"):
        probe_video(audio_only)
    with pytest.raises(VideoError, match="applies to frame folders only"):
        probe_video(write_video(tmp_path / "a.mkv", _noise_frames(2), 25), fps=30)


def _damage(src: Path, dst: Path, packet: int, mode: str) -> int:
    """Copy `src` with video packet number `packet` (decode order) damaged; returns its display index."""
    with av.open(str(src)) as c:
        packets = [(p.pts, p.pos, p.size) for p in c.demux(c.streams.video[0]) if p.size]
    pts, pos, size = packets[packet]
    data = bytearray(src.read_bytes())
    if mode == "invert":  # a third of the packet's bits flipped: the slice still parses, its content is garbage
        a, b = pos + size // 3, pos + 2 * size // 3
        data[a:b] = bytes(x ^ 0xFF for x in data[a:b])
    else:  # zeroed: the decoder rejects the packet
        data[pos : pos + size] = bytes(size)
    dst.write_bytes(bytes(data))
    return sorted(p[0] for p in packets).index(pts)


def test_damaged_frames_are_errors_naming_the_frame(tmp_path: Path) -> None:
    frames = _moving_frames()
    h264 = write_video(tmp_path / "clip.mp4", frames, 12)
    with av.open(str(h264)) as c:
        sizes = [(p.size, i) for i, p in enumerate(c.demux(c.streams.video[0])) if p.size and not p.is_keyframe]
    largest = max(sizes)[1]  # the largest P-frame: its damage cannot decode as valid data
    # H.264 damage FFmpeg conceals (the frame flagged corrupt); with allow_concealed it is kept, frame count intact
    index = _damage(h264, tmp_path / "concealed.mp4", largest, "invert")
    with pytest.raises(VideoError, match=rf"frame {index} of .*concealed.mp4 is damaged"):
        list(read_frames(tmp_path / "concealed.mp4"))
    assert len(list(read_frames(tmp_path / "concealed.mp4", allow_concealed=True))) == 24
    # a packet the H.264 decoder rejects
    index = _damage(h264, tmp_path / "rejected.mp4", 5, "zero")
    with pytest.raises(VideoError, match=rf"cannot decode frame {index} of .*rejected.mp4"):
        list(read_frames(tmp_path / "rejected.mp4"))
    # the PNG codec fails on any damaged frame
    png = write_video(tmp_path / "clip.mov", frames, 12, codec="png")
    index = _damage(png, tmp_path / "bad.mov", 9, "invert")
    with pytest.raises(VideoError, match=rf"cannot decode frame {index} of .*bad.mov"):
        list(read_frames(tmp_path / "bad.mov"))


def test_writer_rejects_bad_frames_and_settings(tmp_path: Path) -> None:
    with VideoWriter(tmp_path / "a.mp4", 25) as writer:
        writer.write(np.zeros((48, 64, 3), np.uint8))
        with pytest.raises(VideoError, match="frame 1 .* is 64x40 but the video is 64x48"):
            writer.write(np.zeros((40, 64, 3), np.uint8))
        with pytest.raises(VideoError, match="RGB uint8"):
            writer.write(np.zeros((48, 64, 3), np.float32))
        writer.write(np.zeros((48, 64, 3), np.uint8))
    assert probe_video(tmp_path / "a.mp4").num_frames == 2
    with pytest.raises(VideoError, match="cannot hold ffv1"):
        VideoWriter(tmp_path / "b.webm", 25, codec="ffv1")
    with pytest.raises(VideoError, match="losslessly with libx264"):
        VideoWriter(tmp_path / "b.mp4", 25, codec="libx264", lossless=True)
    with pytest.raises(VideoError, match="no frames were written"):
        VideoWriter(tmp_path / "c.mp4", 25).close()
    assert not (tmp_path / "c.mp4").exists() and _hidden(tmp_path) == []


# ------------------------------------------------------------------------------------------------ atomicity
@pytest.mark.parametrize("name", ["out.mp4", "frames"])
def test_failure_inside_the_writer_leaves_nothing(tmp_path: Path, name: str) -> None:
    target = tmp_path / name
    with pytest.raises(RuntimeError, match="restoration failed"), VideoWriter(target, 25) as writer:
        for f in _noise_frames(4):
            writer.write(f)
        raise RuntimeError("restoration failed")
    assert list(tmp_path.iterdir()) == []


def test_existing_file_is_kept_on_failure_and_replaced_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"
    target.write_bytes(b"previous result")
    with pytest.raises(KeyboardInterrupt), VideoWriter(target, 25) as writer:
        writer.write(_noise_frames(1)[0])
        raise KeyboardInterrupt
    writer = VideoWriter(target, 25)
    writer.write(_noise_frames(1)[0])
    writer.abort()
    assert target.read_bytes() == b"previous result" and _hidden(tmp_path) == []
    write_video(target, _noise_frames(3), 25)
    assert probe_video(target).num_frames == 3 and _hidden(tmp_path) == []
    with pytest.raises(FileExistsError):
        VideoWriter(target, 25, overwrite=False)


# ------------------------------------------------------------------------------------------------ demo clip
def test_demo_clip_layout_and_audio(demo) -> None:
    info = demo.info
    assert (info.width, info.height, info.fps, info.num_frames, info.has_audio) == (320, 240, 12, 24, True)
    assert demo.face_free == [14, 15, 16, 17] and demo.cuts == [14, 18]
    assert probe_video(demo.gt) == dataclasses.replace(info, path=str(demo.gt))
    gt, lq = list(read_frames(demo.gt)), list(read_frames(demo.lq))
    assert len(gt) == len(lq) == 24
    assert all(np.abs(a.astype(int) - b).mean() > 3 for a, b in zip(gt, lq))  # every frame degraded


def test_demo_clip_is_deterministic(tmp_path: Path) -> None:
    def clip(folder: str, seed: int) -> tuple[list, list]:
        c = make_demo_clip(tmp_path / folder, num_frames=4, size=(96, 72), seed=seed, audio=False)
        assert not c.info.has_audio and c.face_free == [2] and c.info.num_frames == 4
        return list(read_frames(c.gt)), list(read_frames(c.lq))

    (gt1, lq1), (gt2, lq2), (gt3, lq3) = clip("a", 0), clip("b", 0), clip("c", 1)
    assert all(np.array_equal(a, b) for a, b in zip(gt1 + lq1, gt2 + lq2))
    assert all(np.array_equal(a, b) for a, b in zip(gt1, gt3)) and not np.array_equal(lq1[0], lq3[0])


def test_demo_clip_faces_are_found_by_mtcnn(demo) -> None:
    from honestface.face import build_detector

    gt, lq = list(read_frames(demo.gt)), list(read_frames(demo.lq))
    faces, free = (0, 13, 18, 23), (demo.face_free[0], demo.face_free[-1])  # pan start / end, zoom start / end
    found = build_detector("mtcnn").detect_batch([lq[i] for i in faces + free] + [gt[i] for i in free])
    assert all(max((d.score for d in dets), default=0.0) > 0.9 for dets in found[:4]), found[:4]  # the LQ frames
    assert all(dets == [] for dets in found[4:]), found[4:]  # the restoration works on
