"""honestface.metrics.iqa gives exactly what pyiqa 0.1.16's metrics of the same name give (default settings), and
psnr_y / ssim_y / fid_basicsr what BasicSR's scripts give.

Real photos (skimage's astronaut, matplotlib's grace_hopper) at 256x256 and at a non-square 176x232, degraded with
blur + noise + JPEG. Network metrics run over RANDOM weights written to tmp files in the registry formats and
passed to us as explicit `weights={key: path}`; pyiqa gets the same files by finding them in its download cache
(torch hub dir and pyiqa's cache dir point into tmp), with every download function replaced by one that fails, so
nothing touches the network. pyiqa's wheel does not ship NIQE's `niqe_modelparameters.mat` (nor any weight file),
so NIQE runs on a synthetic pristine model written in the same MATLAB format.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from honestface.data import samples

pyiqa = pytest.importorskip("pyiqa")
TOL = 1e-4


def _degrade(img: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = cv2.GaussianBlur(img, (0, 0), 1.3).astype(np.float64) + rng.normal(0, 7, img.shape)
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    _, enc = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 45])
    return np.ascontiguousarray(cv2.imdecode(enc, cv2.IMREAD_COLOR)[..., ::-1])


def _t(imgs: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255  # (B, 3, H, W) float32 in [0, 1]


@pytest.fixture(scope="module")
def photos() -> dict[str, tuple[torch.Tensor, torch.Tensor, list[np.ndarray], list[np.ndarray]]]:
    """{size: (restored, gt, restored uint8 list, gt uint8 list)} for 256x256 and 176x232 (H x W)."""
    from skimage import data

    faces = [data.astronaut()[:400, 60:460], samples.grace_hopper()[:480, 20:500]]
    out = {}
    for key, (h, w) in {"square": (256, 256), "tall": (232, 176)}.items():
        gts = [cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in faces]
        lqs = [_degrade(g, i) for i, g in enumerate(gts)]
        out[key] = (_t(lqs), _t(gts), lqs, gts)
    return out


# ------------------------------------------------------------------------------------------ PSNR / SSIM


@pytest.mark.parametrize("size", ["square", "tall"])
def test_psnr_ssim_equal_pyiqa_per_image(photos, size):
    from honestface.metrics.iqa import IQAMetrics

    x, y, _, _ = photos[size]
    ours = IQAMetrics(["psnr", "ssim", "ssim_rgb"], batch_size=8)(x, y)
    for name, ref_name in (("psnr", "psnr"), ("ssim", "ssim"), ("ssim_rgb", "ssimc")):
        ref_metric = pyiqa.create_metric(ref_name, device="cpu")
        ref = torch.cat([ref_metric(x[i : i + 1], y[i : i + 1]).flatten() for i in range(len(x))])
        assert torch.allclose(ours[name], ref.float(), atol=TOL, rtol=0), (name, ours[name], ref)
    # the luma SSIM is pyiqa's (0.7-0.9 here), not the RGB average of the past
    assert (ours["ssim"] - ours["ssim_rgb"]).abs().min() > 1e-3
    same = IQAMetrics(["psnr", "ssim", "psnr_y", "ssim_y"])(y, y)
    assert torch.allclose(same["psnr"], torch.full((2,), 80.0)) and torch.allclose(same["ssim"], torch.ones(2))
    assert torch.isinf(same["psnr_y"]).all() and torch.allclose(same["ssim_y"], torch.ones(2))


def _basicsr_y(img_u8_rgb: np.ndarray) -> np.ndarray:
    """BasicSR to_y_channel on a [0, 255] image, written out: float32 / 255, bgr2ycbcr(y_only), * 255."""
    bgr = img_u8_rgb[..., ::-1].astype(np.float32) / 255.0
    y = (np.dot(bgr, [24.966, 128.553, 65.481]) + 16.0) / 255.0
    return y.astype(np.float32)[..., None] * 255.0


def _basicsr_psnr_ssim(out: np.ndarray, gt: np.ndarray, crop: int) -> tuple[float, float]:
    """BasicSR calculate_psnr / calculate_ssim (test_y_channel=True), written from basicsr/metrics/psnr_ssim.py."""
    if crop:
        out, gt = out[crop:-crop, crop:-crop], gt[crop:-crop, crop:-crop]
    a, b = _basicsr_y(out).astype(np.float64)[..., 0], _basicsr_y(gt).astype(np.float64)[..., 0]
    mse = np.mean((a - b) ** 2)
    psnr = float("inf") if mse == 0 else 10 * np.log10(255.0 * 255.0 / mse)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    k = cv2.getGaussianKernel(11, 1.5)
    win = np.outer(k, k.transpose())

    def f(img):
        return cv2.filter2D(img, -1, win)[5:-5, 5:-5]

    mu1, mu2 = f(a), f(b)
    s1, s2, s12 = f(a**2) - mu1**2, f(b**2) - mu2**2, f(a * b) - mu1 * mu2
    smap = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s1 + s2 + c2))
    return psnr, float(smap.mean())


@pytest.mark.parametrize("crop", [0, 4])
@pytest.mark.parametrize("size", ["square", "tall"])
def test_psnr_y_ssim_y_equal_basicsr(photos, size, crop):
    from honestface.metrics.iqa import IQAMetrics

    x, y, lqs, gts = photos[size]
    ours = IQAMetrics(["psnr_y", "ssim_y"], crop_border=crop)(x, y)
    for i in range(len(lqs)):
        ref_psnr, ref_ssim = _basicsr_psnr_ssim(lqs[i], gts[i], crop)
        assert ours["psnr_y"][i].item() == pytest.approx(ref_psnr, abs=TOL)
        assert ours["ssim_y"][i].item() == pytest.approx(ref_ssim, abs=TOL)
    if crop:  # the crop changes the value (the borders of a JPEG'd image differ from its centre)
        plain = IQAMetrics(["psnr_y"])(x, y)["psnr_y"]
        assert (plain - ours["psnr_y"]).abs().min() > 1e-3
    with pytest.raises(ValueError, match="crop_border"):
        IQAMetrics(["psnr_y"], crop_border=-1)


# ------------------------------------------------------------------------------------------ network metrics


@pytest.fixture(scope="module")
def random_weights(iqa_weights) -> dict[str, str]:
    """Random weight files in the registry formats (tests/conftest.py): {registry key: path}."""
    return iqa_weights


@contextlib.contextmanager
def offline_pyiqa(weights: dict[str, str], cache: Path):
    """pyiqa / torchvision find `weights` in their download caches under `cache`; any download raises."""
    import lpips
    import pyiqa.utils.download_util as dl
    import timm
    from pyiqa.archs import clip_model, clipiqa_arch

    hub, pyiqa_dir = cache / "hub", cache / "hub" / "pyiqa"
    (hub / "checkpoints").mkdir(parents=True, exist_ok=True)
    pyiqa_dir.mkdir(parents=True, exist_ok=True)
    names = {"vgg16_imagenet": hub / "checkpoints" / "vgg16-397923af.pth",
             "alexnet_imagenet": hub / "checkpoints" / "alexnet-owt-7be5be79.pth",
             "dists_pyiqa": pyiqa_dir / "DISTS_weights-f5e65c96.pth",
             "musiq_koniq": pyiqa_dir / "musiq_koniq_ckpt-e95806b9.pth",
             "maniqa_koniq": pyiqa_dir / "ckpt_koniq10k.pt",
             "niqe_params": pyiqa_dir / "niqe_modelparameters.mat",
             "fid_inception": pyiqa_dir / "pt_inception-2015-12-05-6726825d.pth"}
    for key, target in names.items():
        shutil.copyfile(weights[key], target)
    heads = Path(lpips.__file__).parent / "weights" / "v0.1"
    shutil.copyfile(heads / "alex.pth", pyiqa_dir / "LPIPS_v0.1_alex-df73285e.pth")
    shutil.copyfile(heads / "vgg.pth", pyiqa_dir / "LPIPS_v0.1_vgg-a78928a0.pth")

    def no_download(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args[:1]}")

    create = timm.create_model
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.hub, "_hub_dir", str(hub))
        mp.setattr(torch.hub, "download_url_to_file", no_download)
        mp.setattr(dl, "DEFAULT_CACHE_DIR", str(pyiqa_dir))
        mp.setattr(dl, "download_url_to_file", no_download)
        mp.setattr(timm, "create_model", lambda *a, **k: create(*a, **{**k, "pretrained": False}))  # MANIQA's ViT
        mp.setattr(clipiqa_arch, "load", lambda name, device: clip_model.load(weights["clip_rn50_openai"], device))
        yield


@pytest.fixture(scope="module")
def pyiqa_cache(random_weights, tmp_path_factory):
    with offline_pyiqa(random_weights, tmp_path_factory.mktemp("cache")):
        yield


def _pyiqa_per_image(name: str, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    metric = pyiqa.create_metric(name, device="cpu")
    vals = [metric(x[i : i + 1]) if y is None else metric(x[i : i + 1], y[i : i + 1]) for i in range(len(x))]
    return torch.stack([v.flatten()[0] for v in vals]).float()


@pytest.mark.parametrize("ours, theirs", [("lpips", "lpips"), ("lpips_vgg", "lpips-vgg"), ("dists", "dists")])
def test_full_reference_networks_equal_pyiqa(photos, random_weights, pyiqa_cache, ours, theirs):
    from honestface.metrics.iqa import IQAMetrics

    metric = IQAMetrics([ours], weights=random_weights, batch_size=4)
    for size in ("square", "tall"):
        x, y, _, _ = photos[size]
        got, ref = metric(x, y)[ours], _pyiqa_per_image(theirs, x, y)
        assert torch.allclose(got, ref, atol=TOL, rtol=0), (size, got, ref)
        assert got.min() > 1e-3  # a real distance, not 0


def test_lpips_heads_are_pyiqa_files():
    """pyiqa downloads LPIPS_v0.1_<net>-<sha256 prefix>.pth; the lpips wheel's bundled heads have that sha256."""
    from pyiqa.archs.lpips_arch import default_model_urls

    from honestface.metrics.iqa_networks import lpips_heads_file
    from honestface.weights import file_sha256

    for net in ("alex", "vgg"):
        prefix = default_model_urls[f"0.1_{net}"].rsplit("-", 1)[1].removesuffix(".pth")
        assert file_sha256(lpips_heads_file(net)).startswith(prefix)


@pytest.mark.parametrize("name", ["niqe", "musiq", "clipiqa"])
def test_no_reference_networks_equal_pyiqa(photos, random_weights, pyiqa_cache, name):
    from honestface.metrics.iqa import IQAMetrics

    metric = IQAMetrics([name], weights=random_weights, batch_size=4)
    for size in ("square", "tall"):
        x = photos[size][0]
        got, ref = metric(x)[name], _pyiqa_per_image(name, x, None)
        assert got.shape == (2,) and torch.isfinite(got).all()
        assert torch.allclose(got, ref, atol=TOL, rtol=0), (size, got, ref)


@pytest.mark.parametrize("crops", [1, pytest.param(None, marks=pytest.mark.slow)])
def test_maniqa_equal_pyiqa(photos, random_weights, pyiqa_cache, crops):
    """MANIQA runs a ViT-B/8 on 20 crops per image (~3 min for this pair on 2 CPU cores): the fast variant sets
    both models to 1 crop (same weights and code path), the slow one keeps pyiqa's default."""
    from honestface.metrics.iqa import IQAMetrics

    x = photos["tall"][0][:1]
    ours = IQAMetrics(["maniqa"], weights=random_weights)
    theirs = pyiqa.create_metric("maniqa", device="cpu")
    assert ours.nets["maniqa"].net.test_sample == theirs.net.test_sample == 20
    if crops:
        ours.nets["maniqa"].net.test_sample = theirs.net.test_sample = crops
    got = ours(x)["maniqa"]
    assert torch.allclose(got, theirs(x).flatten().float(), atol=TOL, rtol=0)


# ------------------------------------------------------------------------------------------ FID


@pytest.fixture(scope="module")
def fid_folders(photos, tmp_path_factory) -> tuple[Path, Path]:
    """Two folders of 3 JPEG / PNG files each (non-square, different sizes across folders)."""
    root = tmp_path_factory.mktemp("fid")
    (root / "a").mkdir()
    (root / "b").mkdir()
    for size in ("square", "tall"):
        _, _, lqs, gts = photos[size]
        for i, (lq, gt) in enumerate(zip(lqs, gts)):
            cv2.imwrite(str(root / "a" / f"{size}{i}.jpg"), lq[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
            cv2.imwrite(str(root / "b" / f"{size}{i}.png"), gt[..., ::-1])
    return root / "a", root / "b"


def test_fid_features_equal_pyiqa_clean_and_basicsr(fid_folders, random_weights, pyiqa_cache):
    """Inception features of `fid` = pyiqa's clean-mode folder features; of `fid_basicsr` = BasicSR's steps."""
    from pyiqa.archs.fid_arch import get_folder_features
    from pyiqa.archs.inception import InceptionV3

    from honestface.metrics.fid import build_fid_inception, folder_features

    ours_net = build_fid_inception(random_weights["fid_inception"])
    theirs = InceptionV3(output_blocks=[3]).eval()
    a = fid_folders[0]
    ref = get_folder_features(str(a), theirs, num_workers=0, batch_size=3, device="cpu", mode="clean", verbose=False)
    got = folder_features(ours_net, a, mode="clean", batch_size=4)
    assert got.shape == ref.shape == (4, 2048) and 0.1 < np.abs(ref).max() < 1e3
    assert np.abs(got - ref).max() < TOL
    # BasicSR: sorted files of the folder, cv2 decode, /255, RGB, (x - 0.5) / 0.5, bilinear resize inside the net
    files = sorted(p for p in a.iterdir() if not p.name.startswith("."))
    batch = []
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_COLOR).astype(np.float32) / 255.0
        batch.append((torch.from_numpy(img[..., ::-1].transpose(2, 0, 1).copy()) - 0.5) / 0.5)
    with torch.no_grad():
        ref_b = np.concatenate([theirs(t[None], resize_input=True)[0].reshape(1, -1).numpy() for t in batch])
    got_b = folder_features(ours_net, a, mode="basicsr", batch_size=4)
    assert np.abs(got_b - ref_b).max() < TOL
    assert np.abs(got_b - got).max() > 1e-3  # the two resize conventions do differ


@pytest.mark.slow
def test_fid_equals_pyiqa_fid(fid_folders, random_weights, pyiqa_cache, tmp_path):
    """Full FID values (two 2048x2048 matrix square roots, ~1 min on CPU)."""
    from honestface.metrics.fid import build_fid_inception, feature_statistics, folder_features, frechet_distance
    from honestface.metrics.iqa import IQAMetrics

    a, b = fid_folders
    metric = IQAMetrics(["fid", "fid_basicsr"], weights=random_weights)
    ref = pyiqa.create_metric("fid", device="cpu")(str(a), str(b), num_workers=0, verbose=False)
    assert metric.fid(a, b) == pytest.approx(float(ref), abs=TOL * max(1.0, abs(float(ref))))
    net = build_fid_inception(random_weights["fid_inception"])
    mu, cov = feature_statistics(folder_features(net, b, mode="basicsr"))
    torch.save({"name": "b", "size": 256, "mean": mu, "cov": cov}, tmp_path / "stats.pth")  # BasicSR layout
    assert metric.fid(a, tmp_path / "stats.pth", name="fid_basicsr") == pytest.approx(
        metric.fid(a, b, name="fid_basicsr"), rel=1e-6)
    assert frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-3)
