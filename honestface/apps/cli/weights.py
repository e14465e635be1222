"""`honestface-weights` (also `python scripts/weights.py`): list, check and download the external weights honestface
uses (front end of `honestface.weights`).

Examples:
    honestface-weights list                         # every weight: present/missing, config key, source
    honestface-weights list --format markdown       # the same as a Markdown table (for docs)
    honestface-weights check                        # verify sizes/sha256 of every present weight
    honestface-weights check sd21_base awing_fan    # these must be present and intact
    honestface-weights fetch retinaface_resnet50    # download into $HONESTFACE_HOME
    honestface-weights fetch sd21_base --url https://huggingface.co/<mirror>/resolve/main
    honestface-weights path sd21_base               # print the resolved path (for shell use)
    honestface-weights fetch --model osdface        # every part of a released model (osdface, vspbfr):
                                                    # downloads what can be, prints the steps for the rest
    honestface-weights convert osdface --output models/osdface-bf16 --dtype bf16
                                                    # write it once as a library model folder

Weights live in $HONESTFACE_HOME (default ~/.cache/honestface); --home overrides it for one command.
Exit status: 0 on success, 1 when a requested weight is missing/corrupt or a download fails, 2 for bad usage
(e.g. an unknown weight name: one `error:` line). Every command takes -q (no progress, only warnings and errors)
and -v (debug lines; `check -v` also lists missing weights).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from honestface import weights as hw
from honestface.apps.cli.common import fail, invocation, start_logging
from honestface.log import add_logging_arguments
from honestface.weights_download import fetch_weight


def cmd_list(args: argparse.Namespace) -> int:
    rows = []
    for entry in hw.list_entries():
        rows.append({
            "name": entry.name, "status": hw.weight_status(entry, home=args.home), "kind": entry.kind,
            "config_key": entry.config_key, "path": str(hw.weights_home(args.home) / entry.relpath),
            "sha256": entry.sha256, "urls": list(entry.urls),
            "hub": None if entry.hub is None else {"repo_id": entry.hub.repo_id, "revision": entry.hub.revision,
                                                   "subfolder": entry.hub.subfolder},
            "unpinned": entry.pinning_gaps(), "hint": entry.hint, "description": entry.description,
            "licence": entry.licence, "notes": entry.notes,
        })
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    elif args.format == "markdown":
        print("| name | kind | config key | what | where to get it | licence |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            where = r["hint"] + (f" (`{hw.FETCH_COMMAND} {r['name']}`)" if r["urls"] else "")
            print(f"| `{r['name']}` | {r['kind']} | `{r['config_key']}` | {r['description']} | {where} | "
                  f"{r['licence']} |")
    else:
        print(f"weights home: {hw.weights_home(args.home)}")
        width = max(len(r["name"]) for r in rows)
        for r in rows:
            src = r["urls"][0] if r["urls"] else r["hint"]
            print(f"{r['name']:<{width}}  {r['status']:<10}  {r['config_key']:<34}  {src}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    if args.path and len(args.names) != 1:
        print("error: --path needs exactly one NAME", file=sys.stderr)
        return 2
    explicit = bool(args.names)
    names = args.names or [e.name for e in hw.list_entries()]
    bad = 0
    for name in names:
        result = hw.check_weight(name, args.path, home=args.home, hash_files=not args.no_hash)
        if result.status == "corrupt" or (explicit and result.status == "missing"):
            bad += 1
        if result.status == "missing" and not explicit and not args.verbose:
            continue
        where = result.path if result.path is not None else result.detail
        detail = result.detail if result.status == "corrupt" else where
        print(f"{result.status:<8} {result.name}: {detail}")
    if not explicit:
        present = sum(hw.weight_status(n, home=args.home) == "present" for n in names)
        print(f"{present} of {len(names)} weights present under {hw.weights_home(args.home)}; {bad} corrupt")
    gaps = {n: hw.get_entry(n).pinning_gaps() for n in names}
    gaps = {n: g for n, g in gaps.items() if g}
    if gaps:  # downloads that cannot be reproduced bit for bit: a Hub branch, or no published sha256
        print(f"{len(gaps)} downloadable weights are not pinned (a fetch of them is not checked against a fixed "
              "file; the size/sha256 of what you have is in `check`'s output and in every report that uses it):")
        for n, g in gaps.items():
            print(f"unpinned {n}: {'; '.join(g)}")
    return 1 if bad else 0


def fetch_released(name: str, args: argparse.Namespace) -> int:
    """Every part of released model `name`: present ones reported, downloadable ones fetched, the others listed
    with where to get them and where to put them. Exit 0 only when all parts are present afterwards."""
    from honestface.released_table import RELEASED_MODELS

    if name not in RELEASED_MODELS:
        print(f"error: unknown released model {name!r}; known: {', '.join(RELEASED_MODELS)}", file=sys.stderr)
        return 2
    manual = []
    for part in RELEASED_MODELS[name].parts:
        entry = hw.get_entry(part)
        target = hw.weights_home(args.home) / entry.relpath
        if hw.weight_status(part, home=args.home) == "present" and not args.force:
            print(f"present  {part}: {target}")
        elif entry.downloadable:
            try:
                path = fetch_weight(part, force=args.force, progress=not args.quiet, timeout=args.timeout,
                                       home=args.home)
                print(f"fetched  {part}: {path}")
            except hw.WeightsError as e:
                print(f"failed   {part}: {e}", file=sys.stderr)
                manual.append(part)
        else:
            manual.append(part)
    for i, part in enumerate(manual, 1):
        entry = hw.get_entry(part)
        target = hw.weights_home(args.home) / entry.relpath
        inner = ", ".join(f.path for f in entry.files) if entry.kind == "dir" else target.name
        print(f"manual step {i}: {part} ({entry.description}): get it from {entry.hint}; put "
              f"{'the files ' + inner + ' in the folder' if entry.kind == 'dir' else 'it at'} {target} "
              f"(or set config key {entry.config_key} to its path)")
    if manual:
        print(f"{len(manual)} part(s) of '{name}' still missing; then check with: {invocation(args.prog)} check "
              + " ".join(RELEASED_MODELS[name].parts))
    return 1 if manual else 0


def cmd_fetch(args: argparse.Namespace) -> int:
    if bool(args.model) == bool(args.names):
        print("error: give NAMEs or --model NAME (not both)", file=sys.stderr)
        return 2
    if args.model:
        if args.url or args.dest:
            print("error: --url/--dest work with one NAME, not with --model", file=sys.stderr)
            return 2
        return fetch_released(args.model, args)
    if (args.url or args.dest) and len(args.names) != 1:
        print("error: --url/--dest need exactly one NAME", file=sys.stderr)
        return 2
    failed = 0
    for name in args.names:
        try:
            path = fetch_weight(name, args.dest, args.url, force=args.force, progress=not args.quiet,
                                   timeout=args.timeout, home=args.home)
        except hw.WeightsError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        print(f"{name}: {path}")
    return 1 if failed else 0


def cmd_convert(args: argparse.Namespace) -> int:
    out = Path(args.output).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        print(f"error: {out} exists and is not an empty folder (pass --overwrite to replace it)", file=sys.stderr)
        return 1
    import torch

    from honestface.models.released import convert_released

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    try:
        out = convert_released(args.model, args.output, dtype=dtype, overwrite=args.overwrite, home=args.home)
    except (hw.WeightsError, OSError, ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.model}: {out} (load it with --model {out}, or from_pretrained)")
    return 0


def cmd_path(args: argparse.Namespace) -> int:
    try:
        print(hw.resolve_weight(args.name, args.path, home=args.home))
    except hw.WeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def build_parser(prog: str = "honestface-weights") -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", metavar="DIR", default=None,
                        help="weights folder for this command (default: $HONESTFACE_HOME or ~/.cache/honestface)")
    add_logging_arguments(common, in_subcommand=True)
    parser = argparse.ArgumentParser(
        prog=prog, description="List, check and download the external weights honestface uses (front end of "
        "`honestface.weights`).", epilog=f"Run `{invocation(prog)} COMMAND --help` for the options of a command.")
    add_logging_arguments(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", parents=[common], help="print the table: name, status, config key, source")
    p.add_argument("--format", choices=["table", "markdown", "json"], default="table", help="output format")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("check", parents=[common], help="verify present weights (sizes, sha256 where published)",
                       description="Verify weights. Without NAMEs: every present weight, exit 1 if one is corrupt. "
                                   "With NAMEs: each must be present and intact.")
    p.add_argument("names", nargs="*", metavar="NAME", help="registry names (default: all)")
    p.add_argument("--path", default=None, help="check this file/folder instead of the default location (one NAME)")
    p.add_argument("--no-hash", action="store_true", help="only check presence and required inner files")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("fetch", parents=[common], help="download weights (resumable, sha256-checked)",
                       description="Download into $HONESTFACE_HOME/<relative path>. An interrupted download "
                                   "leaves NAME.part and is resumed by running the same command again.")
    p.add_argument("names", nargs="*", metavar="NAME", help="registry names")
    p.add_argument("--model", metavar="NAME", default=None, help="every part of a released model (osdface, "
                   "vspbfr): fetch what can be downloaded, print the manual steps for the rest")
    p.add_argument("--url", default=None, help="download from this URL instead (folder entries: base URL)")
    p.add_argument("--dest", default=None, help="destination file/folder instead of the default location")
    p.add_argument("--force", action="store_true", help="download again even if present")
    p.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds (default 60)")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("convert", parents=[common], help="write a released model once as a library model folder",
                       description="Read the released files of MODEL through the registry and write them as a "
                                   "library model folder (loads in seconds; `--model DIR` / from_pretrained). "
                                   "Scripts given the name convert automatically into $HONESTFACE_HOME/converted.")
    p.add_argument("model", metavar="MODEL", choices=["osdface", "vspbfr"], help="released model: osdface, vspbfr")
    p.add_argument("--output", "-o", required=True, help="folder to write (must not exist or be empty)")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32", help="stored dtype (default fp32)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --output once the new one is done")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("path", parents=[common], help="print the resolved path of a weight (error if missing)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--path", default=None, help="explicit path to validate instead of the default location")
    p.set_defaults(func=cmd_path)
    return parser


def main(argv: list[str] | None = None, prog: str = "honestface-weights") -> int:
    args = build_parser(prog).parse_args(argv)
    args.prog = prog
    start_logging(args)
    try:
        return args.func(args)
    except KeyError as e:  # unknown registry name: the message lists close matches
        return fail(e)
    except BrokenPipeError:  # output piped into e.g. `head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
