"""`honestface-train` (also `python scripts/train.py`): train a restoration model from a YAML config.

    honestface-train --config tiny/honestface train.max_steps=200 data.train_dir=DATA/  # a shipped config, by name
    honestface-train -q --config my.yaml                   # only warnings, errors and the result
    accelerate launch -m honestface.apps.cli.train --config honestface_sd21    # several GPUs / nodes
    accelerate launch scripts/train.py --config configs/honestface_sd21.yaml   # the same from the repository

`--config` takes a YAML path or the name of a config shipped in the package (`honestface/configs/`, e.g.
`tiny/honestface`, `honestface_sd21`; see honestface.config). Exit code 2 on bad input (a bad config key or value, a
missing data folder or weight): one `error:` line on stderr, nothing trained (-v also prints the traceback).
"""

from __future__ import annotations

import sys

from honestface.apps.cli.common import config_script, invocation


def main(argv: list[str] | None = None, prog: str = "honestface-train") -> int:
    return config_script(
        argv, prog=prog,
        description="Train HonestFace or VSPBFR. Settings come from --config and key=value overrides "
        "(see docs/architecture.md for every key).",
        epilog=f"example: {invocation(prog)} --config tiny/honestface train.max_steps=200 (--config takes a YAML "
        "file or a shipped config's name)",
        runner="honestface.training:run_training", what="training", issue=6,
    )


if __name__ == "__main__":
    sys.exit(main())
