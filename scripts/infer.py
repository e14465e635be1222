#!/usr/bin/env python
"""Restore a folder of faces (aligned 512 crops or whole photos), optionally with reference faces.

    python scripts/infer.py model.pretrained=runs/honestface/final infer.input=lq/ infer.output=restored/ infer.references=refs/

Existing files in the output folder are never overwritten unless infer.overwrite=true.
"""

from __future__ import annotations

import argparse
import sys

import _bootstrap  # noqa: F401  (repo root on sys.path)

from honestface.config import ConfigError, add_config_arguments, config_from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/infer.py",
        description="Restore faces with a trained model. Inputs, outputs, references, precision and device are "
        "config keys under `infer.` (pass them as key=value).",
        epilog="example: python scripts/infer.py model.pretrained=runs/honestface/final infer.input=lq/ "
        "infer.output=out/ infer.references=refs/",
    )
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        parser.exit(2, f"error: {e}\n")
    try:
        from honestface.pipelines import run_inference  # lands with the pipeline (issue #7)
    except ImportError:
        parser.exit(2, "error: the config is valid, but restoration is not available in this version of "
                       "honestface yet (the inference pipeline is tracked in issue #7)\n")
    return run_inference(cfg)


if __name__ == "__main__":
    sys.exit(main())
