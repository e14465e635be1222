"""benchmarks/run_all.py: the spec table, JSON parsing, median/spread aggregation, warm-up and repeats, peak memory,
failure and timeout recording, atomic output files, the markdown table and the CLI (--list, --only, exit code).

No real benchmark runs here: the specs point at tiny throwaway scripts written to tmp_path.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("run_all", REPO / "benchmarks" / "run_all.py")
run_all = importlib.util.module_from_spec(_spec)
sys.modules["run_all"] = run_all  # dataclasses resolve the module by name
_spec.loader.exec_module(run_all)

# Prints the value at position <count> of `values` (count = runs so far, kept in a file), after some log lines.
SEQUENCE = """
import json, sys
counter, values = sys.argv[1], [float(v) for v in sys.argv[2].split(",")]
try:
    n = int(open(counter).read())
except FileNotFoundError:
    n = 0
open(counter, "w").write(str(n + 1))
block = b"x" * (96 * 2**20)  # touch ~96 MB so the peak RSS is visibly above the interpreter's
print("loading...", file=sys.stderr)
print("log line {not json")
print(json.dumps({"value": values[n], "name": "seq", "ok": True, "none": None,
                  "nested": {"count": 7, "samples": [values[n], 2 * values[n]]},
                  "results": [{"scale": "tiny", "batch": 1, "s": values[n]}]}, indent=2))
"""
FAIL = """
import sys
open(sys.argv[1], "a").write("x")
for i in range(40):
    print(f"noise {i}", file=sys.stderr)
print("boom-last", file=sys.stderr)
sys.exit(3)
"""
NO_JSON = "print('hello, no json here')\n"
SLEEPER = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
open(sys.argv[1], "w").write(str(child.pid))
time.sleep(60)
"""


def script(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    return str(path)


def bench(name: str, path: str, args: tuple[str, ...] = (), warmup_run: bool = False):
    return run_all.Benchmark(name, path, quick=args, full=args, warmup_run=warmup_run)


def test_every_real_spec_points_at_an_existing_script():
    names = [s.name for s in run_all.SPECS]
    assert len(names) == len(set(names))
    assert {"degradation", "model_size", "train_step", "infer", "evaluate"} <= set(names)
    for spec in run_all.SPECS:
        assert spec.path.is_file(), spec.path
        for profile in ("quick", "full"):
            argv = spec.argv(profile, "cuda")
            assert all(isinstance(a, str) for a in argv) and "{device}" not in " ".join(argv)
            if any("{device}" in a for a in getattr(spec, profile)):
                assert any("cuda" in a for a in argv)
    with pytest.raises(ValueError, match="medium"):
        run_all.SPECS[0].argv("medium", "cpu")


def test_parse_last_json_takes_the_last_top_level_object():
    out = 'log {x\n{"a": 1}\nmore\n' + json.dumps({"b": [{"inner": 1}], "c": 2}, indent=2) + "\ntrailing {\n"
    assert run_all.parse_last_json(out) == {"b": [{"inner": 1}], "c": 2}
    assert run_all.parse_last_json('{"a": 1}\n{"a": 2}\n') == {"a": 2}
    assert run_all.parse_last_json("no json\n[1, 2]\n") is None


def test_aggregate_median_spread_and_paths():
    runs = [{"t": 3.0, "cfg": {"name": "x", "flag": True, "n": None}, "l": [{"scale": "tiny", "v": 1}, {"v": 5}]},
            {"t": 1.0, "extra": 10, "l": [{"scale": "tiny", "v": 3}, {"v": 5}]},
            {"t": 2.0, "l": [{"scale": "tiny", "v": 2}, {"v": 5}]}]
    s = run_all.aggregate(runs)
    assert s["t"] == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert s["extra"] == {"median": 10, "min": 10, "max": 10, "n": 1}
    assert s["l[0].v"]["median"] == 2 and s["l[1].v"]["max"] == 5  # one item names itself, one does not
    named = run_all.flatten({"r": [{"scale": "tiny", "batch": 1, "t": 1}, {"scale": "tiny", "batch": 8, "t": 2}]})
    assert named == {"r[scale=tiny,batch=1].batch": 1, "r[scale=tiny,batch=1].t": 1,
                     "r[scale=tiny,batch=8].batch": 8, "r[scale=tiny,batch=8].t": 2}
    assert not any(k.startswith("cfg") for k in s)  # strings, booleans and nulls are not metrics
    even = run_all.aggregate([{"t": 1.0}, {"t": 4.0}])["t"]
    assert even["median"] == 2.5 and (even["min"], even["max"]) == (1.0, 4.0)


def test_repeats_after_a_discarded_warmup_with_peak_memory(tmp_path):
    counter = tmp_path / "count"
    spec = bench("seq", script(tmp_path, "seq", SEQUENCE), (str(counter), "100,3,1,2"), warmup_run=True)
    logs = []
    out = run_all.run_benchmarks([spec], repeats=3, log=logs.append)["seq"]
    assert out["status"] == "ok" and out["error"] is None and counter.read_text() == "4"
    assert [r["result"]["value"] for r in out["runs"]] == [3.0, 1.0, 2.0]  # the warm-up's 100 is not counted
    assert out["warmup"]["wall_s"] > 0
    s = out["summary"]
    assert s["value"] == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert s["nested.samples[1]"]["median"] == 4.0 and s["results[scale=tiny,batch=1].s"]["max"] == 3.0
    assert s["process.peak_rss_mb"]["min"] > 96  # the child's own peak, not this test process's
    assert s["process.wall_s"]["n"] == 3 and len(logs) == 4 and logs[0].startswith("[seq] warm-up")


def test_peak_rss_is_the_childs_own_from_a_small_parent(tmp_path):
    # this pytest process is big (torch imported) and Linux floors a child's ru_maxrss at its parent's peak, so
    # the measurement runs in a fresh interpreter that imports only run_all (stdlib), as the CLI does
    seq = script(tmp_path, "seq", SEQUENCE)
    idle = script(tmp_path, "idle", "print('{}')\n")
    driver = (f"import importlib.util, json, sys; s = importlib.util.spec_from_file_location('r', {str(_spec.origin)!r});"
              "m = importlib.util.module_from_spec(s); sys.modules['r'] = m; s.loader.exec_module(m);"
              f"print(json.dumps([m.run_once([sys.executable, p] + a)['peak_rss_mb'] for p, a in "
              f"[({seq!r}, [{str(tmp_path / 'c')!r}, '1']), ({idle!r}, [])]]))")
    run = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True, check=True)
    big, small = json.loads(run.stdout)
    assert small < 60 and 96 < big < small + 96 + 60, (big, small)


def test_failures_are_recorded_and_the_rest_still_run(tmp_path):
    tries = tmp_path / "tries"
    specs = [bench("fail", script(tmp_path, "fail", FAIL), (str(tries),)),
             bench("nojson", script(tmp_path, "nojson", NO_JSON)),
             bench("ok", script(tmp_path, "seq", SEQUENCE), (str(tmp_path / "c"), "1,2"))]
    out = run_all.run_benchmarks(specs, repeats=2, log=lambda _: None, tail_lines=5)
    fail = out["fail"]
    assert fail["status"] == "failed" and tries.read_text() == "x"  # no repeats after a failure
    assert fail["error"].splitlines()[0] == "exit code 3" and fail["error"].splitlines()[-1] == "boom-last"
    assert "noise 0" not in fail["error"] and fail["runs"] == [] and fail["summary"] == {}
    assert out["nojson"]["status"] == "failed" and "no JSON" in out["nojson"]["error"]
    assert out["ok"]["status"] == "ok" and out["ok"]["summary"]["value"]["median"] == 1.5


def test_timeout_kills_the_run_and_its_subprocesses(tmp_path):
    pid_file = tmp_path / "pid"
    spec = bench("sleep", script(tmp_path, "sleep", SLEEPER), (str(pid_file),))
    start = time.monotonic()
    out = run_all.run_benchmarks([spec], repeats=1, timeout=3, log=lambda _: None)["sleep"]
    assert time.monotonic() - start < 30
    assert out["status"] == "failed" and out["error"].startswith("timed out")
    grandchild = int(pid_file.read_text())
    for _ in range(50):  # gone, or a zombie waiting for its new parent to reap it
        status = Path(f"/proc/{grandchild}/status")
        if not status.exists() or re.search(r"State:\s+Z", status.read_text()):
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"grandchild {grandchild} still running after the timeout")


def test_write_results_is_atomic(tmp_path, monkeypatch):
    out = tmp_path / "res" / "results.json"
    good = {"profile": "quick", "benchmarks": {}}
    md = run_all.write_results(good, out)
    assert json.loads(out.read_text()) == good and md == out.with_suffix(".md") and md.read_text().startswith("#")
    with pytest.raises(TypeError):  # not serialisable: nothing is touched
        run_all.write_results({"benchmarks": {}, "bad": object()}, out)
    assert json.loads(out.read_text()) == good

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(run_all.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        run_all.write_results({"profile": "full", "benchmarks": {}}, out)
    assert json.loads(out.read_text()) == good
    assert sorted(p.name for p in out.parent.iterdir()) == ["results.json", "results.md"]  # no temp files left


def test_markdown_table_rows_units_and_failures():
    results = {"profile": "quick", "repeats": 3, "device": "cpu", "machine": {"cpu_count": 2},
               "benchmarks": {
                   "a": {"status": "ok", "summary": {
                       "x.images_per_s": {"median": 12.5, "min": 11.0, "max": 13.25, "n": 3},
                       "tiny.total": {"median": 3073086, "min": 3073086, "max": 3073086, "n": 3},
                       "batch_size": {"median": 8, "min": 8, "max": 8, "n": 3},
                       "step_s_all[0]": {"median": 1.0, "min": 1.0, "max": 1.0, "n": 3},
                       "step_s_median": {"median": 0.5, "min": 0.4, "max": 0.9, "n": 3}}},
                   "b": {"status": "failed", "error": "exit code 1\nValueError: a | b", "summary": {}}}}
    md = run_all.markdown_table(results)
    assert "| a | x.images_per_s | 12.5 | 11 - 13.25 | 3 | images/s |" in md
    assert "| a | tiny.total | 3,073,086 | 3,073,086 - 3,073,086 | 3 | params |" in md
    assert "| a | step_s_median | 0.5 | 0.4 - 0.9 | 3 | s |" in md
    assert "batch_size" not in md and "step_s_all" not in md
    assert "| b | FAILED | | | | exit code 1 ValueError: a \\| b |" in md


def test_git_commit_from_the_git_folder(tmp_path):
    sha = "0123456789abcdef0123456789abcdef01234567"
    git = tmp_path / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "packed-refs").write_text(f"# pack-refs\n{sha} refs/heads/main\n")
    assert run_all.git_commit(tmp_path) == sha
    (git / "refs" / "heads" / "main").write_text(sha[::-1] + "\n")  # a loose ref wins over packed-refs
    assert run_all.git_commit(tmp_path) == sha[::-1]
    (git / "HEAD").write_text(sha + "\n")  # detached HEAD
    assert run_all.git_commit(tmp_path) == sha
    assert run_all.git_commit(tmp_path / "nowhere") is None


def test_cli_list_only_and_exit_code(tmp_path, monkeypatch, capsys):
    assert run_all.main(["--list"]) == 0
    listed = capsys.readouterr().out
    for spec in run_all.SPECS:
        assert spec.name in listed and " ".join(spec.quick) in listed
    with pytest.raises(SystemExit):
        run_all.main(["--only", "nope"])
    assert "unknown benchmark(s) nope" in capsys.readouterr().err

    specs = (bench("seq", script(tmp_path, "seq", SEQUENCE), (str(tmp_path / "c"), "5,7,6")),
             bench("fail", script(tmp_path, "fail", FAIL), (str(tmp_path / "t"),)))
    monkeypatch.setattr(run_all, "SPECS", specs)
    out = tmp_path / "out" / "bench.json"
    assert run_all.main(["--only", "seq", "--repeats", "2", "--device", "cpu", "--output", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["failed"] == [] and res["repeats"] == 2 and res["device"] == "cpu"
    assert res["benchmarks"]["seq"]["summary"]["value"]["median"] == 6.0
    m = res["machine"]
    assert m["cpu_count"] == os.cpu_count() and m["python"] and "torch" in m["packages"]
    assert "| seq | value | 6 | 5 - 7 | 2 |" in out.with_suffix(".md").read_text()
    assert "| seq | value |" in capsys.readouterr().out

    assert run_all.main(["--repeats", "1", "--device", "cpu", "--output", str(out)]) == 1  # all specs, one fails
    res = json.loads(out.read_text())
    assert res["failed"] == ["fail"] and res["benchmarks"]["seq"]["status"] == "ok"
    assert "| fail | FAILED |" in out.with_suffix(".md").read_text()


def test_infer_benchmark_checks_issue_17_goals_and_labels_variants():
    """benchmarks/infer_targets.py: the roofline columns from counted FLOPs and the measured convolution
    throughput, and every SD 2.1-size figure against issue 17's goal with its margin; run_all keeps the two
    variants of one (scale, batch) apart."""
    spec = importlib.util.spec_from_file_location("bench_infer_targets", REPO / "benchmarks" / "infer_targets.py")
    targets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(targets)
    results = [{"scale": "sd21", "variant": v, "batch": 1, "peak_memory_mb": mb, "pipeline_seconds_per_face": s,
                "load_seconds": 2.0, "files_read_seconds": 1.0,
                "seconds_per_face": {"vae_encode": 2.0, "vre": 0.5, "unet": 2.0, "vae_decode": 5.0},
                "gflop_per_face": {"vae_encode": 800.0, "vre": 200.0, "unet": 600.0, "vae_decode": 2000.0}}
               for v, mb, s in (("osdface", 3500, 10.0), ("honestface", 5000, 12.0))]
    results[1]["pipeline_peak_memory_mb"] = 4500  # the user's path; the goal is checked on it where it is given
    for r in results:
        targets.add_roofline(r, {"conv3x3_gflops": 400.0})
    osd = results[0]
    assert osd["fraction_of_conv"] == {"vae_encode": 1.0, "vre": 1.0, "unet": 0.75, "vae_decode": 1.0}
    assert osd["roofline_seconds_per_face"] == pytest.approx(9.0)
    assert osd["roofline_ratio"] == pytest.approx(10.0 / 9.0, abs=1e-3)
    assert osd["overhead_seconds_per_face"] == pytest.approx(0.5)
    # with the yardstick measured beside each stage (ConvBeside), each stage and the face use their own
    beside = {**results[0], "conv3x3_gflops_beside": {"vae_encode": 800.0, "vre": 400.0, "unet": 300.0,
                                                      "vae_decode": 400.0, "pipeline": 450.0}}
    targets.add_roofline(beside, {"conv3x3_gflops": 400.0})
    assert beside["fraction_of_conv"] == {"vae_encode": 0.5, "vre": 1.0, "unet": 1.0, "vae_decode": 1.0}
    assert beside["roofline_seconds_per_face"] == pytest.approx(3600 / 450)
    # run by run (yardstick_gflop_runs: each run's seconds x the yardstick right before it), then the median: a
    # switch of the CPU's speed state between two runs no longer mixes one run's time with another's yardstick
    paired = {**results[0], "yardstick_gflop_runs": {"vae_encode": [800.0, 1600.0, 1000.0],
                                                     "pipeline": [3600.0 * 1.3, 3600.0 * 1.1, 3600.0 * 2.0]}}
    targets.add_roofline(paired, {"conv3x3_gflops": 400.0})
    assert paired["fraction_of_conv"]["vae_encode"] == pytest.approx(0.8)  # median of 1.0, 0.5, 0.8
    assert paired["fraction_of_conv"]["unet"] == 0.75  # no runs: the medians' quotient as before
    assert paired["roofline_ratio"] == pytest.approx(1.3)
    # the profiled run: the share outside the GEMM kernels, and the fraction if that share took no time
    # (three runs each, paired with their own yardstick; each figure the median over the runs)
    decode = {"convolution": 4.0, "normalization": 0.6, "activation": 0.3, "elementwise": 0.1}
    unet = {"convolution": 0.5, "matmul": 0.5, "attention": 0.5, "copy": 0.5}
    profiled = {**results[0], "op_seconds_per_face": {"vae_decode": [decode, {**decode, "convolution": 1.5}, decode],
                                                      "unet": [unet, unet, {**unet, "copy": 4.5}]},
                "conv3x3_gflops_beside_profile": {"vae_decode": [625.0, 2000.0, 250.0], "unet": [400.0] * 3}}
    targets.add_roofline(profiled, {"conv3x3_gflops": 400.0})
    assert profiled["other_ops_share"] == {"vae_decode": 0.2, "unet": 0.25}  # medians of (.2, .4, .2), (.25, .25, .75)
    # vae_decode: 2000 / (4 * 625), 2000 / (1.5 * 2000), 2000 / (4 * 250) -> the median 0.8
    assert profiled["gemm_kernel_fraction"] == {"vae_decode": pytest.approx(0.8), "unet": 1.0}
    assert "gemm_kernel_fraction" in osd and osd["gemm_kernel_fraction"] == {}  # no profile: nothing made up
    rows = {r["goal"]: r for r in targets.check_targets(results, [{"scale": "sd21", "variant": "osdface",
                                                                   "dtype": "bf16", "psnr_vs_fp32_db": 36.9}],
                                                        {"peak_memory_mb": 6000.0})}
    assert rows["osdface batch 1: peak RSS restoring faces (GiB)"]["met"]
    assert not rows["honestface batch 1: peak RSS restoring faces (GiB)"]["met"]
    assert rows["honestface batch 1: peak RSS restoring faces (GiB)"]["margin"] == pytest.approx(4500 / 1024 - 4.0,
                                                                                                 abs=1e-3)
    assert not rows["osdface batch 1: unet fraction of conv throughput"]["met"]
    assert rows["osdface batch 1: vae_decode fraction of conv throughput"]["met"]
    assert rows["osdface batch 1: pipeline / roofline time"]["met"]
    assert rows["osdface batch 1: pipeline / roofline time"]["comparable"]  # 10 s against stages of 9.5 s
    # a pipeline well faster than the sum of its own stages ran in another speed state: flagged, not trusted
    switched = {**results[0], "pipeline_seconds_per_face": 6.0}
    targets.add_roofline(switched, {"conv3x3_gflops": 400.0})
    assert switched["pipeline_vs_stages"] == pytest.approx(6.0 / 9.5, abs=1e-3)
    row = next(r for r in targets.check_targets([switched], []) if r["goal"].endswith("pipeline / roofline time"))
    assert row["met"] and row["comparable"] is False
    assert not rows["osdface batch 1: VRE seconds per face"]["met"]
    assert not rows["osdface batch 1: load / file read time"]["met"]  # 2.0 / 1.0 > 1.5
    assert not rows["one-time conversion of the OSDFace files: peak RSS (GiB)"]["met"]
    assert rows["honestface (K references) / osdface time per face"]["value"] == pytest.approx(1.2)
    assert not rows["honestface (K references) / osdface time per face"]["met"]
    assert not rows["osdface: bf16 vs fp32 PSNR (dB)"]["met"]
    flat = run_all.flatten({"results": results})
    assert "results[scale=sd21,variant=osdface,batch=1].peak_memory_mb" in flat
    assert "results[scale=sd21,variant=honestface,batch=1].peak_memory_mb" in flat


def test_infer_benchmark_times_the_two_variants_in_alternation(tmp_path):
    """benchmarks/infer.py's `compare` child: both tiny variants loaded in one process, their pipelines timed back to
    back; the full/OSDFace ratio then comes from these paired timings, not from two processes minutes apart. The
    `prepack` child does the same for the UNet with plain and with packed weights."""
    import torch

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location("bench_infer", REPO / "benchmarks" / "infer.py")
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
        import infer_compare

        folders = {v: bench.build_cached(tmp_path, "tiny", v) for v in ("osdface", "honestface")}
        torch.manual_seed(0)
        pipes = {v: bench.load_pipeline(f, torch.device("cpu"), torch.float32, prepack=False)
                 for v, f in folders.items()}
        row = infer_compare.compare_variants(pipes, 1, repeats=2, refs=1)
        packing = infer_compare.compare_prepacking(pipes["osdface"], repeats=2)
        import infer_common

        from honestface.pipelines import ReferencePool

        faces, ref_faces = infer_common.input_faces(pipes["osdface"].resolution, 1, 1)
        spent = {}
        for v, pipe in pipes.items():
            with infer_common.time_inside_networks(pipe.model, torch.device("cpu")) as inside:
                t0 = time.perf_counter()
                pipe(faces, references=ReferencePool(ref_faces) if v == "honestface" else None, mode="aligned")
                spent[v] = (list(inside), time.perf_counter() - t0)
            # the model is as it was: no timing wrapper left on an instance
            assert not {"encode", "denoise", "decode"} & set(vars(pipe.model.generator))
            assert "forward" not in vars(pipe.model.vre) and "_identity_tokens" not in vars(pipe.model)
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    assert row["compared"] == "honestface / osdface" and len(row["ratios"]) == 2
    assert row["ratio"] == pytest.approx(sum(row["ratios"]) / 2, abs=1e-3)  # the median of two
    assert all(s > 0 for s in row["seconds_per_face"].values())
    # the UNet plain against packed for oneDNN, two rounds, each packing timed; it is left packed
    assert packing["compared"] == "packed / plain" and len(packing["ratios"]) == 2
    assert all(len(v) == 2 and min(v) > 0 for v in packing["unet_seconds"].values())
    assert packing["prepack_seconds"] > 0 and len(packing["conv3x3_gflops_beside"]["packed"]) == 2
    assert any(type(m).__name__ == "PrepackedConv2d" for m in pipes["osdface"].model.generator.unet.modules())
    # time inside the networks (the overhead goal): VAE encoder, VRE, UNet, VAE decoder; the full model adds the IDE
    # heads and the fusion; all of it within the pipeline's own time
    for v, calls in (("osdface", 4), ("honestface", 6)):
        inside, wall = spent[v]
        assert len(inside) == calls and 0 < sum(inside) < wall, (v, inside, wall)
    spec = importlib.util.spec_from_file_location("bench_infer_targets", REPO / "benchmarks" / "infer_targets.py")
    targets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(targets)
    goals = targets.check_targets([], [], None, [{"scale": "sd21", **row, "ratio": 1.2}])
    assert [(g["goal"], g["met"]) for g in goals] == [
        ("honestface (K references) / osdface time per face, timed in alternation", False)]


def test_flop_count_is_the_same_with_weights_packed_for_onednn():
    """benchmarks/roofline.py counts the packed oneDNN kernels (infer.prepack_cpu_weights, on in the infer benchmark)
    as their plain twins: otherwise every packed stage would count zero FLOPs and its fraction would mean nothing."""
    import torch
    from torch import nn

    from honestface.models.cpu_prepack import cpu_prepacking_available, prepack_cpu_weights

    if not cpu_prepacking_available():
        pytest.skip("this PyTorch has no oneDNN")
    spec = importlib.util.spec_from_file_location("bench_roofline", REPO / "benchmarks" / "roofline.py")
    roofline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(roofline)
    net = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, groups=2), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                        nn.Flatten(2), nn.Linear(16, 5)).requires_grad_(False)
    x = torch.randn(2, 4, 8, 8)
    plain = roofline.count_flops(lambda: net(x))
    assert prepack_cpu_weights(net) == 3
    assert plain == 2 * 2 * 8 * 64 * 2 * 9 + 2 * 2 * 8 * 16 * 8 * 9 + 2 * 2 * 8 * 5 * 16
    assert roofline.count_flops(lambda: net(x)) == plain


def test_infer_profile_splits_a_stage_by_operator_kind():
    """benchmarks/infer_profile.py: one profiled run's self time per operator kind, the plain and the oneDNN-packed
    kernels alike (the infer benchmark's `op_seconds_per_face`, from which `gemm_kernel_fraction` is derived)."""
    import torch
    from torch import nn

    from honestface.models.cpu_prepack import cpu_prepacking_available, prepack_cpu_weights

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import infer_profile
        import roofline
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    kinds = {"aten::_scaled_dot_product_flash_attention_for_cpu": "attention", "aten::mkldnn_convolution":
             "convolution", "mkldnn::_convolution_pointwise": "convolution", "mkldnn::_linear_pointwise": "matmul",
             "aten::addmm": "matmul", "aten::native_group_norm": "normalization", "aten::native_layer_norm":
             "normalization", "aten::silu_": "activation", "aten::gelu": "activation", "aten::copy_": "copy",
             "aten::cat": "copy", "aten::add": "elementwise", "aten::div": "elementwise", "aten::empty": "other",
             "aten::view": "other"}
    assert {name: infer_profile.op_kind(name) for name in kinds} == kinds
    net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.GroupNorm(8, 32), nn.SiLU(), nn.Flatten(2),
                        nn.Linear(64, 16)).requires_grad_(False)
    x = torch.randn(2, 3, 8, 8)
    cpu = torch.device("cpu")
    plain = infer_profile.op_seconds(lambda: net(x) * 2, cpu)
    assert {"convolution", "normalization", "activation", "matmul", "elementwise"} <= set(plain)
    assert all(v > 0 for v in plain.values())
    if cpu_prepacking_available():
        assert prepack_cpu_weights(net) == 2
        packed = infer_profile.profile_stage(lambda: net(x), cpu, roofline.ConvBeside(cpu, torch.float32), runs=2)
        assert len(packed["conv3x3_gflops"]) == len(packed["op_seconds"]) == 2
        assert all(g > 0 for g in packed["conv3x3_gflops"])
        assert all({"convolution", "matmul"} <= set(run) for run in packed["op_seconds"])


def test_norm_act_fusion_times_both_sides_and_reports_a_compiler_failure(monkeypatch):
    """benchmarks/norm_act_fusion.py: eager and torch.compile'd GroupNorm + SiLU on one map, the same values; where
    inductor cannot compile, the row names the error instead of timings (and the other maps still run)."""
    import torch

    spec = importlib.util.spec_from_file_location("bench_norm_act", REPO / "benchmarks" / "norm_act_fusion.py")
    fusion = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fusion)
    row = fusion.compare(32, 8, torch.float32, repeats=2)
    assert row["eager_ms"] > 0 and row["compiled_ms"] > 0 and row["ratio"] > 0
    assert row["max_abs_difference"] < 1e-4

    def no_compiler(fn, **kwargs):
        def fail(*args):
            raise RuntimeError("no C++ compiler found\n(traceback)")
        return fail

    monkeypatch.setattr(torch, "compile", no_compiler)
    assert fusion.compare(32, 8, torch.float32, repeats=2) == {"channels": 32, "side": 8,
                                                              "error": "RuntimeError: no C++ compiler found"}
