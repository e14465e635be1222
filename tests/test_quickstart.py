"""The quickstart's face-preparation run on the bundled photos, end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_quickstart(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/quickstart.py", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_quickstart_writes_faces_report_and_checks(tmp_path):
    out = tmp_path / "qs"
    run = run_quickstart("--output", str(out), "--size", "512")
    assert run.returncode == 0, run.stderr[-2000:]
    faces = sorted((out / "faces").glob("*.png"))
    assert len(faces) == 8  # astronaut 1 + Grace Hopper 1 + group photo 6
    sidecar = json.loads((out / "faces" / "landmarks.json").read_text())
    assert set(sidecar) == {f.stem for f in faces}
    assert all(len(v["landmarks"]) == 68 for v in sidecar.values())
    report = (out / "report.md").read_text()
    assert "**8 / 8**" in report  # every mirrored face is nearest to itself
    photos = ("| astronaut |", "| group_t1 |", "| grace_hopper |")
    rows = [line.split("|") for line in report.splitlines() if line.startswith(photos)]
    assert len(rows) == 3
    for row in rows:
        assert float(row[3].split()[0]) > 35  # PSNR inside the paste mask (two bilinear resamplings)
        assert int(row[4]) == 0  # nothing outside the mask changed
    assert (out / "overview.png").is_file() and len(list((out / "pasted").glob("*.png"))) == 3
    # A second run may reuse its own folder.
    assert run_quickstart("--output", str(out), "--size", "128").returncode == 0


def test_quickstart_refuses_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    run = run_quickstart("--output", str(tmp_path), "--size", "128")
    assert run.returncode != 0 and "not a quickstart output folder" in run.stderr
    assert (tmp_path / "mine.txt").read_text() == "keep me" and len(list(tmp_path.iterdir())) == 1
