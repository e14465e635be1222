"""Evaluation application behind `scripts/evaluate.py`: run the `eval.*` section of a config over restored
folders, or restored videos (`honestface.apps.evaluate_video`), and write the reports (`honestface.metrics` does the
evaluating and holds no config).

The output folder defaults to `<parent of the first restored folder>/evaluation` (or beside every input when that
would be inside one) and may never lie inside an input folder: its images would be paired on the next run. Next to
the reports goes `config.yaml`, the full config that produced them.

Our choices for never losing work: report files already in the output folder (`config.yaml` and
`honestface.metrics.report.REPORT_NAMES`) stop the run before any evaluating, with one line naming them, unless
`overwrite` (scripts/evaluate.py --overwrite); other files there are never touched. The reports are written into
a hidden temporary sibling folder (`.<name>.partial-*`) and moved into place only once all are written, so a
failure midway leaves the output folder as it was. With `overwrite`, report files of an earlier run that this run
does not write (e.g. `table_all.md` of a protocol run) are removed, so the folder holds one run's reports.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from honestface.log import get_logger

__all__ = ["check_output", "check_reports_absent", "default_output", "publish_reports", "resolve_output",
           "run_evaluation"]

log = get_logger(__name__)


def default_output(methods: dict[str, Path], inputs: Sequence[Path]) -> Path:
    """`<parent of the first restored folder>/evaluation`, or beside the inputs' common folder when that would
    land inside an input folder."""
    resolved = [p.resolve() for p in inputs]
    out = next(iter(methods.values())).resolve().parent / "evaluation"
    if any(out == p or p in out.parents for p in resolved):
        out = Path(os.path.commonpath([str(p) for p in resolved])).parent / "evaluation"
    return out


def check_output(output: Path, inputs: Sequence[Path]) -> None:
    """The reports never go into an input folder (they would be paired as images on the next run)."""
    out = output.resolve()
    for p in inputs:
        p = p.resolve()
        if out == p or p in out.parents:
            raise ValueError(f"the output folder {output} must not be inside the input folder {p}")


def _report_names() -> tuple[str, ...]:
    from honestface.config import CONFIG_FILENAME
    from honestface.metrics.report import REPORT_NAMES

    return (*REPORT_NAMES, CONFIG_FILENAME)


def check_reports_absent(output: Path, overwrite: bool) -> None:
    """ValueError (one line) when `output` is not a folder, or holds report files and `overwrite` is off."""
    if output.exists() and not output.is_dir():
        raise ValueError(f"the output {output} exists and is not a folder")
    found = [n for n in _report_names() if (output / n).exists() or (output / n).is_symlink()]
    if found and not overwrite:
        raise ValueError(f"the output folder {output} already holds {', '.join(found)} (pass --overwrite to replace "
                         f"them, or choose another --output)")


def publish_reports(staged: Path, output: Path, overwrite: bool) -> None:
    """Move every entry of the finished `staged` folder into `output` (renaming the folder itself when `output`
    does not exist); the report page last, so its links point to files already in place."""
    if not output.exists():
        os.rename(staged, output)
        return
    check_reports_absent(output, overwrite)  # again: something may have appeared while we evaluated
    aside = Path(tempfile.mkdtemp(prefix=".replaced-", dir=staged))
    new = sorted((p for p in staged.iterdir() if p != aside), key=lambda p: (p.name == "report.html", p.name))
    stale = [output / n for n in _report_names() if n not in {p.name for p in new}]
    for entry in [*new, *stale]:
        dest = output / entry.name
        if (dest.is_dir() and not dest.is_symlink()) or (entry.is_dir() and (dest.exists() or dest.is_symlink())):
            os.rename(dest, aside / entry.name)  # a folder cannot be replaced in one step: moved aside first
        if entry.parent == staged:
            os.replace(entry, dest)
        elif dest.exists() or dest.is_symlink():
            os.rename(dest, aside / entry.name)


def resolve_output(e: Any, methods: dict[str, Path], inputs: Sequence[Path], overwrite: bool) -> Path:
    """The report folder (`eval.output` or `default_output`), checked: not inside an input, no reports unless
    `overwrite`."""
    output = Path(e.output) if e.output else default_output(methods, inputs)
    check_output(output, inputs)
    check_reports_absent(output, overwrite)
    return output


def _evaluate_folders(cfg: Any, restored: list[str], device: str, overwrite: bool) -> tuple[Any, Path]:
    from honestface.metrics.evaluate import evaluate_folders
    from honestface.metrics.pairing import parse_methods

    e = cfg.eval
    if not e.ground_truth:
        raise ValueError("eval.restored (--restored) and eval.ground_truth (--gt) are required")
    if e.metrics is not None and "face_warp_error" in [str(m).strip().lower() for m in e.metrics]:
        raise ValueError("face_warp_error needs videos: give --restored, --gt and --lq as video files")
    methods = parse_methods(restored)
    inputs = [*methods.values(), Path(e.ground_truth)] + [Path(p) for p in (e.lq, e.references) if p]
    output = resolve_output(e, methods, inputs, overwrite)
    metrics = None if e.metrics is None else [str(m) for m in e.metrics]
    result = evaluate_folders([f"{n}={p}" for n, p in methods.items()], e.ground_truth, refs=e.references,
                              lq=e.lq, metrics=metrics, device=device, batch_size=e.batch_size,
                              fid_ref=e.fid_ref, weights=dict(cfg.weights), landmarks=e.landmarks,
                              detector=e.detector, identity=e.identity, verbose=True, protocol=e.protocol,
                              test_set=e.test_set, crop_border=e.crop_border)
    return result, output


def run_evaluation(cfg: Any, overwrite: bool = False) -> int:
    """Run the `eval.*` section of a config: evaluate, print the table, write the reports. Returns the exit code.
    `overwrite`: replace report files already in the output folder (else exit 2 before any work). Restored
    videos (`honestface.apps.evaluate_video`) are decoded into a temporary folder removed at the end."""
    from honestface.apps.evaluate_video import evaluate_videos, is_video

    e = cfg.eval
    with contextlib.ExitStack() as cleanup:
        try:
            if not e.restored:
                raise ValueError("eval.restored (--restored) and eval.ground_truth (--gt) are required")
            if e.batch_size < 1:
                raise ValueError(f"bad value for 'eval.batch_size': must be > 0, got {e.batch_size}")
            restored = [str(r) for r in e.restored] if not isinstance(e.restored, str) else [e.restored]
            device = e.device
            if device == "auto":
                import torch

                device = "cuda" if torch.cuda.is_available() else "cpu"
            if any(is_video(r) for r in restored):
                work = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="honestface-video-frames-")))
                result, output = evaluate_videos(cfg, restored, device, work, overwrite)
            else:
                result, output = _evaluate_folders(cfg, restored, device, overwrite)
        except (ValueError, FileNotFoundError, NotADirectoryError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return _write_reports(cfg, result, output, overwrite)


def _write_reports(cfg: Any, result: Any, output: Path, overwrite: bool) -> int:
    """Print the table and publish the reports (staged in a hidden sibling folder, moved into place at once)."""
    from honestface.config import save_config
    from honestface.metrics.report import markdown_table, protocol_table, write_reports

    for name, reason in result.skipped.items():
        log.warning("skipped metric %s: %s", name, reason)
    print(protocol_table(result) if result.protocol else markdown_table(result))
    output.parent.mkdir(parents=True, exist_ok=True)
    staged = output.parent / f".{output.name}.partial-{secrets.token_hex(4)}"
    staged.mkdir()  # not mkdtemp: the folder becomes the report folder, with the user's usual permissions
    try:
        paths = write_reports(result, staged, thumbnail=cfg.eval.thumbnail)
        paths["config"] = save_config(cfg, staged)  # what produced the numbers, next to them
        publish_reports(staged, output, overwrite)
    except ValueError as err:  # the output folder changed while we evaluated
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    for what, path in paths.items():
        print(f"{what}: {output / path.relative_to(staged)}")
    return 0
