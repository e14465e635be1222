"""`honestface-prepare` (also `python scripts/prepare_data.py`): prepare face data: align raw photos, make a fixed
synthetic test set, split identities (front end of `honestface.data.prepare`).

Examples:
    honestface-prepare align photos/ data/aligned                    # every face, 512 px, FFHQ template
    honestface-prepare align photo.jpg out/ --rule largest --size 256
    honestface-prepare make-testset data/aligned data/testset --preset daefr --seed 0
    honestface-prepare make-testset data/hq data/testset --set jpeg=[60,90]
    honestface-prepare split-identities data/CelebRef-HQ data/splits --test-fraction 0.1

Every command is resumable: run it again and it only does what is missing. Outputs never overwrite inputs.
Every command takes -q (only warnings, errors and the result) and -v (debug lines).
Exit status: 0 on success, 2 for bad usage or when the command fails on its input (a missing path, mismatched
settings): one `error:` line on stderr.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from honestface.apps.cli.common import fail, invocation, log, start_logging
from honestface.data import prepare
from honestface.log import add_logging_arguments

DESCRIPTION = ("Prepare face data: align raw photos, make a fixed synthetic test set, split identities (front end of "
               "`honestface.data.prepare`).")


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def cmd_align(args: argparse.Namespace) -> int:
    report = prepare.align_folder(
        args.input, args.output, size=args.size, detector=args.detector,
        landmarks=None if args.landmarks == "none" else args.landmarks, rule=args.rule, min_size=args.min_size,
        threshold=args.threshold, template=args.template, keep_structure=args.keep_structure, device=args.device,
        progress=log.info,
    )
    for name in report.no_face:
        print(f"no face: {name}")
    for name, reason in report.failed.items():
        print(f"failed: {name}: {reason}")
    print(report.summary())
    return 0


def _parse_set(items: list[str]) -> dict:
    import yaml

    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {item!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def cmd_make_testset(args: argparse.Namespace) -> int:
    out = prepare.make_testset(
        args.hq, args.output, preset=args.preset, seed=args.seed, overrides=_parse_set(args.set), size=args.size,
        batch_size=args.batch_size, device=args.device, progress=log.info,
    )
    print(f"test set ready: {out} (pairs in hq/ and lq/, parameters in {prepare.TESTSET_MANIFEST})")
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    train, test = prepare.split_identity_folders(args.root, args.output_dir, test_fraction=args.test_fraction,
                                                 seed=args.seed, overwrite=args.overwrite)
    print(f"{len(train)} train and {len(test)} test identities written to {args.output_dir}/train.txt, test.txt")
    return 0


def build_parser(prog: str = "honestface-prepare") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=DESCRIPTION,
        epilog=f"Run `{invocation(prog)} COMMAND --help` for the options of a command.")
    add_logging_arguments(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "align", help="raw photos -> FFHQ-aligned face crops with landmark sidecars",
        description="Detect every face of the photos (INPUT: a folder, searched recursively, or one file), align "
                    "it to a template and write OUTPUT/<stem>_<i>.png (or <stem>.png when --rule picks one face) "
                    "with a <name>.json sidecar (landmarks and 5 points in crop pixels, box, matrix, source). "
                    "Resumable: finished photos are recorded in OUTPUT/.prepare_align.jsonl and skipped. OUTPUT "
                    "must not be INPUT, lie inside it or contain it.")
    p.add_argument("input", metavar="INPUT", help="photo folder (recursive) or a single image file")
    p.add_argument("output", metavar="OUTPUT", help="output folder (new, empty, or an earlier align output)")
    p.add_argument("--size", type=int, default=512, help="crop size in pixels (default: %(default)s)")
    p.add_argument("--detector", default="mtcnn", choices=("mtcnn", "dlib", "retinaface", "scrfd"),
                   help="face detector; mtcnn and dlib are bundled, the others need weights (default: %(default)s)")
    p.add_argument("--landmarks", default="dlib68", choices=("dlib68", "awing98", "insightface106", "none"),
                   help="dense landmarks for the sidecar; dlib68 is bundled (default: %(default)s)")
    p.add_argument("--rule", default="all", choices=("all", "largest", "center", "score"),
                   help="which faces of a photo: all, or the one largest / nearest the centre / most confident "
                        "(default: %(default)s)")
    p.add_argument("--min-size", type=float, default=32.0,
                   help="ignore faces whose box is smaller than this (pixels of the photo; default: %(default)s)")
    p.add_argument("--threshold", type=float, default=None,
                   help="detector score threshold (default: 0.9 for mtcnn, the backend's default otherwise)")
    p.add_argument("--template", default="ffhq", choices=("ffhq", "arcface"),
                   help="alignment template (default: %(default)s)")
    p.add_argument("--keep-structure", action="store_true",
                   help="mirror INPUT's sub-folders in OUTPUT (default: a flat folder)")
    p.add_argument("--device", default=None, help="torch/onnxruntime device, e.g. cuda (default: cpu)")
    add_logging_arguments(p, in_subcommand=True)
    p.set_defaults(func=cmd_align)

    p = sub.add_parser(
        "make-testset", help="HQ faces -> fixed (HQ, LQ) pairs with a degradation preset and a manifest",
        description="Write OUTPUT/hq/<rel>.png and OUTPUT/lq/<rel>.png for every image under HQ (sorted; image i "
                    "is degraded with seed sample_seed(SEED, i)) and OUTPUT/manifest.json with every sampled "
                    "degradation parameter. The same command gives byte-identical files. Resumable; refuses an "
                    "OUTPUT made with other settings.")
    p.add_argument("hq", metavar="HQ", help="folder of aligned square HQ faces (recursive)")
    p.add_argument("output", metavar="OUTPUT", help="output folder (new, empty, or an earlier run with the same "
                                                    "settings)")
    p.add_argument("--preset", default="daefr", help="degradation preset (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="base seed (default: %(default)s)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a degradation setting (YAML value, e.g. jpeg=[60,90]); repeatable")
    p.add_argument("--size", type=int, default=512, help="HQ faces are resized to SIZE x SIZE (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=8, help="images degraded together (default: %(default)s)")
    p.add_argument("--device", default=None, help="torch device, e.g. cuda (default: cpu)")
    add_logging_arguments(p, in_subcommand=True)
    p.set_defaults(func=cmd_make_testset)

    p = sub.add_parser(
        "split-identities", help="identity folders -> identity-disjoint train.txt / test.txt",
        description="Every sub-folder of ROOT holding at least one image is an identity. Writes OUTPUT_DIR/train.txt "
                    "and OUTPUT_DIR/test.txt, one identity per line; no identity is in both. Deterministic for a "
                    "given seed.")
    p.add_argument("root", metavar="ROOT", help="folder with one sub-folder per identity")
    p.add_argument("output_dir", metavar="OUTPUT_DIR", help="where train.txt and test.txt go")
    p.add_argument("--test-fraction", type=float, default=0.1, help="share of identities in test (default: "
                                                                      "%(default)s)")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace existing split files with different content")
    add_logging_arguments(p, in_subcommand=True)
    p.set_defaults(func=cmd_split)
    return parser


def main(argv: list[str] | None = None, prog: str = "honestface-prepare") -> int:
    args = build_parser(prog).parse_args(argv)
    start_logging(args)
    warnings.showwarning = _print_warning
    try:
        return args.func(args)
    except (ValueError, OSError, KeyError) as e:  # bad input: one line, no traceback
        return fail(e)


if __name__ == "__main__":
    sys.exit(main())
