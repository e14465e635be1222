"""`honestface-evaluate` (also `python scripts/evaluate.py`): evaluate restored faces against ground truth (IQA,
Deg., LMD, ALD, identity, reference honesty, FID); write reports.

    honestface-evaluate --restored ours=out/ baseline=base/ --gt hq/ --lq lq/ --refs refs/
    honestface-evaluate --restored out/ --gt hq/ --protocol osdface --test-set celeba-test-daefr
    honestface-evaluate --config x.yaml eval.metrics=[psnr,ssim,ids_dlib,ald]
    honestface-evaluate --restored ours=out.mp4 blind=out2.mp4 --gt gt.mp4 --lq lq.mp4

Writes per_image.csv, summary.json, table.md and report.html (+ assets/) to --output (default: <parent of the
first restored folder>/evaluation). Videos (.mp4, .mkv, .mov, ... for --restored, --gt, --lq; same frame count and
size) are decoded into temporary frame folders for the per-frame metrics (default psnr, ssim, lpips, ids / idangle)
and also get `face_warp_error` (temporal consistency on face crops, x1e3, lower is better; flow on --gt, else
--lq) for every method and a row "input" for --lq; its per-crop values go to temporal.csv (docs/metrics.md). Every flag is a config key under `eval.`; flags win over --config and key=value.
Exit code 2 on bad input (e.g. folders whose images do not pair up, a missing weight): one `error:` line.
-q prints only warnings, errors and the result; -v adds debug lines. The work is `honestface.metrics.evaluate`.
"""

from __future__ import annotations

import argparse
import functools
import sys

from honestface.apps.cli.common import guarded, invocation, sibling, start_logging

FLAGS = {"restored": "restored", "gt": "ground_truth", "refs": "references", "lq": "lq", "metrics": "metrics",
         "output": "output", "device": "device", "batch_size": "batch_size", "fid_ref": "fid_ref",
         "protocol": "protocol", "test_set": "test_set", "crop_border": "crop_border"}


def build_parser(prog: str = "honestface-evaluate") -> argparse.ArgumentParser:
    from honestface.config import add_config_arguments
    from honestface.log import add_logging_arguments
    from honestface.metrics.protocols import PROTOCOLS

    infer = sibling(prog, "infer").removeprefix("python ")
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Evaluate restored faces against ground truth (PSNR, SSIM, LPIPS, DISTS, NIQE, MUSIQ, FID with "
        "pyiqa's meanings; Deg., LMD, IDD as the published scripts compute them; our ALD, identity and reference "
        "honesty; for videos also face_warp_error, a temporal consistency) and write a per-image CSV, a summary "
        "JSON, a markdown table and an HTML report. Each flag is "
        "also a config key under `eval.` (pass it as key=value or in --config).",
        epilog=f"examples: {invocation(prog)} --restored ours=out/ baseline=base/ --gt hq/ --lq lq/ "
        f"--metrics psnr,ssim,lpips,ald,ids_dlib eval.thumbnail=128 | {invocation(prog)} --restored out/ "
        f"--gt hq/ --protocol osdface --test-set celeba-test-daefr | {invocation(prog)} --restored ours=out.mp4 "
        "--gt gt.mp4 --lq lq.mp4")
    parser.add_argument("--restored", nargs="+", metavar="DIR", help="restored folder(s) or video(s); name=DIR names "
                        "a method; videos also get face_warp_error (temporal consistency)")
    parser.add_argument("--gt", metavar="DIR", help="ground-truth folder or video (eval.ground_truth)")
    parser.add_argument("--refs", metavar="DIR", help=f"references, by {infer}'s rule: a .json/.csv "
                        "mapping, refs/<image stem>/, refs/<identity folder>/ or one shared folder")
    parser.add_argument("--lq", metavar="DIR", help="degraded inputs, same relative names as the ground truth (or "
                        "the input video: the row 'input' of face_warp_error, its flow guide without --gt)")
    parser.add_argument("--metrics", metavar="LIST", type=lambda s: [m for m in s.split(",") if m.strip()],
                        help="comma-separated, e.g. psnr,ssim,lpips,deg,lmd,ald,ids_dlib (default: every available "
                        "metric); with --protocol: extra columns")
    parser.add_argument("--output", metavar="DIR", help="report folder (default: <first restored>/../evaluation)")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--batch-size", type=int, help="images per IQA batch")
    parser.add_argument("--fid-ref", metavar="DIR_OR_STATS", help="FID reference (default: the ground truth)")
    parser.add_argument("--protocol", choices=list(PROTOCOLS),
                        help="compute one paper's table: its metrics, settings and column order")
    parser.add_argument("--test-set", metavar="LABEL",
                        help="the test set's label, recorded with the numbers (e.g. celeba-test-daefr)")
    parser.add_argument("--crop-border", type=int, metavar="N", help="pixels dropped per side by psnr_y / ssim_y")
    parser.add_argument("--overwrite", action="store_true", help="replace the reports already in --output")
    add_config_arguments(parser)
    add_logging_arguments(parser)
    return parser


def main(argv: list[str] | None = None, prog: str = "honestface-evaluate") -> int:
    from omegaconf.errors import OmegaConfBaseException

    from honestface.apps.evaluate import run_evaluation
    from honestface.config import ConfigError, default_config, load_config, to_yaml

    parser = build_parser(prog)
    args = parser.parse_args(argv)
    start_logging(args)
    if args.restored:  # `--restored a b eval.x=1`: nargs="+" also took the overrides that follow it
        sections = tuple(f"{k}." for k in default_config())
        args.overrides += [r for r in args.restored if r.split("=", 1)[0].startswith(sections)]
        args.restored = [r for r in args.restored if not r.split("=", 1)[0].startswith(sections)] or None
    try:
        cfg = load_config(args.config, args.overrides)
        for flag, key in FLAGS.items():
            if getattr(args, flag) is not None:
                try:
                    cfg.eval[key] = getattr(args, flag)
                except OmegaConfBaseException as err:
                    raise ConfigError(f"bad value for 'eval.{key}': {str(err).splitlines()[0]}") from err
    except ConfigError as err:
        parser.exit(2, f"error: {err}\n")
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    return guarded(functools.partial(run_evaluation, overwrite=args.overwrite), cfg)


if __name__ == "__main__":
    sys.exit(main())
