"""The quickstart (script and notebook) end to end at a few steps: every artefact exists and the report holds together."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]
# few steps and views: every artefact and code path, in about a third of the default views' time
FAST = ("--steps", "2", "--vae-steps", "2", "--vre-steps", "3", "--size", "64", "--device", "cpu", "--train-views", "6",
        "--test-views", "2")


def run_quickstart(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/quickstart.py", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600, check=False)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key in ("src", "href") and value:
                self.links.append(value)


def local_links(html_file: Path) -> list[str]:
    parser = _Links()
    parser.feed(html_file.read_text())
    return [link for link in parser.links if not re.match(r"^(https?:|data:|#|mailto:)", link)]


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("qs") / "out"
    run = run_quickstart("--output", str(out), *FAST)
    assert run.returncode == 0, run.stderr[-3000:]
    return out, run


def test_quickstart_writes_every_artefact(quickstart_run):
    out, run = quickstart_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_identities"] == ["group_t1_4", "tom_hanks_aligned_0"]
    assert not set(summary["test_identities"]) & set(summary["train_identities"])  # held-out people
    assert len(summary["train_identities"]) == 7
    assert summary["num_test_faces"] == 4  # 2 people x 2 views (--test-views 2)
    assert summary["settings"]["train_views"] == 6
    for stage in ("vae", "vre", "honestface"):
        assert (out / "runs" / stage / "final" / "training.json").is_file()
        assert list((out / "runs" / stage / "logs").rglob("events.out.tfevents.*")), stage  # tensorboard
    assert (out / "runs" / "honestface" / "checkpoints").is_dir()
    restored = sorted(p.relative_to(out / "restored").as_posix() for p in (out / "restored").rglob("*.png"))
    lq = sorted(p.relative_to(out / "data/test/lq").as_posix() for p in (out / "data/test/lq").rglob("*.png"))
    assert restored == lq and len(restored) == 4
    assert summary["group_photo_faces"] == 6  # t1.jpg: six people detected and restored in photo mode
    assert (out / "photo" / "group_t1_restored.png").is_file()
    with (out / "evaluation" / "per_image.csv").open() as f:
        per_image = list(csv.DictReader(f))
    for metric in ("psnr", "ssim", "lmd_dlib68", "ald", "ald_e", "ald_m", "ids_dlib", "ref_ids"):
        row = summary["metrics"][metric]
        assert row["faces"] == 4, metric  # computed for every held-out face, LQ and restored
        values = {m: {r["image"]: float(r[metric]) for r in per_image if r["method"] == m}
                  for m in ("LQ input", "HonestFace (tiny)")}
        sign = 1 if row["higher_is_better"] else -1
        better = sum(sign * (values["HonestFace (tiny)"][k] - v) > 0 for k, v in values["LQ input"].items())
        assert row["faces_better"] == better, metric  # the per-image table and the summary agree
        assert row["ci_low"] <= row["gain"] <= row["ci_high"], metric  # the bootstrap 95% interval of the gain
        assert row["verdict"] == ("better" if row["ci_low"] > 0 else "worse" if row["ci_high"] < 0
                                  else "no measurable change"), metric
    assert "report: " in run.stdout and "PSNR" in run.stdout and "95% CI" in run.stdout  # the one-screen summary
    run_info = json.loads((out / "run.json").read_text())  # times live outside summary.json
    assert set(run_info["timings_s"]) == {"data", "training", "restoration", "evaluation"}
    assert run_info["stages"]["honestface"]["final"] == "runs/honestface/final"
    assert str(out) not in (out / "summary.json").read_text()  # no local path: comparable across folders
    report = (out / "report.html").read_text()
    assert "Better than the LQ input on this run:" in report  # the verdicts in words
    in_photo = sum(i.startswith("group_t1_") for i in summary["train_identities"])  # t1's people it trained on
    assert in_photo == 5  # six people, group_t1_4 held out
    assert "5 of its people are training people" in report  # (the sentence once said four)


def test_eval_resolution_benchmark_rescores_a_finished_run(quickstart_run):
    """benchmarks/quickstart_eval_resolution.py on this module's run (its smoke test: tests/test_benchmarks_smoke.py
    says why it runs here): at the run's own size it gives the run's own numbers."""
    out, _ = quickstart_run
    run = subprocess.run([sys.executable, "benchmarks/quickstart_eval_resolution.py", str(out), "--sizes", "64,96"], check=False,
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout[run.stdout.index("{"):])
    summary = json.loads((out / "summary.json").read_text())["metrics"]
    native = result["sizes"]["64"]
    for metric in ("psnr", "lmd_dlib68", "ids_dlib"):
        assert native[metric]["restored"] == pytest.approx(summary[metric]["restored"], rel=1e-6), metric
    assert set(result["sizes"]) == {"64", "96"}


def test_claims_sentence_states_what_holds():
    from honestface.apps.quickstart.report import claims_sentence

    def t(verdict):
        return {"verdict": verdict}

    held = {"psnr": t("better"), "lmd_dlib68": t("better"), "ald": t("better"), "ids_dlib": t("better")}
    assert claims_sentence(held).endswith("The method's own claims (landmarks and identity better than the input) hold.")
    mixed = {**held, "ssim": t("worse"), "ald": t("no measurable change")}
    text = claims_sentence(mixed, where="in every seed")
    assert text.startswith("Better than the LQ input in every seed: PSNR (dB), LMD, identity cosine to GT (dlib).")
    assert "Worse: SSIM (pyiqa: luma)." in text
    assert text.endswith("do not hold in every seed: ALD is not better than the input.")


def test_same_command_and_seed_give_a_bit_identical_summary_and_seeds_are_aggregated(quickstart_run, tmp_path):
    out, _ = quickstart_run
    multi = tmp_path / "seeds"
    run = run_quickstart("--output", str(multi), "--seeds", "0,1", *FAST)
    assert run.returncode == 0, run.stderr[-3000:]
    # Seed 0 in another folder, another process: the same bytes as the fixture's run.
    assert (multi / "seed_0" / "summary.json").read_bytes() == (out / "summary.json").read_bytes()
    agg = json.loads((multi / "seeds.json").read_text())
    assert agg["seeds"] == [0, 1] and "seed" not in agg["settings"]
    s0, s1 = (json.loads((multi / f"seed_{s}" / "summary.json").read_text())["metrics"] for s in (0, 1))
    psnr = agg["metrics"]["psnr"]
    assert psnr["restored_mean"] == pytest.approx((s0["psnr"]["restored"] + s1["psnr"]["restored"]) / 2)
    assert [r["gain"] for r in psnr["per_seed"]] == [s0["psnr"]["gain"], s1["psnr"]["gain"]]
    for m, row in agg["metrics"].items():
        verdicts = {r["verdict"] for r in row["per_seed"]}
        assert row["verdict"] == (verdicts.pop() if len(verdicts) == 1 else "no measurable change"), m
    assert (multi / "seeds.md").read_text().startswith("| metric (held-out faces)")
    assert "time per seed" in run.stdout
    # benchmarks/quickstart_seeds.py on the same folder (its smoke test, see tests/test_benchmarks_smoke.py): it
    # resumes both seeds without retraining and prints the same aggregate as JSON
    bench = subprocess.run([sys.executable, "benchmarks/quickstart_seeds.py", "--seeds", "0,1", "--output", str(multi),
                            *FAST], cwd=REPO, capture_output=True,
                           text=True, timeout=600, check=False)
    assert bench.returncode == 0, bench.stderr[-3000:]
    printed = json.loads(bench.stdout[bench.stdout.index("{"):])
    assert printed["seeds"] == [0, 1] and printed["metrics"]["psnr"]["restored_mean"] == psnr["restored_mean"]
    assert bench.stderr.count("already trained") == 6  # three stages per seed
    bad = run_quickstart("--output", str(tmp_path / "bad"), "--seeds", "0,0", *FAST)
    assert bad.returncode == 2 and "distinct" in bad.stderr and not (tmp_path / "bad").exists()


def test_publish_rewrites_only_the_marked_tables(quickstart_run, tmp_path):
    from honestface.apps.quickstart.published import publish, readme_block, readme_tables_agree

    out, _ = quickstart_run
    readme = tmp_path / "README.md"
    readme.write_text("# title\n<!-- quickstart:summary begin (generated) -->\nSTALE\n<!-- quickstart:summary end -->\n"
                      "text\n<!-- quickstart:seeds begin -->\nkept\n<!-- quickstart:seeds end -->\n")
    results = tmp_path / "results"
    publish(out, readme, results)
    text = readme.read_text()
    assert readme_block("summary", results) in text and "STALE" not in text and "kept" in text and "# title" in text
    assert json.loads((results / "quickstart_summary.json").read_text()) == json.loads(
        (out / "summary.json").read_text())
    assert readme_tables_agree(readme, results) == [f"quickstart_seeds.json is missing from {results}"]
    bare = tmp_path / "bare.md"
    bare.write_text("# no tables\n")
    with pytest.raises(ValueError, match="no '<!-- quickstart:summary begin -->'"):
        publish(out, bare, tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists() and bare.read_text() == "# no tables\n"


def test_quickstart_report_links_only_existing_files(quickstart_run):
    out, _ = quickstart_run
    report = out / "report.html"
    links = local_links(report)
    assert any(link.startswith("figures/faces/") for link in links)
    assert "photo/group_t1_restored.png" in links
    missing = [link for link in links if not (report.parent / link).is_file()]
    assert not missing
    evaluation = out / "evaluation" / "report.html"
    assert not [link for link in local_links(evaluation) if not (evaluation.parent / link).is_file()]


def test_quickstart_rerun_resumes_instead_of_retraining(quickstart_run, tmp_path):
    out, _ = quickstart_run
    copy = tmp_path / "again"
    shutil.copytree(out, copy)
    # The same command resumes all three stages without training (checked on two seeds by
    # test_same_command_and_seed...'s quickstart_seeds.py run); more steps continue the HonestFace stage from its
    # last checkpoint while the two finished stages are kept.
    more = [a if a != "2" or i != 1 else "3" for i, a in enumerate(FAST)]
    run = run_quickstart("--output", str(copy), *more)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("already trained") == 2
    assert json.loads((copy / "runs/honestface/final/training.json").read_text())["step"] == 3


def test_quickstart_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    run = run_quickstart("--output", str(tmp_path), *FAST)
    assert run.returncode != 0 and "not a quickstart output folder" in run.stderr
    assert (tmp_path / "mine.txt").read_text() == "keep me" and len(list(tmp_path.iterdir())) == 1


def _chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


def test_quickstart_report_renders_in_headless_chromium(quickstart_run, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium); the report's links are still "
                    "checked by test_quickstart_report_links_only_existing_files")
    import numpy as np

    from honestface.io import read_image

    out, _ = quickstart_run
    shot = tmp_path / "report.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1200,2400", (out / "report.html").as_uri()],
                   capture_output=True, timeout=120, check=False)
    assert shot.is_file(), "Chromium wrote no screenshot"
    image = read_image(shot)  # (H, W, 3) in [0, 1]
    # The face grids and photos are colourful; an empty or broken page is white text on a plain background.
    saturation = image.max(axis=2) - image.min(axis=2)
    assert float(np.mean(saturation > 0.15)) > 0.02


def test_quickstart_notebook_runs(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(REPO / "examples" / "quickstart.ipynb", as_version=4)
    params = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1
    params[0].source = (f"OUTPUT = {str(tmp_path / 'nb')!r}\nSIZE = 64\n"
                        "STEPS = {'vae': 2, 'vre': 3, 'honestface': 2}\nTRAIN_VIEWS, TEST_VIEWS = 3, 2")
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3  # faces, loss curves, restorations
    assert any("text/markdown" in o.get("data", {}) and "psnr" in o["data"]["text/markdown"].lower()
               for o in outputs)
    assert any("text/markdown" in o.get("data", {}) and "Better than the LQ input" in o["data"]["text/markdown"]
               for o in outputs)  # gains with intervals and the verdicts in words
    assert len(list((tmp_path / "nb" / "restored").rglob("*.png"))) == 4


def test_levers_table_and_unknown_lever(tmp_path):
    from honestface.apps.quickstart.levers import LEVER_METRICS, markdown_levers_table, run_levers

    def row(gain, low, high, better, verdict):
        return {"lq": 1.0, "restored": 1.0 + gain, "gain": gain, "ci_low": low, "ci_high": high,
                "faces_better": better, "faces": 16, "verdict": verdict}

    metrics = {m: row(0.5, 0.1, 0.9, 12, "better") for m in LEVER_METRICS}
    table = {"levers": {"base": {"metrics": metrics, "generator_minutes": 7.0},
                        "ema": {"metrics": {**metrics, "ald": row(-0.2, -0.5, 0.1, 6, "no measurable change")}}}}
    lines = markdown_levers_table(table).splitlines()
    assert lines[0] == "| lever | " + " | ".join(LEVER_METRICS) + " | generator min |" and len(lines) == 4
    assert lines[2].startswith("| base |") and lines[2].count(" better") == len(LEVER_METRICS)
    assert "(6/16)" in lines[3] and lines[3].count(" better") == len(LEVER_METRICS) - 1
    assert lines[2].endswith("| 7.0 |") and lines[3].endswith("| - |")
    with pytest.raises(ValueError, match="unknown lever 'bigger'"):
        run_levers(tmp_path / "levers", ["base", "bigger"])
    assert not (tmp_path / "levers").exists()


def test_run_levers_passes_each_levers_settings_and_reuses_the_base_stages(tmp_path, monkeypatch):
    """run_levers with a stand-in quickstart: the validation split, each lever's own values (winning over the
    common settings), the base VAE/VRE exports copied into every lever's folder before it runs, levers.json/md."""
    import honestface.apps.quickstart.run as run_module
    from honestface.apps.quickstart.levers import LEVER_METRICS, VALIDATION_IDENTITIES, run_levers

    calls = []

    def fake_run(output, **kwargs):
        out = Path(output)
        calls.append((out.name, kwargs, sorted(p.relative_to(out).as_posix() for p in out.rglob("training.json"))))
        for stage in ("vae", "vre", "honestface"):
            (out / "runs" / stage / "final").mkdir(parents=True, exist_ok=True)
            (out / "runs" / stage / "final" / "training.json").write_text("{}")
        row = {"lq": 1.0, "restored": 1.5, "gain": 0.5, "ci_low": 0.1, "ci_high": 0.9, "faces_better": 9, "faces": 16,
               "verdict": "better"}
        summary = {"settings": {"steps": kwargs["steps"]}, "train_identities": ["a", "b"],
                   "metrics": {m: row for m in LEVER_METRICS}}
        (out / "summary.json").write_text(json.dumps(summary))
        return SimpleNamespace(summary=summary)

    monkeypatch.setattr(run_module, "run_quickstart", fake_run)
    table = run_levers(tmp_path / "lv", ["long", "flip"], steps=2, device="cpu", progress=None)
    assert [c[0] for c in calls] == ["base", "long", "flip"]
    base, long, flip = (c[1] for c in calls)
    assert base["test_identities"] == VALIDATION_IDENTITIES and "tom_hanks_aligned_0" in base["exclude_identities"]
    assert base["steps"] == 2 and long["steps"] == 400 and flip["flip"] is True and "flip" not in base
    assert calls[1][2] == ["runs/vae/final/training.json", "runs/vre/final/training.json"]  # copied from base
    assert list(table["levers"]) == ["base", "long", "flip"]
    assert json.loads((tmp_path / "lv" / "levers.json").read_text())["levers"]["long"]["changes"]["steps"] == 400
    assert (tmp_path / "lv" / "levers.md").read_text().startswith("| lever |")


def test_readme_tables_are_the_committed_results():
    """The README's quickstart tables (and their verdict sentences) are exactly the ones generated from
    docs/results/*.json, the files of the published default and three-seed runs."""
    from honestface.apps.quickstart.published import FILES, RESULTS, readme_tables_agree

    assert readme_tables_agree() == []
    summary = json.loads((RESULTS / FILES["summary"]).read_text())
    seeds = json.loads((RESULTS / FILES["seeds"]).read_text())
    assert summary["settings"] == {**seeds["settings"], "seed": 0}  # the default run is seed 0 of the seed run
    assert seeds["metrics"]["psnr"]["per_seed"][0]["gain"] == summary["metrics"]["psnr"]["gain"]
