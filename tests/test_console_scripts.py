"""The console commands of the installed package (pyproject [project.scripts]) and the repository's scripts/ run the
same code: each entry point's `main` prints its usage under the console name, each script calls that `main` and
keeps its own name. tests/test_wheel_install.py (slow) runs them from a real install."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# name -> "module:function" of pyproject's [project.scripts] (a plain parse: tomllib is Python 3.11+, we support 3.10)
_SECTION = (REPO / "pyproject.toml").read_text().partition("\n[project.scripts]\n")[2].partition("\n[")[0]
ENTRY_POINTS = dict(re.findall(r'^([\w-]+) = "([\w.:]+)"$', _SECTION, re.MULTILINE))
SCRIPTS = {"honestface-train": "train.py", "honestface-infer": "infer.py", "honestface-evaluate": "evaluate.py",
           "honestface-prepare": "prepare_data.py", "honestface-weights": "weights.py",
           "honestface-quickstart": "quickstart.py", "honestface-export": "export.py", "honestface-demo": "demo.py"}


def test_every_script_has_a_console_command():
    assert sorted(ENTRY_POINTS) == sorted(SCRIPTS)


@pytest.mark.parametrize("command", sorted(SCRIPTS))
def test_console_command_prints_usage_under_its_name(command: str, capsys) -> None:
    module, _, function = ENTRY_POINTS[command].partition(":")
    main = getattr(importlib.import_module(module), function)
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {command} ") and "--verbose" in out
    assert "scripts/" not in out.split("\n\n")[0]  # the usage line names the command the user typed
    script = (REPO / "scripts" / SCRIPTS[command]).read_text()
    assert f"from {module} import main" in script  # the script is a wrapper of the same main


def test_script_runs_from_another_folder_without_install(tmp_path: Path) -> None:
    """From another folder, without PYTHONPATH: the script finds the repository itself, keeps its own name, and a
    shipped config is found by name."""
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}

    def script(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc

    usage = script(str(REPO / "scripts" / "infer.py"), "--help").stdout
    assert usage.startswith("usage: scripts/infer.py ") and "python scripts/infer.py --model" in usage
    printed = script(str(REPO / "scripts" / "train.py"), "--config", "tiny/vae", "--print-config").stdout
    assert "stage: vae" in printed and "max_steps:" in printed
