"""scripts/evaluate.py on videos: per-frame metrics on decoded frames plus face_warp_error for every method and
the input, in summary.json, table.md, temporal.csv and report.html."""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import skimage.data

FRAMES, SIZE = 8, 160


def _pan(photo: np.ndarray, n: int = FRAMES) -> list[np.ndarray]:
    """A camera pan over the astronaut's face: 2 px right and 1 px down per frame (dlib finds the face)."""
    return [np.ascontiguousarray(photo[40 + t:40 + t + SIZE, 150 + 2 * t:150 + 2 * t + SIZE]) for t in range(n)]


def _write_video(path: Path, frames: list[np.ndarray]) -> Path:
    """Lossless RGB H.264 (libx264rgb, qp 0): the decoded frames equal `frames`."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264rgb", rate=25)
        stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "rgb24"
        stream.options = {"qp": "0"}
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """gt, lq (4x down and up again), `flicker` (gt + fresh noise every frame) and `stable` (the same noise on
    the photo, panned with it): equal noise strength, so equal PSNR, but only one of them flickers."""
    import cv2

    root = tmp_path_factory.mktemp("videos")
    photo = skimage.data.astronaut()
    rng = np.random.default_rng(0)
    noisy = lambda x: np.clip(x + rng.normal(0.0, 6.0, x.shape), 0, 255).round().astype(np.uint8)
    gt = _pan(photo)
    small = lambda f: cv2.resize(cv2.resize(f, (SIZE // 4, SIZE // 4), interpolation=cv2.INTER_AREA), (SIZE, SIZE),
                                 interpolation=cv2.INTER_CUBIC)
    videos = {"gt": gt, "lq": [small(f) for f in gt], "flicker": [noisy(f) for f in gt], "stable": _pan(noisy(photo))}
    return {name: _write_video(root / f"{name}.mp4", frames) for name, frames in videos.items()}


def test_video_evaluation_reports_face_warp_error_for_input_and_methods(clips, tmp_path, monkeypatch, capsys):
    from honestface.apps.cli.evaluate import main

    work = tmp_path / "tmp"
    work.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(work))  # where the decoded frames go
    out = tmp_path / "report"
    code = main(["--restored", f"flicker={clips['flicker']}", f"stable={clips['stable']}", "--gt", str(clips["gt"]),
                 "--lq", str(clips["lq"]), "--output", str(out), "--device", "cpu"])
    printed = capsys.readouterr()
    assert code == 0, printed.err[-2000:]
    assert list(work.iterdir()) == []  # the frame folders are gone

    summary = json.loads((out / "summary.json").read_text())
    rows = summary["temporal"]["rows"]
    assert set(rows) == {"input", "flicker", "stable"} and summary["temporal"]["guide"] == "gt"
    assert all(r["count"] == FRAMES - 1 for r in rows.values())  # one face in every frame: one crop per pair
    assert rows["stable"]["value"] < 0.5 * rows["flicker"]["value"]
    methods = summary["methods"]
    assert methods["stable"]["metrics"]["face_warp_error"]["value"] == rows["stable"]["value"]
    assert summary["ranking"]["face_warp_error"] == ["stable", "flicker"]
    assert not summary["higher_is_better"]["face_warp_error"]
    assert methods["flicker"]["metrics"]["psnr"]["count"] == FRAMES  # per-frame metrics on every frame
    assert abs(methods["flicker"]["metrics"]["psnr"]["value"] - methods["stable"]["metrics"]["psnr"]["value"]) < 0.5
    assert methods["flicker"]["folder"] == str(clips["flicker"]) and summary["videos"]["lq"] == str(clips["lq"])

    table = (out / "table.md").read_text()
    assert "FaceWarp×10³↓" in table and "PSNR↑" in table
    input_row = next(line for line in table.splitlines() if line.startswith("| input |"))
    assert f"{rows['input']['value']:.2f}" in input_row or f"{rows['input']['value']:.4f}" in input_row
    with open(out / "temporal.csv", newline="") as f:
        lines = list(csv.DictReader(f))
    assert {r["row"] for r in lines} == {"input", "flicker", "stable"} and len(lines) == 3 * (FRAMES - 1)
    assert all(r["video"] for r in lines)
    per_image = (out / "per_image.csv").read_text()
    assert f"{clips['flicker']} frame 7" in per_image and str(work) not in per_image
    page = (out / "report.html").read_text()
    assert ">input</th>" in page and "FaceWarp" in page
    assert len(list((out / "assets").rglob("*.jpg"))) == FRAMES * 4  # thumbnails: LQ, two methods, GT


def test_videos_of_different_lengths_exit_2_with_one_line(clips, tmp_path, capsys):
    from honestface.apps.cli.evaluate import main

    short = _write_video(tmp_path / "short.mp4", _pan(skimage.data.astronaut(), FRAMES - 2))
    out = tmp_path / "report"
    code = main(["--restored", str(short), "--gt", str(clips["gt"]), "--output", str(out), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ")
    assert str(clips["gt"]) in err[0] and str(short) in err[0] and "8 frames" in err[0] and "6 of" in err[0]
    assert not out.exists()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    assert main(["--restored", str(broken), "--gt", str(clips["gt"]), "--output", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot decode the video" in err[0] and str(broken) in err[0] and not out.exists()


def test_without_ground_truth_the_input_guides_the_flow(clips, tmp_path, capsys):
    from honestface.apps.cli.evaluate import main

    out = tmp_path / "report"
    code = main(["--restored", f"flicker={clips['flicker']}", f"stable={clips['stable']}", "--lq",
                 str(clips["lq"]), "--output", str(out)])
    assert code == 0, capsys.readouterr().err[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["temporal"]["guide"] == "lq" and summary["ground_truth"] is None
    rows = summary["temporal"]["rows"]
    assert rows["stable"]["value"] < rows["flicker"]["value"] and rows["input"]["count"] > 0
    assert summary["metrics"] == ["face_warp_error"]
    code = main(["--restored", str(clips["flicker"]), "--lq", str(clips["lq"]), "--metrics", "psnr",
                 "--output", str(tmp_path / "other")])
    assert code == 2 and "need the ground-truth video (--gt)" in capsys.readouterr().err
