"""Evaluation reports (issue 8): per-image CSV, summary JSON, a paper-ready markdown table and an HTML report.

The HTML report is self-contained in its folder: thumbnails (LQ / each method's output / GT / references) and metric
histograms are written under `assets/` and referenced by relative paths. The per-image table sorts by any column
with a small inline script (worst first by default, failures count as worst); each output thumbnail carries the GT
landmarks (green) and the landmarks found on the output (red) used for LMD / ALD. Layout, colours and number
formats are our choices. Histograms are drawn with matplotlib's object API on an Agg canvas, so the caller's
pyplot backend is never touched.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from honestface.metrics import report_temporal as rt

LABELS = {"psnr": "PSNR", "ssim": "SSIM", "ssim_rgb": "SSIM-RGB", "psnr_y": "PSNR-Y", "ssim_y": "SSIM-Y",
          "lpips": "LPIPS", "lpips_vgg": "LPIPS-VGG", "dists": "DISTS", "niqe": "NIQE", "musiq": "MUSIQ",
          "maniqa": "MANIQA", "clipiqa": "CLIPIQA", "fid": "FID", "fid_basicsr": "FID-BasicSR", "deg": "Deg.",
          "lmd": "LMD", "idd": "IDD", "ids_refldm": "IDS-ReFLDM", "psnr_vqfr": "PSNR-VQFR", "ssim_vqfr": "SSIM-VQFR",
          "ald": "ALD", "ald_e": "ALD-e", "ald_m": "ALD-m", "ref_ids": "Ref-IDS", "lq_ref_ids": "LQ-Ref-IDS",
          "ref_gain": "Ref-gain", "face_warp_error": "FaceWarp×10³"}
MAX_REFS_SHOWN = 4
# every name `write_reports` may write into its folder (apps check them before replacing a report)
REPORT_NAMES = ("per_image.csv", "summary.json", "table.md", "table_all.md", "temporal.csv", "report.html", "assets")
NEUTRAL = {"lq_ref_ids"}  # a property of the input, not of the method: no arrow, never bold, not ranked


def summarise(result: Any) -> dict[str, Any]:
    """JSON-ready summary of an EvaluationResult: per method and metric the mean, median, std, count and failures
    (with their reasons) over images; set-level metrics (FID) as count 1; the ranking of methods per metric."""
    methods: dict[str, Any] = {}
    for m, rows in result.rows.items():
        stats = {}
        for c in result.columns:
            vals = np.array([r[c] for r in rows if not math.isnan(r[c])], dtype=np.float64)
            reasons: dict[str, int] = {}
            for r in rows:
                if c in r["failures"]:
                    reasons[r["failures"][c]] = reasons.get(r["failures"][c], 0) + 1
            nan = float("nan")
            stats[c] = {"mean": float(vals.mean()) if len(vals) else nan,
                        "median": float(np.median(vals)) if len(vals) else nan,
                        "std": float(vals.std()) if len(vals) else nan, "count": len(vals),
                        "failures": int(sum(reasons.values())), "failure_reasons": reasons}
            published = result.aggregates.get(m, {}).get(c)
            # "value": the number a paper prints (the published script's own aggregate where it has one)
            stats[c]["value"] = float(published["value"]) if published else stats[c]["mean"]
            if published:
                stats[c]["published_aggregate"] = published
        for c, v in result.dataset_metrics.get(m, {}).items():
            stats[c] = {"mean": float(v), "median": float(v), "std": 0.0, "count": 1, "failures": 0,
                        "failure_reasons": {}, "value": float(v)}
        if result.temporal:  # a video evaluation: face_warp_error of the method (honestface.metrics.temporal)
            stats[result.temporal["metric"]] = rt.row_stats(result.temporal["rows"][m])
        methods[m] = {"folder": str(result.methods[m]), "num_images": len(rows), "metrics": stats}
    hib = result.higher_is_better()
    ranking = {}
    for c in [c for c in hib if c not in NEUTRAL]:
        scored = [(methods[m]["metrics"][c]["value"], m) for m in methods if c in methods[m]["metrics"]
                  and not math.isnan(methods[m]["metrics"][c]["value"])]
        ranking[c] = [m for _, m in sorted(scored, key=lambda t: -t[0] if hib[c] else t[0])]
    out = {"ground_truth": str(result.gt) if result.gt else None, "lq": str(result.lq) if result.lq else None,
           "references": str(result.refs) if result.refs else None, "test_set": result.test_set,
           "metrics": list(hib), "higher_is_better": hib, "skipped": result.skipped, "backends": result.backends,
           "identity_backend": result.backends.get("identity"), "implementations": result.implementations,
           "fid_references": result.set_references, "crop_border": result.crop_border,
           "software": software_versions(), "warnings": result.warnings, "methods": methods, "ranking": ranking}
    if result.protocol:
        out["protocol"] = protocol_summary(result.protocol, methods)
    if result.temporal:
        out["temporal"], out["videos"] = rt.temporal_summary(result.temporal), dict(result.videos)
    return out


def software_versions() -> dict[str, str | None]:
    """Versions of the packages whose implementations the numbers come from."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for pkg in ("honestface", "pyiqa", "torch", "facexlib", "lpips", "onnxruntime", "opencv-python"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def protocol_summary(name: str, methods: dict[str, Any]) -> dict[str, Any]:
    """The protocol block of summary.json: its table, our values per column, the published rows, the score."""
    from honestface.metrics.protocols import SCORES, get_protocol

    p = get_protocol(name)
    cols = [{"label": c.label, "key": c.key, "metric": c.metric, "reference": c.reference} for c in p.columns]
    values = {m: {c.key: ms["metrics"].get(c.key, {}).get("value") for c in p.columns} for m, ms in methods.items()}
    block: dict[str, Any] = {"name": p.name, "title": p.title, "columns": cols, "test_sets": list(p.test_sets),
                             "notes": list(p.notes), "values": values,
                             "published": {m: dict(zip([c.key for c in p.columns], row))
                                           for m, row in p.published.items()},
                             "published_test_set": p.published_test_set}
    if p.score:
        score = {}
        for m, vals in values.items():
            v, why = SCORES[p.score](vals)
            score[m] = {"value": v, "missing": why}
        block["score"] = {"name": p.score, "methods": score}
    return block


def label(metric: str, higher: bool | None = None) -> str:
    base, _, ref = metric.partition("@")
    name = LABELS.get(base, base.upper()) + (f" ({ref})" if ref else "")
    if base.startswith(("ids_", "idangle_", "lmd_")) and base not in LABELS:  # ours: say which network
        kind, _, net = base.partition("_")
        name = {"ids": "IDS", "idangle": "ID-angle", "lmd": "LMD"}[kind] + f" ({net})"
    return name if higher is None or metric in NEUTRAL else name + ("↑" if higher else "↓")


def fmt(v: float) -> str:
    """Numbers as papers print them: 2 decimals from 1 up, 4 below (SSIM, LPIPS, IDS)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.2f}" if abs(v) >= 1 else f"{v:.4f}"


def _best(summary: dict[str, Any], metric: str) -> set[str]:
    """Methods whose mean is the best of `metric` (ties all count)."""
    hib = summary["higher_is_better"][metric]
    means = {m: s["metrics"][metric]["value"] for m, s in summary["methods"].items() if metric in s["metrics"]}
    means = {m: v for m, v in means.items() if not math.isnan(v)}
    if len(summary["methods"]) < 2 or not means or metric in NEUTRAL:
        return set()
    best = max(means.values()) if hib else min(means.values())
    return {m for m, v in means.items() if fmt(v) == fmt(best)}


def markdown_table(result: Any) -> str:
    """Methods x metrics (means), arrows for the direction, best in bold; failures and backends as notes."""
    s = result.summary()
    cols = s["metrics"]
    lines = ["| Method | " + " | ".join(label(c, s["higher_is_better"][c]) for c in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for m, ms in s["methods"].items():
        cells = []
        for c in cols:
            text = fmt(ms["metrics"][c]["value"])
            cells.append(f"**{text}**" if m in _best(s, c) else text)
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    extra = rt.input_cells(s, cols, fmt)
    if extra is not None:
        lines.append(f"| {rt.INPUT_ROW} | " + " | ".join(extra) + " |")
    notes = [n for n in [rt.temporal_note(s)] if n]
    for m, ms in s["methods"].items():
        for c in cols:
            st = ms["metrics"][c]
            if st["failures"]:
                why = "; ".join(f"{r} ×{n}" for r, n in st["failure_reasons"].items())
                notes.append(f"{label(c)} of {m}: {st['failures']}/{ms['num_images']} images failed ({why})")
    if s["backends"]:
        notes.append("backends: " + ", ".join(f"{k} {v}" for k, v in s["backends"].items()))
    return "\n".join(lines + ([""] + [f"- {n}" for n in notes] if notes else [])) + "\n"


def protocol_table(result: Any) -> str:
    """The protocol's table: its columns in the paper's order and headers, our methods, then the paper's own
    published rows (marked), and notes naming the test set, the implementations' sources and our choices."""
    from honestface.metrics.protocols import SCORES, get_protocol

    s = result.summary()
    p = get_protocol(result.protocol)
    block = s["protocol"]
    headers = [c.label + ("↑" if higher_is_better_key(s, c.key) else "↓") for c in p.columns]
    if p.score:
        headers.append("Score↑")
    lines = [f"{p.title} — test set: {result.test_set or 'not given'}", "",
             "| Method | " + " | ".join(headers) + " |", "|---|" + "---:|" * len(headers)]
    for m in s["methods"]:
        cells = []
        for c in p.columns:
            v = block["values"][m].get(c.key)
            text = fmt(v) if v is not None else "–"
            cells.append(f"**{text}**" if c.key in s["higher_is_better"] and m in _best(s, c.key) else text)
        if p.score:
            cells.append(fmt(block["score"]["methods"][m]["value"]))
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    for m, row in p.published.items():
        cells = ["–" if v is None else fmt(v) for v in row]
        if p.score:
            cells.append(fmt(SCORES[p.score](dict(zip([c.key for c in p.columns], row)))[0]))
        lines.append(f"| {m} (published, {p.published_test_set}) | " + " | ".join(cells) + " |")
    notes = []
    for c in p.columns:
        why = s["skipped"].get(c.key, s["skipped"].get(c.metric))
        if why is not None:
            notes.append(f"{c.label} not computed: {why}")
            continue
        ref = s.get("fid_references", {}).get(c.key)
        impl = s["implementations"].get(c.metric, {}).get("implementation", "not computed")
        notes.append(f"{c.label}: {impl}" + (f" vs {ref['path']}" if ref else ""))
    notes += list(p.notes) + [f"pyiqa {s['software'].get('pyiqa')}, torch {s['software'].get('torch')}"]
    if p.score:
        notes += [f"score of {m}: {v['missing']}" for m, v in block["score"]["methods"].items() if v["missing"]]
    notes += result.warnings
    return "\n".join(lines + [""] + [f"- {n}" for n in notes]) + "\n"


def higher_is_better_key(summary: dict[str, Any], key: str) -> bool:
    from honestface.metrics.suite import higher_is_better

    return summary["higher_is_better"].get(key, higher_is_better(key))


def write_csv(result: Any, path: Path) -> Path:
    """One row per (method, image): paths, every metric (empty where it failed) and the failure reasons."""
    from honestface.io import atomic_write_text

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["method", "image", "restored", "gt", "lq", "num_refs", *result.columns, "failures"])
    for m, rows in result.rows.items():
        for r in rows:
            vals = ["" if math.isnan(r[c]) else repr(r[c]) for c in result.columns]
            fails = "; ".join(f"{c}: {why}" for c, why in r["failures"].items())
            # decoded video frames live in a temporary folder: name the video and the frame instead
            paths = [("" if not r[key] else f"{result.videos[label]} frame {int(r['image'])}" if result.videos
                      else r[key]) for key, label in (("restored", m), ("gt", "gt"), ("lq", "lq"))]
            writer.writerow([m, r["image"], *paths, len(r["refs"]), *vals, fails])
    return atomic_write_text(path, buf.getvalue())


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def write_histograms(result: Any, folder: Path) -> dict[str, Path]:
    """One PNG per metric column: the per-image values of every method overlaid."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for c in result.columns:
        data = {m: [r[c] for r in rows if not math.isnan(r[c])] for m, rows in result.rows.items()}
        if not any(data.values()):
            continue
        fig = Figure(figsize=(4, 2.6), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        lo = min(min(v) for v in data.values() if v)
        hi = max(max(v) for v in data.values() if v)
        bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 21)
        for m, vals in data.items():
            if vals:
                ax.hist(vals, bins=bins, alpha=0.55, label=f"{m} (n={len(vals)})")
        ax.set_xlabel(label(c, result.higher_is_better()[c]))
        ax.set_ylabel("images")
        ax.legend(fontsize=7)
        fig.tight_layout()
        out[c] = folder / f"{_safe(c)}.png"
        fig.savefig(out[c])
    return out


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "x"


def _thumb(src: Path, dst: Path, size: int, points: tuple[np.ndarray | None, np.ndarray | None] | None = None
           ) -> Path:
    """Write a JPEG thumbnail (longer side `size`) of `src`; optionally draw GT (green) / restored (red) points."""
    from PIL import Image, ImageDraw

    from honestface.io import read_image, write_image

    img = Image.fromarray((np.clip(read_image(src), 0, 1) * 255).round().astype(np.uint8))
    w, h = img.size
    scale = size / max(w, h)
    img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
    if points is not None:
        draw = ImageDraw.Draw(img)
        r = max(1.0, size / 160)
        for pts, colour in zip(points, ((40, 220, 40), (235, 40, 40))):
            for x, y in (pts * scale if pts is not None else []):
                draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    return write_image(dst, np.asarray(img), quality=90, overwrite=True)


SORT_SCRIPT = """
function hfSort(th, worstFirst) {
  const body = th.closest('table').tBodies[0], col = th.cellIndex, higher = th.dataset.higher === '1';
  const text = th.dataset.text === '1';
  const key = r => {
    const v = r.cells[col].dataset.value;
    if (text) return v;
    const x = parseFloat(v);
    return isNaN(x) ? -Infinity : (higher ? x : -x);  // goodness; a failure is the worst
  };
  const cmp = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
  const rows = Array.from(body.rows);
  rows.sort((a, b) => (worstFirst ? 1 : -1) * cmp(key(a), key(b)));
  rows.forEach(r => body.appendChild(r));
  th.closest('tr').querySelectorAll('th').forEach(h => h.classList.remove('asc', 'desc'));
  th.classList.add(worstFirst ? 'asc' : 'desc');
  th.dataset.worst = worstFirst ? '1' : '0';
}
document.querySelectorAll('th.sort').forEach(th =>
  th.addEventListener('click', () => hfSort(th, th.dataset.worst !== '1')));
const hfDefault = document.querySelector('th.sort.default');
if (hfDefault) hfSort(hfDefault, true);
"""

STYLE = """
body { font-family: sans-serif; margin: 1.5em; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
td, th { border: 1px solid #ccc; padding: 3px 6px; text-align: center; vertical-align: middle; }
th.sort { cursor: pointer; background: #f0f0f0; }
th.asc::after { content: ' ▲'; } th.desc::after { content: ' ▼'; }
td.failed { color: #b00; }
img { display: block; }
.refs img { display: inline-block; margin: 1px; }
"""


def _summary_html(s: dict[str, Any]) -> str:
    cols = s["metrics"]
    head = "".join(f"<th>{html.escape(label(c, s['higher_is_better'][c]))}</th>" for c in cols)
    body = []
    for m, ms in s["methods"].items():
        cells = []
        for c in cols:
            st = ms["metrics"][c]
            text = html.escape(fmt(st["value"]))
            text = f"<b>{text}</b>" if m in _best(s, c) else text
            if st["failures"]:
                reasons = html.escape("; ".join(f"{r} ×{n}" for r, n in st["failure_reasons"].items()), quote=True)
                text += f'<br><small title="{reasons}">{st["failures"]} failed</small>'
            cells.append(f"<td>{text}</td>")
        body.append(f"<tr><th>{html.escape(m)}</th>{''.join(cells)}</tr>")
    extra = rt.input_cells(s, cols, fmt)
    if extra is not None:
        body.append(f"<tr><th>{rt.INPUT_ROW}</th>{''.join(f'<td>{html.escape(c)}</td>' for c in extra)}</tr>")
    return f"<table class='summary'><tr><th>method</th>{head}</tr>{''.join(body)}</table>"


def _has_gt(result: Any) -> bool:
    """Whether the per-image rows have a ground-truth image (a video evaluation without --gt has none)."""
    return any(r["gt"] for rows in result.rows.values() for r in rows[:1])


def write_html(result: Any, output: Path, thumbnail: int = 160, histograms: dict[str, Path] | None = None) -> Path:
    """report.html + assets/ (thumbnails); rows = images, columns = LQ, each method, GT, refs, metrics."""
    from honestface.io import atomic_write_text

    s = result.summary()
    assets = output / "assets"
    methods = list(result.rows)
    hib = result.higher_is_better()
    rel = lambda p: p.relative_to(output).as_posix()
    metric_cols = [(m, c) for m in methods for c in result.columns]
    default = next(((m, c) for m, c in metric_cols if c == "ald"), metric_cols[0] if metric_cols else None)
    head = ["<th class='sort' data-text='1'>image</th>"] + (["<th>LQ</th>"] if result.lq else [])
    head += [f"<th>{html.escape(m)}</th>" for m in methods] + (["<th>GT</th>"] if _has_gt(result) else [])
    head += ["<th>references</th>"] if result.refs else []
    for m, c in metric_cols:
        cls = "sort default" if (m, c) == default else "sort"
        title = f"{m}: {label(c, hib[c])}" if len(methods) > 1 else label(c, hib[c])
        head.append(f"<th class='{cls}' data-higher='{int(hib[c])}'>{html.escape(title)}</th>")
    body = []
    by_image = {m: {r["image"]: r for r in rows} for m, rows in result.rows.items()}
    for i, r0 in enumerate(result.rows[methods[0]]):
        key, stem = r0["image"], f"{i:05d}_{_safe(r0['image'])}"
        img = lambda p: f"<img src='{html.escape(rel(p), quote=True)}' alt=''>"
        cells = [f"<td data-value='{html.escape(key, quote=True)}'>{html.escape(key)}</td>"]
        if result.lq:
            cells.append(f"<td>{img(_thumb(r0['lq'], assets / 'lq' / f'{stem}.jpg', thumbnail))}</td>")
        for j, m in enumerate(methods):
            pts = result.landmarks.get(m, {}).get(key)
            thumb = _thumb(by_image[m][key]["restored"], assets / f"m{j}" / f"{stem}.jpg", thumbnail, pts)
            cells.append(f"<td>{img(thumb)}</td>")
        if r0["gt"]:
            cells.append(f"<td>{img(_thumb(r0['gt'], assets / 'gt' / f'{stem}.jpg', thumbnail))}</td>")
        if result.refs:
            small = max(32, thumbnail // 2)
            refs = [img(_thumb(p, assets / "refs" / f"{stem}_{k}.jpg", small))
                    for k, p in enumerate(r0["refs"][:MAX_REFS_SHOWN])]
            more = len(r0["refs"]) - MAX_REFS_SHOWN
            cells.append(f"<td class='refs'>{''.join(refs) or 'none'}{f' +{more}' if more > 0 else ''}</td>")
        for m, c in metric_cols:
            row = by_image[m][key]
            if c in row["failures"]:
                why = html.escape(row["failures"][c], quote=True)
                cells.append(f"<td class='failed' data-value='' title='{why}'>failed</td>")
            else:
                cells.append(f"<td data-value='{row[c]!r}'>{fmt(row[c])}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    info = [f"ground truth: {html.escape(str(result.gt) if result.gt else 'none')}",
            f"{len(result.rows[methods[0]])} {'frames' if result.videos else 'images'}"]
    info += [html.escape(n) for n in [rt.temporal_note(s)] if n]
    info += [f"{html.escape(k)}: {html.escape(str(v))}" for k, v in result.backends.items()]
    if result.protocol:
        info.insert(0, f"protocol: {html.escape(s['protocol']['title'])}")
    info.insert(0, f"test set: {html.escape(result.test_set or 'not given')}")
    impl = "".join(f"<li>{html.escape(label(n))}: {html.escape(d['implementation'])}"
                   + "".join(f"; {html.escape(k)} sha256 {html.escape(str(w['sha256']))}"
                             for k, w in d.get("weights", {}).items()) + "</li>"
                   for n, d in result.implementations.items())
    skipped = "".join(f"<li>{html.escape(n)}: {html.escape(why)}</li>" for n, why in result.skipped.items())
    hist = "".join(f"<img src='{html.escape(rel(p), quote=True)}' alt='{html.escape(c)}' style='display:inline'>"
                   for c, p in (histograms or {}).items())
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>honestface evaluation</title><style>{STYLE}</style></head><body>
<h1>Evaluation</h1>
<p>{' · '.join(info)}</p>
<h2>Summary (mean over images; published metrics: their script's aggregate)</h2>
{_summary_html(s)}
{f'<h3>Skipped metrics</h3><ul>{skipped}</ul>' if skipped else ''}
{f'<h3>Implementations</h3><ul>{impl}</ul>' if impl else ''}
{f'<h2>Distributions</h2><div>{hist}</div>' if hist else ''}
<h2>Per image</h2>
<p>Click a metric to sort (first click: worst first). Outputs show GT landmarks in green, detected ones in red.</p>
<table id="images"><thead><tr>{''.join(head)}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table>
<script>{SORT_SCRIPT}</script>
</body></html>
"""
    return atomic_write_text(output / "report.html", page)


def write_reports(result: Any, output: str | Path, thumbnail: int = 160) -> dict[str, Path]:
    """Write per_image.csv, summary.json, table.md, report.html (+ assets/) into `output`."""
    from honestface.io import atomic_write_text

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    paths = {"per-image CSV": write_csv(result, output / "per_image.csv")}
    summary = _json_safe(result.summary())
    paths["summary JSON"] = atomic_write_text(output / "summary.json", json.dumps(summary, indent=2) + "\n")
    if result.protocol:  # table.md in the paper's shape; every column computed in table_all.md
        paths["markdown table"] = atomic_write_text(output / "table.md", protocol_table(result))
        paths["all-metrics table"] = atomic_write_text(output / "table_all.md", markdown_table(result))
    else:
        paths["markdown table"] = atomic_write_text(output / "table.md", markdown_table(result))
    if result.temporal:
        paths["temporal CSV"] = rt.write_temporal_csv(result, output / "temporal.csv")
    hists = write_histograms(result, output / "assets" / "histograms")
    paths["HTML report"] = write_html(result, output, thumbnail, hists)
    return paths
