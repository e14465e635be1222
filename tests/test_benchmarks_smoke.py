"""Every benchmark script runs once, the way a user runs it (`python benchmarks/<script> ...`), at tiny settings:
it exits 0 and its last stdout is one JSON object with the keys its readers use. A script that breaks (a renamed
import, a changed API) fails here, not in front of the person who wanted the numbers.

Not run here: `osdface_files.py` writes SD 2.1-size weights (GBs) for `infer.py --from osdface-files`, too large
for CI; `infer_targets.py` is the goal checker `infer.py` imports (its rules are tested in
tests/test_benchmarks_run_all.py), `infer_compare.py` its alternating timer (tested in tests/test_benchmarks_run_all.py
on two tiny folders), `infer_common.py`, `infer_onnx.py`, `infer_profile.py` and `infer_vspbfr.py` the parts of
infer.py it imports (the first and the third run in its smoke below; the third is also tested in
tests/test_benchmarks_run_all.py); `quickstart_eval_resolution.py` needs a finished quickstart folder and runs in
tests/test_quickstart.py on the one that module trains; `quickstart_seeds.py` runs there too, on the two seeds
`scripts/quickstart.py --seeds 0,1` trained (it resumes them, so the test costs no training). For CI time (the
run stays under 20 minutes): `video.py` (its parts, the demo clip, `restore_video` and `face_warp_errors`, run in
tests/test_video_restore.py and tests/test_temporal_metric.py) and `infer.py --onnx` (the ONNX pipeline's timing
code; the pipeline itself is tested in tests/test_onnx_export*.py) are not smoked, nor `quickstart_levers.py`
(about 35 s: it trains the quickstart once per lever; its table and lever checks are tested in
tests/test_quickstart.py::test_levers_table_and_unknown_lever, and the training it runs is the quickstart's, tested
there too).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# script -> (arguments, keys its JSON must hold); "{tmp}" is the test's temporary folder. run_all.py prints a
# markdown table and writes its JSON to --output; the others print their JSON last.
SMOKE: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "degradation.py": (("2", "1", "daefr", "64", "cpu"), ("torch_batched_images_per_s", "opencv_loop_images_per_s", "speedup")),
    "model_size.py": (("--presets", "tiny"), ("tiny",)),
    "train_step.py": (("--steps", "1", "--warmup", "0", "--device", "cpu"), ("tiny",)),
    # fp32: no bf16-vs-fp32 precision comparison (two more model processes; for CI time)
    "infer.py": (("--batches", "1", "--repeats", "1", "--refs", "1", "--variants", "osdface", "--device", "cpu",
                  "--dtype", "fp32", "--cache", "{tmp}/cache"),
                 ("results",)),
    "evaluate.py": (("num_images=2", "size=64", "batch_size=2", "iterations=1", "device=cpu"), ("metrics", "roofline")),
    "norm_act_fusion.py": (("--sizes", "32x16", "--repeats", "2", "--dtype", "fp32"), ("maps",)),
    "roofline.py": (("--repeats", "1", "--dtype", "fp32"), ("conv3x3_gflops", "matmul_gflops", "silu_gelements_per_s")),
    "run_all.py": (("--only", "degradation", "--repeats", "1", "--device", "cpu", "--output", "{tmp}/results.json"),
                   ("benchmarks", "failed")),
}
NOT_SMOKED = {"osdface_files.py", "infer_targets.py", "infer_compare.py", "infer_common.py", "infer_onnx.py",
              "infer_profile.py", "infer_vspbfr.py", "quickstart_eval_resolution.py", "quickstart_levers.py",
              "quickstart_seeds.py", "video.py"}  # see the module docstring


def test_every_benchmark_script_is_smoked_or_says_why_not():
    scripts = {p.name for p in (REPO / "benchmarks").glob("*.py")}
    assert scripts == set(SMOKE) | NOT_SMOKED


def _last_json(stdout: str) -> dict:
    start = stdout.rfind("\n{")
    return json.loads(stdout[start + 1 if start >= 0 else stdout.index("{"):])


@pytest.mark.parametrize("script", sorted(SMOKE))
def test_benchmark_script_runs_at_tiny_settings(script, tmp_path):
    args, keys = SMOKE[script]
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *argv], capture_output=True, text=True,
                         check=False, cwd=tmp_path, env=env, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads((tmp_path / "results.json").read_text()) if script == "run_all.py" else _last_json(run.stdout)
    missing = [k for k in keys if k not in out]
    assert not missing, f"{script}: no {missing} in {sorted(out)}"
    if script == "run_all.py":
        assert out["failed"] == [] and out["benchmarks"], out
