"""Image quality metrics of face restoration: names that mean what they mean in published tables.

Paper component: the full-reference (PSNR, SSIM, LPIPS, DISTS), no-reference (NIQE, MUSIQ, MANIQA, CLIPIQA) and
set-level (FID) columns of the HonestFace tables (Wang et al., arXiv 2505.18469), which follow OSDFace / DiffBIR
practice and report pyiqa's metrics (Chen et al., IQA-PyTorch) at their default settings; plus the BasicSR-style
Y-channel PSNR / SSIM and FID of the VQFR / DAEFR / CodeFormer line of papers.

Names (images are RGB tensors (B, 3, H, W) in [0, 1]; definitions and sources in the modules named):
- `psnr`, `ssim`, `lpips`, `lpips_vgg`, `dists`, `niqe`, `musiq`, `maniqa`, `clipiqa`, `fid`: the value of pyiqa
  0.1.16's metric of that name (`lpips_vgg` = pyiqa `lpips-vgg`) with its default options
  (`psnr_ssim.py`, `iqa_networks.py`, `fid.py`). pyiqa's `lpips` is the AlexNet LPIPS.
- `psnr_y`, `ssim_y`: BasicSR `calculate_psnr` / `calculate_ssim` with `test_y_channel=True` and `crop_border`
  (`psnr_ssim.py`); `fid_basicsr`: BasicSR / VQFR `calculate_fid_folder.py` (`fid.py`).
- `ssim_rgb`: SSIM averaged over R, G, B (skimage / pyiqa `ssimc` on uint8-derived images).
Each `IQAMetricInfo.implementation` says in one line which upstream function and settings a name equals.

Our choices: pyiqa's constructors download their weights and read them with unrestricted pickles, so every network
gets *local* registry files read weights-only (`honestface.weights`); LPIPS / DISTS are our batched
re-implementations (checked against pyiqa's classes in tests/test_iqa_pyiqa.py), the no-reference networks are
pyiqa's own classes. A metric whose weights are missing is reported by `available_metrics` with the registry's
one-line reason. Inputs are clamped to [0, 1] (uint8 tensors are divided by 255).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from honestface.metrics.fid import build_fid_inception, load_fid_statistics
from honestface.metrics.iqa_networks import read_torchscript_tensors
from honestface.metrics.psnr_ssim import psnr, psnr_y, rgb_to_y, ssim, ssim_rgb, ssim_y
from honestface.weights import WeightsError, resolve_weight

__all__ = [
    "IQA_METRICS", "IQAMetricInfo", "IQAMetrics", "available_metrics", "build_fid_inception", "load_fid_statistics",
    "psnr", "psnr_y", "read_torchscript_tensors", "rgb_to_y", "ssim", "ssim_rgb", "ssim_y",
]


@dataclass(frozen=True)
class IQAMetricInfo:
    description: str
    weights: tuple[str, ...]  # registry entries it needs
    higher_is_better: bool
    mode: str  # "fr" (needs GT), "nr" (restored only), "set" (folders: FID)
    implementation: str = ""  # one line: the upstream function and settings this name equals


_PYIQA = "pyiqa 0.1.16"
IQA_METRICS: dict[str, IQAMetricInfo] = {
    "psnr": IQAMetricInfo(
        "PSNR on RGB, data range 1", (), True, "fr",
        f"{_PYIQA} 'psnr' (RGB, data range 1, 10 log10(1 / (MSE + 1e-8)))"),
    "ssim": IQAMetricInfo(
        "SSIM on the YIQ luma", (), True, "fr",
        f"{_PYIQA} 'ssim' (YIQ luma 0.299R+0.587G+0.114B x255 rounded, Gaussian 11x11 sigma 1.5, valid region, "
        "cs clamped at 0, no downsampling, float64)"),
    "ssim_rgb": IQAMetricInfo(
        "SSIM averaged over R, G, B", (), True, "fr",
        "skimage structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, "
        "data_range=255) per RGB channel, averaged (= pyiqa 'ssimc' on uint8 images)"),
    "psnr_y": IQAMetricInfo(
        "PSNR on BT.601 luma Y (16-235), peak 255", (), True, "fr",
        "BasicSR calculate_psnr(test_y_channel=True, crop_border) (MATLAB rgb2ycbcr Y, float64)"),
    "ssim_y": IQAMetricInfo(
        "SSIM on BT.601 luma Y (16-235)", (), True, "fr",
        "BasicSR calculate_ssim(test_y_channel=True, crop_border) (cv2 Gaussian 11x11 sigma 1.5, valid region)"),
    "lpips": IQAMetricInfo(
        "LPIPS v0.1, AlexNet backbone", ("alexnet_imagenet",), False, "fr",
        f"{_PYIQA} 'lpips' (LPIPS v0.1 AlexNet, lpips-wheel heads = pyiqa LPIPS_v0.1_alex-df73285e.pth)"),
    "lpips_vgg": IQAMetricInfo(
        "LPIPS v0.1, VGG-16 backbone", ("vgg16_imagenet",), False, "fr",
        f"{_PYIQA} 'lpips-vgg' (LPIPS v0.1 VGG-16, lpips-wheel heads = pyiqa LPIPS_v0.1_vgg-a78928a0.pth)"),
    "dists": IQAMetricInfo(
        "DISTS (VGG-16 with L2 pooling)", ("vgg16_imagenet", "dists_pyiqa"), False, "fr",
        f"{_PYIQA} 'dists' (VGG-16 ImageNet + DISTS_weights-f5e65c96.pth alpha/beta)"),
    "niqe": IQAMetricInfo(
        "NIQE, original pristine model", ("niqe_params",), False, "nr",
        f"{_PYIQA} 'niqe' (YIQ luma rounded, 96x96 blocks, niqe_modelparameters.mat)"),
    "musiq": IQAMetricInfo(
        "MUSIQ trained on KonIQ-10k", ("musiq_koniq",), True, "nr",
        f"{_PYIQA} 'musiq' (KonIQ-10k checkpoint, scales 224/384 + native)"),
    "maniqa": IQAMetricInfo(
        "MANIQA trained on KonIQ-10k", ("maniqa_koniq",), True, "nr",
        f"{_PYIQA} 'maniqa' (KonIQ-10k checkpoint, scale 0.8, 20 uniform 224x224 crops)"),
    "clipiqa": IQAMetricInfo(
        "CLIP-IQA with CLIP RN50, prompt ensemble", ("clip_rn50_openai",), True, "nr",
        f"{_PYIQA} 'clipiqa' (OpenAI CLIP RN50, 5 antonym prompt pairs, no positional embedding)"),
    "fid": IQAMetricInfo(
        "FID, clean-fid resize (folder vs folder/statistics)", ("fid_inception",), False, "set",
        f"{_PYIQA} 'fid' default mode 'clean' (Pillow bicubic 299 per channel, (x-128)/128, pytorch-fid "
        "Inception pool3, np.cov)"),
    "fid_basicsr": IQAMetricInfo(
        "FID, BasicSR/VQFR legacy resize (folder vs folder/statistics)", ("fid_inception",), False, "set",
        "BasicSR/VQFR calculate_fid_folder.py (cv2 decode, [-1, 1], bilinear 299 in the network, pytorch-fid "
        "Inception pool3, .pth mean/cov statistics)"),
}
_WEIGHT_FREE = {"psnr": psnr, "ssim": ssim, "ssim_rgb": ssim_rgb}
_FID_MODE = {"fid": "clean", "fid_basicsr": "basicsr"}


def _check_name(name: str) -> IQAMetricInfo:
    if name not in IQA_METRICS:
        raise ValueError(f"unknown IQA metric {name!r}; allowed: {', '.join(IQA_METRICS)}")
    return IQA_METRICS[name]


def available_metrics(weights: dict | None = None) -> dict[str, str | None]:
    """name -> None when the metric can run, else the one-line reason (the registry's missing-weight message).

    weights: explicit paths by registry entry name (e.g. {"musiq_koniq": "/data/musiq.pth"}), as in config.
    """
    weights = weights or {}
    out: dict[str, str | None] = {}
    for name, info in IQA_METRICS.items():
        out[name] = None
        for key in info.weights:
            try:
                resolve_weight(key, weights.get(key))
            except WeightsError as err:
                out[name] = str(err)
                break
    return out


def _as_unit(t: torch.Tensor) -> torch.Tensor:
    """Float tensor in [0, 1]: uint8 is divided by 255, float32 / float64 are kept (PSNR / SSIM precision) and
    clamped only when something lies outside [0, 1]."""
    if t.dtype == torch.uint8:
        return t.float() / 255
    if t.dtype not in (torch.float32, torch.float64):
        t = t.float()
    lo, hi = torch.aminmax(t)
    return t.clamp(0, 1) if lo < 0 or hi > 1 else t


class IQAMetrics:
    """A set of IQA metrics evaluated batch-wise on one device.

    Args:
        names: metric names from `IQA_METRICS` ("fid" / "fid_basicsr" are computed by `fid()`, not per image).
        device: torch device (None: CPU).
        weights: explicit weight paths by registry entry name (see `available_metrics`).
        batch_size: images per forward pass.
        strict: raise MissingWeightError for a metric without weights; False skips it and records the reason
            in `unavailable`.
        crop_border: pixels dropped on each side by `psnr_y` / `ssim_y` (BasicSR's `crop_border`); the pyiqa-named
            metrics always use pyiqa's defaults (no crop).

    __call__(restored (B, 3, H, W) in [0, 1], gt (B, 3, H, W) or None) -> {name: (B,) float tensor on the device}
    for every per-image metric (PSNR in dB; the others unitless).
    """

    def __init__(self, names, device=None, weights: dict | None = None, batch_size: int = 8, strict: bool = True,
                 crop_border: int = 0) -> None:
        self.device = torch.device(device or "cpu")
        self.weights = dict(weights or {})
        self.batch_size = int(batch_size)
        self.crop_border = int(crop_border)
        if self.crop_border < 0:
            raise ValueError(f"crop_border must be >= 0, got {crop_border}")
        self.unavailable: dict[str, str] = {}
        self.nets: dict[str, torch.nn.Module] = {}
        self.names: list[str] = []
        self._inception: torch.nn.Module | None = None
        for name in names:
            info = _check_name(name)
            try:
                if info.mode == "set":
                    self._weight("fid_inception")  # fail early; the network is built by fid()
                elif info.weights:
                    self.nets[name] = self._build(name)
            except WeightsError as err:
                if strict:
                    raise
                self.unavailable[name] = str(err)
                continue
            self.names.append(name)

    def _weight(self, key: str) -> Path:
        return resolve_weight(key, self.weights.get(key))

    def _build(self, name: str) -> torch.nn.Module:
        from honestface.metrics.iqa_networks import DISTSMetric, LPIPSMetric, build_pyiqa_metric

        if name in ("lpips", "lpips_vgg"):
            net = "alex" if name == "lpips" else "vgg"
            return LPIPSMetric(net, self._weight(IQA_METRICS[name].weights[0])).to(self.device)
        if name == "dists":
            return DISTSMetric(self._weight("vgg16_imagenet"), self._weight("dists_pyiqa")).to(self.device)
        return build_pyiqa_metric(name, self._weight(IQA_METRICS[name].weights[0]), self.device)

    def _one(self, name: str, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if name in _WEIGHT_FREE:
            return _WEIGHT_FREE[name](x, y)
        if name in ("psnr_y", "ssim_y"):
            return (psnr_y if name == "psnr_y" else ssim_y)(x, y, self.crop_border)
        net = self.nets[name]
        with torch.no_grad():
            if IQA_METRICS[name].mode == "fr":
                return net(x.float(), y.float())
            return net(x.float()).reshape(-1)

    def __call__(self, restored: torch.Tensor, gt: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if not isinstance(restored, torch.Tensor) or restored.ndim != 4 or restored.shape[1] != 3:
            got = getattr(restored, "shape", None)
            raise ValueError(f"restored must be a (B, 3, H, W) tensor in [0, 1], got {got}")
        fr = [n for n in self.names if IQA_METRICS[n].mode == "fr"]
        if fr and (gt is None or gt.shape != restored.shape):
            got = None if gt is None else tuple(gt.shape)
            raise ValueError(f"metrics {', '.join(fr)} need a gt tensor of shape {tuple(restored.shape)}, got {got}")
        out: dict[str, list[torch.Tensor]] = {n: [] for n in self.names if IQA_METRICS[n].mode != "set"}
        for i in range(0, restored.shape[0], self.batch_size):
            x = _as_unit(restored[i : i + self.batch_size].to(self.device))  # (b, 3, H, W)
            y = None if gt is None else _as_unit(gt[i : i + self.batch_size].to(self.device))
            for name, values in out.items():
                values.append(self._one(name, x, y).float().reshape(-1))
        return {name: torch.cat(v) for name, v in out.items()}

    # ----------------------------------------------------------------------------------------- FID

    def fid(self, restored_dir: str | os.PathLike, reference: str | os.PathLike, name: str = "fid",
            max_images: int | None = None) -> float:
        """FID of a folder against a folder, a statistics file (.npz / .pth) or a registry entry name.

        name: "fid" (pyiqa's clean mode) or "fid_basicsr" (BasicSR / VQFR). max_images: use only the first N
        images of each folder (VQFR's script uses 3000); None: all."""
        from honestface.metrics.fid import feature_statistics, folder_features, frechet_distance

        if name not in _FID_MODE:
            raise ValueError(f"unknown FID variant {name!r}; allowed: {', '.join(_FID_MODE)}")
        mode = _FID_MODE[name]
        if self._inception is None:
            self._inception = build_fid_inception(self._weight("fid_inception")).to(self.device)
        kw = {"mode": mode, "batch_size": self.batch_size, "device": self.device, "max_images": max_images}
        mu1, sig1 = feature_statistics(folder_features(self._inception, restored_dir, **kw))
        ref = Path(reference)
        if ref.is_dir():
            mu2, sig2 = feature_statistics(folder_features(self._inception, ref, **kw))
        elif ref.is_file():
            mu2, sig2 = load_fid_statistics(ref)
        else:
            try:
                mu2, sig2 = load_fid_statistics(resolve_weight(str(reference), self.weights.get(str(reference))))
            except KeyError as err:
                raise FileNotFoundError(
                    f"FID reference {reference} is neither a folder, a file nor a weight name") from err
        return frechet_distance(mu1, sig1, mu2, sig2)
