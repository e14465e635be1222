#!/usr/bin/env python
"""Train a restoration model from a YAML config.

    python scripts/train.py --config configs/tiny/honestface.yaml train.max_steps=200
    accelerate launch scripts/train.py --config configs/honestface_sd21.yaml      # several GPUs / nodes
"""

import sys

from _bootstrap import config_script

if __name__ == "__main__":
    sys.exit(config_script(
        sys.argv[1:], prog="scripts/train.py",
        description="Train HonestFace or VSPBFR. Settings come from --config and key=value overrides "
        "(see docs/architecture.md for every key).",
        epilog="example: python scripts/train.py --config configs/tiny/honestface.yaml train.max_steps=200",
        runner="honestface.training:run_training", what="training", issue=6,
    ))
