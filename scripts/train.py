#!/usr/bin/env python
"""Train a restoration model from a YAML config.

    python scripts/train.py --config configs/tiny/honestface.yaml train.max_steps=200
    python scripts/train.py -q --config configs/tiny/honestface.yaml       # only warnings, errors and the result
    accelerate launch scripts/train.py --config configs/honestface_sd21.yaml      # several GPUs / nodes

Exit code 2 on bad input (a bad config key or value, a missing data folder or weight): one `error:` line on
stderr, nothing trained (-v also prints the traceback).
"""

from __future__ import annotations

import sys

from _bootstrap import config_script


def main(argv: list[str] | None = None) -> int:
    return config_script(
        argv, prog="scripts/train.py",
        description="Train HonestFace or VSPBFR. Settings come from --config and key=value overrides "
        "(see docs/architecture.md for every key).",
        epilog="example: python scripts/train.py --config configs/tiny/honestface.yaml train.max_steps=200",
        runner="honestface.training:run_training", what="training", issue=6,
    )


if __name__ == "__main__":
    sys.exit(main())
