"""`honestface-quickstart` (also `python scripts/quickstart.py`): train, restore and evaluate a small HonestFace on
real faces that ship inside installed packages.

    bash scripts/quickstart.sh                         # creates .venv, installs, runs this (about 10 min on 2 CPU cores)
    honestface-quickstart --steps 600 --size 64        # directly, where honestface is installed

Aligns every bundled face (skimage astronaut, matplotlib Grace Hopper, insightface's t1.jpg group and Tom Hanks),
holds two people out, trains the small-scale recipe (a tiny VAE, the VRE codebooks, then HonestFace itself, all with
the library's trainer), restores the held-out degraded faces with references and a degraded copy of the group photo,
evaluates LQ and restored faces with PSNR, SSIM, LMD, ALD and dlib identity similarity, and writes
`<output>/report.html`. Re-running continues from the last checkpoints instead of starting over.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from honestface.apps.cli.common import fail, start_logging
from honestface.apps.quickstart.run import STEPS
from honestface.log import add_logging_arguments


def summary_lines(summary: dict, timings: dict[str, float], report) -> list[str]:
    from honestface.apps.quickstart.published import compare_with_published
    from honestface.apps.quickstart.report import LABELS, format_gain

    lines = [(f"held-out people: {', '.join(summary['test_identities'])} ({summary['num_test_faces']} degraded "
              "faces); gain = mean per-face improvement with its bootstrap 95% interval"),
             f"{'metric':<40}{'LQ input':>10}{'restored':>10}  {'gain [95% CI]':<28}{'better on':<11}verdict"]
    for m, t in summary["metrics"].items():
        ci = format_gain(t)
        lines.append(f"{LABELS.get(m, m) + (' (higher better)' if t['higher_is_better'] else ' (lower better)'):<40}"
                     f"{t['lq']:>10.4g}{t['restored']:>10.4g}  {ci:<28}{t['faces_better']}/{t['faces']:<9}"
                     f"{t['verdict']}")
    times = ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
    lines += [f"time: {times}", compare_with_published(summary), f"report: {report}"]
    return lines


def main(argv: list[str] | None = None, prog: str = "honestface-quickstart") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[2])
    parser.add_argument("--output", default="outputs/quickstart", help="output folder (default: %(default)s)")
    parser.add_argument("--size", type=int, default=64, help="aligned face size in pixels (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=STEPS["honestface"],
                        help="HonestFace training steps (default: %(default)s)")
    parser.add_argument("--vae-steps", type=int, default=STEPS["vae"],
                        help="steps of the small VAE stage (default: %(default)s)")
    parser.add_argument("--vre-steps", type=int, default=STEPS["vre"],
                        help="steps of the VRE codebook stage (default: %(default)s)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: CUDA when available)")
    parser.add_argument("--train-views", type=int, default=24,
                        help="degraded views per training person (default: %(default)s)")
    parser.add_argument("--test-views", type=int, default=4,
                        help="degraded views per held-out person (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="data, degradation and training seed (default: %(default)s)")
    parser.add_argument("--seeds", default=None, metavar="0,1,2",
                        help="run once per seed into OUTPUT/seed_<s> and report the spread and verdicts across seeds")
    parser.add_argument("--publish", default=None, metavar="RUN",
                        help="(maintainers) copy RUN's summary.json / seeds.json into docs/results and rewrite the "
                             "README tables from them, then exit")
    add_logging_arguments(parser)
    args = parser.parse_args(argv)
    start_logging(args)
    for name in ("steps", "vae_steps", "vre_steps", "train_views", "test_views"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    try:
        if args.publish is not None:
            from honestface.apps.quickstart.published import publish

            for path in publish(args.publish):
                print(f"wrote {path}")
            return 0
        settings = {"size": args.size, "steps": args.steps, "vae_steps": args.vae_steps, "vre_steps": args.vre_steps,
                        "device": args.device, "train_views": args.train_views, "test_views": args.test_views}
        if args.seeds is not None:
            from honestface.apps.quickstart.seeds import markdown_seeds_table, parse_seeds, run_seeds

            agg = run_seeds(args.output, parse_seeds(args.seeds), **settings)
            print(markdown_seeds_table(agg))
            print("time per seed: " + ", ".join(f"seed {s} {t / 60:.1f} min" for s, t in agg["timings_s"].items()))
            print(f"written: {Path(args.output) / 'seeds.json'}, {Path(args.output) / 'seeds.md'}")
            return 0
        from honestface.apps.quickstart import run_quickstart

        result = run_quickstart(args.output, seed=args.seed, **settings)
    except (ValueError, FileNotFoundError) as e:
        return fail(e)
    print("\n".join(summary_lines(result.summary, result.timings, result.report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
