"""Image quality metrics of face restoration: PSNR, SSIM, LPIPS, DISTS, NIQE, MUSIQ, MANIQA, CLIPIQA and FID.

Paper component: the full-reference (PSNR, SSIM, LPIPS, DISTS), no-reference (NIQE, MUSIQ, MANIQA, CLIPIQA) and
set-level (FID) columns of the HonestFace tables (Wang et al., arXiv 2505.18469), which follow OSDFace / DiffBIR
practice and use the pyiqa implementations (Chen et al., IQA-PyTorch).

Implementations and conventions (images are RGB tensors (B, 3, H, W) in [0, 1]):
- `psnr`: RGB, data range 1, MSE over all channels and pixels (as pyiqa `psnr` and skimage with data_range=1).
- `psnr_y`: luma Y of ITU-R BT.601 YCbCr (Y = 16 + 65.481 R + 128.553 G + 24.966 B, range [16, 235], the MATLAB
  `rgb2ycbcr` / BasicSR convention), data range 255, not rounded.
- `ssim`, `ssim_y`: Wang et al. (TIP 2004) SSIM with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03,
  data range 255, mean over the valid region (no padding), no downsampling; `ssim` averages the three RGB
  channels (images scaled by 255), `ssim_y` uses the Y above. This equals skimage `structural_similarity(
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)`. pyiqa's `ssim` differs in two
  ways we do not copy: it uses the YIQ luma by default and clamps negative contrast-structure terms to 0;
  `round_y=True` rounds Y to integers like pyiqa/MATLAB on uint8 images.
- `lpips_vgg`, `lpips_alex`: LPIPS v0.1 (Zhang et al., CVPR 2018), `honestface.losses.perceptual.LPIPSNet`
  (lpips package heads; backbone `vgg16_imagenet` / `alexnet_imagenet` from the weights registry).
- `dists`: DISTS (Ding et al., TPAMI 2020), `honestface.losses.perceptual.DISTS` (`vgg16_imagenet`, `dists_pyiqa`).
- `niqe`: pyiqa NIQE (Mittal et al., SPL 2012) with the pristine model `niqe_params`.
- `musiq`: pyiqa MUSIQ (Ke et al., ICCV 2021), KonIQ-10k checkpoint `musiq_koniq`.
- `maniqa`: pyiqa MANIQA (Yang et al., CVPRW 2022), KonIQ-10k checkpoint `maniqa_koniq`.
- `clipiqa`: pyiqa CLIPIQA (Wang et al., AAAI 2023) over OpenAI CLIP RN50 (`clip_rn50_openai`).
- `fid`: Frechet Inception distance (Heusel et al., 2017) on pool3 features of the pytorch-fid Inception-v3
  (`fid_inception`), images resized to 299 bilinearly and scaled to [-1, 1] (the pytorch-fid / BasicSR / VQFR
  "legacy_pytorch" mode), against a folder or precomputed statistics (BasicSR `.pth` {"mean", "cov"}, clean-fid /
  pytorch-fid `.npz` {"mu", "sigma"}, or a registry entry such as `fid_ffhq512_stats`).

Our choices: pyiqa's constructors download their weights and read them with unrestricted pickles, so every network
is built here with pyiqa's classes and *local* registry files read weights-only (`honestface.weights`); the two
pyiqa constructors that still fetch something (MANIQA's timm ViT init, CLIPIQA's CLIP loader) run with that step
replaced by the registry file. The CLIP RN50 release is a TorchScript archive: its tensors are read with a
restricted unpickler (`read_torchscript_tensors`), never by running the archive. A metric whose weights are
missing is reported by `available_metrics` with the registry's one-line reason.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from honestface.weights import WeightsError, check_state_dict, load_state_dict, resolve_weight


@dataclass(frozen=True)
class IQAMetricInfo:
    description: str
    weights: tuple[str, ...]  # registry entries it needs
    higher_is_better: bool
    mode: str  # "fr" (needs GT), "nr" (restored only), "set" (folders: FID)


IQA_METRICS: dict[str, IQAMetricInfo] = {
    "psnr": IQAMetricInfo("PSNR on RGB, data range 1", (), True, "fr"),
    "psnr_y": IQAMetricInfo("PSNR on BT.601 luma Y (16-235), data range 255", (), True, "fr"),
    "ssim": IQAMetricInfo("SSIM (Gaussian 11x11, sigma 1.5) averaged over RGB", (), True, "fr"),
    "ssim_y": IQAMetricInfo("SSIM (Gaussian 11x11, sigma 1.5) on BT.601 luma Y", (), True, "fr"),
    "lpips_vgg": IQAMetricInfo("LPIPS v0.1, VGG-16 backbone", ("vgg16_imagenet",), False, "fr"),
    "lpips_alex": IQAMetricInfo("LPIPS v0.1, AlexNet backbone", ("alexnet_imagenet",), False, "fr"),
    "dists": IQAMetricInfo("DISTS (VGG-16, pyiqa alpha/beta)", ("vgg16_imagenet", "dists_pyiqa"), False, "fr"),
    "niqe": IQAMetricInfo("NIQE (pyiqa, original pristine model)", ("niqe_params",), False, "nr"),
    "musiq": IQAMetricInfo("MUSIQ trained on KonIQ-10k (pyiqa)", ("musiq_koniq",), True, "nr"),
    "maniqa": IQAMetricInfo("MANIQA trained on KonIQ-10k (pyiqa)", ("maniqa_koniq",), True, "nr"),
    "clipiqa": IQAMetricInfo("CLIP-IQA with CLIP RN50 (pyiqa prompt ensemble)", ("clip_rn50_openai",), True, "nr"),
    "fid": IQAMetricInfo("FID, pytorch-fid Inception-v3 pool3 (folder vs folder/statistics)", ("fid_inception",),
                         False, "set"),
}


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


# --------------------------------------------------------------------------------------------- PSNR / SSIM

def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luma: (B, 3, H, W) RGB in [0, 1] -> (B, 1, H, W) in [16, 235]."""
    w = torch.tensor([65.481, 128.553, 24.966], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True) + 16.0


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """(B, C, H, W) pair -> (B,) PSNR in dB, float64. Identical images give inf."""
    mse = ((x.double() - y.double()) ** 2).mean((1, 2, 3))
    return 10 * torch.log10(data_range**2 / mse)


def _gaussian_1d(size: int = 11, sigma: float = 1.5, device=None) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()  # (size,)


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 255.0) -> torch.Tensor:
    """(B, C, H, W) pair (values on the `data_range` scale) -> (B,) SSIM, mean over channels and valid pixels.

    The 11x11 Gaussian window (sigma 1.5) is applied as two 1-D passes over the five statistics at once."""
    c = x.shape[1]
    g = _gaussian_1d(device=x.device)
    if min(x.shape[-2:]) < g.numel():
        raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {tuple(x.shape[-2:])}")
    x, y = x.double(), y.double()
    stats = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # (B, 5C, H, W)
    n = stats.shape[1]
    stats = F.conv2d(stats, g.view(1, 1, -1, 1).expand(n, 1, -1, 1), groups=n)  # valid region, vertical
    stats = F.conv2d(stats, g.view(1, 1, 1, -1).expand(n, 1, 1, -1), groups=n)  # horizontal
    mx, my, xx, yy, xy = stats.split(c, dim=1)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    vx, vy, cxy = xx - mx**2, yy - my**2, xy - mx * my
    smap = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return smap.mean((1, 2, 3))


# --------------------------------------------------------------------------------------------- loaders

class _TSObject:
    """Stand-in for a TorchScript class instance: keeps only its attribute dict."""

    def __init__(self, *args) -> None:
        self.attrs: dict = {}

    def __setstate__(self, state) -> None:
        self.attrs = dict(state) if isinstance(state, dict) else {}


class _TorchScriptUnpickler(pickle.Unpickler):
    """Reads a TorchScript archive's data.pkl: tensors and module attribute dicts only, no code is run."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix = archive, prefix

    def find_class(self, module: str, name: str):
        if module.startswith("__torch__"):
            return type(name, (_TSObject,), {})
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return torch._utils._rebuild_tensor_v2
        if (module, name) == ("collections", "OrderedDict"):
            return dict
        if module == "torch" and name.endswith("Storage"):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"TorchScript archive refers to {module}.{name}, which is not a tensor type")

    def persistent_load(self, pid):
        _, storage_type, key, _location, _numel = pid
        raw = self.archive.read(f"{self.prefix}/data/{key}")
        untyped = torch.UntypedStorage.from_buffer(raw, dtype=torch.uint8) if raw else torch.UntypedStorage(0)
        with warnings.catch_warnings():  # TypedStorage is what _rebuild_tensor_v2 expects here
            warnings.simplefilter("ignore")
            return torch.storage.TypedStorage(wrap_storage=untyped, dtype=storage_type.dtype, _internal=True)


def read_torchscript_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """{dotted.attribute.path: tensor} of every tensor attribute of a TorchScript archive (e.g. OpenAI CLIP .pt)."""
    with zipfile.ZipFile(path) as archive:
        pkl = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if not pkl:
            raise WeightsError(f"{path}: not a TorchScript archive (no data.pkl)")
        prefix = pkl[0].split("/")[0]
        root = _TorchScriptUnpickler(archive.read(pkl[0]), archive, prefix).load()
    out: dict[str, torch.Tensor] = {}

    def walk(obj, name: str) -> None:
        if isinstance(obj, torch.Tensor):
            out[name] = obj
        elif isinstance(obj, _TSObject):
            for k, v in obj.attrs.items():
                walk(v, f"{name}.{k}" if name else k)

    walk(root, "")
    return out


@contextlib.contextmanager
def _patched(obj, attr: str, value):
    old = getattr(obj, attr)
    setattr(obj, attr, value)
    try:
        yield
    finally:
        setattr(obj, attr, old)


def _load_into(net: torch.nn.Module, path: Path, what: str) -> None:
    state = load_state_dict(path)
    try:
        check_state_dict(net, state, str(path), what)
    except ValueError as err:
        raise WeightsError(str(err)) from err
    net.load_state_dict(state, strict=True)


def build_fid_inception(path: str | os.PathLike) -> torch.nn.Module:
    """pytorch-fid Inception-v3 (pyiqa's FID blocks) with weights from `path`; forward -> (B, 2048) pool3."""
    from pyiqa.archs import inception as inc

    net = inc._inception_v3(num_classes=1008, aux_logits=False, pretrained=False)
    for name, block in (("Mixed_5b", inc.FIDInceptionA(192, pool_features=32)),
                        ("Mixed_5c", inc.FIDInceptionA(256, pool_features=64)),
                        ("Mixed_5d", inc.FIDInceptionA(288, pool_features=64)),
                        ("Mixed_6b", inc.FIDInceptionC(768, channels_7x7=128)),
                        ("Mixed_6c", inc.FIDInceptionC(768, channels_7x7=160)),
                        ("Mixed_6d", inc.FIDInceptionC(768, channels_7x7=160)),
                        ("Mixed_6e", inc.FIDInceptionC(768, channels_7x7=192)),
                        ("Mixed_7b", inc.FIDInceptionE_1(1280)), ("Mixed_7c", inc.FIDInceptionE_2(2048))):
        setattr(net, name, block)
    _load_into(net, Path(path), "the pytorch-fid Inception-v3 (weights.fid_inception)")
    order = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
             "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
             "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool")
    return torch.nn.Sequential(*[getattr(net, n) for n in order], torch.nn.Flatten()).eval()


def load_fid_statistics(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(mu (2048,), sigma (2048, 2048)) from a `.npz` {"mu", "sigma"} or a BasicSR `.pth` {"mean", "cov"}."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            return np.asarray(f["mu"], np.float64), np.asarray(f["sigma"], np.float64)
    globs = [np.ndarray, np.dtype, np.dtypes.Float64DType, np.dtypes.Float32DType]
    globs.append(getattr(np, "_core", np).multiarray._reconstruct)
    with torch.serialization.safe_globals(globs):
        stats = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(stats, dict) or not {"mean", "cov"} <= set(stats):
        raise WeightsError(f"{path}: FID statistics must hold 'mean' and 'cov' (BasicSR) or be an .npz with mu/sigma")
    return np.asarray(stats["mean"], np.float64), np.asarray(stats["cov"], np.float64)


# --------------------------------------------------------------------------------------------- metric set

def _as_float(t: torch.Tensor) -> torch.Tensor:
    """Float copy clamped to [0, 1] (float64 kept for PSNR / SSIM precision)."""
    t = t if t.dtype in (torch.float32, torch.float64) else t.float()
    return t.clamp(0, 1)


class IQAMetrics:
    """A set of IQA metrics evaluated batch-wise on one device.

    Args:
        names: metric names from `IQA_METRICS` ("fid" is computed by `fid()`, not per image).
        device: torch device (None: CPU).
        weights: explicit weight paths by registry entry name (see `available_metrics`).
        batch_size: images per forward pass.
        strict: raise MissingWeightError for a metric without weights; False skips it and records the reason
            in `unavailable`.
        round_y: round the luma to integers before `ssim_y` / `psnr_y` (pyiqa / MATLAB on uint8 images).

    __call__(restored (B, 3, H, W) in [0, 1], gt (B, 3, H, W) or None) -> {name: (B,) float tensor on the device}.
    """

    def __init__(self, names, device=None, weights: dict | None = None, batch_size: int = 8, strict: bool = True,
                 round_y: bool = False) -> None:
        self.device = torch.device(device or "cpu")
        self.weights = dict(weights or {})
        self.batch_size = int(batch_size)
        self.round_y = bool(round_y)
        self.unavailable: dict[str, str] = {}
        self.nets: dict[str, torch.nn.Module] = {}
        self.names: list[str] = []
        for name in names:
            info = _check_name(name)
            try:
                if info.weights and name != "fid":
                    self.nets[name] = self._build(name)
                elif name == "fid":
                    self._weight("fid_inception")  # fail early; the network is built by fid()
            except WeightsError as err:
                if strict:
                    raise
                self.unavailable[name] = str(err)
                continue
            self.names.append(name)

    def _weight(self, key: str) -> Path:
        return resolve_weight(key, self.weights.get(key))

    def _build(self, name: str) -> torch.nn.Module:
        from honestface.losses.perceptual import DISTS, LPIPSNet

        if name in ("lpips_vgg", "lpips_alex"):
            net = name.removeprefix("lpips_")
            return LPIPSNet(net, self._weight(IQA_METRICS[name].weights[0])).to(self.device)
        if name == "dists":
            return DISTS(self._weight("vgg16_imagenet"), self._weight("dists_pyiqa")).to(self.device)
        path = self._weight(IQA_METRICS[name].weights[0])  # resolved before pyiqa is imported
        import pyiqa

        if name == "niqe":
            return pyiqa.create_metric("niqe", device=self.device, pretrained_model_path=str(path))
        if name == "musiq":
            metric = pyiqa.create_metric("musiq", device=self.device, pretrained=False)
            _load_into(metric.net, path, "pyiqa MUSIQ (weights.musiq_koniq)")
            return metric.eval()
        if name == "maniqa":
            import timm

            create = timm.create_model
            with _patched(timm, "create_model", lambda *a, **k: create(*a, **{**k, "pretrained": False})):
                metric = pyiqa.create_metric("maniqa", device=self.device, pretrained=False)
            _load_into(metric.net, path, "pyiqa MANIQA (weights.maniqa_koniq)")
            return metric.eval()
        if name == "clipiqa":
            from pyiqa.archs import clip_model, clipiqa_arch

            state = {k: v.float() for k, v in read_torchscript_tensors(path).items() if not k.endswith("attn_mask")}
            try:
                clip = clip_model.build_model(state).float().eval()
            except (RuntimeError, KeyError) as err:
                raise WeightsError(f"{path}: not an OpenAI CLIP RN50 archive ({str(err).splitlines()[0]})") from err
            with _patched(clipiqa_arch, "load", lambda *a, **k: clip):
                return pyiqa.create_metric("clipiqa", device=self.device).eval()
        raise ValueError(f"metric {name!r} has no network")

    def _one(self, name: str, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if name in ("psnr", "ssim"):
            return psnr(x, y) if name == "psnr" else ssim(x * 255, y * 255)
        if name in ("psnr_y", "ssim_y"):
            yx, yy = rgb_to_y(x.double()), rgb_to_y(y.double())
            if self.round_y:
                yx, yy = yx.round(), yy.round()
            return psnr(yx, yy, 255.0) if name == "psnr_y" else ssim(yx, yy)
        net = self.nets[name]
        x, y = x.float(), None if y is None else y.float()
        with torch.no_grad():
            if name.startswith("lpips"):
                return net(x * 2 - 1, y * 2 - 1)
            if name == "dists":
                return net(x, y)
            return net(x).flatten()

    def __call__(self, restored: torch.Tensor, gt: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if not isinstance(restored, torch.Tensor) or restored.ndim != 4 or restored.shape[1] != 3:
            raise ValueError(f"restored must be a (B, 3, H, W) tensor in [0, 1], got {getattr(restored, 'shape', None)}")
        fr = [n for n in self.names if IQA_METRICS[n].mode == "fr"]
        if fr and (gt is None or gt.shape != restored.shape):
            got = None if gt is None else tuple(gt.shape)
            raise ValueError(f"metrics {', '.join(fr)} need a gt tensor of shape {tuple(restored.shape)}, got {got}")
        out: dict[str, list[torch.Tensor]] = {n: [] for n in self.names if IQA_METRICS[n].mode != "set"}
        for i in range(0, restored.shape[0], self.batch_size):
            x = _as_float(restored[i : i + self.batch_size].to(self.device))  # (b, 3, H, W)
            y = None if gt is None else _as_float(gt[i : i + self.batch_size].to(self.device))
            for name, values in out.items():
                values.append(self._one(name, x, y).float().reshape(-1))
        return {name: torch.cat(v) for name, v in out.items()}

    # ----------------------------------------------------------------------------------------- FID

    def _features(self, net: torch.nn.Module, folder: str | os.PathLike) -> np.ndarray:
        from honestface.io import list_images, read_image

        files = list_images(folder)
        if len(files) < 2:
            raise ValueError(f"FID needs at least 2 images in {folder}, found {len(files)}")
        feats = []
        for i in range(0, len(files), self.batch_size):
            batch = []
            for f in files[i : i + self.batch_size]:
                img = torch.from_numpy(read_image(f)).permute(2, 0, 1)[None].float()  # (1, 3, H, W) in [0, 1]
                batch.append(F.interpolate(img, size=(299, 299), mode="bilinear", align_corners=False))
            x = torch.cat(batch).to(self.device) * 2 - 1  # (b, 3, 299, 299) in [-1, 1]
            with torch.no_grad():
                feats.append(net(x).double().cpu().numpy())
        return np.concatenate(feats)  # (N, 2048)

    def fid(self, restored_dir: str | os.PathLike, reference: str | os.PathLike) -> float:
        """FID of a folder against a folder, a statistics file (.npz / .pth) or a registry entry name."""
        from pyiqa.archs.fid_arch import frechet_distance

        net = build_fid_inception(self._weight("fid_inception")).to(self.device)
        mu1_sig1 = self._features(net, restored_dir)
        mu1, sig1 = mu1_sig1.mean(0), np.cov(mu1_sig1, rowvar=False)
        ref = Path(reference)
        if ref.is_dir():
            f2 = self._features(net, ref)
            mu2, sig2 = f2.mean(0), np.cov(f2, rowvar=False)
        elif ref.is_file():
            mu2, sig2 = load_fid_statistics(ref)
        else:
            try:
                mu2, sig2 = load_fid_statistics(resolve_weight(str(reference), self.weights.get(str(reference))))
            except KeyError as err:
                raise FileNotFoundError(f"FID reference {reference} is neither a folder, a file nor a weight name") from err
        return float(frechet_distance(mu1, sig1, mu2, sig2))

