"""StyleGAN2 ResNet discriminator with minibatch standard deviation: VSPBFR's stage-2 discriminator.

Paper component: the discriminator D of VSPBFR (Lu et al., arXiv 2412.21042, Fig. 1 (d)); in the released code
(LonglongaaaGo/VSPBFR `models/RestoreNet.py:Discriminator`) a StyleGAN2 ResNet discriminator at 512 px: 1x1 fromRGB
ConvLayer, one ResBlock per resolution down to 4x4, minibatch stddev (group 4, 1 feature), a 3x3 ConvLayer, then
EqualLinear(C*16 -> C, leaky ReLU) and EqualLinear(C -> 1). Architecture from Karras et al., "Analyzing and Improving
the Image Quality of StyleGAN" (CVPR 2020); parameter names from the rosinality port
(github.com/rosinality/stylegan2-pytorch, `Discriminator`: `convs.*`, `final_conv.*`, `final_linear.*`).

The released VSPBFR class names the same layers differently: `encoder_input_convs.*` (the fromRGB ConvLayer) and
`encoder_convs.<i>.*` (a ModuleList of the ResBlocks) instead of one `convs` Sequential (51 keys at 512 px);
`convert_official_discriminator_state_dict` maps them onto ours, so the `d` entry of `restoration_net.pt` loads
strictly, and leaves keys already in our layout (folders and checkpoints of this library) as they are.

Our choices: the stddev group is the largest divisor of the batch size not above `stddev_group` (the reference
fails on batches not divisible by its group); `channel_max` caps the widths for tiny configs; the input must be
(B, 3, size, size) in [-1, 1].
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from honestface.models.vspbfr.layers import ConvLayer, EqualLinear, ResBlock, stylegan_channels

__all__ = ["StyleGAN2Discriminator", "convert_official_discriminator_state_dict", "minibatch_stddev"]


def minibatch_stddev(x: torch.Tensor, group: int = 4, n_feat: int = 1) -> torch.Tensor:
    """Append `n_feat` channels holding the feature stddev across sample groups: (B, C, H, W) -> (B, C+n_feat, H, W).

    Samples b and b' share a group when b % (B/G) == b' % (B/G), G the largest divisor of B that is <= `group`.
    For each group and each of the n_feat channel chunks, the stddev over the group (biased, +1e-8 under the root)
    is averaged over the chunk's channels and the pixels.
    """
    b, c, h, w = x.shape
    if c % n_feat:
        raise ValueError(f"minibatch_stddev: channels ({c}) must be divisible by n_feat ({n_feat})")
    g = min(group, b)
    while b % g:
        g -= 1
    y = x.view(g, b // g, n_feat, c // n_feat, h, w)
    y = torch.sqrt(y.float().var(dim=0, unbiased=False) + 1e-8)  # (B/G, F, C/F, H, W)
    y = y.mean(dim=(2, 3, 4)).to(x.dtype)  # (B/G, F)
    y = y.view(b // g, n_feat, 1, 1).repeat(g, 1, h, w)  # (B, F, H, W)
    return torch.cat([x, y], dim=1)


class StyleGAN2Discriminator(ModelMixin, ConfigMixin):
    """image (B, 3, size, size) -> logits (B, 1).

    Args:
        size: input resolution, a power of two >= 4. channel_multiplier, channel_max: widths per resolution
        (`layers.stylegan_channels`). blur_kernel: the FIR kernel of the downsampling blur.
        stddev_group, stddev_feat: minibatch-stddev group size and number of stddev channels.
    """

    @register_to_config
    def __init__(self, size: int = 512, channel_multiplier: int = 2, channel_max: int = 512,
                 blur_kernel: Sequence[int] = (1, 3, 3, 1), stddev_group: int = 4, stddev_feat: int = 1) -> None:
        super().__init__()
        if size < 4 or size & (size - 1):
            raise ValueError(f"StyleGAN2Discriminator: size must be a power of two >= 4, got {size}")
        if stddev_group < 1 or stddev_feat < 1:
            raise ValueError(f"StyleGAN2Discriminator: stddev_group ({stddev_group}) and stddev_feat "
                             f"({stddev_feat}) must be >= 1")
        blur_kernel = tuple(blur_kernel)
        channels = stylegan_channels(size, channel_multiplier, channel_max)
        self.size = size
        self.stddev_group, self.stddev_feat = stddev_group, stddev_feat
        layers: list[nn.Module] = [ConvLayer(3, channels[size], 1)]
        in_channel = channels[size]
        for i in range(int(math.log2(size)), 2, -1):
            out_channel = channels[2 ** (i - 1)]
            layers.append(ResBlock(in_channel, out_channel, blur_kernel))
            in_channel = out_channel
        self.convs = nn.Sequential(*layers)
        if in_channel % stddev_feat:
            raise ValueError(f"StyleGAN2Discriminator: stddev_feat ({stddev_feat}) must divide the 4x4 width "
                             f"({in_channel})")
        self.final_conv = ConvLayer(in_channel + stddev_feat, channels[4], 3)
        self.final_linear = nn.Sequential(
            EqualLinear(channels[4] * 4 * 4, channels[4], activation="fused_lrelu"),
            EqualLinear(channels[4], 1),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.ndim != 4 or image.shape[1] != 3 or image.shape[-2:] != (self.size, self.size):
            raise ValueError(f"StyleGAN2Discriminator: expected images (B, 3, {self.size}, {self.size}), "
                             f"got {tuple(image.shape)}")
        out = self.convs(image)  # (B, C_4, 4, 4)
        out = minibatch_stddev(out, self.stddev_group, self.stddev_feat)  # (B, C_4 + F, 4, 4)
        out = self.final_conv(out)  # (B, C_4, 4, 4)
        return self.final_linear(out.flatten(1))  # (B, 1)


def convert_official_discriminator_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Released VSPBFR `Discriminator` keys -> ours: `encoder_input_convs.*` -> `convs.0.*`, `encoder_convs.<i>.*`
    -> `convs.<i + 1>.*`; a DDP `module.` prefix is dropped; every other key (ours, `final_conv.*`,
    `final_linear.*`) is kept. A dict holding both layouts is refused (one ValueError line)."""
    out: dict[str, torch.Tensor] = {}
    released = ours = False
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith("encoder_input_convs."):
            key, released = "convs.0." + key.removeprefix("encoder_input_convs."), True
        elif key.startswith("encoder_convs."):
            index, rest = key.removeprefix("encoder_convs.").split(".", 1)
            key, released = f"convs.{int(index) + 1}.{rest}", True
        elif key.startswith("convs."):
            ours = True
        out[key] = value
    if released and ours:
        raise ValueError("discriminator state dict mixes the released layout (encoder_convs.*) with ours (convs.*)")
    return out
