#!/usr/bin/env python
"""Evaluate restored faces against ground truth and/or references (ALD, LMD, identity, IQA) and write a report.

    python scripts/evaluate.py eval.restored=out/ eval.ground_truth=hq/ eval.output=report/
"""

from __future__ import annotations

import argparse
import sys

import _bootstrap  # noqa: F401  (repo root on sys.path)

from honestface.config import ConfigError, add_config_arguments, config_from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/evaluate.py",
        description="Compute restoration metrics. Folders and the metric list are config keys under `eval.` "
        "(pass them as key=value); face backends under `face.`.",
        epilog="example: python scripts/evaluate.py eval.restored=out/ eval.ground_truth=hq/ "
        "eval.metrics=[psnr,ids,ald]",
    )
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        parser.exit(2, f"error: {e}\n")
    try:
        from honestface.metrics import run_evaluation  # lands with the metrics (issue #8)
    except ImportError:
        parser.exit(2, "error: the config is valid, but evaluation is not available in this version of "
                       "honestface yet (the metrics are tracked in issue #8)\n")
    return run_evaluation(cfg)


if __name__ == "__main__":
    sys.exit(main())
