"""`honestface-export` (also `python scripts/export.py`): export a saved model folder for another runtime.

    honestface-export --model runs/honestface/final --format onnx --output exported/
    honestface-export --model runs/honestface/final --format onnx --output exported/ --overwrite
    honestface-export --model runs/vspbfr/final --format onnx --output exported-vspbfr/

Writes one .onnx file per inference graph (dynamic batch, each checked with the onnx checker) and
onnx_manifest.json; run the export with `honestface-infer --onnx DIR` or `honestface.export.OnnxPipeline`
(docs/export.md). Exit codes: 0 exported, 2 bad command line, model folder or output (one `error:` line, nothing
written).
"""

from __future__ import annotations

import argparse
import sys

from honestface.apps.cli.common import guarded, invocation, sibling, start_logging
from honestface.log import add_logging_arguments

FORMATS = ("onnx",)


def build_parser(prog: str = "honestface-export") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Export a saved HonestFace or VSPBFR model folder (save_pretrained / training "
        "output; the family is read from its config file) for another runtime.",
        epilog=f"example: {invocation(prog)} --model runs/honestface/final --format onnx --output exported/\n"
               f"then:    {sibling(prog, 'infer')} --onnx exported/ --input lq/ --output restored/",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, metavar="DIR", help="the saved model folder to export")
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="export format (default onnx)")
    parser.add_argument("--output", "-o", required=True, metavar="DIR", help="folder to write (new or empty)")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output once the export is done")
    add_logging_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from honestface.export import export_onnx, read_manifest

    out = export_onnx(args.model, args.output, opset=args.opset, overwrite=args.overwrite)
    manifest = read_manifest(out)
    print(f"exported {manifest['family']} ({len(manifest['graphs'])} graphs: {', '.join(manifest['graphs'])}) "
          f"to {out}")
    return 0


def main(argv: list[str] | None = None, prog: str = "honestface-export") -> int:
    args = build_parser(prog).parse_args(argv)
    start_logging(args)
    return guarded(run, args)


if __name__ == "__main__":
    sys.exit(main())
