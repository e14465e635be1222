"""VSPBFR style encoder: e4e's Encoder4Editing on an IR-SE body, mapping a (degraded) face to StyleGAN2 W+ codes.

Paper component: the "style encoder" E of the diffusion-based style prompt module (Lu et al., arXiv 2412.21042,
Fig. 1a): w_hat = E(resize256(I_LQ)) (B, 18, 512), the condition of the code diffuser. VSPBFR uses e4e's encoder
(Tov et al., "Designing an Encoder for StyleGAN Image Manipulation", SIGGRAPH 2021) fine-tuned on (LQ, HQ) pairs in
LonglongaaaGo/e4e_trainer. Facts (layer layout, parameter names, tap points, FPN, progressive deltas) were read from
omertov/encoder4editing `models/encoders/psp_encoders.py` / `helpers.py` and the e4e_trainer copy (summary in
docs/architecture.md#vspbfr); the code here is our own.

Architecture (defaults = IR-SE-50, 256 px input, 18 x 512 output):
- input layer: conv3x3 (3 -> widths[0], no bias) + BatchNorm + PReLU;
- body: four stages of bottleneck_IR_SE units (`units` per stage, first unit stride 2): BN -> conv3x3 -> PReLU ->
  conv3x3 (stride) -> BN -> squeeze-excitation, plus a shortcut (max-pool(1, stride) when the width is kept, else
  conv1x1 (stride) + BN). Feature taps c1, c2, c3 = the ends of stages 2, 3, 4 (input/4, /8, /16 px);
- FPN: p2 = up(c3) + latlayer1(c2), p1 = up(p2) + latlayer2(c1) (bilinear, align_corners=True);
- GradualStyleBlocks (stride-2 conv3x3 + LeakyReLU(0.01) down to 1 x 1, then EqualLinear): style 0 and the other
  coarse styles read c3, the middle ones p2, the fine ones p1;
- e4e's "base code + deltas": w_i = w_0 + delta_i for i = 1 .. progressive_stage (all at inference), then
  + latent_avg (the StyleGAN mean latent, `start_from_latent_avg`), which e4e's pSp wrapper adds outside the encoder.

Our choices: the coarse/middle split (e4e: coarse_ind 3, middle_ind 7, the same for 14 or 18 styles) is kept for
n_styles >= 8 and becomes thirds, coarse_ind = max(1, n // 3), middle_ind = max(coarse_ind + 1, 2n // 3), below that
(tiny test configs); both can be given explicitly. The squeeze-excitation width is max(1, width // se_reduction) so
tiny widths work. Images of another size are bilinearly resized (align_corners=False, no antialias) to `input_size`
inside forward. `latent_avg` is always stored (n_styles, style_dim); a checkpoint's (style_dim,) or (1, style_dim)
mean latent is repeated.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from honestface.models.vspbfr.layers import EqualLinear

__all__ = ["BottleneckIRSE", "GradualStyleBlock", "SEModule", "StyleEncoder", "load_e4e_state_dict", "style_split"]


class SEModule(nn.Module):
    """Squeeze-excitation: x * sigmoid(fc2(relu(fc1(avgpool(x))))) with bias-free 1x1 convs."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1))))
        return x * torch.sigmoid(gate)


class BottleneckIRSE(nn.Module):
    """IR-SE residual unit (e4e `bottleneck_IR_SE`): (B, C_in, H, W) -> (B, depth, H / stride, W / stride)."""

    def __init__(self, in_channel: int, depth: int, stride: int, se_reduction: int = 16) -> None:
        super().__init__()
        if in_channel == depth:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_channel, depth, 1, stride, bias=False),
                                                nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channel),
            nn.Conv2d(in_channel, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            SEModule(depth, se_reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class GradualStyleBlock(nn.Module):
    """(B, C, s, s) feature -> (B, out_channel) style: log2(s) stride-2 conv3x3 + LeakyReLU, then EqualLinear."""

    def __init__(self, in_channel: int, out_channel: int, spatial: int) -> None:
        super().__init__()
        num_pools = int(math.log2(spatial))
        if spatial < 2 or 2 ** num_pools != spatial:
            raise ValueError(f"GradualStyleBlock: spatial must be a power of two >= 2, got {spatial}")
        layers: list[nn.Module] = []
        for i in range(num_pools):
            layers += [nn.Conv2d(in_channel if i == 0 else out_channel, out_channel, 3, 2, 1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_channel, out_channel, lr_mul=1.0)
        self.spatial = spatial

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(x)  # (B, out, 1, 1)
        return self.linear(x.flatten(1))


def style_split(n_styles: int, coarse_ind: int | None = None, middle_ind: int | None = None) -> tuple[int, int]:
    """(coarse_ind, middle_ind): styles [0, coarse) read c3, [coarse, middle) p2, [middle, n) p1 (see docstring)."""
    if n_styles < 3:
        raise ValueError(f"StyleEncoder: n_styles must be >= 3 (coarse, middle and fine groups), got {n_styles}")
    if coarse_ind is None:
        coarse_ind = 3 if n_styles >= 8 else max(1, n_styles // 3)
    if middle_ind is None:
        middle_ind = 7 if n_styles >= 8 else max(coarse_ind + 1, 2 * n_styles // 3)
    if not 1 <= coarse_ind < middle_ind < n_styles:
        raise ValueError(f"StyleEncoder: need 1 <= coarse_ind < middle_ind < n_styles, got coarse_ind={coarse_ind}, "
                         f"middle_ind={middle_ind}, n_styles={n_styles}")
    return coarse_ind, middle_ind


class StyleEncoder(ModelMixin, ConfigMixin):
    """e4e Encoder4Editing: forward(image (B, 3, H, W) in [-1, 1]) -> W+ codes (B, n_styles, style_dim)."""

    @register_to_config
    def __init__(
        self,
        n_styles: int = 18,
        style_dim: int = 512,
        in_channels: int = 3,
        input_size: int = 256,
        units: Sequence[int] = (3, 4, 14, 3),
        widths: Sequence[int] = (64, 128, 256, 512),
        se_reduction: int = 16,
        coarse_ind: int | None = None,
        middle_ind: int | None = None,
        start_from_latent_avg: bool = True,
    ) -> None:
        super().__init__()
        units, widths = tuple(int(u) for u in units), tuple(int(w) for w in widths)
        if len(units) != 4 or len(widths) != 4 or min(units) < 1 or min(widths) < 1:
            raise ValueError(f"StyleEncoder: units and widths need 4 positive entries, got {units}, {widths}")
        if input_size < 32 or input_size & (input_size - 1):
            raise ValueError(f"StyleEncoder: input_size must be a power of two >= 32, got {input_size}")
        self.n_styles, self.style_dim, self.input_size = int(n_styles), int(style_dim), int(input_size)
        self.coarse_ind, self.middle_ind = style_split(self.n_styles, coarse_ind, middle_ind)

        self.input_layer = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                                         nn.BatchNorm2d(widths[0]), nn.PReLU(widths[0]))
        body, in_channel = [], widths[0]
        for n_units, depth in zip(units, widths):
            for i in range(n_units):
                body.append(BottleneckIRSE(in_channel, depth, 2 if i == 0 else 1, se_reduction))
                in_channel = depth
        self.body = nn.Sequential(*body)  # flat, as e4e: keys body.{k}.*
        ends = [sum(units[: s + 1]) - 1 for s in range(4)]
        self.taps = (ends[1], ends[2], ends[3])  # c1, c2, c3 (e4e IR-SE-50: 6, 20, 23)

        spatial = {"coarse": input_size // 16, "middle": input_size // 8, "fine": input_size // 4}
        self.styles = nn.ModuleList(
            GradualStyleBlock(widths[3], self.style_dim, spatial[self._group(i)]) for i in range(self.n_styles))
        self.latlayer1 = nn.Conv2d(widths[2], widths[3], 1)
        self.latlayer2 = nn.Conv2d(widths[1], widths[3], 1)
        if start_from_latent_avg:
            self.register_buffer("latent_avg", torch.zeros(self.n_styles, self.style_dim))
        else:
            self.latent_avg = None

    def _group(self, i: int) -> str:
        return "coarse" if i < self.coarse_ind else "middle" if i < self.middle_ind else "fine"

    def set_latent_avg(self, latent_avg: torch.Tensor) -> None:
        """Store the StyleGAN mean latent, (style_dim,), (1, style_dim) or (n_styles, style_dim), in the buffer."""
        if self.latent_avg is None:
            raise ValueError("StyleEncoder: set_latent_avg needs start_from_latent_avg=True")
        self.latent_avg.copy_(_expand_latent_avg(latent_avg, self.n_styles, self.style_dim, "latent_avg"))

    def forward(self, image: torch.Tensor, progressive_stage: int | None = None) -> torch.Tensor:
        """W+ codes (B, n_styles, style_dim); deltas are added to styles 1 .. progressive_stage (default: all)."""
        if image.ndim != 4 or image.shape[1] != self.config.in_channels:
            raise ValueError(f"StyleEncoder: image must be (B, {self.config.in_channels}, H, W), "
                             f"got {tuple(image.shape)}")
        stage = self.n_styles - 1 if progressive_stage is None else int(progressive_stage)
        if stage < 0:
            raise ValueError(f"StyleEncoder: progressive_stage must be >= 0, got {progressive_stage}")
        if tuple(image.shape[-2:]) != (self.input_size, self.input_size):
            image = F.interpolate(image, size=(self.input_size, self.input_size), mode="bilinear",
                                  align_corners=False)
        x = self.input_layer(image)
        feats = []
        for k, unit in enumerate(self.body):
            x = unit(x)
            if k in self.taps:
                feats.append(x)
        c1, c2, c3 = feats  # (B, w1, S/4, S/4), (B, w2, S/8, S/8), (B, w3, S/16, S/16)

        base = self.styles[0](c3)  # (B, style_dim)
        rows = [base] * self.n_styles
        features, p2 = c3, None
        for i in range(1, min(stage + 1, self.n_styles)):
            if i == self.coarse_ind:
                p2 = features = _upsample_add(c3, self.latlayer1(c2))
            elif i == self.middle_ind:
                features = _upsample_add(p2, self.latlayer2(c1))
            rows[i] = base + self.styles[i](features)
        w = torch.stack(rows, dim=1)  # (B, n_styles, style_dim)
        if self.latent_avg is not None:
            w = w + self.latent_avg.to(w.dtype)
        return w

    @classmethod
    def from_e4e(cls, checkpoint: str | os.PathLike[str] | Mapping[str, Any], **config: Any) -> StyleEncoder:
        """Build an encoder (`config` = constructor arguments, default IR-SE-50 / 18 x 512) and load an e4e
        checkpoint such as VSPBFR's `style_encoder_decoder.pt` into it (see `load_e4e_state_dict`)."""
        model = cls(**config)
        load_e4e_state_dict(model, checkpoint)
        return model


def _upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Bilinear (align_corners=True) upsampling of x to y's size, plus y (e4e's FPN merge)."""
    return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y


def _expand_latent_avg(value: Any, n_styles: int, style_dim: int, source: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{source}: latent_avg must be a tensor, got {type(value).__name__}")
    if value.ndim == 1:
        value = value[None]
    if value.ndim != 2 or value.shape[1] != style_dim or value.shape[0] not in (1, n_styles):
        raise ValueError(f"{source}: latent_avg of shape {tuple(value.shape)} does not fit "
                         f"({n_styles}, {style_dim}), (1, {style_dim}) or ({style_dim},)")
    return value.expand(n_styles, style_dim).clone()


def load_e4e_state_dict(model: StyleEncoder,
                        checkpoint: str | os.PathLike[str] | Mapping[str, Any]) -> StyleEncoder:
    """Load an e4e / pSp checkpoint (a path or its loaded dict) into `model`, strictly; returns `model`.

    The checkpoint is `{"state_dict": {"encoder.*": ..., "decoder.*": ...}, "latent_avg": ..., "opts": ...}`
    (VSPBFR `style_encoder_decoder.pt`, HF `Wanglong2/VSPBFR`; or e4e's `e4e_ffhq_encode.pt`). The `encoder.` keys
    map one to one onto ours (a `module.` prefix is dropped; BatchNorm `num_batches_tracked`, absent from very old
    files, is kept from the model); `decoder.*` (StyleGAN2) is ignored here. With start_from_latent_avg the
    top-level `latent_avg` is required. Any mismatch raises one ValueError line (not a dict: TypeError).
    """
    from honestface.checkpoints import check_state_dict, read_checkpoint

    checkpoint, source = read_checkpoint(checkpoint, "e4e checkpoint")
    weights = checkpoint.get("state_dict", checkpoint)
    if not isinstance(weights, Mapping):
        raise TypeError(f"{source}: 'state_dict' is a {type(weights).__name__}, not a dict")
    state: dict[str, torch.Tensor] = {}
    for key, value in weights.items():
        key = key.removeprefix("module.")
        if key.startswith("encoder."):
            state[key.removeprefix("encoder.")] = value
    if not state:
        raise ValueError(f"{source}: no 'encoder.*' keys (first keys: {list(weights)[:5]})")
    own = model.state_dict()
    for key, value in own.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value
    if model.latent_avg is not None:
        if "latent_avg" not in checkpoint:
            raise ValueError(f"{source}: no 'latent_avg' entry, but the encoder has start_from_latent_avg=True")
        state["latent_avg"] = _expand_latent_avg(checkpoint["latent_avg"], model.n_styles, model.style_dim, source)
    check_state_dict(model, state, source, f"StyleEncoder(n_styles={model.n_styles})")
    model.load_state_dict(state, strict=True)
    return model
