"""scripts/infer.py and its runner: folders in -> outputs + results.json out, per-file failures, skip-existing,
refusing to write into the input folder, whole photos, and a 2-process accelerate run that splits the inputs.

All runs use the random "tiny" HonestFace (64 px faces) saved to a temporary folder; the runner is called as a
function where the command line adds nothing, and through the real CLI (subprocess) otherwise.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from honestface.apps.infer import RESULTS_FILE, run_inference
from honestface.config import load_config
from honestface.data import samples
from honestface.io import write_image

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def model_dir(tiny_honestface_dir):
    return tiny_honestface_dir  # conftest: one saved tiny model for every module


def face(size: int, which: str = "astronaut") -> np.ndarray:
    """A square face crop (size, size, 3) uint8 from a bundled photo."""
    img = samples.load_sample(which)
    h, w = img.shape[:2]
    c = min(h, w)
    img = img[(h - c) // 2:(h - c) // 2 + c, (w - c) // 2:(w - c) // 2 + c]
    return np.asarray(Image.fromarray(img).resize((size, size), Image.BICUBIC))


def infer(model: Path, inp: Path, out: Path, *extra: str) -> int:
    cfg = load_config(None, [f"model.pretrained={model}", f"infer.input={inp}", f"infer.output={out}", *extra])
    return run_inference(cfg)


def cli(*args: str, launch: list[str] | None = None) -> subprocess.CompletedProcess:
    env = {**ENV, "ACCELERATE_USE_CPU": "1"} if launch else ENV
    return subprocess.run([*(launch or [sys.executable]), "scripts/infer.py", *args], check=False, cwd=REPO,
                          env=env,
                          capture_output=True, text=True, timeout=300)


def results(out: Path) -> dict:
    return json.loads((out / RESULTS_FILE).read_text())


def snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def test_aligned_folder_restores_every_file(model_dir: Path, tmp_path: Path) -> None:
    lq, refs, out = tmp_path / "lq", tmp_path / "refs", tmp_path / "out"
    sizes = {"a.png": 64, "sub/b.png": 80, "sub/c.jpg": 48}
    for rel, size in sizes.items():
        write_image(lq / rel, face(size, "grace_hopper" if "b" in rel else "astronaut"))
    write_image(refs / "r1.png", face(64))
    write_image(refs / "r2.png", face(72, "grace_hopper"))
    assert infer(model_dir, lq, out, f"infer.references={refs}", "infer.save_comparison=true",
                 "infer.batch_size=2") == 0
    res = results(out)
    assert res["counts"] == {"ok": 3, "failed": 0, "skipped": 0} and res["reference_mode"] == "shared"
    assert res["batch_size"] == 2
    assert [f["relpath"] for f in res["files"]] == ["a.png", "sub/b.png", "sub/c.jpg"]
    for f in res["files"]:
        size = sizes[f["relpath"]]
        restored = np.asarray(Image.open(f["output"]))
        assert Path(f["output"]) == out / Path(f["relpath"]).with_suffix(".png")
        assert restored.shape == (size, size, 3) and f["size"] == [size, size]
        assert np.asarray(Image.open(f["comparison"])).shape == (size, 2 * size, 3)
        assert f["status"] == "ok" and f["reason"] is None and f["seconds"] > 0
        assert f["references"] == [str(refs / "r1.png"), str(refs / "r2.png")]
        (info,) = f["faces"]
        assert set(info["references"]) <= set(f["references"]) and info["restored"]
        assert info["blind"] is False and -1 <= info["output_ref_similarity"] <= 1
    outputs = sorted(p for p in out.rglob("*.png") if not p.stem.endswith("_comparison"))
    assert len(outputs) == len(sizes) and not list(out.glob(".results*"))


def test_bad_files_fail_and_the_run_goes_on(model_dir: Path, tmp_path: Path) -> None:
    lq, out = tmp_path / "lq", tmp_path / "out"
    write_image(lq / "good1.png", face(64))
    write_image(lq / "good2.jpg", face(64, "grace_hopper"))
    write_image(lq / "tiny.png", face(10))  # below infer.min_input_size (16)
    full = (lq / "good1.png").read_bytes()
    (lq / "truncated.png").write_bytes(full[: len(full) // 2])
    (lq / "notes.jpg").write_text("this is not an image\n")
    assert infer(model_dir, lq, out) == 1
    assert results(out)["batch_size"] == 1  # no infer.batch_size: one face per model call on a CPU, as recorded
    by_name = {Path(f["input"]).name: f for f in results(out)["files"]}
    assert len(by_name) == 5
    assert {n for n, f in by_name.items() if f["status"] == "ok"} == {"good1.png", "good2.jpg"}
    assert "too small: 10x10" in by_name["tiny.png"]["reason"]
    for name in ("truncated.png", "notes.jpg"):
        assert by_name[name]["status"] == "failed" and by_name[name]["reason"].startswith("unreadable")
        assert name in by_name[name]["reason"]
    assert sorted(p.name for p in out.glob("*.png")) == ["good1.png", "good2.png"]


def test_missing_references_fail_unless_blind_is_allowed(model_dir: Path, tmp_path: Path) -> None:
    lq, refs, out = tmp_path / "lq", tmp_path / "refs", tmp_path / "out"
    write_image(lq / "anna.png", face(64))
    write_image(lq / "bob.png", face(64, "grace_hopper"))
    write_image(refs / "anna" / "ref.png", face(64))  # a folder per input; bob has none
    assert infer(model_dir, lq, out, f"infer.references={refs}") == 1
    by_name = {Path(f["input"]).name: f for f in results(out)["files"]}
    assert results(out)["reference_mode"] == "per_input"
    assert by_name["anna.png"]["status"] == "ok" and by_name["anna.png"]["references"] == [str(refs / "anna/ref.png")]
    assert by_name["bob.png"]["status"] == "failed" and "missing references" in by_name["bob.png"]["reason"]
    assert infer(model_dir, lq, out, f"infer.references={refs}", "infer.allow_blind=true",
                 "infer.skip_existing=true") == 0
    by_name = {Path(f["input"]).name: f for f in results(out)["files"]}
    assert by_name["anna.png"]["status"] == "skipped"
    assert by_name["bob.png"]["status"] == "ok" and by_name["bob.png"]["faces"][0]["blind"] is True


def test_existing_outputs_refused_or_skipped_without_work(model_dir: Path, tmp_path: Path, capsys) -> None:
    lq, out = tmp_path / "lq", tmp_path / "out"
    write_image(lq / "a.png", face(64))
    write_image(lq / "d" / "b.png", face(64, "grace_hopper"))
    assert infer(model_dir, lq, out) == 0
    before = snapshot(out)
    capsys.readouterr()
    assert infer(model_dir, lq, out) == 2  # existing outputs, no flag: refused before any work
    err = capsys.readouterr().err
    assert "already exist" in err and str(out / "a.png") in err and "--skip-existing" in err and "--overwrite" in err
    run = cli("--model", str(model_dir), "--input", str(lq), "--output", str(out), "--skip-existing")
    assert run.returncode == 0, run.stderr[-3000:]
    after = snapshot(out)
    assert {k: v for k, v in after.items() if k != RESULTS_FILE} == {k: v for k, v in before.items()
                                                                     if k != RESULTS_FILE}
    assert [f["status"] for f in results(out)["files"]] == ["skipped", "skipped"]


def test_output_in_input_folder_is_refused(model_dir: Path, tmp_path: Path, capsys) -> None:
    lq = tmp_path / "lq"
    write_image(lq / "a.png", face(64))
    before = snapshot(tmp_path)
    run = cli("--model", str(model_dir), "--input", str(lq), "--output", str(lq))
    assert run.returncode == 2 and "input folder" in run.stderr and "Traceback" not in run.stderr
    assert infer(model_dir, lq, lq / "restored") == 2
    assert "inside the input folder" in capsys.readouterr().err
    assert snapshot(tmp_path) == before and not (lq / "restored").exists()


def test_whole_photo_restores_six_faces(model_dir: Path, tmp_path: Path) -> None:
    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    Image.fromarray(samples.group_t1()).save(photos / "t1.jpg", quality=95)
    assert infer(model_dir, photos, out, "infer.mode=photo") == 0
    (f,) = results(out)["files"]
    assert f["status"] == "ok" and f["size"] == [886, 1280]
    assert len(f["faces"]) == 6 and all(x["restored"] and len(x["box"]) == 4 for x in f["faces"])
    assert np.asarray(Image.open(out / "t1.png")).shape == (886, 1280, 3)


def test_two_processes_restore_every_file_once(model_dir: Path, tmp_path: Path) -> None:
    lq, out = tmp_path / "lq", tmp_path / "out"
    names = [f"f{i}.png" for i in range(4)]
    for i, name in enumerate(names):
        write_image(lq / name, face(64 + 8 * i))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
              str(port)]
    run = cli("--model", str(model_dir), "--input", str(lq), "--output", str(out), "--batch-size", "2",
              launch=launch)
    assert run.returncode == 0, run.stderr[-3000:]
    res = results(out)
    assert res["num_processes"] == 2 and res["counts"]["ok"] == 4
    assert sorted(Path(f["input"]).name for f in res["files"]) == names  # each input exactly once
    assert sorted(p.name for p in out.glob("*.png")) == names and not list(out.glob(".results*"))


def test_results_record_the_effective_resolution(model_dir: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    """The model's native resolution (never the VAE's sample_size) unless infer.resolution overrides it. On a CPU
    the heap keeps freed activation buffers (infer.reuse_cpu_memory) and the weights are packed for oneDNN
    (infer.prepack_cpu_weights), both on by default."""
    from honestface.models import cpu_prepack, loading
    from honestface.models.vspbfr.vspbfr import build_vspbfr

    reuse: list[int] = []  # stands in for the process-wide glibc setting, which the test process keeps out of
    monkeypatch.setattr(loading, "reuse_large_allocations", lambda: reuse.append(1) or True)
    packed: list[int] = []
    real_prepack = cpu_prepack.prepack_cpu_weights
    monkeypatch.setattr(cpu_prepack, "prepack_cpu_weights", lambda m: packed.append(real_prepack(m)) or packed[-1])
    write_image(tmp_path / "lq" / "a.png", face(80))
    assert infer(model_dir, tmp_path / "lq", tmp_path / "native") == 0
    assert reuse == [1] and len(packed) == 1 and packed[0] > 0
    res = results(tmp_path / "native")
    assert (res["resolution"], res["resolution_source"], res["resize"], res["timestep"]) == (64, "model",
                                                                                             "area_cubic", 399)
    assert infer(model_dir, tmp_path / "lq", tmp_path / "small", "infer.resolution=32",
                 "infer.reuse_cpu_memory=false", "infer.prepack_cpu_weights=false") == 0
    assert reuse == [1] and len(packed) == 1
    res = results(tmp_path / "small")
    assert (res["resolution"], res["resolution_source"]) == (32, "override")
    assert np.asarray(Image.open(res["files"][0]["output"])).shape == (80, 80, 3)
    vspbfr = build_vspbfr("tiny").save_pretrained(tmp_path / "vspbfr")
    assert infer(vspbfr, tmp_path / "lq", tmp_path / "v", "infer.resolution=64") == 2
    assert "restoration size 32" in capsys.readouterr().err
