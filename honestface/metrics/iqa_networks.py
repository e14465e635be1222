"""The network IQA metrics (LPIPS, DISTS, NIQE, MUSIQ, MANIQA, CLIPIQA), built offline from registry files.

Paper component: the LPIPS / DISTS / NIQE / MUSIQ / MANIQA / CLIPIQA columns of the HonestFace tables (Wang et
al., arXiv 2505.18469), which use pyiqa's metrics of those names (Chen et al., IQA-PyTorch) at default settings.

What each one equals (facts from chaofengc/IQA-PyTorch at pyiqa 0.1.16: pyiqa/default_model_configs.py,
pyiqa/archs/{lpips,dists,niqe,musiq,maniqa,clipiqa,clip_model}_arch.py, pyiqa/archs/arch_util.py):
- `LPIPSMetric("alex")` = pyiqa `lpips`, `LPIPSMetric("vgg")` = pyiqa `lpips-vgg` (Zhang et al., CVPR 2018,
  version 0.1): inputs [0, 1] -> 2x - 1 -> (x - shift) / scale with shift (-0.030, -0.088, -0.188), scale (0.458,
  0.448, 0.450); torchvision AlexNet features (ReLU outputs 1, 4, 7, 9, 11) or VGG-16 features (ReLU outputs 3,
  8, 15, 22, 29) with ImageNet weights; each unit-normalised over channels (eps 1e-10), squared difference, 1x1
  linear head, spatial mean, sum over layers. pyiqa's head files `LPIPS_v0.1_{alex,vgg}-<sha256 prefix>.pth` are
  byte-identical to the v0.1 heads bundled in the `lpips` wheel (same sha256 prefixes df73285e / a78928a0): we read
  the wheel's copy weights-only and check that prefix, so no download is needed.
- `DISTSMetric` = pyiqa `dists` (Ding et al., TPAMI 2020): layout in `honestface.losses.perceptual` (VGG-16 with
  L2 pooling, alpha / beta from `dists_pyiqa`); the score uses pyiqa's formula (covariance as E[xy] - E[x] E[y]).
- NIQE / MUSIQ / MANIQA / CLIPIQA: pyiqa's own classes through `pyiqa.create_metric(name)` with default options,
  with the weights of the registry loaded weights-only instead of pyiqa's downloads (MUSIQ `musiq_koniq`, MANIQA
  `maniqa_koniq`, NIQE `niqe_params` read by scipy as pyiqa does, CLIPIQA `clip_rn50_openai`).

Our choices: LPIPS and DISTS run their trunk in channels-last layout with in-place ReLUs and a fused channel
norm (same numbers to float rounding, faster on CPU), on the whole batch on CUDA and on chunks of at most ~16 MB
per activation on CPU (larger blocks cost page faults that outweigh the batching gain, measured); pyiqa's
MANIQA builds timm's ViT with `pretrained=True` before loading its checkpoint over it, so timm's download is
switched off (all ViT weights come from the checkpoint); pyiqa's CLIP loader would run the TorchScript archive,
so its tensors are read with a restricted unpickler (`read_torchscript_tensors`) and handed to pyiqa's `build_model`.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import warnings
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from honestface.checkpoints import check_state_dict, load_state_dict
from honestface.losses.features import load_torchvision_features, vgg16_features
from honestface.weights import WeightsError, file_sha256

PathLike = str | os.PathLike

_LPIPS_TAPS = {"alex": (1, 4, 7, 9, 11), "vgg": (3, 8, 15, 22, 29)}
_LPIPS_HEAD_SHA256 = {"alex": "df73285e", "vgg": "a78928a0"}  # prefixes in pyiqa's head file names
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)
_DISTS_TAPS = (3, 8, 15, 22, 29)
_DISTS_CHANNELS = (3, 64, 128, 256, 512, 512)


# --------------------------------------------------------------------------------------------- file readers

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


def read_torchscript_tensors(path: PathLike) -> dict[str, torch.Tensor]:
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
def patched(obj, attr: str, value):
    """Temporarily replace `obj.attr` (used to keep pyiqa's constructors from downloading)."""
    old = getattr(obj, attr)
    setattr(obj, attr, value)
    try:
        yield
    finally:
        setattr(obj, attr, old)


def load_into(net: nn.Module, path: PathLike, what: str) -> None:
    """Strictly load a weights-only state dict into `net`; a mismatch is one WeightsError line."""
    state = load_state_dict(path)
    try:
        check_state_dict(net, state, str(path), what)
    except ValueError as err:
        raise WeightsError(str(err)) from err
    net.load_state_dict(state, strict=True)


# --------------------------------------------------------------------------------------------- LPIPS / DISTS

def alexnet_features() -> nn.Sequential:
    """torchvision AlexNet `features[:12]` (same indices, so its `features.<i>.*` keys load), random init."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
    )


def lpips_heads_file(net: str) -> Path:
    """The v0.1 linear-head file of the lpips wheel, checked to be the file pyiqa downloads (sha256 prefix)."""
    import lpips

    path = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    if not path.is_file():
        raise WeightsError(f"the lpips package has no LPIPS v0.1 {net} heads at {path}; reinstall lpips")
    if not file_sha256(path).startswith(_LPIPS_HEAD_SHA256[net]):
        raise WeightsError(f"{path} is not pyiqa's LPIPS_v0.1_{net}-{_LPIPS_HEAD_SHA256[net]}.pth (sha256 differs)")
    return path


def _frozen(module: nn.Module) -> nn.Module:
    module.eval()
    module.requires_grad_(False)
    return module


def _trunk(features: nn.Sequential) -> nn.Sequential:
    """`features` in channels-last layout with in-place ReLUs (nothing else reads a conv output)."""
    for i, m in enumerate(features):
        if isinstance(m, nn.ReLU):
            features[i] = nn.ReLU(inplace=True)
    return features.to(memory_format=torch.channels_last)


def _chunk_size(x: torch.Tensor, widest: int = 64) -> int:
    """Images per trunk pass. CUDA: the whole batch. CPU: at most ~16 MB for the widest full-resolution activation
    (glibc serves larger blocks by fresh mmaps whose page faults cost more than the batching gains; measured)."""
    if x.device.type != "cpu":
        return x.shape[0]
    return max(1, (16 << 20) // (widest * x.shape[-2] * x.shape[-1] * 4))


def _tapped(features: nn.Sequential, taps: tuple[int, ...], h: torch.Tensor) -> list[torch.Tensor]:
    out = []
    h = h.contiguous(memory_format=torch.channels_last)
    for i, layer in enumerate(features[: taps[-1] + 1]):
        h = layer(h)
        if i in taps:
            out.append(h)
    return out


class LPIPSMetric(nn.Module):
    """pyiqa `lpips` (net="alex") / `lpips-vgg` (net="vgg"): (B, 3, H, W) pairs in [0, 1] -> (B,) float32.

    backbone: path of torchvision's ImageNet checkpoint (registry `alexnet_imagenet` / `vgg16_imagenet`).
    """

    def __init__(self, net: str, backbone: PathLike) -> None:
        super().__init__()
        if net not in _LPIPS_TAPS:
            raise ValueError(f"unknown LPIPS net {net!r}; allowed: alex, vgg")
        self.taps = _LPIPS_TAPS[net]
        self.features = alexnet_features() if net == "alex" else vgg16_features(30)
        entry = "alexnet_imagenet" if net == "alex" else "vgg16_imagenet"
        load_torchvision_features(self.features, backbone, f"torchvision {net} features (weights.{entry})")
        heads = load_state_dict(lpips_heads_file(net), strip_prefix=None)
        widths = [self.features[i - 1].out_channels for i in self.taps]
        expected = {f"lin{k}.model.1.weight": torch.zeros(1, c, 1, 1) for k, c in enumerate(widths)}
        check_state_dict(expected, heads, "lpips v0.1 heads", f"the LPIPS-{net} linear heads")
        self.heads = nn.ParameterList([nn.Parameter(heads[k].float()) for k in expected])  # each (1, C_k, 1, 1)
        self.register_buffer("shift", torch.tensor(_LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.features = _trunk(self.features)
        _frozen(self)

    def train(self, mode: bool = True) -> LPIPSMetric:
        return super().train(False)

    def _unit_features(self, x01: torch.Tensor) -> list[torch.Tensor]:
        feats = _tapped(self.features, self.taps, (x01.float() * 2 - 1 - self.shift) / self.scale)
        return [f / (torch.linalg.vector_norm(f, dim=1, keepdim=True) + 1e-10) for f in feats]  # unit over channels

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # x (restored), y (reference): (B, 3, H, W) in [0, 1]
        n = _chunk_size(x)
        scores = []
        for i in range(0, x.shape[0], n):
            fx, fy = self._unit_features(x[i : i + n]), self._unit_features(y[i : i + n])
            s = 0
            for head, a, b in zip(self.heads, fx, fy):
                d = a.sub_(b).square_()  # (n, C, h, w), reuses a's memory
                s = s + F.conv2d(d, head).mean((1, 2, 3))
            scores.append(s)
        return torch.cat(scores)  # (B,)


class DISTSMetric(nn.Module):
    """pyiqa `dists`: (B, 3, H, W) pairs in [0, 1] -> (B,) float32, 0 for identical images.

    vgg: torchvision VGG-16 ImageNet checkpoint (`vgg16_imagenet`); dists: pyiqa's alpha/beta file (`dists_pyiqa`).
    """

    def __init__(self, vgg: PathLike, dists: PathLike) -> None:
        super().__init__()
        from honestface.losses.perceptual import DISTS

        net = DISTS(vgg, dists)
        self.features = _trunk(net.features)
        self.alpha, self.beta = net.alpha, net.beta  # (1, 1475, 1, 1) each
        self.register_buffer("mean", net.mean.clone(), persistent=False)
        self.register_buffer("std", net.std.clone(), persistent=False)
        _frozen(self)

    def train(self, mode: bool = True) -> DISTSMetric:
        return super().train(False)

    def _features(self, x01: torch.Tensor) -> list[torch.Tensor]:
        x01 = x01.float()
        return [x01, *_tapped(self.features, _DISTS_TAPS, (x01 - self.mean) / self.std)]

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # x (restored), y (reference): (B, 3, H, W) in [0, 1]
        w_sum = self.alpha.sum() + self.beta.sum()
        alphas = torch.split(self.alpha / w_sum, _DISTS_CHANNELS, dim=1)
        betas = torch.split(self.beta / w_sum, _DISTS_CHANNELS, dim=1)
        c1 = c2 = 1e-6
        n = _chunk_size(x)
        scores = []
        for i in range(0, x.shape[0], n):
            dist1 = dist2 = 0
            for a, be, f0, f1 in zip(alphas, betas, self._features(x[i : i + n]), self._features(y[i : i + n])):
                mx, my = f0.mean((2, 3), keepdim=True), f1.mean((2, 3), keepdim=True)  # (n, C, 1, 1)
                vx, vy = ((f0 - mx) ** 2).mean((2, 3), keepdim=True), ((f1 - my) ** 2).mean((2, 3), keepdim=True)
                cov = (f0 * f1).mean((2, 3), keepdim=True) - mx * my
                dist1 = dist1 + (a * (2 * mx * my + c1) / (mx**2 + my**2 + c1)).sum(1)
                dist2 = dist2 + (be * (2 * cov + c2) / (vx + vy + c2)).sum(1)
            scores.append((1 - (dist1 + dist2)).flatten())
        return torch.cat(scores)  # (B,)


# --------------------------------------------------------------------------------------------- pyiqa NR metrics

def build_pyiqa_metric(name: str, path: PathLike, device: torch.device) -> nn.Module:
    """pyiqa's `niqe` / `musiq` / `maniqa` / `clipiqa` (default options) with the registry file at `path`.

    Returns pyiqa's InferenceModel: (B, 3, H, W) in [0, 1] -> (B, 1) (NIQE: (B,), or a scalar for B = 1)."""
    import pyiqa

    path = Path(path)
    if name == "niqe":
        return pyiqa.create_metric("niqe", device=device, pretrained_model_path=str(path))
    if name == "musiq":
        metric = pyiqa.create_metric("musiq", device=device, pretrained=False)
        load_into(metric.net, path, "pyiqa MUSIQ (weights.musiq_koniq)")
        return metric.eval()
    if name == "maniqa":
        import timm

        create = timm.create_model
        with patched(timm, "create_model", lambda *a, **k: create(*a, **{**k, "pretrained": False})):
            metric = pyiqa.create_metric("maniqa", device=device, pretrained=False)
        load_into(metric.net, path, "pyiqa MANIQA (weights.maniqa_koniq)")
        return metric.eval()
    if name == "clipiqa":
        from pyiqa.archs import clip_model, clipiqa_arch

        state = {k: v.float() for k, v in read_torchscript_tensors(path).items() if not k.endswith("attn_mask")}
        try:
            clip = clip_model.build_model(state).float().eval()
        except (RuntimeError, KeyError) as err:
            raise WeightsError(f"{path}: not an OpenAI CLIP RN50 archive ({str(err).splitlines()[0]})") from err
        with patched(clipiqa_arch, "load", lambda *a, **k: clip):
            return pyiqa.create_metric("clipiqa", device=device).eval()
    raise ValueError(f"metric {name!r} is not a pyiqa network metric")
