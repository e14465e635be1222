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
def refs(tmp_path_factory) -> Path:
    """A reference folder with the astronaut's clean face, FFHQ-aligned (a square reference is an aligned crop)."""
    from honestface.data import samples
    from honestface.face import build_detector, extract_faces
    from honestface.io import write_image

    folder = tmp_path_factory.mktemp("refs")
    face = extract_faces(samples.load_sample("astronaut"), build_detector("mtcnn"), size=128)[0]
    write_image(folder / "astronaut.png", face.crop)
    return folder


@pytest.fixture(scope="module")
def restored(clip, refs, tiny_honestface_dir, tmp_path_factory):
    """The clip restored losslessly with the reference -> (output, its results file, the run's analysis)."""
    import honestface.video.restore as vr

    out = tmp_path_factory.mktemp("restored") / "out.mp4"
    seen = []

    def spy(*args, **kwargs):
        seen.append(vr_analyse(*args, **kwargs))
        return seen[-1]

    vr_analyse = vr.analyse_video
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(vr, "analyse_video", spy)
        assert infer(tiny_honestface_dir, clip.lq, out, "video.lossless=true", f"infer.references={refs}") == 0
    return out, json.loads(results_path(out).read_text()), seen[0]


@pytest.fixture(scope="module")
def interrupted(clip, refs, restored, tiny_honestface_dir, tmp_path_factory):
    """The same run failing in its second chunk (its analysis, the costly part, taken from `restored`: CI time)
    -> (output path, the analysis it kept in its work folder)."""
    import copy

    import honestface.video.restore as vr
    from honestface.video.analysis import VideoAnalysis

    out = tmp_path_factory.mktemp("interrupted") / "out.mp4"
    real, calls = vr._restore_chunk, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(vr, "_restore_chunk", failing)
        mp.setattr(vr, "analyse_video", lambda *a, **k: copy.deepcopy(restored[2]))
        assert infer(tiny_honestface_dir, clip.lq, out, "video.lossless=true", f"infer.references={refs}") == 1
    work = vr.work_folder(out)
    assert not out.exists() and (work / "chunk_000000.mkv").is_file()
    return out, VideoAnalysis.from_dict(json.loads((work / "analysis.json").read_text()))


def test_output_keeps_frames_rate_audio_and_untouched_frames(clip, restored) -> None:
    out, report, _ = restored
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
    """Each track of the degraded clip holds one person (told by their clean faces' dlib embeddings against the
    source photos'), and every person the detector sees is one track, across the pan and the zoom."""
    from honestface.data import samples
    from honestface.face import build_detector, build_identity_encoder, extract_faces

    analysis = restored[2]
    detector, encoder = build_detector("mtcnn"), build_identity_encoder("dlib")
    photos = (samples.group_t1(), samples.load_sample("astronaut"))
    known = np.concatenate([encoder.embed_image(photo, [f.detection]) for photo in photos
                            for f in extract_faces(photo, detector, size=256)])  # (P, 128): the astronaut last
    gt = list(read_frames(clip.gt))
    owners = []
    for track in analysis.tracks:  # its first, middle and last face (dlib costs ~0.14 s a face: CI time)
        picks = sorted({0, len(track) // 2, len(track) - 1})
        emb = np.concatenate([encoder.embed_image(gt[track.frames[i]], [track.detections[i]]) for i in picks])
        owners.append(set((emb @ known.T).argmax(1).tolist()))
    assert all(len(o) == 1 for o in owners), f"a track mixes people: {owners}"
    persons = [next(iter(o)) for o in owners]
    assert len(persons) == len(set(persons)), f"a person is split into several tracks: {persons}"
    assert len(persons) >= 4 and persons[-1] == len(known) - 1  # the pan shows several people; the zoom, her
    assert analysis.tracks[-1].frames[0] == clip.cuts[-1]


def test_references_are_matched_once_per_track(clip, restored) -> None:
    tracks = restored[1]["tracks"]
    with_refs = [t for t in tracks if t["references"]]
    assert len(with_refs) == 1 and not with_refs[0]["blind"], tracks
    assert with_refs[0]["first_frame"] == clip.cuts[-1], "her track (the zoom) takes her reference, nobody else"
    assert all(t["blind"] for t in tracks if t is not with_refs[0])


def test_interrupted_run_resumes_with_the_same_result(clip, refs, restored, interrupted,
                                                      tiny_honestface_dir) -> None:
    import honestface.video.restore as vr

    out = interrupted[0]
    assert infer(tiny_honestface_dir, clip.lq, out, "video.lossless=true", f"infer.references={refs}") == 0
    report = json.loads(results_path(out).read_text())
    assert report["resumed_frames"] == 8 and not vr.work_folder(out).exists()
    assert interrupted[1].to_dict() == restored[2].to_dict()  # the analysis survives its JSON round trip
    first = list(read_frames(restored[0]))
    resumed = list(read_frames(out))
    assert len(first) == len(resumed) and all(np.array_equal(a, b) for a, b in zip(first, resumed))


def test_frame_folder_in_and_out_with_a_blind_vspbfr_model(clip, refs, tmp_path) -> None:
    """A folder of frames restored by VSPBFR (blind: the references are ignored) into a folder of PNG frames."""
    from honestface.io import read_image, write_image
    from honestface.models.vspbfr import build_vspbfr

    model = tmp_path / "vspbfr"
    build_vspbfr("tiny").save_pretrained(model)
    frames = tmp_path / "frames"
    frames.mkdir()
    source = list(read_frames(clip.lq))[:6]
    for i, f in enumerate(source):
        write_image(frames / f"f{i}.png", f)
    out = tmp_path / "restored_frames"
    assert infer(model, frames, out, "video.frames=true", "video.fps=12", f"infer.references={refs}") == 0
    written = sorted(out.glob("*.png"))
    assert len(written) == 6
    report = json.loads(results_path(out).read_text())
    assert report["architecture"] == "vspbfr" and report["fps"] == 12.0
    assert report["tracks"] and all(t["blind"] for t in report["tracks"])
    assert not np.array_equal(np.round(read_image(written[0]) * 255).astype(np.uint8), source[0])


def test_bad_clips_fail_with_one_line_and_leave_nothing(clip, tiny_honestface_dir, tmp_path, capsys) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    out = tmp_path / "out.mp4"
    assert infer(tiny_honestface_dir, text, out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "notes.mp4" in err[0]
    assert infer(tiny_honestface_dir, tmp_path / "missing.mp4", out) == 2
    assert "not found" in capsys.readouterr().err
    from honestface.video.demo_clip import write_tone

    tone = write_tone(tmp_path / "tone.mp4", 0.5)  # an audio-only file with a video suffix
    assert infer(tiny_honestface_dir, tone, out) == 2
    assert "audio only" in capsys.readouterr().err
    existing = tmp_path / "existing.mp4"
    existing.write_bytes(b"keep me")
    assert infer(tiny_honestface_dir, clip.lq, existing) == 2
    assert existing.read_bytes() == b"keep me"
    assert infer(tiny_honestface_dir, clip.lq, clip.lq, "infer.overwrite=true") == 2
    assert not out.exists() and not results_path(out).exists()


def test_corrupt_frame_fails_and_keeps_the_input(clip, tiny_honestface_dir, tmp_path, capsys) -> None:
    import av

    frames = list(read_frames(clip.lq))[:10]
    bad = tmp_path / "bad.mov"
    with VideoWriter(bad, Fraction(12), codec="png") as w:  # the PNG codec rejects any damaged frame
        for f in frames:
            w.write(f)
    with av.open(str(bad)) as c:
        packets = [(p.pos, p.size) for p in c.demux(c.streams.video[0]) if p.size]
    pos, size = packets[6]
    data = bytearray(bad.read_bytes())
    data[pos + size // 3:pos + 2 * size // 3] = bytes(x ^ 0xFF for x in data[pos + size // 3:pos + 2 * size // 3])
    bad.write_bytes(bytes(data))
    out = tmp_path / "out.mp4"
    assert infer(tiny_honestface_dir, bad, out) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "frame 6" in err[0], err
    assert not out.exists() and bad.read_bytes() == bytes(data)
    assert json.loads(results_path(out).read_text())["status"] == "failed"
