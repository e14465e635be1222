"""Synthetic degradation: preset ranges, seeding, batch independence, and agreement with Pillow / OpenCV."""

from __future__ import annotations

import io
import math

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from honestface.data.degradation import (
    PRESETS,
    Degradation,
    blur,
    jpeg_compress,
    make_kernels,
    preset_params,
    rgb_to_gray,
    sample_seed,
    sinc_kernels,
)

BF16_MEAN_ABS = 0.004  # mean |bf16 - fp32| of the LQ image in [0, 1]: measured 0.0008; bf16 spacing at 0.5 is 0.004


def _crops(size: int, n: int = 4) -> torch.Tensor:
    """Natural images: astronaut and camera crops, (n, 3, size, size) float32 in [0, 1]."""
    astro = data.astronaut().astype(np.float32) / 255
    cam = np.repeat(data.camera()[..., None], 3, axis=2).astype(np.float32) / 255
    srcs = [astro[:size, 150 : 150 + size], cam[100 : 100 + size, 180 : 180 + size],
            astro[200 : 200 + size, 260 : 260 + size], cam[300 : 300 + size, :size]]
    return torch.from_numpy(np.stack(srcs[:n])).permute(0, 3, 1, 2).contiguous()


def _pil_jpeg(a: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b) ** 2)))


# ------------------------------------------------------------------------------------------- presets, params
def test_presets_carry_the_published_ranges() -> None:
    expected = {  # (kernel sizes, sigma, downsample, noise, jpeg)  -- see degradation_presets' docstring
        "gfpgan": ((41, 41), (0.1, 10), (0.8, 8), (0, 20), (60, 100)),
        "daefr": ((39, 41), (0.1, 10), (0.8, 8), (0, 20), (60, 100)),
        "osdface": ((39, 41), (0.1, 10), (0.8, 8), (0, 20), (60, 100)),
        "vspbfr": ((39, 41), (0.1, 10), (0.8, 8), (0, 20), (60, 100)),
        "codeformer": ((41, 41), (1, 15), (4, 30), (0, 20), (30, 80)),
        "difface": ((41, 41), (0.1, 15), (0.8, 32), (0, 20), (30, 100)),
        "refldm": ((41, 41), (0, 16), (1, 32), (0, 20), (30, 100)),
    }
    for name, (ks, sigma, down, noise, jpeg) in expected.items():
        p = PRESETS[name]
        got = (p["kernel_size"], p["blur_sigma"], p["downsample"], p["noise"], p["jpeg"])
        assert got == (ks, sigma, down, noise, jpeg), name
    assert (PRESETS["gfpgan"]["color_jitter_prob"], PRESETS["gfpgan"]["gray_prob"]) == (0.3, 0.01)
    assert (PRESETS["vspbfr"]["haze_prob"], PRESETS["vspbfr"]["gray_prob"], PRESETS["vspbfr"]["haze_alpha"]) == (
        0.008, 0.008, (0.75, 0.95))
    r = PRESETS["realesrgan"]
    assert r["chain"] == "second_order" and r["jpeg"] == r["jpeg2"] == (30, 95) and r["noise2"] == (1.0, 25.0)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_sampled_params_stay_in_range(name: str) -> None:
    deg = Degradation(name)
    cfg = deg.params
    p = deg.sample_params(range(200))
    assert all(v.shape == (200,) for v in p.values())
    suffixes = ["", "2"] if cfg["chain"] == "second_order" else [""]
    for sfx in suffixes:
        lo, hi = cfg["kernel_size" + sfx]
        ks = p["kernel_size" + sfx]
        assert ((ks >= lo) & (ks <= hi) & (ks % 2 == 1)).all()
        allowed = [i for i, w in enumerate(cfg["kernel_probs" + sfx]) if w > 0]
        assert set(p["kernel_type" + sfx].unique().tolist()) <= set(allowed)
        for key in ("sigma_x", "sigma_y"):
            v = p[key + sfx]
            assert (v >= cfg["blur_sigma" + sfx][0]).all() and (v <= cfg["blur_sigma" + sfx][1]).all()
        iso = p["kernel_type" + sfx] % 2 == 0
        assert torch.equal(p["sigma_x" + sfx][iso], p["sigma_y" + sfx][iso]) and (p["angle" + sfx][iso] == 0).all()
        assert (p["angle" + sfx].abs() <= math.pi).all()
        q = p["jpeg_quality" + sfx]
        assert (q >= cfg["jpeg" + sfx][0]).all() and (q <= cfg["jpeg" + sfx][1]).all()
        sigma = p["noise_sigma" + sfx]
        assert (sigma >= cfg["noise" + sfx][0]).all() and (sigma <= cfg["noise" + sfx][1]).all()
    if cfg["chain"] == "classic":
        assert (p["scale"] >= cfg["downsample"][0]).all() and (p["scale"] <= cfg["downsample"][1]).all()
        shift = cfg["color_jitter_shift"]
        assert all((p[f"jitter_{c}"].abs() <= shift).all() for c in "rgb")
        a = p["haze_alpha"]
        assert (a >= cfg["haze_alpha"][0]).all() and (a <= cfg["haze_alpha"][1]).all()
        assert abs(p["color_jitter"].float().mean().item() - cfg["color_jitter_prob"]) < 0.1
        assert p["kernel_size"].unique().numel() == len(range(cfg["kernel_size"][0] | 1, cfg["kernel_size"][1] + 1, 2))
    else:
        for sfx in ("", "2"):
            s, (lo, hi) = p["resize_scale" + sfx], cfg["resize_range" + sfx]
            assert (s >= lo).all() and (s <= hi).all()
            ps = p["poisson_scale" + sfx]
            assert (ps >= cfg["poisson_scale" + sfx][0]).all() and (ps <= cfg["poisson_scale" + sfx][1]).all()
        assert (p["final_omega"] >= math.pi / 3).all() and (p["final_omega"] <= math.pi).all()
        assert abs(p["final_sinc"].float().mean().item() - 0.8) < 0.1
        assert abs(p["second_blur"].float().mean().item() - 0.8) < 0.1


def test_overrides_and_errors() -> None:
    deg = Degradation("daefr", noise=(5, 5), jpeg=[70, 70])  # lists (from YAML) are accepted
    p = deg.sample_params([1, 2, 3])
    assert (p["noise_sigma"] == 5).all() and (p["jpeg_quality"] == 70).all()
    assert preset_params("gfpgan", gray_prob=0.5)["gray_prob"] == 0.5
    with pytest.raises(ValueError, match="'blur_size'.*allowed:.*blur_sigma"):
        Degradation("daefr", blur_size=(1, 3))
    with pytest.raises(ValueError, match="unknown degradation preset 'nope'"):
        Degradation("nope")
    with pytest.raises(ValueError, match="'jpeg'"):
        Degradation("daefr", jpeg=(0, 120))
    with pytest.raises(ValueError, match="'blur_sigma'.*low > high"):
        Degradation("daefr", blur_sigma=(5, 1))
    with pytest.raises(ValueError, match="'gray_prob'"):
        Degradation("daefr", gray_prob=1.5)
    with pytest.raises(ValueError, match="'chain'"):
        Degradation("daefr", chain="second_order")
    with pytest.raises(ValueError, match="'kernel_size'"):
        Degradation("daefr", kernel_size=(40, 40))  # no odd size in range
    with pytest.raises(ValueError, match="one seed per image"):
        Degradation()(torch.rand(2, 3, 32, 32), [1])
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        Degradation()(torch.rand(3, 32, 32), [1])
    with pytest.raises(ValueError, match="seeds"):
        Degradation()(torch.rand(1, 3, 32, 32), [-1])


def test_sample_seed() -> None:
    seeds = {sample_seed(7, i, e) for i in range(2000) for e in range(5)}
    assert len(seeds) == 10000 and all(0 <= s < 2**63 for s in seeds)
    assert sample_seed(7, 3, 1) == sample_seed(7, 3, 1) != sample_seed(7, 1, 3)
    assert sample_seed(7, 3) != sample_seed(8, 3)


# ------------------------------------------------------------------------------------------- seeding
@pytest.mark.parametrize("name", ["daefr", "gfpgan", "realesrgan"])
def test_seed_determinism_and_batch_independence(name: str) -> None:
    hq = _crops(64)
    deg = Degradation(name)
    seeds = [sample_seed(0, i) for i in range(4)]
    out = deg(hq, seeds)
    assert torch.equal(out.lq, deg(hq, torch.tensor(seeds)).lq)  # list or tensor seeds, bit-identical
    alone = torch.cat([deg(hq[i : i + 1], [s]).lq for i, s in enumerate(seeds)])
    assert torch.equal(out.lq, alone)  # image i depends only on its pixels and seeds[i]
    shuffled = deg(hq[[2, 0, 3, 1]], [seeds[2], seeds[0], seeds[3], seeds[1]]).lq
    assert torch.equal(shuffled, out.lq[[2, 0, 3, 1]])
    other = deg(hq, [s + 1 for s in seeds]).lq
    assert all(not torch.equal(other[i], out.lq[i]) for i in range(4))
    torch.manual_seed(0)
    a = deg(hq, seeds).lq
    torch.manual_seed(1)  # the global RNG plays no part
    assert torch.equal(a, deg(hq, seeds).lq)


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_valid(name: str, dtype: torch.dtype) -> None:
    hq = torch.rand(3, 3, 48, 40, dtype=dtype)
    lq = Degradation(name)(hq, [1, 2, 3]).lq
    assert lq.shape == hq.shape and lq.dtype == dtype and not lq.isnan().any()
    assert lq.min() >= 0 and lq.max() <= 1
    assert torch.equal(lq * 255, (lq * 255).round())  # 8-bit levels


def test_half_precision_and_grad_inputs() -> None:
    hq = torch.rand(2, 3, 40, 40, dtype=torch.bfloat16)
    lq = Degradation("daefr")(hq, [1, 2]).lq
    full = Degradation("daefr")(hq.float(), [1, 2]).lq  # the same draws on the same (bf16-representable) image
    assert lq.dtype == torch.bfloat16 and lq.shape == hq.shape
    assert (lq.float() - full).abs().mean().item() < BF16_MEAN_ABS  # bf16 rounding of the chain only
    leaf = torch.rand(2, 3, 40, 40, requires_grad=True)
    assert not Degradation("realesrgan")(leaf, [1, 2]).lq.requires_grad  # data preparation, no autograd graph


def test_float64_matches_float32_without_noise() -> None:
    hq = _crops(64)
    deg = Degradation("daefr", noise=(0, 0))
    a = deg(hq, [1, 2, 3, 4]).lq
    b = deg(hq.double(), [1, 2, 3, 4]).lq
    assert (a.double() - b).abs().mean() < 0.1 / 255


def test_gray_haze_and_colour_jitter() -> None:
    hq = _crops(64)
    seeds = [5, 6, 7, 8]
    gray = Degradation("daefr", gray_prob=1.0)(hq, seeds)
    assert gray.params["gray"].all()
    assert torch.equal(gray.lq[:, 0], gray.lq[:, 1]) and torch.equal(gray.lq[:, 1], gray.lq[:, 2])
    colour = Degradation("daefr")(hq, seeds).lq
    assert not torch.equal(colour[:, 0], colour[:, 1])
    assert torch.allclose(rgb_to_gray(hq)[:, 0], 0.299 * hq[:, 0] + 0.587 * hq[:, 1] + 0.114 * hq[:, 2])

    base = Degradation("daefr", noise=(0, 0), jpeg=(100, 100))(hq, seeds).lq
    hazy = Degradation("daefr", noise=(0, 0), jpeg=(100, 100), haze_prob=1.0, haze_alpha=(0.8, 0.8))(hq, seeds).lq
    assert (hazy - (0.8 * base + 0.2)).abs().mean() < 1 / 255  # a * x + (1 - a), before the JPEG
    assert hazy.min() >= 0.2 - 3 / 255 and base.min() < 0.1

    grey = torch.full((2, 3, 64, 64), 0.5)
    plain = Degradation("daefr", noise=(0, 0))(grey, [1, 2]).lq
    out = Degradation("daefr", noise=(0, 0), color_jitter_prob=1.0)(grey, [1, 2])
    shift = torch.stack([out.params[f"jitter_{c}"] for c in "rgb"], dim=1).float() / 255  # (B, 3)
    assert (out.lq.mean(dim=(2, 3)) - plain.mean(dim=(2, 3)) - shift).abs().max() < 1 / 255


def test_noise_sigma_is_in_8bit_units() -> None:
    flat = torch.full((2, 3, 64, 64), 0.5)
    for sigma in (10, 20):
        deg = Degradation("daefr", noise=(sigma, sigma), jpeg=(100, 100), downsample=(1, 1), blur_sigma=(0, 0))
        std = (deg(flat, [1, 2]).lq - 0.5).std().item() * 255
        assert 0.6 * sigma < std < sigma  # measured 0.72 sigma: 4:2:0 chroma averages part of the colour noise


def test_second_order_chain_branches() -> None:
    hq = _crops(96, n=4)[:, :, :, :80]  # non-square
    deg = Degradation("realesrgan", gaussian_noise_prob=0.0, gray_noise_prob=1.0)  # Poisson gray noise
    seeds = list(range(12))
    out = deg(hq.repeat(3, 1, 1, 1), seeds)
    assert out.lq.shape == (12, 3, 96, 80) and not out.lq.isnan().any()
    assert 0 < out.params["jpeg_first"].sum() < 12  # both orders of the final stage ran
    assert not out.params["gaussian_noise"].any()
    mse = ((out.lq - hq.repeat(3, 1, 1, 1)) ** 2).mean(dim=(1, 2, 3))
    assert (mse > 1e-4).all() and (mse < 0.05).all()  # degraded, still the same picture
    gaussian = Degradation("realesrgan", gaussian_noise_prob=1.0, sinc_prob=1.0)(hq, seeds[:4])
    assert gaussian.params["sinc"].all() and gaussian.lq.shape == hq.shape


# ------------------------------------------------------------------------------------------- stages vs references
def test_kernels_match_closed_forms_and_filter2d() -> None:
    p = {"kernel_type": torch.tensor([1, 3, 4, 0]), "kernel_size": torch.tensor([21, 15, 21, 7]),
         "sigma_x": torch.tensor([3.0, 2.0, 2.5, 1.0]), "sigma_y": torch.tensor([1.0, 4.0, 2.5, 1.0]),
         "angle": torch.tensor([0.7, -1.2, 0.0, 0.0]), "beta": torch.tensor([1.0, 2.5, 1.5, 1.0])}
    k = make_kernels(p, 21, dtype=torch.float64)
    assert k.shape == (4, 21, 21) and torch.allclose(k.sum(dim=(1, 2)), torch.ones(4, dtype=torch.float64))
    ax = np.arange(-10, 11, dtype=np.float64)
    xx, yy = np.meshgrid(ax, ax)
    for b in range(4):
        sx, sy, th, beta = (float(p[n][b]) for n in ("sigma_x", "sigma_y", "angle", "beta"))
        # basicsr form: x^T (R diag(sx^2, sy^2) R^T)^-1 x, x = (col, row)
        rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        inv = np.linalg.inv(rot @ np.diag([sx**2, sy**2]) @ rot.T)
        grid = np.stack([xx, yy], axis=-1)
        quad = np.einsum("...i,ij,...j->...", grid, inv, grid)
        ref = 1 / (1 + quad**beta) if p["kernel_type"][b] >= 4 else np.exp(-0.5 * quad**beta)
        r = int(p["kernel_size"][b]) // 2
        ref[np.maximum(np.abs(xx), np.abs(yy)) > r] = 0
        np.testing.assert_allclose(k[b].numpy(), ref / ref.sum(), atol=1e-12)

    from scipy.special import j1

    s = sinc_kernels(torch.tensor([2.0]), torch.tensor([13]), 13, dtype=torch.float64)[0].numpy()
    rad = np.hypot(*np.meshgrid(np.arange(-6, 7), np.arange(-6, 7)))
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = np.where(rad == 0, 4 / (4 * np.pi), 2 * j1(2 * rad) / (2 * np.pi * rad))
    np.testing.assert_allclose(s, ref / ref.sum(), atol=1e-7)  # torch's bessel_j1 is accurate to ~1e-7

    img = _crops(64, n=1)
    out = blur(img.repeat(4, 1, 1, 1), k.float())
    for b in range(4):
        ref = cv2.filter2D(img[0].permute(1, 2, 0).numpy(), -1, k[b].float().numpy())  # BORDER_REFLECT_101
        np.testing.assert_allclose(out[b].permute(1, 2, 0).numpy(), ref, atol=2e-5)


def test_jpeg_matches_pillow() -> None:
    imgs = (_crops(128) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    odd = np.ascontiguousarray(data.astronaut()[17:118, 33:110])  # 101 x 77: partial MCUs
    for a in [*imgs, odd]:
        t = torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255
        psnr_ours, psnr_pil = [], []
        for q in (30, 60, 90):
            ref = _pil_jpeg(a, q)
            ours = (jpeg_compress(t, q)[0].permute(1, 2, 0).numpy() * 255).round()
            mad = np.abs(ours - ref).mean()
            jpeg_err = np.abs(ref.astype(np.float64) - a).mean()
            # measured: mad <= 0.47 levels, <= 0.23 x the JPEG error, PSNR within 0.13 dB (libjpeg's integer DCT
            # rounds differently from our float DCT)
            assert mad < 0.6 and mad < 0.3 * jpeg_err, (q, mad, jpeg_err)  # in 8-bit levels
            psnr_ours.append(_psnr(ours, a))
            psnr_pil.append(_psnr(ref, a))
        assert psnr_ours[0] < psnr_ours[1] < psnr_ours[2] and psnr_pil[0] < psnr_pil[1] < psnr_pil[2]
        assert np.abs(np.subtract(psnr_ours, psnr_pil)).max() < 0.3
    # per-image qualities in one batch, and the list form with mixed sizes
    batch = torch.from_numpy(imgs[:2]).permute(0, 3, 1, 2).float() / 255
    mixed = jpeg_compress(batch, torch.tensor([30, 90]))
    assert torch.equal(mixed[0], jpeg_compress(batch[:1], 30)[0])
    assert torch.equal(mixed[1], jpeg_compress(batch[1:], 90)[0])
    small = torch.from_numpy(odd).permute(2, 0, 1)[None].float() / 255
    listed = jpeg_compress([batch[:1], small], [60, 60])
    assert torch.equal(listed[1], jpeg_compress(small, 60))


def test_classic_chain_matches_opencv_reference() -> None:
    """Same sampled parameters, no noise: our batched chain vs the per-image cv2 chain of GFPGAN-style datasets."""
    hq = _crops(128)
    out = Degradation("daefr", noise=(0, 0))(hq, [sample_seed(3, i) for i in range(4)])
    p = out.params
    kernels = make_kernels(p, 41, dtype=torch.float64)
    for i in range(4):
        a = hq[i].permute(1, 2, 0).double().numpy()
        h, w = a.shape[:2]
        s = float(p["scale"][i])
        x = cv2.filter2D(a, -1, kernels[i].numpy())
        x = cv2.resize(x, (int(w // s), int(h // s)), interpolation=cv2.INTER_LINEAR)
        x8 = (np.clip(x, 0, 1) * 255).round().astype(np.uint8)
        _, enc = cv2.imencode(".jpg", x8[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(p["jpeg_quality"][i])])
        x = cv2.imdecode(enc, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float64) / 255
        x = (np.clip(cv2.resize(x, (w, h), interpolation=cv2.INTER_LINEAR), 0, 1) * 255).round()
        ours = out.lq[i].permute(1, 2, 0).double().numpy() * 255
        diff, degraded = np.abs(ours - x).mean(), np.abs(ours - a * 255).mean()  # in 8-bit levels
        assert diff < 0.8 and diff < 0.1 * degraded, (i, diff, degraded)  # measured: <= 0.55 and <= 0.05 x


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_params_and_stays_valid() -> None:
    hq = _crops(64)
    deg = Degradation("realesrgan")
    gpu = deg(hq.cuda(), [1, 2, 3, 4])
    cpu = deg(hq, [1, 2, 3, 4])
    assert gpu.lq.device.type == "cuda" and gpu.lq.shape == hq.shape and not gpu.lq.isnan().any()
    assert all(torch.equal(gpu.params[k].cpu(), cpu.params[k]) for k in cpu.params)
    assert torch.equal(gpu.lq, deg(hq.cuda(), [1, 2, 3, 4]).lq)
    quiet = Degradation("daefr", noise=(0, 0))
    assert (quiet(hq.cuda(), [1, 2, 3, 4]).lq.cpu() - quiet(hq, [1, 2, 3, 4]).lq).abs().mean() < 0.5 / 255
