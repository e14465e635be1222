"""The temporal part of the evaluation reports (a video evaluation, `EvaluationResult.temporal`).

`face_warp_error` (x1e3, lower is better; `honestface.metrics.temporal`) appears as one more column of the summary
table, for every method and in an extra row "input" (the `--lq` video, judged by the same flow); `summary.json`
holds it in each method's metrics and, with the guide, flow and detector, under "temporal"; `temporal.csv` lists
every (row, frame pair, face) crop. Layout and names are our choices.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

INPUT_ROW = "input"


def row_stats(row: dict[str, Any]) -> dict[str, Any]:
    """Summary statistics of one temporal row (TemporalResult.as_dict()), in the shape of a per-image metric:
    mean = value over the counted crops; crops without a value are failures with their reasons."""
    errors = np.array([p["error"] for p in row["per_pair"] if not math.isnan(p["error"])], dtype=np.float64)
    reasons: dict[str, int] = {}
    for p in row["per_pair"]:
        if math.isnan(p["error"]):
            reasons[p.get("why", "no value")] = reasons.get(p.get("why", "no value"), 0) + 1
    nan = float("nan")
    return {"mean": float(row["value"]), "median": float(np.median(errors)) if len(errors) else nan,
            "std": float(errors.std()) if len(errors) else nan, "count": int(row["count"]),
            "failures": int(sum(reasons.values())), "failure_reasons": reasons, "value": float(row["value"])}


def temporal_summary(temporal: dict[str, Any]) -> dict[str, Any]:
    """summary.json["temporal"]: the settings and each row's statistics (the per-crop values are temporal.csv)."""
    block = {k: v for k, v in temporal.items() if k != "rows"}
    block["rows"] = {label: row_stats(row) for label, row in temporal["rows"].items()}
    return block


def input_cells(summary: dict[str, Any], columns: list[str], fmt: Any) -> list[str] | None:
    """The table cells of the "input" row (its face_warp_error; – elsewhere), or None without an input row."""
    block = summary.get("temporal")
    if not block or INPUT_ROW not in block["rows"]:
        return None
    return [fmt(block["rows"][INPUT_ROW]["value"]) if c == block["metric"] else "–" for c in columns]


def temporal_note(summary: dict[str, Any]) -> str | None:
    """One line under the table saying what the temporal column is."""
    block = summary.get("temporal")
    if not block:
        return None
    guide = "ground truth" if block["guide"] == "gt" else "input"
    return (f"{block['metric']}: x{block['scale']:g}, flow and occlusion mask on the {guide} video "
            f"({block['flow']}), faces by {block['detector']} (margin {block['margin']}); "
            f"{INPUT_ROW} = the --lq video judged the same way")


def write_temporal_csv(result: Any, path: Path) -> Path:
    """temporal.csv: one line per (row, frame t, face crop): the crop, its error (x1e3) and valid fraction."""
    from honestface.io import atomic_write_text

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["row", "video", "t", "x0", "y0", "x1", "y1", result.temporal["metric"], "valid", "why"])
    for label, row in result.temporal["rows"].items():
        video = result.videos.get("lq" if label == INPUT_ROW else label, "")
        for p in row["per_pair"]:
            err = "" if math.isnan(p["error"]) else repr(p["error"])
            writer.writerow([label, video, p["t"], *p["box"], err, f"{p['valid']:.4f}", p.get("why", "")])
    return atomic_write_text(path, buf.getvalue())
