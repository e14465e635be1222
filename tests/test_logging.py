"""Quiet by default, and one logging set-up: importing honestface (and through it peft) prints nothing and never loads
bitsandbytes; the library logs to the `honestface` logger (NullHandler, root untouched); every script has
--verbose / --quiet, and --quiet leaves only the script's result."""

from __future__ import annotations

import argparse
import importlib.util
import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from honestface import log as hlog

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
ENV.pop(hlog.ALLOW_ENV, None)
SCRIPTS = ["train.py", "infer.py", "evaluate.py", "prepare_data.py", "quickstart.py", "weights.py"]

IMPORT_PATH = """
import logging, sys
import honestface
from honestface.pipelines import HonestFacePipeline
from honestface.models.generator import OneStepGenerator   # its LoRA adapters come from peft
import peft, torch
model = peft.inject_adapter_in_model(peft.LoraConfig(r=2, target_modules=["0"]), torch.nn.Sequential(torch.nn.Linear(4, 4)))
print("lora layers:", sum("lora" in n for n, _ in model.named_modules()) > 0)
print("bitsandbytes loaded:", sys.modules.get("bitsandbytes") is not None)
print("root handlers:", len(logging.getLogger().handlers))
print("honestface handlers:", [type(h).__name__ for h in logging.getLogger("honestface").handlers])
"""


def python(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env or ENV, capture_output=True, text=True,
                          timeout=300, check=False)


def test_import_and_peft_are_quiet_and_skip_bitsandbytes() -> None:
    proc = python("-c", IMPORT_PATH)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == ["lora layers: True", "bitsandbytes loaded: False", "root handlers: 0",
                                        "honestface handlers: ['NullHandler']"]
    for noise in ("gemm_4bit", "bitsandbytes", "kernels-community"):
        assert noise not in proc.stderr, proc.stderr[-3000:]


def test_diffusers_imported_first_still_loads_the_models() -> None:
    """diffusers notes at import whether bitsandbytes is installed: imported before honestface, the block would make
    its later `import bitsandbytes` fail while loading the models. Then nothing is blocked."""
    proc = python("-c", "import diffusers, sys; import honestface.models; "
                        "print(sys.modules.get('bitsandbytes', 'absent') is not None)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["True"]


def test_the_block_can_be_lifted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "bitsandbytes", raising=False)  # restored after the test
    assert importlib.util.find_spec("bitsandbytes") is not None  # installed: only our block hides it
    monkeypatch.setenv(hlog.ALLOW_ENV, "1")
    assert hlog.block_unused_imports() == [] and "bitsandbytes" not in sys.modules
    monkeypatch.delenv(hlog.ALLOW_ENV)
    monkeypatch.setitem(sys.modules, "diffusers", sys.modules.get("diffusers", hlog))  # imported first: no block
    assert hlog.block_unused_imports() == [] and "bitsandbytes" not in sys.modules
    monkeypatch.setattr(hlog, "CACHING_IMPORTERS", ())
    assert hlog.block_unused_imports() == ["bitsandbytes"]
    with pytest.raises(ModuleNotFoundError):
        import bitsandbytes  # noqa: F401
    hlog.allow_blocked_imports()
    assert "bitsandbytes" not in sys.modules and importlib.util.find_spec("bitsandbytes") is not None


@pytest.fixture
def console():
    """setup_logging into a buffer; the `honestface` logger is put back as it was afterwards."""
    lib = logging.getLogger("honestface")
    handlers, level = list(lib.handlers), lib.level
    buffer = io.StringIO()
    yield buffer
    lib.handlers[:] = handlers
    lib.setLevel(level)


def test_setup_logging_levels_and_format(console: io.StringIO) -> None:
    root_before = list(logging.getLogger().handlers)
    child = hlog.get_logger("honestface.data.prepare")
    assert child is logging.getLogger("honestface.data.prepare") and hlog.get_logger("x").name == "honestface.x"
    hlog.setup_logging("info", stream=console)
    hlog.setup_logging(logging.INFO, stream=console)  # again: replaces its handler, no doubled lines
    child.debug("hidden")
    child.info("aligned 3 photos")
    child.warning("2 photos unreadable")
    hlog.setup_logging("debug", stream=console)
    child.debug("detector mtcnn")
    assert console.getvalue().splitlines() == ["aligned 3 photos", "warning: 2 photos unreadable",
                                               "debug: honestface.data.prepare: detector mtcnn"]
    assert logging.getLogger().handlers == root_before  # the root logger is the application's
    assert sum(not isinstance(h, logging.NullHandler) for h in logging.getLogger("honestface").handlers) == 1
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        hlog.setup_logging("loud")


def test_verbose_and_quiet_flags() -> None:
    parser = argparse.ArgumentParser()
    hlog.add_logging_arguments(parser)
    assert hlog.level_from_args(parser.parse_args([])) == logging.INFO
    assert hlog.level_from_args(parser.parse_args(["-q"])) == logging.WARNING
    assert hlog.level_from_args(parser.parse_args(["--verbose"])) == logging.DEBUG
    with pytest.raises(SystemExit):
        parser.parse_args(["-q", "-v"])


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_has_verbose_and_quiet(script: str) -> None:
    proc = python(f"scripts/{script}", "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--verbose" in proc.stdout and "--quiet" in proc.stdout
    assert "gemm_4bit" not in proc.stdout + proc.stderr and proc.stderr == ""


def test_quiet_prints_only_the_result_and_verbose_adds_debug(tmp_path: Path) -> None:
    root = tmp_path / "people"
    for person in "abcd":
        (root / person).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / person / "0.png")
    result = "3 train and 1 test identities written to"
    runs = {}
    for flags in ([], ["-q"], ["-v"]):
        out = tmp_path / f"split{''.join(flags)}"
        runs[tuple(flags)] = proc = python("scripts/prepare_data.py", *flags, "split-identities", str(root), str(out))
        assert proc.returncode == 0 and proc.stdout.startswith(result) and len(proc.stdout.splitlines()) == 1
    assert runs[()].stderr.splitlines() == [f"wrote {tmp_path}/split/train.txt (3 identities)",
                                            f"wrote {tmp_path}/split/test.txt (1 identities)"]
    assert runs[("-q",)].stderr == ""
    assert runs[("-v",)].stderr.startswith("debug: honestface.data.prepare: ") and "wrote" in runs[("-v",)].stderr
    after = python("scripts/prepare_data.py", "split-identities", str(root), str(tmp_path / "split-q"), "--quiet")
    assert after.returncode == 0 and after.stderr == ""  # the flag also works after the sub-command
