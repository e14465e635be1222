"""Small-scale recipe levers on the quickstart's validation split: which change makes the method's claims hold.

    python benchmarks/quickstart_levers.py                                  # every lever, default settings
    python benchmarks/quickstart_levers.py --levers base --steps 2 --vae-steps 2 --vre-steps 3 --train-views 3 --validation-views 1
    python benchmarks/quickstart_levers.py --output outputs/levers          # keep (and resume) the runs

Runs `honestface.apps.quickstart.levers.run_levers`: the base recipe and each lever trained without the quickstart's
two test people and scored on two validation people (`VALIDATION_IDENTITIES`), so the held-out test faces never
pick a setting. Prints one JSON object: per lever its changes, minutes, and per metric the LQ / restored values,
the paired gain with its bootstrap 95% interval, faces better and the verdict. Without `--output` the runs go to
a temporary folder that is removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from honestface.apps.quickstart.levers import LEVERS, VALIDATION_VIEWS
from honestface.apps.quickstart.run import STEPS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/quickstart_levers.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--levers", default=",".join(LEVERS), help=f"comma-separated, from: {', '.join(LEVERS)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=None, help="keep the runs here (default: a temporary folder)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--steps", type=int, default=STEPS["honestface"])
    p.add_argument("--vae-steps", type=int, default=STEPS["vae"])
    p.add_argument("--vre-steps", type=int, default=STEPS["vre"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--train-views", type=int, default=24, help="degraded views per training person")
    p.add_argument("--validation-views", type=int, default=VALIDATION_VIEWS,
                   help="degraded views per validation person (default: %(default)s)")
    args = p.parse_args(argv)

    from honestface.apps.quickstart.levers import run_levers

    names = [n.strip() for n in args.levers.split(",") if n.strip()]
    unknown = [n for n in names if n not in LEVERS]
    if unknown:
        p.error(f"unknown lever {unknown[0]!r}; allowed: {', '.join(LEVERS)}")
    settings = {"size": args.size, "steps": args.steps, "vae_steps": args.vae_steps, "vre_steps": args.vre_steps,
                "device": args.device, "train_views": args.train_views, "test_views": args.validation_views}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="quickstart_levers_") as tmp:
        out = Path(args.output) if args.output else Path(tmp) / "runs"
        table = run_levers(out, names, seed=args.seed, progress=lambda line: print(line, file=sys.stderr),
                           **settings)
    print(json.dumps({**table, "total_minutes": (time.perf_counter() - t0) / 60}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
