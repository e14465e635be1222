"""Video restoration end to end (honestface/video/restore.py through scripts/infer.py's runner): a short clip made
from real photos (pan and zoom across insightface's t1.jpg and the astronaut, degraded per frame with the tiny
preset; `honestface.video.demo_clip`) restored with the random tiny HonestFace.

What a user relies on: the output has the source's frame count, rate and audio; frames without faces are
bit-identical at lossless settings; faces are tracked with one track per person and one reference match per track;
an interrupted run resumes from its finished chunks with the same result; bad clips fail with one line and leave
nothing behind.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from honestface.apps.infer import run_inference
from honestface.apps.infer_video import results_path
from honestface.config import load_config
from honestface.video.demo_clip import make_demo_clip
from honestface.video.io import VideoWriter, probe_video, read_frames

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_demo_clip(tmp_path_factory.mktemp("clip"), num_frames=24, fps=Fraction(12), seed=0, audio=True)


def infer(model: Path, inp: Path, out: Path, *extra: str) -> int:
    cfg = load_config(None, [f"model.pretrained={model}", f"infer.input={inp}", f"infer.output={out}",
                             "video.chunk_frames=8", *extra])
    return run_inference(cfg)


@pytest.fixture(scope="module")
def restored(clip, tiny_honestface_dir, tmp_path_factory):
    """The clip restored losslessly, and its results file."""
    out = tmp_path_factory.mktemp("restored") / "out.mp4"
    assert infer(tiny_honestface_dir, clip.lq, out, "video.lossless=true") == 0
    return out, json.loads(results_path(out).read_text())


def test_output_keeps_frames_rate_audio_and_untouched_frames(clip, restored) -> None:
    out, report = restored
    src, dst = probe_video(clip.lq), probe_video(out)
    assert (dst.num_frames, dst.fps, dst.width, dst.height) == (src.num_frames, src.fps, src.width, src.height)
    assert src.has_audio and dst.has_audio
    ins, outs = list(read_frames(clip.lq)), list(read_frames(out))
    assert clip.face_free, "the demo clip has frames without faces"
    for t in clip.face_free:
        assert np.array_equal(ins[t], outs[t]), f"face-free frame {t} changed"
    changed = [t for t in range(len(ins)) if t not in clip.face_free and not np.array_equal(ins[t], outs[t])]
    assert len(changed) == len(ins) - len(clip.face_free), "every frame with a face is restored"
    assert report["status"] == "ok" and report["num_frames"] == src.num_frames
    assert report["frames_per_second"] > 0 and report["fps"] == pytest.approx(12.0)


def test_tracks_keep_one_identity_per_person(clip, restored) -> None:
    from honestface.face import build_detector

    _, report = restored
    tracks = report["tracks"]
    assert tracks and all(t["restored"] for t in tracks)
    # every face of the first frame starts a track that lasts the whole pan across the group photo
    first = build_detector("mtcnn").detect(next(read_frames(clip.lq)))
    starting = [t for t in tracks if t["first_frame"] == 0]
    assert len(starting) == len(first)
    pan_end = min(clip.face_free) - 1
    long = [t for t in starting if t["last_frame"] >= pan_end - 2]
    assert len(long) >= len(starting) - 1, f"tracks broke up during the pan: {tracks}"
    # no person is split into two overlapping tracks
    assert len(tracks) <= len(first) + 3


def test_interrupted_run_resumes_with_the_same_result(clip, restored, tiny_honestface_dir, tmp_path,
                                                      monkeypatch) -> None:
    import honestface.video.restore as vr

    out = tmp_path / "out.mp4"
    real, calls = vr._restore_chunk, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(vr, "_restore_chunk", failing)
    assert infer(tiny_honestface_dir, clip.lq, out, "video.lossless=true") == 1
    assert not out.exists()
    work = vr.work_folder(out)
    assert (work / "analysis.json").is_file() and (work / "chunk_000000.mkv").is_file()
    monkeypatch.setattr(vr, "_restore_chunk", real)
    assert infer(tiny_honestface_dir, clip.lq, out, "video.lossless=true") == 0
    report = json.loads(results_path(out).read_text())
    assert report["resumed_frames"] == 8 and not work.exists()
    first = list(read_frames(restored[0]))
    assert all(np.array_equal(a, b) for a, b in zip(first, read_frames(out)))


def test_references_are_matched_once_per_track(clip, tiny_honestface_dir, tmp_path) -> None:
    from honestface.data import samples
    from honestface.io import write_image

    refs = tmp_path / "refs"
    refs.mkdir()
    write_image(refs / "astronaut.png", samples.load_sample("astronaut"))
    out = tmp_path / "out.mkv"
    assert infer(tiny_honestface_dir, clip.lq, out, f"infer.references={refs}") == 0
    tracks = json.loads(results_path(out).read_text())["tracks"]
    with_refs = [t for t in tracks if t["references"]]
    assert len(with_refs) == 1 and not with_refs[0]["blind"], tracks
    assert with_refs[0]["first_frame"] > max(clip.face_free), "the astronaut appears after the face-free frames"


def test_frame_folder_in_and_out(clip, tiny_honestface_dir, tmp_path) -> None:
    from honestface.io import write_image

    frames = tmp_path / "frames"
    frames.mkdir()
    source = list(read_frames(clip.lq))[:6]
    for i, f in enumerate(source):
        write_image(frames / f"f{i}.png", f)
    out = tmp_path / "restored_frames"
    assert infer(tiny_honestface_dir, frames, out, "video.frames=true", "video.fps=12") == 0
    written = sorted(out.glob("*.png"))
    assert len(written) == 6


def test_bad_clips_fail_with_one_line_and_leave_nothing(clip, tiny_honestface_dir, tmp_path, capsys) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    out = tmp_path / "out.mp4"
    assert infer(tiny_honestface_dir, text, out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "notes.mp4" in err[0]
    assert infer(tiny_honestface_dir, tmp_path / "missing.mp4", out) == 2
    assert "not found" in capsys.readouterr().err
    existing = tmp_path / "existing.mp4"
    existing.write_bytes(b"keep me")
    assert infer(tiny_honestface_dir, clip.lq, existing) == 2
    assert existing.read_bytes() == b"keep me"
    assert infer(tiny_honestface_dir, clip.lq, clip.lq, "infer.overwrite=true") == 2
    assert not out.exists() and not results_path(out).exists()


def test_corrupt_frame_fails_and_keeps_the_input(clip, tiny_honestface_dir, tmp_path, capsys) -> None:
    frames = list(read_frames(clip.lq))[:10]
    bad = tmp_path / "bad.mkv"
    with VideoWriter(bad, Fraction(12), lossless=True) as w:
        for f in frames:
            w.write(f)
    data = bytearray(bad.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 4000] = bytes(4000)
    bad.write_bytes(bytes(data))
    before = bad.read_bytes()
    out = tmp_path / "out.mp4"
    code = infer(tiny_honestface_dir, bad, out)
    assert code in (1, 2)
    assert "frame" in capsys.readouterr().err
    assert not out.exists() and bad.read_bytes() == before
