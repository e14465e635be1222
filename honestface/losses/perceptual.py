"""Perceptual loss L_Per of HonestFace: DISTS, edge-aware DISTS (as OSDFace) and LPIPS, offline-safe.

Paper component: the image-space perceptual term `L_Per(x̂_H, x_H)` of HonestFace (Wang et al., arXiv 2505.18469,
pipeline figure). The paper's exact choice is not public; its predecessor OSDFace (Wang et al., CVPR 2025) trains
with **EA-DISTS** and ablates it against EA-LPIPS (OSDFace poster), so `kind="ea_dists"` is the default (our choice).

Sources (facts, not code):
- DISTS: K. Ding, K. Ma, S. Wang, E. P. Simoncelli, "Image Quality Assessment: Unifying Structure and Texture
  Similarity", TPAMI 2020 (arXiv 2004.07728). Layout as in its release and pyiqa 0.1.16 `archs/dists_arch.py`:
  VGG-16 features with every max-pool replaced by an "L2 pooling" (3x3 Hann window hanning(5)[1:-1], normalised,
  stride 2, padding 1, sqrt(conv(x^2) + 1e-12)); six feature sets (the input and relu1_2, relu2_2, relu3_3, relu4_3,
  relu5_3; 3 + 64 + 128 + 256 + 512 + 512 = 1475 channels); input in [0, 1] normalised with the ImageNet mean/std;
  per channel texture term (2 mu_x mu_y + c1) / (mu_x^2 + mu_y^2 + c1) and structure term
  (2 cov_xy + c2) / (var_x + var_y + c2), c1 = c2 = 1e-6, weighted by alpha and beta (learned, each (1, 1475, 1, 1),
  normalised by their joint sum); distance = 1 - weighted sum. 0 for identical images.
  pyiqa's DISTS always builds torchvision's VGG-16 with ImageNet weights (a download), so the network is built here
  and both weight files come through the honestface registry: `vgg16_imagenet` (torchvision VGG-16) and `dists_pyiqa`
  (pyiqa's DISTS file; only its `alpha` / `beta` tensors are used).
- EA-DISTS: OSDFace `edge_aware_dists_demo.py`: Sobel x/y 3x3 kernels on the channel-mean grayscale of the [0, 1]
  image (zero padding 1), magnitude sqrt(gx^2 + gy^2 + 1e-6), fed to DISTS like an image; loss = DISTS(x̂, x) +
  DISTS(edge(x̂), edge(x)).
- LPIPS: R. Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric", CVPR 2018, via
  the `lpips` package (v0.1 linear heads, bundled in its wheel; loaded here with a weights-only reader). Its
  torchvision backbone (`vgg16_imagenet` / `alexnet_imagenet`) comes through the registry, never a download.

Our choices: the edge map is replicated to 3 channels and mapped to each network's input range (as is for DISTS's
[0, 1]; 2e - 1 for LPIPS's [-1, 1]); values above 1 at very sharp edges are kept (no clamp, which would cut
gradients); `edge_weight` scales the edge term (OSDFace: 1); "ea_lpips_vgg" / "ea_lpips_alex" apply the same edge
term to LPIPS (OSDFace's ablation). The networks are frozen (eval mode, no parameter gradients, kept in eval when the
loss module is put in train mode) but the loss is differentiable w.r.t. the images. `random_init=True` builds random
backbones (DISTS alpha/beta at their published initialisation N(0.1, 0.01)) for tests; the LPIPS linear heads are
always the calibrated ones from the lpips wheel. Statistics are computed in float32.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from honestface.checkpoints import check_state_dict, load_state_dict
from honestface.losses.features import load_torchvision_features, vgg16_features
from honestface.weights import resolve_weight

PERCEPTUAL_KINDS = ("ea_dists", "dists", "lpips_vgg", "lpips_alex", "ea_lpips_vgg", "ea_lpips_alex")
MIN_SIZE = 32  # smallest H, W every backbone (AlexNet's 11x11/4 stem and three pools included) accepts

# torchvision VGG-16 "D" configuration: conv widths, "M" = 2x2 max-pool; indices of the resulting Sequential match
# torchvision's `vgg16().features` (conv, relu, ..., pool), so its `features.<i>.*` keys load unchanged.
_DISTS_TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in `features`
_DISTS_CHANNELS = (3, 64, 128, 256, 512, 512)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

PathLike = str | os.PathLike


def check_image_pair(x_hat: torch.Tensor, x: torch.Tensor, min_size: int = 1) -> None:
    """Raise ValueError unless both are (B, 3, H, W) tensors of one shape with H, W >= min_size."""
    for name, t in (("x_hat", x_hat), ("x", x)):
        if not isinstance(t, torch.Tensor) or t.ndim != 4 or t.shape[1] != 3:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a (B, 3, H, W) image tensor in [-1, 1], got {shape}")
    if x_hat.shape != x.shape:
        raise ValueError(f"x_hat {tuple(x_hat.shape)} and x {tuple(x.shape)} must have the same shape")
    if min(x.shape[-2:]) < min_size:
        raise ValueError(f"images must be at least {min_size}x{min_size} pixels, got {tuple(x.shape[-2:])}")


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no parameter gradients (the input stays differentiable)."""
    module.eval()
    module.requires_grad_(False)
    return module


def sobel_edges(images01: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of the channel-mean grayscale: (B, C, H, W) in [0, 1] -> (B, 1, H, W), >= 1e-3."""
    gray = images01.mean(dim=1, keepdim=True)  # (B, 1, H, W)
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=gray.dtype, device=gray.device)
    kernels = torch.stack([kx, kx.t()])[:, None]  # (2, 1, 3, 3): d/dx, d/dy
    g = F.conv2d(gray, kernels, padding=1)  # (B, 2, H, W), zero padding as OSDFace
    return torch.sqrt(g[:, :1] ** 2 + g[:, 1:] ** 2 + 1e-6)


class L2Pooling(nn.Module):
    """DISTS's L2 pooling: sqrt of a Hann-weighted 3x3 sum of squares, stride 2 (anti-aliased downsampling)."""

    def __init__(self, channels: int):
        super().__init__()
        a = np.hanning(5)[1:-1]
        g = torch.tensor(np.outer(a, a) / np.outer(a, a).sum(), dtype=torch.float32)
        self.register_buffer("filter", g[None, None].repeat(channels, 1, 1, 1), persistent=False)  # (C, 1, 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(x**2, self.filter.to(x.dtype), stride=2, padding=1, groups=x.shape[1])
        return (out + 1e-12).sqrt()


class DISTS(nn.Module):
    """DISTS distance (Ding et al., TPAMI 2020): (B, 3, H, W) pairs in [0, 1] -> (B,), 0 for identical images.

    Args:
        vgg_weights: path of torchvision VGG-16 ImageNet weights (registry `vgg16_imagenet`; None: $HONESTFACE_HOME).
        dists_weights: path of pyiqa's DISTS weights (registry `dists_pyiqa`; None: $HONESTFACE_HOME).
        random_init: random VGG and alpha/beta at their initialisation; no file is read (tests).
    """

    def __init__(
        self, vgg_weights: PathLike | None = None, dists_weights: PathLike | None = None, random_init: bool = False
    ):
        super().__init__()
        paths = None  # resolved first: a missing file fails before any network is built
        if not random_init:
            paths = resolve_weight("vgg16_imagenet", vgg_weights), resolve_weight("dists_pyiqa", dists_weights)
        self.features = vgg16_features(30, pool=L2Pooling)
        n = sum(_DISTS_CHANNELS)
        self.alpha = nn.Parameter(torch.empty(1, n, 1, 1).normal_(0.1, 0.01))
        self.beta = nn.Parameter(torch.empty(1, n, 1, 1).normal_(0.1, 0.01))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if paths is not None:
            load_torchvision_features(self.features, paths[0], "torchvision VGG-16 features (weights.vgg16_imagenet)")
            self.load_alpha_beta(paths[1])
        freeze(self)

    def load_alpha_beta(self, path: PathLike) -> None:
        """Read `alpha` and `beta` (each (1, 1475, 1, 1)) from a DISTS weights file (pyiqa's or the original)."""
        state = load_state_dict(path)
        for name in ("alpha", "beta"):
            t = state.get(name)
            ref = getattr(self, name)
            if not isinstance(t, torch.Tensor) or t.numel() != ref.numel():
                got = "missing" if t is None else f"shape {tuple(t.shape)}"
                raise ValueError(f"{path}: DISTS weights need '{name}' with {ref.numel()} values, {got}")
            ref.data.copy_(t.reshape(ref.shape))

    def train(self, mode: bool = True) -> DISTS:
        return super().train(False)  # frozen metric network: always eval

    def _feats(self, x01: torch.Tensor) -> list[torch.Tensor]:
        h = (x01.to(self.mean.dtype) - self.mean) / self.std
        h = h.to(self.alpha.dtype)
        feats = [x01.float()]
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in _DISTS_TAPS:
                feats.append(h.float())
        return feats

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # x, y: (B, 3, H, W) in [0, 1]
        fx, fy = self._feats(x), self._feats(y)
        w_sum = self.alpha.sum() + self.beta.sum()
        alphas = torch.split(self.alpha.float() / w_sum, _DISTS_CHANNELS, dim=1)
        betas = torch.split(self.beta.float() / w_sum, _DISTS_CHANNELS, dim=1)
        c1 = c2 = 1e-6
        score = x.new_zeros(x.shape[0], dtype=torch.float32)
        for a, b, f0, f1 in zip(alphas, betas, fx, fy):
            m0, m1 = f0.mean((2, 3), keepdim=True), f1.mean((2, 3), keepdim=True)  # (B, C, 1, 1)
            texture = (2 * m0 * m1 + c1) / (m0**2 + m1**2 + c1)
            v0 = ((f0 - m0) ** 2).mean((2, 3), keepdim=True)
            v1 = ((f1 - m1) ** 2).mean((2, 3), keepdim=True)
            cov = ((f0 - m0) * (f1 - m1)).mean((2, 3), keepdim=True)
            structure = (2 * cov + c2) / (v0 + v1 + c2)
            score = score + (a * texture + b * structure).sum((1, 2, 3))
        return 1 - score  # (B,)


class LPIPSNet(nn.Module):
    """LPIPS (Zhang et al., CVPR 2018) from the `lpips` package: (B, 3, H, W) pairs in [-1, 1] -> (B,).

    Args:
        net: "vgg" or "alex".
        weights: path of the torchvision backbone (registry `vgg16_imagenet` / `alexnet_imagenet`).
        random_init: random backbone (torchvision initialisation), no file read; the linear heads are still the
            calibrated v0.1 ones bundled with lpips.
    """

    def __init__(self, net: str = "vgg", weights: PathLike | None = None, random_init: bool = False):
        super().__init__()
        if net not in ("vgg", "alex"):
            raise ValueError(f"unknown LPIPS net {net!r}; allowed: vgg, alex")
        import lpips

        entry = "vgg16_imagenet" if net == "vgg" else "alexnet_imagenet"
        path = None if random_init else resolve_weight(entry, weights)  # fail before building anything
        with warnings.catch_warnings():  # torchvision's deprecation notice about lpips's `pretrained=` argument
            warnings.simplefilter("ignore")
            self.lpips = lpips.LPIPS(pretrained=False, net=net, pnet_rand=True, verbose=False)
        heads = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
        state = load_state_dict(heads, strip_prefix=None)
        expected = {k: v for k, v in self.lpips.state_dict().items() if k.startswith("lin") and not k.startswith("lins.")}
        check_state_dict(expected, state, str(heads), f"the LPIPS-{net} linear heads")
        self.lpips.load_state_dict(state, strict=False)
        if path is not None:
            # lpips splits torchvision's `features` into slice1..5 keeping the indices: sliceK.<i>.* <- features.<i>.*
            slices = {k.split(".", 1)[1]: k for k in self.lpips.net.state_dict()}
            load_torchvision_features(self.lpips.net, path, f"torchvision {net} features (weights.{entry})", slices)
        freeze(self)

    def train(self, mode: bool = True) -> LPIPSNet:
        return super().train(False)  # dropout in the heads stays off

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # x, y: (B, 3, H, W) in [-1, 1]
        dtype = self.lpips.lin0.model[1].weight.dtype
        return self.lpips(x.to(dtype), y.to(dtype)).float().flatten()  # (B,)


class PerceptualLoss(nn.Module):
    """L_Per: perceptual distance between restored and ground-truth faces, mean over the batch.

    Args:
        kind: "ea_dists" (DISTS + DISTS of Sobel edge maps, OSDFace), "dists", "lpips_vgg", "lpips_alex",
            "ea_lpips_vgg", "ea_lpips_alex".
        weights: backbone weights path overriding the registry (`weights.vgg16_imagenet`, or
            `weights.alexnet_imagenet` for the AlexNet kinds).
        dists_weights: DISTS alpha/beta path overriding the registry (`weights.dists_pyiqa`).
        random_init: random backbones, no weight file needed (tests, smoke runs).
        edge_weight: weight of the edge term of the "ea_" kinds.

    forward(x_hat, x): (B, 3, H, W) in [-1, 1], H, W >= 32 -> (loss scalar, terms dict of detached scalars).
    """

    def __init__(
        self,
        kind: str = "ea_dists",
        weights: PathLike | None = None,
        dists_weights: PathLike | None = None,
        random_init: bool = False,
        edge_weight: float = 1.0,
    ):
        super().__init__()
        if kind not in PERCEPTUAL_KINDS:
            raise ValueError(f"unknown perceptual loss kind {kind!r}; allowed: {', '.join(PERCEPTUAL_KINDS)}")
        self.kind = kind
        self.edge_aware = kind.startswith("ea_")
        self.edge_weight = float(edge_weight)
        base = kind.removeprefix("ea_")
        self.metric = base
        if base == "dists":
            self.net: nn.Module = DISTS(weights, dists_weights, random_init=random_init)
        else:
            self.net = LPIPSNet(base.removeprefix("lpips_"), weights, random_init=random_init)

    def distance(self, a01: torch.Tensor, b01: torch.Tensor) -> torch.Tensor:
        """Per-sample distance of two (B, 3, H, W) tensors in [0, 1] (each network's own input range inside)."""
        if self.metric == "dists":
            return self.net(a01, b01)
        return self.net(a01 * 2 - 1, b01 * 2 - 1)

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        check_image_pair(x_hat, x, MIN_SIZE)
        a, b = (x_hat + 1) / 2, (x + 1) / 2  # (B, 3, H, W) in [0, 1]
        d = self.distance(a, b).mean()
        terms = {self.metric: d.detach()}
        loss = d
        if self.edge_aware:
            ea, eb = sobel_edges(a).expand(-1, 3, -1, -1), sobel_edges(b).expand(-1, 3, -1, -1)  # (B, 3, H, W)
            e = self.distance(ea, eb).mean()
            terms[f"edge_{self.metric}"] = e.detach()
            loss = d + self.edge_weight * e
        return loss, terms
