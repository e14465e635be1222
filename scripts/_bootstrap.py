"""Shared start-up of the scripts: repo root on sys.path (works without `pip install -e .`), and the common
`--config FILE key=value ...` command line of train / infer / evaluate."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def config_script(argv: list[str] | None, prog: str, description: str, epilog: str, runner: str, what: str,
                  issue: int) -> int:
    """Parse `--config FILE [--print-config] key=value ...`, validate, and call `runner` ("module:function")
    with the config. A runner that this version of the library does not have yet is reported, not crashed on."""
    from honestface.config import ConfigError, add_config_arguments, config_from_args

    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog)
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        parser.exit(2, f"error: {e}\n")
    module, function = runner.split(":")
    if importlib.util.find_spec(module) is None:  # a real import error inside an existing module still raises
        parser.exit(2, f"error: the config is valid, but {what} is not available in this version of honestface "
                       f"yet (tracked in issue #{issue})\n")
    return int(getattr(importlib.import_module(module), function)(cfg) or 0)
