#!/usr/bin/env python
"""Train a restoration model from a YAML config.

    python scripts/train.py --config configs/tiny/honestface.yaml train.max_steps=200
    accelerate launch scripts/train.py --config configs/honestface_sd21.yaml      # several GPUs / nodes
"""

from __future__ import annotations

import argparse
import sys

import _bootstrap  # noqa: F401  (repo root on sys.path)

from honestface.config import ConfigError, add_config_arguments, config_from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/train.py",
        description="Train HonestFace or VSPBFR. Settings come from --config and key=value overrides "
        "(see docs/architecture.md for every key).",
        epilog="example: python scripts/train.py --config configs/tiny/honestface.yaml train.max_steps=200",
    )
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        parser.exit(2, f"error: {e}\n")
    try:
        from honestface.training import run_training  # lands with the trainer (issue #6)
    except ImportError:
        parser.exit(2, f"error: the config is valid, but training '{cfg.model.name}' is not available in this "
                       "version of honestface yet (the trainer is tracked in issue #6)\n")
    return run_training(cfg)


if __name__ == "__main__":
    sys.exit(main())
