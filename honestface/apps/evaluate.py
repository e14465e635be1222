"""Evaluation application behind `scripts/evaluate.py`: run the `eval.*` section of a config over restored
folders and write the reports (`honestface.metrics` does the evaluating and holds no config).

The output folder defaults to `<parent of the first restored folder>/evaluation` (or beside every input when that
would be inside one) and may never lie inside an input folder: its images would be paired on the next run. Next to
the reports goes `config.yaml`, the full config that produced them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["check_output", "default_output", "run_evaluation"]


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


def run_evaluation(cfg: Any) -> int:
    """Run the `eval.*` section of a config: evaluate, print the table, write the reports. Returns the exit code."""
    from honestface.config import save_config
    from honestface.metrics.evaluate import evaluate_folders
    from honestface.metrics.pairing import parse_methods
    from honestface.metrics.report import markdown_table, protocol_table, write_reports

    e = cfg.eval
    try:
        if not e.restored or not e.ground_truth:
            raise ValueError("eval.restored (--restored) and eval.ground_truth (--gt) are required")
        if e.batch_size < 1:
            raise ValueError(f"bad value for 'eval.batch_size': must be > 0, got {e.batch_size}")
        restored = [str(r) for r in e.restored] if not isinstance(e.restored, str) else [e.restored]
        methods = parse_methods(restored)
        inputs = [*methods.values(), Path(e.ground_truth)] + [Path(p) for p in (e.lq, e.references) if p]
        output = Path(e.output) if e.output else default_output(methods, inputs)
        check_output(output, inputs)
        device = e.device
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        metrics = None if e.metrics is None else [str(m) for m in e.metrics]
        result = evaluate_folders([f"{n}={p}" for n, p in methods.items()], e.ground_truth, refs=e.references,
                                  lq=e.lq, metrics=metrics, device=device, batch_size=e.batch_size,
                                  fid_ref=e.fid_ref, weights=dict(cfg.weights), landmarks=e.landmarks,
                                  detector=e.detector, identity=e.identity, verbose=True, protocol=e.protocol,
                                  test_set=e.test_set, crop_border=e.crop_border)
    except (ValueError, FileNotFoundError, NotADirectoryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, reason in result.skipped.items():
        print(f"skipped metric {name}: {reason}")
    print(protocol_table(result) if result.protocol else markdown_table(result))
    paths = write_reports(result, output, thumbnail=e.thumbnail)
    paths["config"] = save_config(cfg, output)  # what produced the numbers, next to them
    for what, path in paths.items():
        print(f"{what}: {path}")
    return 0
