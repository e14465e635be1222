"""Logging of the library: the `honestface` logger, console set-up for the scripts, and quiet third-party imports.

The library logs through `logging.getLogger("honestface")` and its children (`get_logger(__name__)` in a module).
Per the Python convention for libraries it never configures the root logger and adds a `NullHandler` to its own,
so an application that imports honestface decides what is shown. The scripts (entry points) call
`setup_logging(level)`, which puts one console handler on the `honestface` logger only: INFO lines are the plain
message (progress, what is being done), DEBUG lines carry the logger name, WARNING and ERROR lines start with
`warning:` / `error:`. `add_logging_arguments` gives every script `--verbose` (debug) and `--quiet` (warnings and
errors only); `level_from_args` turns them into a level. A script's actual result (a JSON document, a table, a
path for the shell) is still printed to stdout, so `--quiet` leaves exactly the result.
`warnings.warn` stays for what the user must act on (shown by Python's own warning machinery, unchanged).

Quiet imports. `import peft` (which we use for the LoRA adapters) runs `import bitsandbytes` unconditionally in
`peft/helpers.py` (inside `try/except ImportError`), and bitsandbytes (installed as a dependency of the stack,
never used by honestface: we do no 4/8-bit quantisation) logs "Failed to load CPU gemm_4bit_forward from
kernels-community ..." through Python's last-resort handler on CPUs with AVX512-BF16, on every run. peft has no
switch for this. `block_unused_imports()`, called when `honestface` is imported, puts `None` into
`sys.modules["bitsandbytes"]`: the documented way to make an import fail with ModuleNotFoundError (Python reference,
"The module cache"). peft catches that ImportError; peft's `is_bnb_available`, accelerate's, transformers' and
diffusers' availability checks use `importlib.util.find_spec`, which returns None for a None entry, so all of them
treat bitsandbytes as absent and take their non-quantised paths. It also saves the import (and its GPU probing).
The block is skipped when bitsandbytes was already imported (someone else's code wanted it), when diffusers was
imported first (it notes whether bitsandbytes is installed when imported, so a notebook that ran `import diffusers`
before `import honestface` would later try the blocked import and fail), or
when the environment variable HONESTFACE_ALLOW_BITSANDBYTES=1 is set (for a process that needs bitsandbytes for
other work after importing honestface); `allow_blocked_imports()` lifts it again in a running process.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TextIO

LOGGER_NAME = "honestface"
ALLOW_ENV = "HONESTFACE_ALLOW_BITSANDBYTES"
BLOCKED_MODULES = ("bitsandbytes",)  # installed with the stack, never used by honestface, noisy on import
# imported before honestface, these have already noted bitsandbytes as installed: then it is not blocked
# (diffusers notes it when imported; transformers, accelerate and peft look when first asked)
CACHING_IMPORTERS = ("diffusers",)

logger = logging.getLogger(LOGGER_NAME)
logger.addHandler(logging.NullHandler())

_HANDLER_FLAG = "_honestface_console"


def get_logger(name: str) -> logging.Logger:
    """The logger of module `name` (e.g. `__name__`): a child of `honestface`, so one set-up covers them all."""
    if name != LOGGER_NAME and not name.startswith(LOGGER_NAME + "."):
        name = f"{LOGGER_NAME}.{name}"
    return logging.getLogger(name)


def block_unused_imports() -> list[str]:
    """Make `import bitsandbytes` fail quietly in this process (see the module docstring). Returns what it blocked."""
    if os.environ.get(ALLOW_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return []
    if any(name in sys.modules for name in CACHING_IMPORTERS):
        return []
    blocked = []
    for name in BLOCKED_MODULES:
        if name not in sys.modules:  # already imported (or already blocked): leave it as it is
            sys.modules[name] = None  # type: ignore[assignment]
            blocked.append(name)
    return blocked


def allow_blocked_imports() -> None:
    """Undo `block_unused_imports`: a later `import bitsandbytes` imports it normally."""
    for name in BLOCKED_MODULES:
        if name in sys.modules and sys.modules[name] is None:
            del sys.modules[name]


class _ConsoleFormatter(logging.Formatter):
    """INFO: the message; DEBUG: `debug: <logger>: message`; WARNING and above: `warning: message` (one line)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and record.levelno <= logging.DEBUG:
            message += "\n" + self.formatException(record.exc_info)
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {message}"
        if record.levelno <= logging.DEBUG:
            return f"debug: {record.name}: {message}"
        return message


def setup_logging(level: int | str = logging.INFO, stream: TextIO | None = None) -> logging.Handler:
    """Console output of the `honestface` logger at `level` (int or name: "debug", "info", "warning", "error"),
    to `stream` (default: stderr, so stdout carries only results). Calling it again replaces the handler it
    added before. Returns the handler."""
    if isinstance(level, str):
        names = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
        if level.lower() not in names:
            raise ValueError(f"unknown log level {level!r}; use debug, info, warning or error")
        level = names[level.lower()]
    for old in [h for h in logger.handlers if getattr(h, _HANDLER_FLAG, False)]:
        logger.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(_ConsoleFormatter())
    setattr(handler, _HANDLER_FLAG, True)
    logger.addHandler(handler)
    logger.setLevel(level)
    return handler


def add_logging_arguments(parser: argparse.ArgumentParser, *, in_subcommand: bool = False) -> None:
    """`-v/--verbose` and `-q/--quiet` (mutually exclusive). With `in_subcommand`, a flag not given on the
    sub-command leaves the main parser's value alone (so both `prog -q cmd` and `prog cmd -q` work)."""
    default = argparse.SUPPRESS if in_subcommand else False
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="store_true", default=default,
                       help="also print debug lines (what is loaded from where, each step)")
    group.add_argument("-q", "--quiet", action="store_true", default=default,
                       help="print only warnings, errors and the result")


def level_from_args(args: argparse.Namespace) -> int:
    """DEBUG for --verbose, WARNING for --quiet, else INFO."""
    if getattr(args, "verbose", False) and getattr(args, "quiet", False):
        raise ValueError("--verbose and --quiet exclude each other")
    if getattr(args, "verbose", False):
        return logging.DEBUG
    return logging.WARNING if getattr(args, "quiet", False) else logging.INFO


__all__ = ["ALLOW_ENV", "LOGGER_NAME", "add_logging_arguments", "allow_blocked_imports", "block_unused_imports",
           "get_logger", "level_from_args", "logger", "setup_logging"]
