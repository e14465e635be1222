"""scripts/infer.py output names (issue 20): one output per input whatever the names look like, the same names on
every run, renamed inputs listed in results.json, and nothing already in the output folder replaced silently."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from honestface.apps.infer import RESULTS_FILE, run_inference
from honestface.apps.infer_plan import plan_outputs
from honestface.config import load_config
from honestface.data import samples
from honestface.io import write_image

# inputs whose natural output names clash: by extension (a.jpg / a.png), with another input's renamed name
# (a_jpg.png), by case only (A.PNG), a stem with a dot (x.b.*), an output named like a folder (b.jpg -> b.png vs
# b.png/), and an output named like another input's comparison (k_comparison.png)
TRICKY = ["a.jpg", "a.png", "a_jpg.png", "A.PNG", "x.b.jpg", "x.b.png", "sub/c.png", "sub/C.jpg", "sub.png",
          "b.png/c.png", "b.jpg", "k.png", "k_comparison.png", "deep/er/k.png"]


def _face(size: int = 40) -> np.ndarray:
    img = samples.load_sample("astronaut")
    c = min(img.shape[:2])
    return np.asarray(Image.fromarray(img[:c, :c]).resize((size, size), Image.BICUBIC))


def _infer(model: Path, inp: Path, out: Path, *extra: str) -> int:
    cfg = load_config(None, [f"model.pretrained={model}", f"infer.input={inp}", f"infer.output={out}", *extra])
    return run_inference(cfg)


@pytest.mark.parametrize("comparison", [False, True])
def test_every_input_gets_its_own_name_in_any_listing_order(comparison: bool) -> None:
    base, out = Path("/data/lq"), Path("/data/out")
    plan = plan_outputs([base / r for r in TRICKY], base, out, comparison)
    names = [p for _, o, c in plan for p in (o, c) if p is not None]
    keys = [p.relative_to(out).as_posix().casefold() for p in names]
    assert len(set(keys)) == len(keys)  # unique, also on a case-insensitive disk
    folders = {q.as_posix().casefold() for p in names for q in p.relative_to(out).parents}
    assert not folders & set(keys)  # no output is named like an output folder
    mapping = {rel: (o, c) for rel, o, c in plan}
    assert mapping["a_jpg.png"][0] == out / "a_jpg.png"  # an input keeps its natural name when it is unique
    assert mapping["k.png"][0] == out / "k.png" and mapping["deep/er/k.png"][0] == out / "deep/er/k.png"
    assert {mapping["sub/c.png"][0], mapping["sub/C.jpg"][0]} == {out / "sub/c_png.png", out / "sub/C_jpg.png"}
    assert mapping["x.b.jpg"][0] == out / "x.b_jpg.png"
    rng = random.Random(0)
    for _ in range(5):
        shuffled = TRICKY[:]
        rng.shuffle(shuffled)
        again = plan_outputs([base / r for r in shuffled], base, out, comparison)
        assert {rel: (o, c) for rel, o, c in again} == mapping


def test_clashing_inputs_get_distinct_outputs_listed_in_results(tiny_honestface_dir: Path, tmp_path: Path) -> None:
    lq, out = tmp_path / "lq", tmp_path / "out"
    for rel in ("a.jpg", "a.png", "a_jpg.png", "b.png"):
        write_image(lq / rel, _face())
    seen: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())
    logging.getLogger("honestface.apps").addHandler(handler)
    try:
        assert _infer(tiny_honestface_dir, lq, out) == 0
    finally:
        logging.getLogger("honestface.apps").removeHandler(handler)
    assert any("renamed: a.jpg -> a_jpg_2.png, a.png -> a_png.png" in m for m in seen), seen  # the user is told
    res = json.loads((out / RESULTS_FILE).read_text())
    by_rel = {f["relpath"]: f for f in res["files"]}
    assert res["counts"]["ok"] == 4
    assert len({f["output"] for f in res["files"]}) == 4 and all(Path(f["output"]).is_file() for f in res["files"])
    assert res["renamed"] == {"a.jpg": str(out / "a_jpg_2.png"), "a.png": str(out / "a_png.png")}
    assert by_rel["a_jpg.png"]["output"] == str(out / "a_jpg.png") and not by_rel["a_jpg.png"]["renamed"]
    assert by_rel["a.jpg"]["renamed"] and not by_rel["b.png"]["renamed"]
    assert sorted(p.name for p in out.glob("*.png")) == ["a_jpg.png", "a_jpg_2.png", "a_png.png", "b.png"]
    assert _infer(tiny_honestface_dir, lq, out, "infer.skip_existing=true") == 0  # a rerun finds the same names
    again = json.loads((out / RESULTS_FILE).read_text())
    assert [f["status"] for f in again["files"]] == ["skipped"] * 4 and again["renamed"] == res["renamed"]


def test_a_results_file_not_ours_is_never_replaced(tiny_honestface_dir: Path, tmp_path: Path, capsys) -> None:
    lq, out, other = tmp_path / "lq", tmp_path / "out", tmp_path / "other"
    write_image(lq / "a.png", _face())
    write_image(other / "z.png", _face())
    out.mkdir()
    mine = '{"experiment": "my notes"}\n'
    (out / RESULTS_FILE).write_text(mine)
    assert _infer(tiny_honestface_dir, lq, out) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(out / RESULTS_FILE) in err and "--overwrite" in err
    assert (out / RESULTS_FILE).read_text() == mine and sorted(p.name for p in out.iterdir()) == [RESULTS_FILE]
    assert _infer(tiny_honestface_dir, lq, out, "infer.overwrite=true") == 0  # asked for: replaced
    assert json.loads((out / RESULTS_FILE).read_text())["counts"]["ok"] == 1
    # a results.json of this command for another input is another run's record: kept too
    record = (out / RESULTS_FILE).read_text()
    assert _infer(tiny_honestface_dir, other, out) == 2
    err = capsys.readouterr().err.strip()
    assert "another input" in err and str(lq) in err and "--overwrite" in err
    assert (out / RESULTS_FILE).read_text() == record and not (out / "z.png").exists()
    # the same input again (a resume) may replace its own record
    assert _infer(tiny_honestface_dir, lq, out, "infer.skip_existing=true") == 0
