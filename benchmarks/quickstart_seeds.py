"""The quickstart over several training seeds: which of its claims hold, with their intervals, and what it costs.

    python benchmarks/quickstart_seeds.py                                   # seeds 0,1,2 at the default settings
    python benchmarks/quickstart_seeds.py --seeds 0,1 --steps 2 --vae-steps 2 --vre-steps 3 --train-views 3 --test-views 1   # smoke
    python benchmarks/quickstart_seeds.py --output outputs/quickstart_seeds  # keep (and resume) the runs

Runs `honestface.apps.quickstart.seeds.run_seeds` (one full quickstart per seed: data, recipe, restoration,
evaluation) and prints one JSON object: per metric the LQ / restored / gain mean and standard deviation across
seeds, each seed's gain with its bootstrap 95% interval and faces better, and the verdict (better / worse than the
input only when every seed's interval excludes zero that way); minutes per seed and in total; the settings and
software. Without `--output` the runs go to a temporary folder that is removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from honestface.apps.quickstart.run import STEPS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/quickstart_seeds.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--output", default=None, help="keep the runs here (default: a temporary folder)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--steps", type=int, default=STEPS["honestface"])
    p.add_argument("--vae-steps", type=int, default=STEPS["vae"])
    p.add_argument("--vre-steps", type=int, default=STEPS["vre"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--train-views", type=int, default=24, help="degraded views per training person")
    p.add_argument("--test-views", type=int, default=4, help="degraded views per held-out person")
    args = p.parse_args(argv)

    from honestface.apps.quickstart.seeds import parse_seeds, run_seeds

    seeds = parse_seeds(args.seeds)
    settings = {"size": args.size, "steps": args.steps, "vae_steps": args.vae_steps, "vre_steps": args.vre_steps,
                "device": args.device, "train_views": args.train_views, "test_views": args.test_views}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="quickstart_seeds_") as tmp:
        out = Path(args.output) if args.output else Path(tmp) / "runs"
        agg = run_seeds(out, seeds, progress=lambda line: print(line, file=sys.stderr), **settings)
    total = time.perf_counter() - t0
    metrics = {m: {k: v for k, v in row.items() if k != "per_seed"} | {
        "per_seed": [{k: r[k] for k in ("seed", "gain", "ci_low", "ci_high", "faces_better", "faces", "verdict")}
                     for r in row["per_seed"]]} for m, row in agg["metrics"].items()}
    print(json.dumps({"seeds": agg["seeds"], "settings": agg["settings"], "environment": agg["environment"],
                      "num_test_faces": agg["num_test_faces"], "metrics": metrics,
                      "minutes_per_seed": {str(s): t / 60 for s, t in agg["timings_s"].items()},
                      "total_minutes": total / 60}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
