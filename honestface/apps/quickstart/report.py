"""The quickstart's report: `report.html` (self-contained apart from its PNG figures) and `summary.json`.

Sections: what ran (data, recipe, honesty notes), training loss curves per stage (from the tensorboard event
files), one row per held-out face (LQ | references | restored | GT), the degraded and restored group photo, and the
metric table of the LQ input against the restoration (mean over the held-out faces, plus on how many faces the
restoration is better).
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from honestface.metrics.uncertainty import BETTER

__all__ = ["claims_sentence", "compare_methods", "format_gain", "format_value", "loss_curves", "markdown_table", "quickstart_summary",
           "read_scalars", "write_quickstart_report"]

LQ, OURS = "LQ input", "HonestFace (tiny)"
SKIP_TAGS = ("lr", "grad", "images_per", "memory", "time", "step")
CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
       "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}"
       "th:first-child,td:first-child{text-align:left}.win{font-weight:bold;color:#0a6}"
       "img{image-rendering:pixelated;margin:4px 0}.note{color:#555;font-size:0.9em}")
HONEST_NOTES = ("Honest notes: the references are augmented views (crop, scale, rotation, colour jitter) of one photo of "
                "each person, not other photos; the perceptual / MFA training losses use randomly initialised "
                "backbones (no pretrained weights offline); the identity embedder and the identity loss use the "
                "bundled pretrained dlib recogniser, the same network as the identity metric, so the identity gain "
                "is partly by construction (it is still measured on people never trained on); the frozen VAE and "
                "VRE are the recipe's own short earlier stages, and the metrics use the bundled dlib landmarks and "
                "128-D identity embedding. The numbers show the library working end to end, not the paper's "
                "quality.")
INTERVAL_NOTE = ("Gain: the mean per-face improvement over the LQ input (positive = better), with its bootstrap 95% "
                 "interval over the held-out faces. A metric is called better (worse) only when the interval "
                 "excludes zero; otherwise there is no measurable change. The faces are views of two people, so "
                 "the interval understates how much another pair of people could differ; "
                 "`scripts/quickstart.py --seeds 0,1,2` also shows the spread across training seeds.")
LABELS = {"psnr": "PSNR (dB)", "ssim": "SSIM (pyiqa: luma)", "lmd_dlib68": "LMD, dlib 68 points (px)", "ald": "ALD",
          "ald_e": "ALD-e", "ald_m": "ALD-m", "ids_dlib": "identity cosine to GT (dlib)",
          "ref_ids": "identity cosine to references (dlib)"}


def environment() -> dict[str, str]:
    """The software and machine a run's numbers hold on (bit-identical reruns need the same ones)."""
    import platform

    import dlib
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "dlib": dlib.__version__, "machine": platform.machine(), "threads": str(torch.get_num_threads())}


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of the tensorboard event files under `run_dir` -> [(step, value)], sorted by step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: dict[str, dict[int, float]] = {}
    for events in sorted(run_dir.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            for e in acc.Scalars(tag):
                series.setdefault(tag, {})[int(e.step)] = float(e.value)  # a resumed run overwrites its steps
    return {tag: sorted(v.items()) for tag, v in series.items()}


def loss_curves(scalars: dict[str, list[tuple[int, float]]], title: str, path: Path) -> Path | None:
    """A small-multiples PNG of the loss terms of one stage; None when nothing was logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tags = [t for t in sorted(scalars) if not any(s in t.lower() for s in SKIP_TAGS) and len(scalars[t]) > 1]
    if not tags:
        return None
    cols = min(4, len(tags))
    rows = math.ceil(len(tags) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax, tag in zip(axes.flat, tags):
        steps, values = zip(*scalars[tag])
        ax.plot(steps, values, lw=1.2)
        ax.set_title(tag, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tags):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _tile(path: Path, size: int) -> np.ndarray:
    import cv2

    from honestface.io import read_image

    im = (read_image(path) * 255).round().astype(np.uint8)
    return cv2.resize(im, (size, size), interpolation=cv2.INTER_NEAREST if im.shape[0] < size else cv2.INTER_AREA)


def face_row(lq: Path, refs: list[Path], restored: Path, gt: Path, path: Path, tile: int = 128) -> Path:
    """One PNG: LQ | references | restored | GT, each `tile` px (small faces are enlarged without smoothing)."""
    from honestface.io import write_image

    gap = np.full((tile, 6, 3), 255, np.uint8)
    parts = [_tile(lq, tile), gap, *[_tile(r, tile) for r in refs], gap, _tile(restored, tile), gap, _tile(gt, tile)]
    return write_image(path, np.concatenate(parts, axis=1), overwrite=True)


def compare_methods(evaluation: Any, metrics: list[str]) -> dict[str, dict[str, Any]]:
    """Per metric: the paired comparison of the restoration with the LQ input on the same faces
    (`honestface.metrics.uncertainty.compare_paired`: means, gain with its bootstrap 95% interval, faces better,
    verdict), with the two means named `lq` and `restored`."""
    from honestface.metrics.uncertainty import compare_paired

    hib = evaluation.higher_is_better()
    lq_rows = {r["image"]: r for r in evaluation.rows[LQ]}
    table = {}
    for m in metrics:
        if m not in evaluation.columns:
            continue
        pairs = [(lq_rows[r["image"]][m], r[m]) for r in evaluation.rows[OURS] if r["image"] in lq_rows]
        if all(math.isnan(a) or math.isnan(b) for a, b in pairs):
            continue
        c = compare_paired([a for a, _ in pairs], [b for _, b in pairs], bool(hib[m])).to_dict()
        table[m] = {"lq": c.pop("input_mean"), "restored": c.pop("restored_mean"), **c}
    return table


def format_value(x: float) -> str:
    """4 significant digits, as the README and the report print metric values."""
    return f"{x:.4g}"


def format_gain(t: dict[str, Any]) -> str:
    """"+0.5 [+0.2, +0.8]": a comparison's gain with its 95% interval."""
    return f"{t['gain']:+.3g} [{t['ci_low']:+.3g}, {t['ci_high']:+.3g}]"


METHOD_CLAIMS = ("lmd_dlib68", "ald", "ids_dlib")  # HonestFace's own claims: landmarks and identity kept


def claims_sentence(metrics: dict[str, dict[str, Any]], where: str = "on this run") -> str:
    """One plain sentence from the verdicts of a summary's or a multi-seed aggregate's metrics: which metrics are
    better / worse than the LQ input (interval excluding zero), and whether the method's own claims hold."""
    from honestface.metrics.uncertainty import BETTER, WORSE

    def names(verdict: str) -> list[str]:
        return [LABELS.get(m, m).split(",")[0] for m, t in metrics.items() if t["verdict"] == verdict]

    better, worse = names(BETTER), names(WORSE)
    parts = [f"Better than the LQ input {where}: {', '.join(better) or 'none'}."]
    if worse:
        parts.append(f"Worse: {', '.join(worse)}.")
    claims = [m for m in METHOD_CLAIMS if m in metrics]
    failed = [LABELS.get(m, m).split(",")[0] for m in claims if metrics[m]["verdict"] != BETTER]
    if claims and not failed:
        parts.append("The method's own claims (landmarks and identity better than the input) hold.")
    elif claims:
        parts.append(f"The method's own claims do not hold {where}: {', '.join(failed)} "
                     f"{'is' if len(failed) == 1 else 'are'} not better than the input.")
    return " ".join(parts)


def markdown_table(summary: dict[str, Any]) -> str:
    """The held-out metric table of one quickstart `summary.json` as Markdown (the README's table is this text)."""
    lines = ["| metric (held-out faces) | LQ input | restored | gain (95% CI) | better on | verdict |",
             "|---|---|---|---|---|---|"]
    for m, t in summary["metrics"].items():
        arrow = "↑" if t["higher_is_better"] else "↓"
        lines.append(f"| {LABELS.get(m, m)} {arrow} | {format_value(t['lq'])} | {format_value(t['restored'])} | "
                     f"{format_gain(t)} | "
                     f"{t['faces_better']} / {t['faces']} | {t['verdict']} |")
    return "\n".join([*lines, "", claims_sentence(summary["metrics"])])


def _img(src: Path, root: Path, alt: str, width: int | None = None) -> str:
    w = f' width="{width}"' if width else ""
    return f'<img src="{html.escape(src.relative_to(root).as_posix())}" alt="{html.escape(alt)}"{w}>'


def quickstart_summary(result: Any, num_test_faces: int) -> dict[str, Any]:
    """The content of `summary.json`: settings, software, people and the per-metric comparisons. Deterministic for
    the same command, machine and software (no times, no paths)."""
    split = result.split
    return {"settings": result.settings, "environment": environment(), "train_identities": split.train_identities,
            "test_identities": split.test_identities, "num_test_faces": num_test_faces,
            "metrics": compare_methods(result.evaluation, list(LABELS)), "group_photo_faces": result.photo["faces"],
            "skipped_metrics": result.evaluation.skipped}


def write_quickstart_report(result: Any, restorations: list[dict[str, Any]]) -> Path:
    """Write figures, `summary.json` (`result.summary`), `run.json` and `report.html` under `result.output`;
    returns the report's path."""
    from honestface.io import atomic_write_text
    from honestface.metrics.report import write_reports

    out, split, s = result.output, result.split, result.settings
    fig = out / "figures"
    curves = {}
    for stage, st in result.stages.items():
        made = loss_curves(read_scalars(st.output_dir), f"stage {stage}: {st.steps} steps", fig / f"loss_{stage}.png")
        if made is not None:
            curves[stage] = made
    rows = []
    for r in restorations:
        rel = Path(r["face"])
        refs = [split.test_hq / rel.parent / n for n in r["references"]]
        rows.append((rel, face_row(split.test_lq / rel, refs, result.restored / rel, split.test_hq / rel,
                                   fig / "faces" / f"{rel.parent.name}_{rel.stem}.png"), len(refs)))
    eval_files = write_reports(result.evaluation, out / "evaluation")
    table = result.summary["metrics"]
    atomic_write_text(out / "summary.json", json.dumps(result.summary, indent=1) + "\n")  # no times, no paths
    run = {"timings_s": result.timings,
           "stages": {k: {"steps": v.steps, "seconds": v.seconds, "skipped": v.skipped,
                          "final": v.final.relative_to(out).as_posix() if v.final.is_relative_to(out) else str(v.final)}
                      for k, v in result.stages.items()}}
    atomic_write_text(out / "run.json", json.dumps(run, indent=1) + "\n")

    e = html.escape
    parts = [
        (f"<!doctype html><html><head><meta charset='utf-8'><title>honestface quickstart</title><style>{CSS}</style>"
         "</head><body>"),
        "<h1>honestface quickstart</h1>",
        (f"<p>A small HonestFace (the library's real classes at tiny width) trained on CPU on "
         f"{len(split.train_identities)} people from photos that ship inside installed packages, then run on "
         f"<b>{len(restorations)} degraded faces of {len(split.test_identities)} people it never saw</b> "
         f"({e(', '.join(split.test_identities))}), each with references of the same person. Faces are aligned at "
         f"{s['size']}x{s['size']}.</p>"),
        f"<p class='note'>{HONEST_NOTES}</p>",
        "<h2>Metrics on the held-out faces</h2>",
        ("<table><tr><th>metric</th><th>LQ input</th><th>restored</th><th>gain (95% CI)</th>"
         "<th>restored better on</th><th>verdict</th></tr>"),
    ]
    for m, t in table.items():
        arrow = "&uarr;" if t["higher_is_better"] else "&darr;"
        cls = " class='win'" if t["verdict"] == BETTER else ""
        parts.append(f"<tr><td>{e(LABELS[m])} {arrow}</td><td>{format_value(t['lq'])}</td><td{cls}>{format_value(t['restored'])}</td>"
                     f"<td>{format_gain(t)}</td>"
                     f"<td>{t['faces_better']} / {t['faces']} faces</td><td>{e(t['verdict'])}</td></tr>")
    parts.append("</table>")
    parts.append(f"<p><b>{e(claims_sentence(table))}</b></p>")
    parts.append(f"<p class='note'>{INTERVAL_NOTE}</p>")
    if result.evaluation.skipped:
        parts.append("<p class='note'>Skipped metrics: " + e("; ".join(
            f"{k}: {v}" for k, v in result.evaluation.skipped.items())) + "</p>")
    parts.append(f"<p>Per-image values: <a href='{e(eval_files['HTML report'].relative_to(out).as_posix())}'>"
                 "evaluation report</a> (sortable table, CSV and JSON next to it).</p>")
    parts.append("<h2>Held-out faces</h2><p>LQ | references | restored | ground truth</p>")
    for rel, png, k in rows:
        parts.append(f"<div><b>{e(rel.as_posix())}</b> ({k} references)<br>{_img(png, out, rel.as_posix())}</div>")
    photo = result.photo
    in_photo = sum(1 for i in split.train_identities if i.startswith("group_t1_"))  # its people in the training set
    parts += ["<h2>Whole photo</h2>",
              (f"<p>insightface's t1.jpg, degraded (downscale x0.5, noise, JPEG 35, upscale back), then restored in "
               f"photo mode: {photo['faces']} faces detected (MTCNN), aligned, restored and pasted back. "
               f"{_count(in_photo, 'of its people is a training person', 'of its people are training people')}; "
               f"this shows the photo path, not generalisation.</p>"),
              f"<p>degraded:<br>{_img(photo['lq'], out, 'degraded group photo', 900)}</p>",
              f"<p>restored:<br>{_img(photo['restored'], out, 'restored group photo', 900)}</p>",
              "<h2>Training</h2>"]
    for stage, st in result.stages.items():
        done = "reused from an earlier run" if st.skipped else f"{st.seconds:.0f} s"
        parts.append(f"<p>stage <b>{e(stage)}</b>: {st.steps} steps ({done}), export <code>{e(str(st.final))}</code>"
                     f"</p>")
        if stage in curves:
            parts.append(_img(curves[stage], out, f"loss curves of stage {stage}"))
    parts.append("<p class='note'>Tensorboard: <code>tensorboard --logdir " + e(str(out / "runs")) + "</code></p>")
    parts.append("</body></html>")
    report = out / "report.html"
    atomic_write_text(report, "\n".join(parts))
    return report


def _count(n: int, one: str, many: str) -> str:
    """'1 <one>' or '<n> <many>', a count with its verb agreeing."""
    return f"{n} {one if n == 1 else many}"
