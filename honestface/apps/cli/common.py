"""What every command line of honestface shares: console logging (`--verbose` / `--quiet`), the common
`--config FILE key=value ...` command line of train / infer / evaluate, and one rule for expected failures: a
missing weight, a bad config key or value, a missing path end the command with one `error: ...` line on stderr and
exit code 2, never a traceback (--verbose adds the traceback as debug lines).

Each command is one module of `honestface.apps.cli` with `main(argv=None, prog=...) -> int`; the console scripts of
the installed package (`honestface-train`, ...) call it with the console name as `prog` (the default), the
repository's `scripts/*.py` with their own path (our choice: the usage line and the examples name the command the
user typed).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Callable
from typing import Any

from honestface.log import add_logging_arguments, get_logger, level_from_args, setup_logging

__all__ = ["EXIT_BAD_INPUT", "SCRIPTS", "config_script", "expected_errors", "fail", "guarded", "invocation", "log",
           "one_line", "sibling", "start_logging"]

EXIT_BAD_INPUT = 2
log = get_logger("scripts")
# command -> its script in the repository's scripts/ folder (the console script is `honestface-<command>`)
SCRIPTS = {"train": "train.py", "infer": "infer.py", "evaluate": "evaluate.py", "prepare": "prepare_data.py",
           "weights": "weights.py", "quickstart": "quickstart.py", "export": "export.py", "demo": "demo.py"}


def invocation(prog: str) -> str:
    """How a user runs the command named `prog`: `python scripts/x.py` for a script path, else the console name."""
    return f"python {prog}" if prog.endswith(".py") and not prog.startswith("python ") else prog


def sibling(prog: str, command: str) -> str:
    """How to run honestface `command` the way `prog` was run: `python scripts/weights.py` or `honestface-weights`."""
    return f"python scripts/{SCRIPTS[command]}" if prog.endswith(".py") else f"honestface-{command}"


def expected_errors() -> tuple[type[BaseException], ...]:
    """What bad input raises (ConfigError is a ValueError; MissingWeightError a FileNotFoundError)."""
    from honestface.weights import WeightsError

    return (WeightsError, ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def one_line(err: BaseException) -> str:
    """The error's message on one line (a KeyError's message without the quotes repr adds)."""
    text = err.args[0] if isinstance(err, KeyError) and err.args else err
    return " ".join(str(text).split()) or type(err).__name__


def fail(err: BaseException | str) -> int:
    """Report an expected failure as one `error:` line on stderr (traceback only with --verbose); returns 2."""
    if isinstance(err, BaseException):
        log.debug("traceback of the error below", exc_info=err)
        err = one_line(err)
    print(f"error: {err}", file=sys.stderr)
    return EXIT_BAD_INPUT


def start_logging(args: argparse.Namespace) -> None:
    """Console output of the library's logger at the level --verbose / --quiet ask for."""
    setup_logging(level_from_args(args))


def guarded(function: Callable[..., Any], *args: Any) -> int:
    """`function(*args)` as an exit code; an expected failure becomes one error line and exit code 2."""
    try:
        return int(function(*args) or 0)
    except expected_errors() as err:
        return fail(err)


def config_script(argv: list[str] | None, prog: str, description: str, epilog: str, runner: str, what: str,
                  issue: int) -> int:
    """Parse `--config FILE [--print-config] [-v|-q] key=value ...`, validate, and call `runner`
    ("module:function") with the config. A runner that this version of the library does not have yet is reported,
    not crashed on; expected failures of the run are one error line and exit code 2."""
    from honestface.config import ConfigError, add_config_arguments, config_from_args

    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog)
    add_config_arguments(parser)
    add_logging_arguments(parser)
    args = parser.parse_args(argv)
    start_logging(args)
    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        parser.exit(2, f"error: {e}\n")
    module, function = runner.split(":")
    if importlib.util.find_spec(module) is None:  # a real import error inside an existing module still raises
        parser.exit(2, f"error: the config is valid, but {what} is not available in this version of honestface "
                       f"yet (tracked in issue #{issue})\n")
    return guarded(getattr(importlib.import_module(module), function), cfg)
