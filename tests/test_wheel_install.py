"""The package as a user gets it: a wheel built from the repository, installed with the lock into a new virtualenv,
used through its console commands from a folder outside the repository (so none of the repository's sources can be
imported). Marked slow; CI runs it as its own step (.ci/run).

What it checks: the wheel builds; `pip install <wheel> -r requirements.lock.txt` accepts the wheel's requirements
against the locked set; `pip check` passes (facenet-pytorch 2.5.3 instead of 2.6.0, whose metadata pins an old
torch); the console scripts exist; the shipped configs are package data reachable by name; the default detector
(MTCNN) works, and `honestface-infer` restores the bundled astronaut photo with a tiny model the installed library
saves.

Our choice, for time: the new virtualenv sees the running environment's site-packages through a `.pth` line (a
plain path: the `.pth` files inside it, e.g. the editable install's import hook, are not run), so pip finds the
locked packages already installed and only installs the wheel (and any pin the running environment lacks) into the
new environment. A truly empty virtualenv unpacks ~7 GB (torch with its CUDA libraries): 4-5 minutes on CI's
2 cores, measured. HONESTFACE_WHEEL_TEST_EMPTY_VENV=1 runs that full install instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
WHEEL_SOURCES = ("pyproject.toml", "README.md", "LICENSE", "honestface")
COMMANDS = ("train", "infer", "evaluate", "prepare", "weights", "quickstart")
WHERE = ("import honestface; from importlib.metadata import version as v; "
         "print(honestface.__file__, v('facenet-pytorch'))")
MAKE_INPUTS = """
import sys, torch
from PIL import Image
from honestface.data import samples
from honestface.models import HonestFace
torch.manual_seed(0)
HonestFace.from_preset("tiny", with_discriminator=False).save_pretrained(sys.argv[1])
Image.fromarray(samples.load_sample("astronaut")).save(sys.argv[2])
"""


def run(args: list[str | Path], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """A command outside the repository, with no PYTHONPATH (the repository must not be importable)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)
    assert proc.returncode == 0, f"{args}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


def build_wheel(tmp: Path) -> Path:
    """The wheel of a copy of what the package is made of (the build never writes into the repository)."""
    src = tmp / "src"
    for name in WHEEL_SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, src / name)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp / "dist", src],
        cwd=tmp)
    (wheel,) = (tmp / "dist").glob("honestface-*.whl")
    return wheel


def make_venv(tmp: Path) -> Path:
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", venv], cwd=tmp)
    if os.environ.get("HONESTFACE_WHEEL_TEST_EMPTY_VENV") != "1":
        (site,) = (venv / "lib").glob("python3*/site-packages")
        layers = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
        (site / "zz_running_environment.pth").write_text("".join(f"{p}\n" for p in layers))
    return venv


def test_wheel_installs_with_the_lock_and_restores_a_photo_outside_the_repository(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    venv = make_venv(tmp_path)
    bin_dir, py = venv / "bin", venv / "bin" / "python"
    run([py, "-m", "pip", "install", "-q", wheel, "-r", REPO / "requirements.lock.txt"], cwd=tmp_path, timeout=1200)
    work = tmp_path / "work"  # outside the repository: only the installed package can be imported
    work.mkdir()
    where = run([py, "-c", WHERE], cwd=work).stdout.split()
    assert Path(where[0]).is_relative_to(venv) and where[1] == "2.5.3", where
    run([py, "-m", "pip", "check"], cwd=work)

    for command in COMMANDS:
        assert (bin_dir / f"honestface-{command}").is_file(), command
    usage = run([bin_dir / "honestface-infer", "--help"], cwd=work).stdout
    assert usage.startswith("usage: honestface-infer") and "--model" in usage and "--whole" in usage
    printed = run([bin_dir / "honestface-train", "--config", "tiny/vae", "--print-config"], cwd=work).stdout
    assert "stage: vae" in printed  # a shipped config by name, read from the installed package data

    run([py, "-c", MAKE_INPUTS, "model", "astronaut.png"], cwd=work)
    run([bin_dir / "honestface-infer", "--model", "model", "--whole", "--input", "astronaut.png", "--output", "out",
         "--device", "cpu", "-q"], cwd=work)
    (result,) = json.loads((work / "out" / "results.json").read_text())["files"]
    assert result["status"] == "ok" and len(result["faces"]) >= 1, result  # MTCNN found the face
    before = np.asarray(Image.open(work / "astronaut.png"))
    after = np.asarray(Image.open(work / "out" / "astronaut.png"))
    assert after.shape == before.shape and np.abs(after.astype(int) - before.astype(int)).max() > 0
