#!/usr/bin/env python
"""Quickstart: train, restore and evaluate a small HonestFace on real faces that ship inside installed packages.

    bash scripts/quickstart.sh                         # creates .venv, installs, runs this (about 10 min on 2 CPU cores)
    python scripts/quickstart.py --steps 600 --size 64 # directly, inside the venv

Aligns every bundled face (skimage astronaut, matplotlib Grace Hopper, insightface's t1.jpg group and Tom Hanks),
holds two people out, trains the small-scale recipe (a tiny VAE, the VRE codebooks, then HonestFace itself, all with
the library's trainer), restores the held-out degraded faces with references and a degraded copy of the group photo,
evaluates LQ and restored faces with PSNR, SSIM, LMD, ALD and dlib identity similarity, and writes
`<output>/report.html`. Re-running continues from the last checkpoints instead of starting over.
"""

from __future__ import annotations

import argparse
import sys

import _bootstrap  # noqa: F401  (repo root on sys.path)


def summary_lines(result) -> list[str]:
    from honestface.quickstart.report import LABELS, compare_methods

    lines = [(f"held-out people: {', '.join(result.split.test_identities)} "
              f"({result.summary['methods']['LQ input']['num_images']} degraded faces)"),
             f"{'metric':<42}{'LQ input':>10}{'restored':>10}  better on"]
    for m, t in compare_methods(result.evaluation, list(LABELS)).items():
        mark = "*" if t["restored_better"] else " "
        lines.append(f"{LABELS[m] + (' (higher better)' if t['higher_is_better'] else ' (lower better)'):<42}"
                     f"{t['lq']:>10.4f}{t['restored']:>10.4f}{mark} {t['faces_better']}/{t['faces']}")
    times = ", ".join(f"{k} {v:.0f} s" for k, v in result.timings.items())
    lines += [f"time: {times}", f"report: {result.report}"]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/quickstart.py", description=__doc__.split("\n\n")[2])
    parser.add_argument("--output", default="outputs/quickstart", help="output folder (default: %(default)s)")
    parser.add_argument("--size", type=int, default=64, help="aligned face size in pixels (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=400, help="HonestFace training steps (default: %(default)s)")
    parser.add_argument("--vae-steps", type=int, default=500, help="steps of the small VAE stage (default: %(default)s)")
    parser.add_argument("--vre-steps", type=int, default=240, help="steps of the VRE codebook stage (default: %(default)s)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: CUDA when available)")
    parser.add_argument("--seed", type=int, default=0, help="data, degradation and training seed (default: %(default)s)")
    args = parser.parse_args(argv)
    for name in ("steps", "vae_steps", "vre_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    from honestface.quickstart import run_quickstart

    try:
        result = run_quickstart(args.output, size=args.size, steps=args.steps, vae_steps=args.vae_steps,
                                vre_steps=args.vre_steps, device=args.device, seed=args.seed)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
