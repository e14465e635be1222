"""Every script turns an expected failure (a missing weight, a bad config key, a missing path) into one `error:` line
on stderr and exit code 2: no traceback, nothing written. Each case runs the real script in a subprocess with an
empty $HONESTFACE_HOME (conftest), at the cheapest setting that reaches the failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, f"scripts/{script}", *args], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=300, check=False)


def assert_one_line_error(proc: subprocess.CompletedProcess, *expected: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    for text in expected:
        assert text in lines[0], lines[0]


def identity_folders(root: Path) -> Path:
    """Two people x three random 64 px faces: enough for the training data loaders to build."""
    rng = np.random.default_rng(0)
    for person in ("p0", "p1"):
        (root / person).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / person / f"{i}.png")
    return root


def test_train_missing_weight_is_one_line(tmp_path: Path) -> None:
    """The tiny VAE stage with pretrained perceptual networks needs AlexNet, absent from the empty weights home."""
    out = tmp_path / "run"
    proc = run_script("train.py", "--config", "configs/tiny/vae.yaml", f"data.train_dir={identity_folders(tmp_path / 'ids')}",
                      f"train.output_dir={out}", "loss.networks=pretrained")
    assert_one_line_error(proc, "weight 'alexnet_imagenet'", "weights.alexnet_imagenet", "scripts/weights.py fetch")
    assert not out.exists()


CASES = {
    "train: misspelt weight key": ("train.py", ["--config", "configs/tiny/vae.yaml", "weights.alexnet_imagenett=/x"],
                                   ["'weights.alexnet_imagenett'", "did you mean weights.alexnet_imagenet"]),
    "train: unknown config key": ("train.py", ["train.max_stepz=3"], ["'train.max_stepz'", "train.max_steps"]),
    "infer: misspelt weight key": ("infer.py", ["--model", "M", "--input", "I", "--output", "O",
                                                "weights.vgg16_imagnet=/x"], ["did you mean weights.vgg16_imagenet"]),
    "infer: missing model folder": ("infer.py", ["--model", "{tmp}/no_model", "--input", "{tmp}", "--output",
                                                 "{tmp}/out"], ["model folder not found"]),
    "evaluate: missing ground truth": ("evaluate.py", ["--restored", "{tmp}", "--gt", "{tmp}/no_gt", "--metrics",
                                                       "psnr"], ["no_gt"]),
    "evaluate: misspelt weight key": ("evaluate.py", ["--restored", "{tmp}", "weights.fid_inceptoin=/x"],
                                      ["did you mean weights.fid_inception"]),
    "evaluate: missing restored video": ("evaluate.py", ["--restored", "ours={tmp}/no.mp4", "--gt", "{tmp}/gt.mp4"],
                                         ["restored video not found", "no.mp4"]),
    "prepare_data: missing folder": ("prepare_data.py", ["split-identities", "{tmp}/no_root", "{tmp}/split"],
                                     ["identity root folder not found"]),
    "weights: unknown name": ("weights.py", ["path", "awing_fna"], ["unknown weight 'awing_fna'", "awing_fan"]),
    "quickstart: not a run folder": ("quickstart.py", ["--publish", "{tmp}/no_run"], ["summary.json"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_scripts_fail_in_one_line(case: str, tmp_path: Path) -> None:
    script, args, expected = CASES[case]
    proc = run_script(script, *(a.replace("{tmp}", str(tmp_path)) for a in args))
    assert_one_line_error(proc, *expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a failing script wrote something"


def test_verbose_error_adds_the_traceback(tmp_path: Path) -> None:
    proc = run_script("prepare_data.py", "-v", "split-identities", str(tmp_path / "none"), str(tmp_path / "s"))
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and proc.stderr.splitlines()[-1].startswith("error: identity root folder")
