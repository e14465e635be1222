"""Evaluation protocols (issue 16): the tables they describe, VQFR's PSNR / SSIM, the NTIRE score."""

from __future__ import annotations

import typing
from pathlib import Path

import cv2
import numpy as np
import pytest

from honestface.data.samples import load_sample
from honestface.metrics.protocols import GT, NOT_IMPLEMENTED, PROTOCOLS, get_protocol, ntire2026_score
from honestface.metrics.published_quality import VQFRPsnrSsim


def _photo_pair(tmp_path: Path, name: str, size=(96, 80)) -> tuple[Path, Path]:
    """A real photo (GT) and a blurred, darkened, noisy copy (restored), written as PNG files."""
    rgb = cv2.resize(load_sample(name), size, interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    bad = cv2.GaussianBlur(rgb.astype(np.float32), (5, 5), 1.2) * 0.8 + 10 + rng.normal(0, 4, rgb.shape)
    gt, restored = tmp_path / f"gt_{name}.png", tmp_path / f"restored_{name}.png"
    cv2.imwrite(str(gt), rgb[..., ::-1])
    cv2.imwrite(str(restored), np.clip(bad, 0, 255).round().astype(np.uint8)[..., ::-1])
    return restored, gt


def _vqfr_reference(restored: Path, gt: Path, passes: int = 2) -> tuple[float, float]:
    """VQFR calculate_psnr_ssim.py written out: cv2 read / 255, mean-var correction (twice), BasicSR PSNR and SSIM
    (cv2.filter2D with the 11x11 Gaussian, then [5:-5, 5:-5]) on the images times 255."""
    g = cv2.imread(str(gt), cv2.IMREAD_UNCHANGED).astype(np.float32) / 255.0
    r = cv2.imread(str(restored), cv2.IMREAD_UNCHANGED).astype(np.float32) / 255.0
    means, stds = [np.mean(g[:, :, j]) for j in range(3)], [np.std(g[:, :, j]) for j in range(3)]
    for j in range(3):
        for _ in range(passes):
            r[:, :, j] = r[:, :, j] - np.mean(r[:, :, j]) + means[j]
            r[:, :, j] = r[:, :, j] / np.std(r[:, :, j]) * stds[j]
    a, b = (r * 255).astype(np.float64), (g * 255).astype(np.float64)
    psnr = 20.0 * np.log10(255.0 / np.sqrt(np.mean((a - b) ** 2)))
    k = cv2.getGaussianKernel(11, 1.5)
    w = np.outer(k, k.transpose())
    ssims = []
    for c in range(3):
        x, y = a[..., c], b[..., c]
        f = lambda img: cv2.filter2D(img, -1, w)[5:-5, 5:-5]
        mx, my = f(x), f(y)
        vx, vy, cxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
        c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
        ssims.append((((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))).mean())
    return float(psnr), float(np.mean(ssims))


def test_vqfr_psnr_ssim_follow_the_published_script_on_real_photos(tmp_path):
    pairs = [_photo_pair(tmp_path, "astronaut"), _photo_pair(tmp_path, "grace_hopper", (64, 72))]
    values = VQFRPsnrSsim().pair_values([p[0] for p in pairs], [p[1] for p in pairs])
    for i, (r, g) in enumerate(pairs):
        psnr, ssim = _vqfr_reference(r, g)
        assert values["psnr_vqfr"][i] == pytest.approx(psnr, abs=1e-6)
        assert values["ssim_vqfr"][i] == pytest.approx(ssim, abs=1e-7)
        one_pass = _vqfr_reference(r, g, passes=1)  # the second correction pass is part of the script
        assert abs(one_pass[0] - psnr) > 1e-3
    # the correction removes the global darkening: far above the plain PSNR of the same files
    a = cv2.imread(str(pairs[0][0])).astype(np.float64)
    b = cv2.imread(str(pairs[0][1])).astype(np.float64)
    plain = 20 * np.log10(255 / np.sqrt(np.mean((a - b) ** 2)))
    assert values["psnr_vqfr"][0] > plain + 3
    assert VQFRPsnrSsim.aggregate(values["psnr_vqfr"], 2)["value"] == pytest.approx(values["psnr_vqfr"].mean())


def test_identical_files_keep_the_scripts_float32_rounding(tmp_path):
    """The script corrects even identical images in float32, so their PSNR is large but finite, as here."""
    _, g = _photo_pair(tmp_path, "astronaut")
    values = VQFRPsnrSsim().pair_values([g], [g])
    assert 100 < values["psnr_vqfr"][0] < np.inf
    assert values["psnr_vqfr"][0] == pytest.approx(_vqfr_reference(g, g)[0], rel=1e-9)
    assert values["ssim_vqfr"][0] == pytest.approx(1.0)


def test_every_protocol_column_is_a_metric_the_suite_knows():
    from honestface.metrics.suite import known_metrics

    known = set(known_metrics())
    for p in PROTOCOLS.values():
        assert len({c.key for c in p.columns}) == len(p.columns), p.name
        for c in p.columns:
            assert c.metric in known, (p.name, c.metric)
            if c.reference not in (None, GT) and c.metric not in NOT_IMPLEMENTED:
                from honestface.weights import get_entry

                get_entry(c.reference)  # FID references are registry entries


def test_config_protocol_choices_are_the_protocol_table():
    from honestface.config import EvalConfig

    hint = typing.get_type_hints(EvalConfig)["protocol"]
    literal = next(a for a in typing.get_args(hint) if a is not type(None))
    assert set(typing.get_args(literal)) == set(PROTOCOLS)


def test_osdface_protocol_is_table_1_in_order():
    p = get_protocol("osdface")
    assert [c.label for c in p.columns] == ["LPIPS", "DISTS", "MUSIQ", "NIQE", "Deg.", "LMD", "FID(FFHQ)", "FID(HQ)"]
    assert [c.metric for c in p.columns][:6] == ["lpips", "dists", "musiq", "niqe", "deg", "lmd"]
    assert [c.reference for c in p.set_columns] == ["fid_ffhq512_stats", GT]
    with pytest.raises(ValueError, match="unknown protocol"):
        get_protocol("osdfase")


def test_ntire2026_score_formula():
    vals = {"clipiqa": 0.7, "maniqa": 0.5, "musiq": 74.0, "niqe": 4.0, "qalign": 4.0,
            "fid_basicsr@fid_ffhq512_stats": 40.0}
    score, why = ntire2026_score(vals)
    assert why is None and score == pytest.approx(0.7 + 0.5 + 0.74 + 0.6 + 0.8 + 0.6)
    vals.update(niqe=12.0, **{"fid_basicsr@fid_ffhq512_stats": 130.0})  # the max(0, .) clamps
    assert ntire2026_score(vals)[0] == pytest.approx(0.7 + 0.5 + 0.74 + 0.8)
    score, why = ntire2026_score({**vals, "qalign": None})
    assert score is None and "qalign" in why


# ------------------------------------------------------------------------------- scripts/evaluate.py --protocol

@pytest.fixture(scope="module")
def osdface_weights(iqa_weights, tmp_path_factory) -> dict[str, str]:
    """Every weight OSDFace's table needs, random, in the registry formats: the IQA networks (conftest), VQFR's
    resnet_face18 (`module.` keys), facexlib's AWing FAN ({"state_dict": ...}) and BasicSR FFHQ-512 statistics."""
    import torch
    from facexlib.alignment.awing_arch import FAN

    from honestface.face.resnet_face import ResNetFace18

    d = tmp_path_factory.mktemp("osdface_weights")
    torch.manual_seed(1)
    files = {"deg_arcface_resnet18": d / "resnet18_110.pth", "awing_fan": d / "alignment_WFLW_4HG.pth",
             "fid_ffhq512_stats": d / "inception_FFHQ_512.pth"}
    torch.save({"module." + k: v for k, v in ResNetFace18().state_dict().items()}, files["deg_arcface_resnet18"])
    torch.save({"state_dict": FAN(num_modules=4, num_landmarks=98, device="cpu").state_dict()}, files["awing_fan"])
    torch.save({"mean": np.zeros(2048), "cov": np.eye(2048)}, files["fid_ffhq512_stats"])
    return {**iqa_weights, **{k: str(v) for k, v in files.items()}}


@pytest.fixture(scope="module")
def two_folders(tmp_path_factory) -> Path:
    """gt/ and restored/ with 4 real photos each (128 px; the restored ones blurred and noisy)."""
    root = tmp_path_factory.mktemp("protocol_folders")
    for sub in ("gt", "restored"):
        (root / sub).mkdir()
    rng = np.random.default_rng(0)
    for name in ("astronaut", "grace_hopper"):
        rgb = cv2.resize(load_sample(name), (128, 128), interpolation=cv2.INTER_AREA)
        for flip, img in (("", rgb), ("_flip", rgb[:, ::-1])):
            bad = cv2.GaussianBlur(img.astype(np.float32), (5, 5), 1.5) + rng.normal(0, 6, img.shape)
            cv2.imwrite(str(root / "gt" / f"{name}{flip}.png"), np.ascontiguousarray(img[..., ::-1]))
            cv2.imwrite(str(root / "restored" / f"{name}{flip}.png"),
                        np.clip(bad, 0, 255).round().astype(np.uint8)[..., ::-1])
    return root


def _evaluate(root: Path, weights: dict[str, str], out: str, *extra: str):
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    args = [sys.executable, "scripts/evaluate.py", "--restored", f"ours={root / 'restored'}", "--gt",
            str(root / "gt"), "--output", str(root / out), "--protocol", "osdface", *extra,
            *[f"weights.{k}={v}" for k, v in weights.items()]]
    return subprocess.run(args, cwd=repo, capture_output=True, text=True, timeout=900, check=False,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"})


@pytest.fixture(scope="module")
def osdface_run(two_folders, osdface_weights):
    proc = _evaluate(two_folders, osdface_weights, "eval", "--test-set", "celeba-test-daefr")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return two_folders / "eval", proc


def test_osdface_protocol_writes_table_1_in_order(osdface_run):
    import json

    out, proc = osdface_run
    table = (out / "table.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| Method"))
    cells = [c.strip() for c in header.strip("|").split("|")][1:]
    assert cells == ["LPIPS↓", "DISTS↓", "MUSIQ↑", "NIQE↓", "Deg.↓", "LMD↓", "FID(FFHQ)↓", "FID(HQ)↓"]
    assert "test set: celeba-test-daefr" in table
    ours = next(line for line in table.splitlines() if line.startswith("| ours |"))
    assert "–" not in ours  # every column computed
    published = next(line for line in table.splitlines() if line.startswith("| OSDFace (published"))
    assert "0.3365" in published and "45.41" in published
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_set"] == "celeba-test-daefr" and summary["protocol"]["name"] == "osdface"
    assert summary["warnings"] == [] and "warning: " not in proc.stderr and "UserWarning" not in proc.stderr
    assert summary["software"]["pyiqa"] and summary["software"]["torch"]
    impl = summary["implementations"]
    for metric in ("lpips", "dists", "musiq", "niqe", "deg", "lmd", "fid_basicsr"):
        assert impl[metric]["implementation"], metric
        for entry, rec in impl[metric]["weights"].items():
            assert len(rec["sha256"]) == 64 and Path(rec["path"]).is_file(), (metric, entry)
    from honestface.weights import file_sha256

    fan = Path(impl["lmd"]["weights"]["awing_fan"]["path"])
    assert impl["lmd"]["weights"]["awing_fan"]["sha256"] == file_sha256(fan)
    assert set(impl["deg"]["weights"]) == {"deg_arcface_resnet18"}
    assert set(impl["dists"]["weights"]) >= {"vgg16_imagenet", "dists_pyiqa"}
    ffhq = summary["fid_references"]["fid_basicsr@fid_ffhq512_stats"]
    assert ffhq["sha256"] == file_sha256(ffhq["path"]) and ffhq["metric"] == "fid_basicsr"
    assert summary["fid_references"]["fid_basicsr@gt"]["reference"] == "gt"
    deg = summary["methods"]["ours"]["metrics"]["deg"]
    assert deg["value"] == deg["published_aggregate"]["value"] and deg["published_aggregate"]["count"] <= 4


def test_protocol_without_test_set_warns_and_missing_weights_are_named(two_folders, osdface_weights, weights_home):
    """Only LPIPS's backbone given: the other columns are not computed and the table says why."""
    import json

    weights = {k: v for k, v in osdface_weights.items() if k in ("alexnet_imagenet",)}
    proc = _evaluate(two_folders, weights, "eval_nolabel", "--metrics", "psnr")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "warning: no test-set label given (--test-set)" in proc.stderr
    summary = json.loads((two_folders / "eval_nolabel" / "summary.json").read_text())
    assert summary["test_set"] is None and any("--test-set" in w for w in summary["warnings"])
    table = (two_folders / "eval_nolabel" / "table.md").read_text()
    assert "test set: not given" in table and "not computed" in table  # missing weights: columns say why
