"""Frozen VGG-16 feature extractor shared by the feature-space losses (Masked Face Alignment, perceptual terms).

Task: the "perceptual network" of the Masked Face Alignment loss L_MFA (HonestFace, arXiv 2505.18469; the loss
definition is ours, see `honestface.losses.mfa` and docs/losses.md). One instance can be shared by several losses.

Facts used (numbers only):
- VGG-16 configuration "D" (Simonyan & Zisserman, ICLR 2015): 3x3 convolutions with padding 1, widths
  64,64 | 128,128 | 256x3 | 512x3 | 512x3, 2x2 max-pool after each block. The layout of torchvision's
  `vgg16().features` (31 modules), so that its ImageNet state dict (`vgg16-397923af.pth`, registry entry
  `vgg16_imagenet`) loads with its own `features.<i>.*` keys.
- ImageNet normalisation mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225) on RGB in [0, 1].
- Layer names relu{block}_{i} follow the Johnson et al. (ECCV 2016) / LPIPS convention; the default
  (relu1_2, relu2_2, relu3_3, relu4_3) is the set LPIPS-VGG and style-transfer Gram losses use.

Our choices: the network is built up to the deepest requested layer only (no classifier: 100 M parameters
fewer), ReLUs are not in-place (so a conv output can be returned too), and the module is frozen and always
in eval mode. Input is the model convention, RGB in [-1, 1].
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
from torch import nn

from honestface.checkpoints import check_state_dict, load_state_dict
from honestface.weights import resolve_weight

_VGG16_CFG = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def _layer_names() -> tuple[str, ...]:
    names: list[str] = []
    for block, widths in enumerate(_VGG16_CFG, start=1):
        for i in range(1, len(widths) + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return tuple(names)


VGG16_LAYERS = _layer_names()  # index i = torchvision vgg16().features[i]
DEFAULT_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg16_features(num_modules: int = 30, pool: Callable[[int], nn.Module] | None = None) -> nn.Sequential:
    """The first `num_modules` modules of torchvision's vgg16().features, same indices (30 = up to relu5_3).

    `pool(channels)` replaces the 2x2 max-pools (DISTS uses L2 pooling). Random weights use torchvision's VGG
    initialisation (Kaiming normal, fan_out, zero bias).
    """
    modules: list[nn.Module] = []
    in_ch = 3
    for widths in _VGG16_CFG:
        for w in widths:
            conv = nn.Conv2d(in_ch, w, kernel_size=3, padding=1)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            modules += [conv, nn.ReLU(inplace=False)]
            in_ch = w
        modules.append(pool(in_ch) if pool is not None else nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*modules[:num_modules])


def load_torchvision_features(
    module: nn.Module, path: str | os.PathLike, what: str, key_map: dict[str, str] | None = None
) -> None:
    """Load the `features.*` tensors of a torchvision classifier checkpoint (or a bare features state dict).

    key_map: torchvision name without the `features.` prefix (e.g. "0.weight") -> key in `module`; None when the
    module uses torchvision's indices itself. Checkpoint keys the module does not use (the classifier, deeper
    layers) are ignored; a missing or wrongly shaped key raises one ValueError line.
    """
    state = load_state_dict(path)
    if any(k.startswith("features.") for k in state):  # the full torchvision model
        state = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    own = module.state_dict()
    key_map = key_map if key_map is not None else {k: k for k in own}
    found = {k: v for k, v in state.items() if k in key_map}
    check_state_dict({k: own[m] for k, m in key_map.items()}, found, str(path), what)
    module.load_state_dict({key_map[k]: v for k, v in found.items()}, strict=True)


class VGGFeatures(nn.Module):
    """Frozen VGG-16 features. forward: (B, 3, H, W) in [-1, 1] -> {layer: (B, C_l, H_l, W_l)}.

    `weights`: explicit path to torchvision's VGG-16 ImageNet checkpoint (else the registry entry
    `vgg16_imagenet` under $HONESTFACE_HOME; missing -> honestface.weights.MissingWeightError).
    `random_init=True` skips the weights (tests, smoke runs): Kaiming-normal convolutions as torchvision.
    Differentiable w.r.t. the input; the parameters never require gradients.
    """

    def __init__(
        self,
        layers: Sequence[str] = DEFAULT_LAYERS,
        weights: str | os.PathLike | None = None,
        random_init: bool = False,
    ) -> None:
        super().__init__()
        layers = tuple(layers)
        if not layers:
            raise ValueError("VGGFeatures needs at least one layer")
        unknown = [name for name in layers if name not in VGG16_LAYERS]
        if unknown:
            raise ValueError(f"unknown VGG-16 layer(s) {unknown}; allowed: {', '.join(VGG16_LAYERS)}")
        self.layers = tuple(sorted(set(layers), key=VGG16_LAYERS.index))
        self._index = {VGG16_LAYERS.index(name): name for name in self.layers}
        self.net = vgg16_features(max(self._index) + 1)
        if not random_init:
            what = f"torchvision vgg16().features[:{len(self.net)}] (weights.vgg16_imagenet)"
            load_torchvision_features(self.net, resolve_weight("vgg16_imagenet", weights), what)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGGFeatures:
        return super().train(False)  # frozen: always eval (no dropout / norm layers anyway)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"VGGFeatures expects (B, 3, H, W) images in [-1, 1], got shape {tuple(x.shape)}")
        dtype = self.net[0].weight.dtype
        h = ((x.to(dtype) + 1) / 2 - self.mean.to(dtype)) / self.std.to(dtype)  # (B, 3, H, W) ImageNet-normalised
        out: dict[str, torch.Tensor] = {}
        for i, module in enumerate(self.net):
            h = module(h)
            if i in self._index:
                out[self._index[i]] = h  # (B, C_l, H_l, W_l)
        return out
