"""The gray 128 px ArcFace ResNet-18 ("resnet_face18") of the Deg. and IDD identity metrics.

One architecture, two releases with the same state-dict layout:
- `ronghuaiyang/arcface-pytorch:models/resnet.py` `resnet_face18(use_se)` = `ResNetFace(IRBlock, [2, 2, 2, 2])`,
  built with `use_se = False` (`config/config.py`); its `resnet18_110.pth` is the recogniser of VQFR's "Deg."
  (`TencentARC/VQFR:metric_paper/calculate_cos_dist.py`, which wraps it in `DataParallel` before loading, so the
  file's keys carry the `module.` prefix).
- `TencentARC/GFPGAN:gfpgan/archs/arcface_arch.py` `ResNetArcFace(block='IRBlock', layers=[2, 2, 2, 2],
  use_se=False)` (copied as `LIAGM/DAEFR:DAEFR/modules/vqvae/arcface_arch.py`), whose `arcface_resnet18.pth` is the
  recogniser of the DAEFR / RestoreFormer++ identity distance. Module names, shapes and forward are those of
  `ResNetFace`.

Facts of the published architecture (input (B, 1, 128, 128), output (B, 512), every BatchNorm eps 1e-5):
- stem: `conv1` 3x3 (1 -> 64, stride 1, pad 1, no bias) -> `bn1` -> `prelu` (one shared slope) -> 2x2 max pool.
- four stages `layer1..4` of two IRBlocks, widths 64/128/256/512; the first block of stages 2-4 has stride 2 and a
  `downsample` = [1x1 conv with the stride, no bias; BatchNorm2d]; stage 1 has no downsample.
- IRBlock(inplanes -> planes): `bn0`(inplanes) -> `conv1` 3x3 inplanes -> inplanes -> `bn1` -> `prelu` ->
  `conv2` 3x3 inplanes -> planes (the stride) -> `bn2`; add the (downsampled) input; the same `prelu` again.
- head: `bn4` (BatchNorm2d 512) -> dropout (identity in eval) -> flatten (512 * 8 * 8) -> `fc5` -> `bn5`
  (BatchNorm1d 512).

Our choices: only the `use_se=False` variant exists here (both metrics use it); `load_resnet_face18` accepts keys
with or without `module.`, and a file from before PyTorch 0.4.1 that has no `num_batches_tracked` buffers at all
(PyTorch's own BatchNorm loading fills those in the same way); any other missing, unexpected or misshapen key is
an error. The file is read weights-only (`honestface.checkpoints.load_state_dict`).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from honestface.checkpoints import check_state_dict, load_state_dict

STAGE_WIDTHS = (64, 128, 256, 512)
BLOCKS_PER_STAGE = 2


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class IRBlock(nn.Module):
    """Pre-BN residual block of resnet_face18 (no squeeze-excitation)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn0 = nn.BatchNorm2d(inplanes)
        self.conv1 = _conv3x3(inplanes, inplanes)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.prelu = nn.PReLU()
        self.conv2 = _conv3x3(inplanes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.prelu(self.bn1(self.conv1(self.bn0(x))))
        y = self.bn2(self.conv2(y))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.prelu(y + shortcut)


class ResNetFace18(nn.Module):
    """resnet_face18(use_se=False) / ResNetArcFace(IRBlock, [2, 2, 2, 2], use_se=False): gray 128x128 -> 512-D."""

    input_size = 128

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, STAGE_WIDTHS[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STAGE_WIDTHS[0])
        self.prelu = nn.PReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=2, stride=2)
        inplanes = STAGE_WIDTHS[0]
        for i, width in enumerate(STAGE_WIDTHS):
            stride = 1 if i == 0 else 2
            blocks = [IRBlock(inplanes, width, stride)] + [IRBlock(width, width) for _ in range(BLOCKS_PER_STAGE - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            inplanes = width
        self.bn4 = nn.BatchNorm2d(STAGE_WIDTHS[-1])
        self.dropout = nn.Dropout()
        self.fc5 = nn.Linear(STAGE_WIDTHS[-1] * 8 * 8, 512)
        self.bn5 = nn.BatchNorm1d(512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, 1, 128, 128)
        x = self.maxpool(self.prelu(self.bn1(self.conv1(x))))  # (B, 64, 64, 64)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, 512, 8, 8)
        x = self.dropout(self.bn4(x)).flatten(1)  # (B, 32768)
        return self.bn5(self.fc5(x))  # (B, 512)


def resnet_face18_state(path: str | os.PathLike, model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights of `path` (weights-only read) as a state dict that loads strictly into `model`.

    `module.` prefixes (a `DataParallel` save) are removed; if the file has no `num_batches_tracked` buffer at all,
    the model's own are used. Raises ValueError naming missing / unexpected / misshapen keys.
    """
    state = load_state_dict(path, strip_prefix="module.")
    ref = model.state_dict()
    counters = [k for k in ref if k.endswith("num_batches_tracked")]
    if counters and not any(k in state for k in counters):
        state = {**state, **{k: ref[k].clone() for k in counters}}
    check_state_dict(ref, state, source=str(path), what="resnet_face18 (use_se=False)")
    return state


def load_resnet_face18(path: str | os.PathLike, device: str | torch.device | None = None) -> ResNetFace18:
    """A frozen ResNetFace18 in eval mode with the weights of `path` (resnet18_110.pth / arcface_resnet18.pth)."""
    model = ResNetFace18()
    model.load_state_dict(resnet_face18_state(path, model), strict=True)
    model.eval().requires_grad_(False)
    return model.to(torch.device(device) if device is not None else torch.device("cpu"))
