"""Data preparation: align raw photos (CLI and function), make a fixed test set, split identities."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from honestface.data.prepare import ALIGN_RECORDS, align_folder, make_testset, split_identity_folders
from honestface.data.samples import astronaut, group_t1
from honestface.data.sidecar import read_sidecar
from honestface.face import template
from honestface.io import read_image, write_image

REPO = Path(__file__).resolve().parents[1]
SIZE = 128


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "scripts/prepare_data.py", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=env, check=False)


def snapshot(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    write_image(root / "t1.jpg", group_t1(), quality=95)
    write_image(root / "astronaut.png", astronaut())
    write_image(root / "no-face.png", np.full((160, 200, 3), 0.5, np.float32))
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(200))  # a JPEG header, then nothing
    return root


@pytest.fixture(scope="module")
def aligned(photos, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("aligned") / "faces"
    return out, run_cli("align", str(photos), str(out), "--size", str(SIZE))


def test_align_cli_writes_crops_and_sidecars(photos, aligned):
    out, run = aligned
    assert run.returncode == 0, run.stderr[-2000:]
    assert "4 new photos, 0 skipped, 7 faces written, 1 without a face, 1 failed" in run.stdout
    assert "no face: no-face.png" in run.stdout and "failed: corrupt.jpg" in run.stdout
    assert "warning" in run.stderr and "corrupt.jpg" in run.stderr
    crops = sorted(p.name for p in out.glob("*.png"))
    assert crops == ["astronaut_0.png"] + [f"t1_{i}.png" for i in range(6)]
    t1_shape = group_t1().shape
    for name in crops:
        crop = read_image(out / name)
        assert crop.shape == (SIZE, SIZE, 3)
        meta = read_sidecar(out / name)
        assert meta["scheme"] == "dlib68" and meta["size"] == [SIZE, SIZE] and meta["template"] == "ffhq"
        assert meta["source"] == name.rsplit("_", 1)[0] + (".jpg" if name.startswith("t1") else ".png")
        assert meta["landmarks"].shape == (68, 2)
        assert meta["landmarks"].min() > 0 and meta["landmarks"].max() < SIZE
        # Similarity fit of the 5 points onto the FFHQ template: centroids agree exactly, points within 10 %.
        target = template("ffhq", SIZE)
        np.testing.assert_allclose(meta["points5"].mean(0), target.mean(0), atol=0.5)
        assert np.abs(meta["points5"] - target).max() < SIZE / 10
        assert meta["matrix"].shape == (2, 3)
        x0, y0, x1, y1 = meta["box"]
        if name.startswith("t1"):
            assert 0 <= x0 < x1 <= t1_shape[1] + 1 and 0 <= y0 < y1 <= t1_shape[0] + 1
        centre = meta["matrix"] @ np.array([(x0 + x1) / 2, (y0 + y1) / 2, 1.0])  # box centre in the crop
        assert np.abs(centre - SIZE / 2).max() < SIZE / 4
    # Six different people: the six crops are different faces.
    boxes = {tuple(np.round(read_sidecar(out / f"t1_{i}.png")["box"])) for i in range(6)}
    assert len(boxes) == 6


def test_align_again_does_no_work(photos, aligned):
    out, run = aligned
    assert run.returncode == 0
    before = snapshot(out)
    report = align_folder(photos, out, size=SIZE)
    assert (report.new, report.skipped, report.skipped_failed, report.faces) == (0, 4, 1, 0)
    assert report.summary().startswith("0 new photos, 4 skipped")
    assert snapshot(out) == before  # nothing written, not even the record file


def test_align_refuses_other_settings_and_unsafe_folders(photos, aligned, tmp_path):
    out, _ = aligned
    with pytest.raises(ValueError, match="size: 128 there, 256 now"):
        align_folder(photos, out, size=256)
    with pytest.raises(ValueError, match="must not be the input folder"):
        align_folder(photos, photos / "aligned")
    with pytest.raises(ValueError, match="must not be the input folder"):
        align_folder(photos, photos.parent)  # the output would contain the input
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        align_folder(photos, tmp_path / "foreign")
    with pytest.raises(ValueError, match="folder of the input photo"):
        align_folder(photos / "astronaut.png", photos)
    with pytest.raises(ValueError, match="no images"):
        align_folder(tmp_path / "foreign", tmp_path / "empty_out")


def test_align_missing_detector_weights_leave_nothing_behind(photos, tmp_path, weights_home):
    from honestface.weights import MissingWeightError

    with pytest.raises(MissingWeightError, match="retinaface"):
        align_folder(photos / "astronaut.png", tmp_path / "out", detector="retinaface")
    assert not (tmp_path / "out").exists()  # so another detector may use this folder


def test_align_resumes_an_interrupted_run_and_retries_a_fixed_photo(photos, aligned, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    shutil.copytree(photos, src)
    shutil.copytree(aligned[0], out)
    (out / "t1_3.png").unlink()  # as if the run had stopped while writing t1's crops
    write_image(src / "corrupt.jpg", np.full((120, 100, 3), 0.3, np.float32), overwrite=True)  # the user fixed it
    keep = snapshot(out)
    report = align_folder(src, out, size=SIZE)
    assert (report.new, report.skipped, report.faces) == (2, 2, 6)
    assert report.no_face == ["corrupt.jpg"] and not report.failed
    assert (out / "t1_3.png").is_file()
    after = snapshot(out)
    assert after["astronaut_0.png"] == keep["astronaut_0.png"]  # other photos untouched
    records = [json.loads(line) for line in (out / ALIGN_RECORDS).read_text().splitlines()]
    assert records[-1]["source"] == "t1.jpg" and len(records[-1]["outputs"]) == 12


def test_align_single_file_one_face_keeps_structure(photos, tmp_path):
    src = tmp_path / "in" / "people"
    src.mkdir(parents=True)
    shutil.copy(photos / "astronaut.png", src / "eileen.png")
    report = align_folder(src / "eileen.png", tmp_path / "single", size=64, rule="largest", landmarks=None)
    assert report.faces == 1 and (tmp_path / "single" / "eileen.png").is_file()
    meta = read_sidecar(tmp_path / "single" / "eileen.png")
    assert "landmarks" not in meta and meta["points5"].shape == (5, 2) and meta["source"] == "eileen.png"
    report = align_folder(tmp_path / "in", tmp_path / "nested", size=64, rule="score", keep_structure=True)
    assert report.faces == 1 and (tmp_path / "nested" / "people" / "eileen.png").is_file()
    assert read_sidecar(tmp_path / "nested" / "people" / "eileen.png")["source"] == "people/eileen.png"
    shutil.copytree(src, tmp_path / "in" / "more")  # a second people/eileen.png: same stem, other folder
    report = align_folder(tmp_path / "in", tmp_path / "flat", size=64, rule="largest", landmarks=None)
    assert sorted(p.name for p in (tmp_path / "flat").glob("*.png")) == ["more__eileen.png", "people__eileen.png"]


def test_cli_help_for_every_command():
    for command in ("align", "make-testset", "split-identities"):
        run = run_cli(command, "--help")
        assert run.returncode == 0 and f"prepare_data.py {command}" in run.stdout
    assert "--keep-structure" in run_cli("align", "--help").stdout


# ----------------------------------------------------------------------------------------------------------------
# make-testset
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hq_folder(tmp_path_factory) -> Path:
    import cv2

    root = tmp_path_factory.mktemp("hq")
    face = cv2.resize(astronaut()[20:240, 120:340], (96, 96), interpolation=cv2.INTER_AREA)  # (96, 96, 3)
    for i in range(3):
        write_image(root / f"{i}.png", np.ascontiguousarray(np.roll(face, 9 * i, axis=1)))
    write_image(root / "sub" / "x.jpg", np.ascontiguousarray(face[:, ::-1]))
    return root


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def test_make_testset_is_reproducible_with_a_full_manifest(hq_folder, tmp_path):
    from honestface.data.degradation_presets import preset_params, sample_seed

    a = make_testset(hq_folder, tmp_path / "a", seed=3, size=64, batch_size=3)
    run = run_cli("make-testset", str(hq_folder), str(tmp_path / "b"), "--seed", "3", "--size", "64",
                  "--batch-size", "2", "-q")
    assert run.returncode == 0, run.stderr[-2000:]
    names = ["0.png", "1.png", "2.png", "sub/x.png"]
    assert sorted(files_of(a / "lq")) == names and files_of(a / "lq") == files_of(tmp_path / "b" / "lq")
    assert files_of(a / "hq") == files_of(tmp_path / "b" / "hq")
    hq, lq = read_image(a / "hq" / "0.png"), read_image(a / "lq" / "0.png")
    assert hq.shape == lq.shape == (64, 64, 3) and np.abs(hq - lq).mean() > 0.005

    manifest = json.loads((a / "manifest.json").read_text())
    assert (manifest["preset"], manifest["seed"], manifest["size"], manifest["overrides"]) == ("daefr", 3, 64, {})
    assert manifest["count"] == 4 and manifest["version"]
    assert [e["path"] for e in manifest["images"]] == names and manifest["images"][3]["source"] == "sub/x.jpg"
    assert [e["seed"] for e in manifest["images"]] == [sample_seed(3, i) for i in range(4)]
    ranges = preset_params("daefr")
    for entry in manifest["images"]:
        p = entry["params"]
        assert all(isinstance(v, (int, float)) for v in p.values())  # plain numbers (bools are ints)
        assert p["kernel_size"] in (39, 41)
        assert ranges["blur_sigma"][0] <= p["sigma_x"] <= ranges["blur_sigma"][1]
        assert ranges["downsample"][0] <= p["scale"] <= ranges["downsample"][1]
        assert ranges["noise"][0] <= p["noise_sigma"] <= ranges["noise"][1]
        assert ranges["jpeg"][0] <= p["jpeg_quality"] <= ranges["jpeg"][1]
    assert len({e["params"]["sigma_x"] for e in manifest["images"]}) == 4  # one draw per image

    before = snapshot(a)
    assert make_testset(hq_folder, a, seed=3, size=64) == a and snapshot(a) == before  # done: no work
    with pytest.raises(ValueError, match="seed: 3 there, 4 now"):
        make_testset(hq_folder, a, seed=4, size=64)
    with pytest.raises(ValueError, match="overrides"):
        make_testset(hq_folder, a, seed=3, size=64, overrides={"jpeg": [70, 75]})
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "x.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        make_testset(hq_folder, tmp_path / "foreign", size=64)
    with pytest.raises(ValueError, match="must not be the HQ folder"):
        make_testset(hq_folder, hq_folder / "out", size=64)


def test_make_testset_resumes_after_an_interruption(hq_folder, tmp_path, monkeypatch):
    from honestface.data import prepare

    ref = make_testset(hq_folder, tmp_path / "ref", seed=1, size=64, overrides={"jpeg": [70, 75]})
    calls = {"n": 0}
    real_write = prepare.write_image

    def failing_write(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # dies while writing the second pair
            raise KeyboardInterrupt
        return real_write(*args, **kwargs)

    monkeypatch.setattr(prepare, "write_image", failing_write)
    with pytest.raises(KeyboardInterrupt):
        make_testset(hq_folder, tmp_path / "out", seed=1, size=64, overrides={"jpeg": [70, 75]}, batch_size=1)
    monkeypatch.setattr(prepare, "write_image", real_write)
    out = tmp_path / "out"
    assert not (out / "manifest.json").exists() and (out / prepare.TESTSET_PROGRESS).is_file()
    first = (out / "lq" / "0.png").stat().st_mtime_ns
    make_testset(hq_folder, out, seed=1, size=64, overrides={"jpeg": [70, 75]}, batch_size=1)
    assert (out / "lq" / "0.png").stat().st_mtime_ns == first  # the finished pair was not redone
    assert files_of(out) == files_of(ref) and not (out / prepare.TESTSET_PROGRESS).exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == json.loads((ref / "manifest.json").read_text())
    assert all(70 <= e["params"]["jpeg_quality"] <= 75 for e in manifest["images"])


def test_make_testset_rejects_non_square_faces(tmp_path):
    write_image(tmp_path / "hq" / "wide.png", np.zeros((40, 60, 3), np.uint8))
    with pytest.raises(ValueError, match="wide.png.*square"):
        make_testset(tmp_path / "hq", tmp_path / "out", size=32)


# ----------------------------------------------------------------------------------------------------------------
# split-identities
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture
def identities(tmp_path) -> Path:
    root = tmp_path / "people"
    tiny = np.zeros((8, 8, 3), np.uint8)
    for i in range(20):
        write_image(root / f"person_{i:02d}" / "0.png", tiny)
    (root / "empty").mkdir()
    write_image(root / ".hidden" / "0.png", tiny)
    return root


def test_split_identities_disjoint_deterministic_and_safe(identities, tmp_path):
    out = tmp_path / "splits"
    train, test = split_identity_folders(identities, out, test_fraction=0.2, seed=0)
    assert len(test) == 4 and len(train) == 16 and not set(train) & set(test)
    assert set(train) | set(test) == {f"person_{i:02d}" for i in range(20)}  # no empty or hidden folder
    lines = lambda name: [s for s in (out / name).read_text().splitlines() if not s.startswith("#")]
    assert lines("train.txt") == train and lines("test.txt") == test
    before = snapshot(out)
    assert split_identity_folders(identities, out, test_fraction=0.2, seed=0) == (train, test)
    assert snapshot(out) == before  # same split: files left alone
    other = next(s for s in range(1, 50) if split_identity_folders(identities, tmp_path / f"s{s}", 0.2, s)[1] != test)
    with pytest.raises(FileExistsError, match="train.txt|test.txt"):
        split_identity_folders(identities, out, test_fraction=0.2, seed=other)
    assert snapshot(out) == before
    _, test2 = split_identity_folders(identities, out, test_fraction=0.2, seed=other, overwrite=True)
    assert lines("test.txt") == test2 != test
