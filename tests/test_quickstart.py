"""The quickstart (script and notebook) end to end at a few steps: every artefact exists and the report holds together."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FAST = ("--steps", "2", "--vae-steps", "2", "--vre-steps", "3", "--size", "64", "--device", "cpu")


def run_quickstart(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/quickstart.py", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600, check=False)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key in ("src", "href") and value:
                self.links.append(value)


def local_links(html_file: Path) -> list[str]:
    parser = _Links()
    parser.feed(html_file.read_text())
    return [link for link in parser.links if not re.match(r"^(https?:|data:|#|mailto:)", link)]


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("qs") / "out"
    run = run_quickstart("--output", str(out), *FAST)
    assert run.returncode == 0, run.stderr[-3000:]
    return out, run


def test_quickstart_writes_every_artefact(quickstart_run):
    out, run = quickstart_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_identities"] == ["group_t1_4", "tom_hanks_aligned_0"]
    assert not set(summary["test_identities"]) & set(summary["train_identities"])  # held-out people
    assert len(summary["train_identities"]) == 7
    assert summary["num_test_faces"] == 8  # 2 people x 4 views
    for stage in ("vae", "vre", "honestface"):
        assert (out / "runs" / stage / "final" / "training.json").is_file()
        assert list((out / "runs" / stage / "logs").rglob("events.out.tfevents.*")), stage  # tensorboard
    assert (out / "runs" / "honestface" / "checkpoints").is_dir()
    restored = sorted(p.relative_to(out / "restored").as_posix() for p in (out / "restored").rglob("*.png"))
    lq = sorted(p.relative_to(out / "data/test/lq").as_posix() for p in (out / "data/test/lq").rglob("*.png"))
    assert restored == lq and len(restored) == 8
    assert summary["group_photo_faces"] == 6  # t1.jpg: six people detected and restored in photo mode
    assert (out / "photo" / "group_t1_restored.png").is_file()
    for metric in ("psnr", "ssim", "lmd_dlib68", "ald", "ald_e", "ald_m", "ids_dlib", "ref_ids"):
        row = summary["metrics"][metric]
        assert row["faces"] == 8, metric  # computed for every held-out face, LQ and restored
        assert 0 <= row["faces_better"] <= 8
    assert "report: " in run.stdout and "PSNR" in run.stdout  # the one-screen summary


def test_quickstart_report_links_only_existing_files(quickstart_run):
    out, _ = quickstart_run
    report = out / "report.html"
    links = local_links(report)
    assert any(link.startswith("figures/faces/") for link in links)
    assert "photo/group_t1_restored.png" in links
    missing = [link for link in links if not (report.parent / link).is_file()]
    assert not missing
    evaluation = out / "evaluation" / "report.html"
    assert not [link for link in local_links(evaluation) if not (evaluation.parent / link).is_file()]


def test_quickstart_rerun_resumes_instead_of_retraining(quickstart_run, tmp_path):
    out, _ = quickstart_run
    copy = tmp_path / "again"
    shutil.copytree(out, copy)
    run = run_quickstart("--output", str(copy), *FAST)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("already trained") == 3
    # More steps continue the HonestFace stage from its last checkpoint.
    more = [a if a != "2" or i != 1 else "3" for i, a in enumerate(FAST)]
    run = run_quickstart("--output", str(copy), *more)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads((copy / "runs/honestface/final/training.json").read_text())["step"] == 3


def test_quickstart_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    run = run_quickstart("--output", str(tmp_path), *FAST)
    assert run.returncode != 0 and "not a quickstart output folder" in run.stderr
    assert (tmp_path / "mine.txt").read_text() == "keep me" and len(list(tmp_path.iterdir())) == 1


def _chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


def test_quickstart_report_renders_in_headless_chromium(quickstart_run, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium); the report's links are still "
                    "checked by test_quickstart_report_links_only_existing_files")
    import numpy as np

    from honestface.io import read_image

    out, _ = quickstart_run
    shot = tmp_path / "report.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1200,2400", (out / "report.html").as_uri()],
                   capture_output=True, timeout=120, check=False)
    assert shot.is_file(), "Chromium wrote no screenshot"
    image = read_image(shot)  # (H, W, 3) in [0, 1]
    # The face grids and photos are colourful; an empty or broken page is white text on a plain background.
    saturation = image.max(axis=2) - image.min(axis=2)
    assert float(np.mean(saturation > 0.15)) > 0.02


def test_quickstart_notebook_runs(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(REPO / "examples" / "quickstart.ipynb", as_version=4)
    params = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1
    params[0].source = (f"OUTPUT = {str(tmp_path / 'nb')!r}\nSIZE = 64\n"
                        "STEPS = {'vae': 2, 'vre': 3, 'honestface': 2}\nTRAIN_VIEWS, TEST_VIEWS = 3, 2")
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3  # faces, loss curves, restorations
    assert any("text/markdown" in o.get("data", {}) and "psnr" in o["data"]["text/markdown"].lower()
               for o in outputs)
    assert len(list((tmp_path / "nb" / "restored").rglob("*.png"))) == 4
