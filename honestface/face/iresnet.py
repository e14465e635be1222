"""iResNet face-recognition backbone with the insightface `arcface_torch` state-dict layout.

This is the frozen identity network behind the ArcFace identity loss and the Face Identity Encoder of HonestFace
(arXiv 2505.18469): a PyTorch re-implementation of the "improved residual network" (Duta et al., "Improved Residual
Networks for Image and Video Recognition", arXiv 2004.04989) as used by ArcFace (Deng et al., arXiv 1801.07698).

Facts taken from insightface `recognition/arcface_torch/backbones/iresnet.py` (so that its released `backbone.pth`
checkpoints load with strict key matching; the code here is our own):
- block counts: IR-18 [2, 2, 2, 2], IR-34 [3, 4, 6, 3], IR-50 [3, 4, 14, 3], IR-100 [3, 13, 30, 3],
  IR-200 [6, 26, 60, 6]; stage widths 64/128/256/512, every stage starts with stride 2.
- stem: 3x3 conv (3 -> 64, stride 1, no bias) -> BatchNorm2d -> PReLU.
- block: bn1 -> conv1 (3x3) -> bn2 -> prelu -> conv2 (3x3, the stride) -> bn3, plus the identity, where the first
  block of a stage has `downsample` = [1x1 conv with the stride, BatchNorm2d]. No activation after the sum.
- head: bn2 (BatchNorm2d 512) -> flatten -> dropout -> fc (512 * 7 * 7 -> 512) -> features (BatchNorm1d 512, whose
  weight is fixed at 1). Every BatchNorm uses eps 1e-5. Input: 112x112 RGB, normalised as (x / 255 - 0.5) / 0.5.
- `fp16`: the convolutional body runs under CUDA autocast and the head in fp32.

Our choices: `widths` makes a narrower network possible (same key names, other shapes; used for tiny test models
and exports); `fp16` only takes effect on CUDA tensors; `from_checkpoint` infers the preset from the block counts
in the state dict when `arch` is not given, and refuses any missing or unexpected key.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from honestface.checkpoints import check_state_dict, load_state_dict

IRESNET_LAYERS: dict[str, tuple[int, int, int, int]] = {
    "ir18": (2, 2, 2, 2),
    "ir34": (3, 4, 6, 3),
    "ir50": (3, 4, 14, 3),
    "ir100": (3, 13, 30, 3),
    "ir200": (6, 26, 60, 6),
}

BN_EPS = 1e-5
INPUT_SIZE = 112


class IBasicBlock(nn.Module):
    """Pre-activation-style residual block of iResNet (BN -> conv -> BN -> PReLU -> conv -> BN, + shortcut)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels, eps=BN_EPS)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels, eps=BN_EPS)
        self.prelu = nn.PReLU(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels, eps=BN_EPS)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return h + shortcut


class IResNet(nn.Module):
    """iResNet embedding network: (B, 3, 112, 112) in [-1, 1] -> (B, num_features) raw (un-normalised) embedding.

    Args:
        layers: number of blocks in each of the four stages, e.g. (3, 4, 14, 3) for IR-50.
        num_features: embedding size.
        dropout: dropout before the fc layer (training only).
        widths: channels of the four stages; the stem has widths[0] channels.
        fp16: run the convolutional body under float16 autocast when the input is on CUDA.
    """

    def __init__(
        self,
        layers: Sequence[int],
        num_features: int = 512,
        dropout: float = 0.0,
        widths: Sequence[int] = (64, 128, 256, 512),
        fp16: bool = False,
    ):
        super().__init__()
        if len(layers) != 4 or len(widths) != 4 or min(layers) < 1:
            raise ValueError(f"IResNet needs 4 positive stage block counts and 4 widths, got {layers}, {widths}")
        self.layers = tuple(int(n) for n in layers)
        self.widths = tuple(int(w) for w in widths)
        self.num_features = num_features
        self.fp16 = fp16

        self.conv1 = nn.Conv2d(3, self.widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(self.widths[0], eps=BN_EPS)
        self.prelu = nn.PReLU(self.widths[0])
        in_ch = self.widths[0]
        for i, (n_blocks, out_ch) in enumerate(zip(self.layers, self.widths)):
            self.add_module(f"layer{i + 1}", self._make_stage(in_ch, out_ch, n_blocks))
            in_ch = out_ch
        self.bn2 = nn.BatchNorm2d(in_ch, eps=BN_EPS)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(in_ch * 7 * 7, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=BN_EPS)
        self._init_weights()

    @staticmethod
    def _make_stage(in_ch: int, out_ch: int, n_blocks: int) -> nn.Sequential:
        downsample = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 1, stride=2, bias=False),
            nn.BatchNorm2d(out_ch, eps=BN_EPS),
        )
        blocks = [IBasicBlock(in_ch, out_ch, stride=2, downsample=downsample)]
        blocks += [IBasicBlock(out_ch, out_ch) for _ in range(n_blocks - 1)]
        return nn.Sequential(*blocks)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.ones_(self.features.weight)
        self.features.weight.requires_grad_(False)  # arcface_torch keeps the feature-BN scale at 1

    @property
    def arch(self) -> str | None:
        """Preset name (ir18 ... ir200) of these block counts, or None for a custom depth."""
        return next((name for name, layers in IRESNET_LAYERS.items() if layers == self.layers), None)

    @classmethod
    def from_preset(cls, arch: str, **kwargs) -> IResNet:
        """Build an untrained network by preset name: ir18, ir34, ir50, ir100 or ir200."""
        if arch not in IRESNET_LAYERS:
            raise ValueError(f"unknown iResNet arch {arch!r}; allowed: {', '.join(IRESNET_LAYERS)}")
        return cls(IRESNET_LAYERS[arch], **kwargs)

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, arch: str | None = None, *, map_location: str | torch.device = "cpu"
    ) -> IResNet:
        """Load an arcface_torch `backbone.pth` (a plain state dict) with strict key matching.

        `arch` (ir18 ... ir200) is inferred from the block counts in the file when None. Stage widths and the
        embedding size are read from the tensor shapes, so narrow variants load as well. The network comes back in
        eval mode.
        """
        path = os.fspath(path)
        state = load_state_dict(path, map_location=map_location)

        counts = infer_layers(state)
        if arch is None:
            matches = [name for name, layers in IRESNET_LAYERS.items() if layers == counts]
            if not matches:
                raise ValueError(f"{path}: block counts {counts} match no iResNet preset ({', '.join(IRESNET_LAYERS)})")
            arch = matches[0]
        elif arch not in IRESNET_LAYERS:
            raise ValueError(f"unknown iResNet arch {arch!r}; allowed: {', '.join(IRESNET_LAYERS)}")
        elif any(counts) and counts != IRESNET_LAYERS[arch]:
            found = next((n for n, layers in IRESNET_LAYERS.items() if layers == counts), "no preset")
            raise ValueError(f"{path}: block counts {counts} ({found}) do not fit arch {arch} {IRESNET_LAYERS[arch]}")

        widths, num_features = (64, 128, 256, 512), 512
        try:
            widths = tuple(int(state[f"layer{i}.0.conv1.weight"].shape[0]) for i in range(1, 5))
            num_features = int(state["fc.weight"].shape[0])
        except KeyError:
            pass  # the strict check below names what is missing
        net = cls(IRESNET_LAYERS[arch], num_features=num_features, widths=widths)
        check_state_dict(net, state, f"{path} (arch {arch})", "the arcface_torch iResNet layout")
        net.load_state_dict(state, strict=True)
        return net.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, 3, 112, 112) in [-1, 1]
        if not torch.jit.is_tracing() and (x.ndim != 4 or x.shape[1] != 3 or x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE)):
            raise ValueError(f"IResNet expects (B, 3, {INPUT_SIZE}, {INPUT_SIZE}) input, got {tuple(x.shape)}")
        use_amp = self.fp16 and x.device.type == "cuda"
        with torch.autocast(device_type=x.device.type, dtype=torch.float16, enabled=use_amp):
            h = self.prelu(self.bn1(self.conv1(x)))
            h = self.layer4(self.layer3(self.layer2(self.layer1(h))))  # (B, C4, 7, 7)
            h = self.bn2(h)
            h = self.dropout(torch.flatten(h, 1))  # (B, C4 * 49)
        h = self.fc(h.float() if use_amp else h)
        return self.features(h)  # (B, num_features)


def infer_layers(state: dict[str, torch.Tensor]) -> tuple[int, ...]:
    """Number of blocks per stage found in an iResNet state dict (0 for a stage that is absent)."""
    counts = []
    for stage in range(1, 5):
        prefix = f"layer{stage}."
        idx = {int(k[len(prefix) :].split(".", 1)[0]) for k in state if k.startswith(prefix)}
        counts.append(max(idx) + 1 if idx else 0)
    return tuple(counts)


def iresnet(arch: str, **kwargs) -> IResNet:
    """Shortcut for `IResNet.from_preset(arch, **kwargs)`."""
    return IResNet.from_preset(arch, **kwargs)
