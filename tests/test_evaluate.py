"""scripts/evaluate.py and honestface.metrics.evaluate: pairing, metric selection, failures and the reports."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _degrade(img: np.ndarray, sigma: float, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = cv2.GaussianBlur(img.astype(np.float32), (0, 0), sigma) + rng.normal(0, noise, img.shape)
    return np.clip(x, 0, 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """gt/<identity>/0.png (aligned 128 px faces of the bundled photos), mild/ and heavy/ restorations, lq/ and
    refs/<identity>/ref.png (a shifted copy; one named like the input would be left out as its own GT). dlib finds
    the faces (9 of them) ~10x faster than the default MTCNN."""
    from honestface.data.sample_dataset import build_sample_identities

    root = tmp_path_factory.mktemp("evaluate")
    names = build_sample_identities(root / "gt", size=128, views=1, detector="dlib")
    for i, name in enumerate(names):
        gt = cv2.cvtColor(cv2.imread(str(root / "gt" / name / "0.png")), cv2.COLOR_BGR2RGB)
        out = {"mild": _degrade(gt, 0.6, 2.0, i), "heavy": _degrade(gt, 2.5, 14.0, i),
               "lq": cv2.resize(cv2.resize(gt, (32, 32), interpolation=cv2.INTER_AREA), (128, 128)),
               "refs": np.roll(gt, 2, axis=1)}
        for folder, img in out.items():
            (root / folder / name).mkdir(parents=True, exist_ok=True)
            ext = ".jpg" if folder == "heavy" else ".png"  # pairing ignores the extension
            stem = "ref" if folder == "refs" else "0"
            cv2.imwrite(str(root / folder / name / f"{stem}{ext}"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return root, names


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/evaluate.py", *args], check=False, cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})


class _Rows(HTMLParser):
    """Rows of the per-image table (#images): each a list of its <img> sources; plus the inline scripts."""

    def __init__(self):
        super().__init__()
        self.rows: list[list[str]] = []
        self.scripts: list[str] = []
        self._in_table = self._in_body = self._in_script = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("id") == "images":
            self._in_table = True
        elif tag == "tbody" and self._in_table:
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.rows.append([])
        elif tag == "img" and self._in_body:
            self.rows[-1].append(attrs["src"])
        elif tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_table = self._in_body = False
        elif tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data


def test_two_methods_write_csv_json_markdown_and_html(folders, tmp_path):
    root, names = folders
    out = tmp_path / "report"
    run = _run("--restored", f"mild={root / 'mild'}", f"heavy={root / 'heavy'}", "--gt", str(root / "gt"),
               "--lq", str(root / "lq"), "--refs", str(root / "refs"), "--metrics", "psnr,ald,ids_dlib",
               "--output", str(out), "--batch-size", "3")
    assert run.returncode == 0, run.stderr[-2000:]
    for f in ("per_image.csv", "summary.json", "table.md", "report.html", "config.yaml"):
        assert (out / f).is_file(), f

    summary = json.loads((out / "summary.json").read_text())
    assert summary["ranking"]["psnr"] == ["mild", "heavy"]
    assert summary["ranking"]["ald"] == ["mild", "heavy"]
    mild, heavy = summary["methods"]["mild"]["metrics"], summary["methods"]["heavy"]["metrics"]
    assert mild["ald"]["mean"] < heavy["ald"]["mean"] and mild["ids_dlib"]["mean"] > heavy["ids_dlib"]["mean"]
    for stats in (mild, heavy):
        for key in ("mean", "median", "std", "count", "failures"):
            assert key in stats["psnr"]
        assert stats["psnr"]["count"] == len(names) and stats["psnr"]["failures"] == 0
        assert stats["ald"]["count"] + stats["ald"]["failures"] == len(names)
        assert {"ald_e", "ald_m"} <= set(stats)  # "ald" asks for the three components
    assert summary["identity_backend"] and summary["implementations"]["psnr"]
    assert summary["higher_is_better"]["psnr"] and not summary["higher_is_better"]["ald"]

    csv_lines = (out / "per_image.csv").read_text().strip().splitlines()
    assert csv_lines[0].startswith("method,image,") and len(csv_lines) == 1 + 2 * len(names)
    table = (out / "table.md").read_text()
    assert "PSNR↑" in table and "ALD↓" in table and "| mild |" in table and "**" in table

    page = _Rows()
    page.feed((out / "report.html").read_text())
    assert len(page.rows) == len(names)
    for srcs in page.rows:  # LQ, mild, heavy, GT, one reference
        assert len(srcs) == 5
        assert all(not Path(s).is_absolute() and (out / s).is_file() for s in srcs)
    assert any("hfSort" in s and "sort(" in s for s in page.scripts)
    assert list((out / "assets" / "histograms").glob("*.png"))


def test_mismatched_folders_exit_2_and_name_the_files(folders, tmp_path):
    root, names = folders
    bad = tmp_path / "bad"
    for name in names[1:]:  # first identity missing, one extra file
        (bad / name).mkdir(parents=True)
        (bad / name / "0.png").write_bytes((root / "mild" / name / "0.png").read_bytes())
    (bad / "stranger").mkdir()
    (bad / "stranger" / "0.png").write_bytes((root / "mild" / names[0] / "0.png").read_bytes())
    run = _run("--restored", str(bad), "--gt", str(root / "gt"), "--metrics", "psnr", "--output", str(tmp_path / "o"))
    assert run.returncode == 2
    assert f"{names[0]}/0" in run.stderr and "stranger/0" in run.stderr and "missing" in run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "o").exists()


def test_unavailable_metric_is_skipped_with_reason(folders):
    from honestface.metrics.evaluate import evaluate_folders
    from honestface.metrics.iqa import available_metrics

    root, names = folders
    missing = [n for n, why in available_metrics({}).items() if why is not None]
    if not missing:
        pytest.skip("every IQA metric has its weights here")
    res = evaluate_folders([root / "mild"], root / "gt", metrics=["psnr", missing[0], "ref_ids"])
    assert res.columns == ["psnr"]
    assert missing[0] in res.skipped and res.skipped[missing[0]]
    assert "--refs" in res.skipped["ref_ids"]
    assert res.summary()["methods"]["mild"]["metrics"]["psnr"]["count"] == len(names)
    with pytest.raises(ValueError, match="unknown metric 'psnrr'"):
        evaluate_folders([root / "mild"], root / "gt", metrics=["psnrr"])
    with pytest.raises(ValueError, match="ids_dlib.*ids_refldm"):  # a renamed name says what to ask for
        evaluate_folders([root / "mild"], root / "gt", metrics=["ids"])


def test_reference_honesty_prefers_the_output_closer_to_the_references(folders, tmp_path):
    """refs/<identity>/ hold a copy of the GT: the mild output gains identity over its LQ, the heavy one does not;
    a heavy output whose face is not found is a counted failure, not a number."""
    from honestface.metrics.evaluate import evaluate_folders

    root, names = folders
    sub = {f: tmp_path / f for f in ("gt", "mild", "heavy", "lq")}
    for f, folder in sub.items():
        for name in [names[0], *names[-2:]]:  # names[0]: the astronaut, not found by dlib after heavy blur
            src = next((root / f / name).iterdir())
            (folder / name).mkdir(parents=True)
            (folder / name / src.name).write_bytes(src.read_bytes())
    res = evaluate_folders([sub["mild"], sub["heavy"]], sub["gt"], refs=root / "refs", lq=sub["lq"],
                           metrics=["ref_ids"])
    assert res.columns == ["ref_ids", "lq_ref_ids", "ref_gain"]
    assert all(len(r["refs"]) == 1 for r in res.rows["mild"])
    m = res.summary()["methods"]
    assert m["mild"]["metrics"]["ref_ids"]["count"] == 3 and m["mild"]["metrics"]["ref_gain"]["mean"] > 0
    heavy = m["heavy"]["metrics"]["ref_gain"]
    assert heavy["count"] == 2 and heavy["failures"] == 1 and "no face" in next(iter(heavy["failure_reasons"]))
    assert heavy["mean"] < m["mild"]["metrics"]["ref_gain"]["mean"]
    assert np.isnan(res.rows["heavy"][0]["ref_ids"]) and "ref_ids" in res.rows["heavy"][0]["failures"]


def test_default_metrics_list_what_is_skipped_and_why(folders, tmp_path):
    from honestface.metrics.iqa import available_metrics

    root, names = folders
    one = tmp_path / "one"
    (one / "gt").mkdir(parents=True)
    (one / "out").mkdir()
    (one / "gt" / "a.png").write_bytes((root / "gt" / names[0] / "0.png").read_bytes())
    (one / "out" / "a.png").write_bytes((root / "mild" / names[0] / "0.png").read_bytes())
    run = _run("--restored", str(one / "out"), "--gt", str(one / "gt"))
    assert run.returncode == 0, run.stderr[-2000:]
    out = one / "evaluation"  # default: beside the first restored folder
    summary = json.loads((out / "summary.json").read_text())
    for name, why in available_metrics({}).items():
        if why is None and name not in ("fid", "fid_basicsr"):
            assert name in summary["metrics"]
        elif why is not None:
            assert f"warning: skipped metric {name}: " in run.stderr and summary["skipped"][name]
    assert {"psnr", "ald", "ids_dlib", "idangle_dlib", "lmd_dlib68"} <= set(summary["metrics"])


def test_default_output_is_never_inside_an_input(tmp_path):
    from honestface.apps.evaluate import check_output, default_output

    gt, out = tmp_path / "data", tmp_path / "data" / "restored"
    out.mkdir(parents=True)
    target = default_output({"restored": out}, [out, gt])
    check_output(target, [out, gt])
    assert target == tmp_path / "evaluation"
    with pytest.raises(ValueError, match="must not be inside"):
        check_output(gt / "report", [out, gt])


def _tiny_pair(root: Path) -> tuple[Path, Path]:
    """restored/ and gt/ with two 64 px faces each (psnr only: no network, fast)."""
    from honestface.data.samples import load_sample

    for i, name in enumerate(("astronaut", "grace_hopper")):
        img = cv2.resize(load_sample(name), (64, 64), interpolation=cv2.INTER_AREA)
        for folder, x in (("gt", img), ("restored", _degrade(img, 1.0, 3.0, i))):
            (root / folder).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / folder / f"{name}.png"), np.ascontiguousarray(x[..., ::-1]))
    return root / "restored", root / "gt"


def _evaluate_in_process(restored: Path, gt: Path, out: Path, overwrite: bool = False) -> int:
    from honestface.apps.evaluate import run_evaluation
    from honestface.config import load_config

    cfg = load_config(None, [f"eval.restored={restored}", f"eval.ground_truth={gt}", f"eval.output={out}",
                             "eval.metrics=[psnr]", "eval.device=cpu"])
    return run_evaluation(cfg, overwrite=True) if overwrite else run_evaluation(cfg)


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_reports_already_in_the_output_folder_are_replaced_only_with_overwrite(tmp_path, capsys):
    restored, gt = _tiny_pair(tmp_path)
    out = tmp_path / "report"
    (out / "assets").mkdir(parents=True)
    (out / "config.yaml").write_text("my own experiment config\n")
    (out / "summary.json").write_text('{"mine": true}\n')
    (out / "table_all.md").write_text("| an earlier protocol table |\n")
    (out / "assets" / "figure.png").write_bytes(b"not ours")
    (out / "notes.txt").write_text("the user's notes\n")
    before = _contents(out)
    assert _evaluate_in_process(restored, gt, out) == 2  # refused before any evaluating
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(out) in err and "--overwrite" in err
    assert all(n in err for n in ("config.yaml", "summary.json", "table_all.md", "assets"))
    assert _contents(out) == before and not list(tmp_path.glob(".report*"))
    run = _run("--restored", str(restored), "--gt", str(gt), "--metrics", "psnr", "--device", "cpu", "--output",
               str(out), "--overwrite")
    assert run.returncode == 0, run.stderr[-2000:]
    after = _contents(out)
    assert after["notes.txt"] == before["notes.txt"]  # not a report file: never touched
    assert "table_all.md" not in after and "assets/figure.png" not in after  # an earlier run's reports: replaced
    assert "psnr" in json.loads(after["summary.json"])["metrics"] and b"psnr" in after["config.yaml"]
    assert f"HTML report: {out / 'report.html'}" in run.stdout and not list(tmp_path.glob(".report*"))


def test_a_failure_while_writing_leaves_no_half_written_report(tmp_path, monkeypatch):
    from honestface.metrics import report

    restored, gt = _tiny_pair(tmp_path)

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report, "write_html", broken)  # after the CSV, JSON, table and histograms
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError, match="disk full"):
        _evaluate_in_process(restored, gt, fresh)
    assert not fresh.exists() and not list(tmp_path.glob(".fresh*"))
    monkeypatch.undo()
    old = tmp_path / "old"
    assert _evaluate_in_process(restored, gt, old) == 0
    (tmp_path / "probe").mkdir()
    assert old.stat().st_mode & 0o777 == (tmp_path / "probe").stat().st_mode & 0o777  # as any folder the user makes
    before = _contents(old)
    monkeypatch.setattr(report, "write_html", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        _evaluate_in_process(restored, gt, old, overwrite=True)
    assert _contents(old) == before and not list(tmp_path.glob(".old*"))


def test_identity_work_is_reused_within_an_evaluation_and_numbers_do_not_change(folders, tmp_path, monkeypatch):
    """Two methods, LQ and references: each distinct image is detected and embedded once per evaluation (the LQ of
    every method, a person's references, a restored image used for IDS and for reference honesty), and the numbers
    equal those computed without reuse."""
    from honestface.metrics import identity as identity_module
    from honestface.metrics.evaluate import evaluate_folders

    root, names = folders
    calls = {"n": 0}
    real_init = identity_module.IdentityMetrics.__init__

    def counting_init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        embed_image = self.encoder.embed_image

        def counted(*a, **k):
            calls["n"] += 1
            return embed_image(*a, **k)

        self.encoder.embed_image = counted

    monkeypatch.setattr(identity_module.IdentityMetrics, "__init__", counting_init)
    names = names[-3:]  # three people are enough to count
    sub = {f: tmp_path / f for f in ("gt", "mild", "heavy", "lq", "refs")}
    for f, folder in sub.items():
        for name in names:
            src = next((root / f / name).iterdir())
            (folder / name).mkdir(parents=True)
            (folder / name / src.name).write_bytes(src.read_bytes())
    kw = {"refs": sub["refs"], "lq": sub["lq"], "metrics": ["ids_dlib", "ref_ids"], "identity": "dlib"}
    res = evaluate_folders([sub["mild"], sub["heavy"]], sub["gt"], **kw)
    reused = calls["n"]
    calls["n"] = 0
    monkeypatch.setattr(identity_module.IdentityMetrics, "reuse", lambda self: contextlib.nullcontext())
    plain = evaluate_folders([sub["mild"], sub["heavy"]], sub["gt"], **kw)
    assert reused <= 5 * len(names) < calls["n"]  # at most gt, lq, ref, mild and heavy once per person
    for m in ("mild", "heavy"):
        for a, b in zip(res.rows[m], plain.rows[m]):
            for col in ("ids_dlib", "ref_ids", "lq_ref_ids", "ref_gain"):
                assert (np.isnan(a[col]) and np.isnan(b[col])) or a[col] == b[col], (m, col)
