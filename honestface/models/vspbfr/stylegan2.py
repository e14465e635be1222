"""StyleGAN2 generator (config-f) in pure PyTorch, loading rosinality-format checkpoints; VSPBFR's facial feature bank.

Paper component: the pretrained StyleGAN2 of VSPBFR (Lu et al., arXiv 2412.21042). It decodes the visual style
prompt w^0 (W+, 18 x 512 at 1024 px) into the "inverted image" G(w^0), and its activations under w^0 are the
*facial feature bank* (released code LonglongaaaGo/VSPBFR; summary in docs/architecture.md#vspbfr): the 4x4
output of the first conv, then at every resolution 8 .. size the output of the first (upsampling) StyledConv, after
noise and activation.

Architecture: Karras et al., "Analyzing and Improving the Image Quality of StyleGAN" (CVPR 2020), config-f
(mapping = PixelNorm + n_mlp equalized linears with lr_mul 0.01 and leaky ReLU; 4x4 learned constant; two
modulated 3x3 convs per resolution, the first upsampling; skip-ToRGB outputs summed over resolutions). Parameter and
buffer names are those of the rosinality port (github.com/rosinality/stylegan2-pytorch, `Generator`): `style.{1..}`,
`input.input`, `conv1`, `to_rgb1`, `convs.{i}`, `to_rgbs.{i}`, `noises.noise_{i}`, so the `g_ema` entry of
`stylegan2-ffhq-config-f.pt` (and the `decoder.*` entries of VSPBFR's `style_encoder_decoder.pt`, via `prefix`)
load strictly with no key map. n_latent = 2 * log2(size) - 2.

Our choices: any power-of-two size >= 8 and a `channel_max` cap (tiny test configs); the forward takes W or W+
codes directly (`mapping` maps z); noise is sampled from an optional `torch.Generator` (reproducible); the module
takes the input's dtype; no truncation / style mixing inside the forward (callers build the W+ code they want).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from honestface.models.vspbfr.layers import (
    ConstantInput,
    EqualLinear,
    PixelNorm,
    StyledConv,
    ToRGB,
    sample_noise,
    stylegan_channels,
)

__all__ = ["StyleGAN2Generator", "StyleGAN2Output", "load_rosinality_state_dict", "select_state_dict"]


@dataclass
class StyleGAN2Output(BaseOutput):
    """image: (B, 3, size, size), in the generator's range (about [-1, 1]); features: the facial feature bank,
    [(B, C_4, 4, 4), (B, C_8, 8, 8), ..., (B, C_size, size, size)] when requested, else None."""

    image: torch.Tensor
    features: list[torch.Tensor] | None = None


class StyleGAN2Generator(ModelMixin, ConfigMixin):
    """StyleGAN2 config-f generator.

    Args:
        size: output resolution, a power of two >= 8 (1024 for FFHQ config-f).
        style_dim: width of z and w. n_mlp: number of mapping layers. lr_mlp: their learning-rate multiplier.
        channel_multiplier, channel_max: the per-resolution widths, see `layers.stylegan_channels`.
        blur_kernel: the 1-D FIR kernel of the up-sampling filters.
    """

    @register_to_config
    def __init__(self, size: int = 1024, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2,
                 channel_max: int = 512, lr_mlp: float = 0.01, blur_kernel: Sequence[int] = (1, 3, 3, 1)) -> None:
        super().__init__()
        if size < 8 or size & (size - 1):
            raise ValueError(f"StyleGAN2Generator: size must be a power of two >= 8, got {size}")
        if n_mlp < 1:
            raise ValueError(f"StyleGAN2Generator: n_mlp must be >= 1, got {n_mlp}")
        blur_kernel = tuple(blur_kernel)
        self.size, self.style_dim = size, style_dim
        self.log_size = int(math.log2(size))
        self.n_latent = 2 * self.log_size - 2
        self.num_layers = 2 * (self.log_size - 2) + 1
        self.channels = stylegan_channels(size, channel_multiplier, channel_max)

        self.style = nn.Sequential(PixelNorm(), *[
            EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation="fused_lrelu") for _ in range(n_mlp)])

        c4 = self.channels[4]
        self.input = ConstantInput(c4)
        self.conv1 = StyledConv(c4, c4, 3, style_dim, blur_kernel=blur_kernel)
        self.to_rgb1 = ToRGB(c4, style_dim, upsample=False)

        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_channel = c4
        for i in range(3, self.log_size + 1):
            out_channel = self.channels[2 ** i]
            self.convs.append(StyledConv(in_channel, out_channel, 3, style_dim, upsample=True, blur_kernel=blur_kernel))
            self.convs.append(StyledConv(out_channel, out_channel, 3, style_dim, blur_kernel=blur_kernel))
            self.to_rgbs.append(ToRGB(out_channel, style_dim, blur_kernel=blur_kernel))
            in_channel = out_channel

        self.noises = nn.Module()  # fixed per-layer noise maps, used with randomize_noise=False
        for idx in range(self.num_layers):
            res = 2 ** ((idx + 5) // 2)
            self.noises.register_buffer(f"noise_{idx}", torch.randn(1, 1, res, res))

    # ----------------------------------------------------------------------------------------------- properties

    @property
    def resolutions(self) -> list[int]:
        """Resolutions of the feature bank entries: [4, 8, ..., size]."""
        return [2 ** i for i in range(2, self.log_size + 1)]

    @property
    def feature_channels(self) -> dict[int, int]:
        """Channels of the feature bank entry at each resolution."""
        return {r: self.channels[r] for r in self.resolutions}

    def noise_shapes(self) -> list[tuple[int, int, int, int]]:
        """Shapes (1, 1, r, r) of the num_layers noise inputs, in forward order."""
        return [tuple(getattr(self.noises, f"noise_{i}").shape) for i in range(self.num_layers)]

    def make_noise(self, batch_size: int = 1, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Fresh noise inputs [(B, 1, r, r)] * num_layers on the model's device/dtype."""
        return [sample_noise((batch_size, 1, s[2], s[3]), generator=generator, device=self.device, dtype=self.dtype)
                for s in self.noise_shapes()]

    # ------------------------------------------------------------------------------------------------- mapping

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """z (..., style_dim) -> w (..., style_dim)."""
        if z.shape[-1] != self.style_dim:
            raise ValueError(f"StyleGAN2Generator.mapping: expected z (..., {self.style_dim}), got {tuple(z.shape)}")
        return self.style(z)

    @torch.no_grad()
    def mean_latent(self, n: int = 4096, generator: torch.Generator | None = None) -> torch.Tensor:
        """The average w of `n` random z: (1, style_dim) (the truncation centre)."""
        z = sample_noise((n, self.style_dim), generator=generator, device=self.device, dtype=self.dtype)
        return self.mapping(z).mean(0, keepdim=True)

    # ------------------------------------------------------------------------------------------------- forward

    def _w_plus(self, w: torch.Tensor) -> torch.Tensor:
        if w.ndim == 2 and w.shape[1] == self.style_dim:
            return w.unsqueeze(1).expand(-1, self.n_latent, -1)  # (B, n_latent, D)
        if w.ndim == 3 and w.shape[1:] == (self.n_latent, self.style_dim):
            return w
        raise ValueError(f"StyleGAN2Generator: expected w (B, {self.style_dim}) or w_plus (B, {self.n_latent}, "
                         f"{self.style_dim}), got {tuple(w.shape)}")

    def _noise_inputs(self, noise: Sequence[torch.Tensor | None] | None,
                      randomize_noise: bool) -> list[torch.Tensor | None]:
        if noise is None:
            if randomize_noise:
                return [None] * self.num_layers
            return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]
        noise = list(noise)
        if len(noise) != self.num_layers:
            raise ValueError(f"StyleGAN2Generator: expected {self.num_layers} noise tensors, got {len(noise)}")
        for i, (n, shape) in enumerate(zip(noise, self.noise_shapes())):
            if n is not None and (n.ndim != 4 or n.shape[1] != 1 or tuple(n.shape[-2:]) != shape[-2:]):
                raise ValueError(f"StyleGAN2Generator: noise[{i}] must be (B or 1, 1, {shape[2]}, {shape[3]}), "
                                 f"got {tuple(n.shape)}")
        return noise

    def forward(self, w: torch.Tensor, noise: Sequence[torch.Tensor | None] | None = None,
                randomize_noise: bool = True, generator: torch.Generator | None = None,
                return_features: bool = False) -> StyleGAN2Output:
        """Synthesise images from W (B, style_dim) or W+ (B, n_latent, style_dim) codes.

        noise: num_layers tensors (B or 1, 1, r, r) (None entries are sampled); when `noise` is None, fresh noise is
        drawn (from `generator` if given) if `randomize_noise`, else the stored `noises.noise_i` buffers are used.
        """
        latent = self._w_plus(w)  # (B, n_latent, D)
        noises = self._noise_inputs(noise, randomize_noise)
        out = self.input(latent.shape[0]).to(latent.dtype)  # (B, C_4, 4, 4)
        out = self.conv1(out, latent[:, 0], noise=noises[0], generator=generator)
        features = [out] if return_features else None
        skip = self.to_rgb1(out, latent[:, 1])  # (B, 3, 4, 4)
        i = 1
        for j, to_rgb in enumerate(self.to_rgbs):
            out = self.convs[2 * j](out, latent[:, i], noise=noises[i], generator=generator)  # (B, C_r, r, r)
            if features is not None:
                features.append(out)
            out = self.convs[2 * j + 1](out, latent[:, i + 1], noise=noises[i + 1], generator=generator)
            skip = to_rgb(out, latent[:, i + 2], skip)  # (B, 3, r, r)
            i += 2
        return StyleGAN2Output(image=skip, features=features)

    # ------------------------------------------------------------------------------------------------- loading

    @classmethod
    def from_rosinality(cls, path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor], prefix: str = "",
                        **config) -> StyleGAN2Generator:
        """Build a generator from a rosinality checkpoint (`stylegan2-ffhq-config-f.pt`: its `g_ema`) or state dict.

        `size`, `style_dim` and `n_mlp` are read from the tensors unless given in `config`; `prefix` selects a
        sub-dict (e.g. "decoder." in e4e / VSPBFR `style_encoder_decoder.pt`). Loading is strict.
        """
        state = select_state_dict(path_or_state_dict, prefix)
        config = {**_infer_config(state), **config}
        model = cls(**config)
        load_rosinality_state_dict(model, state)
        return model


def select_state_dict(path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor],
                      prefix: str = "") -> dict[str, torch.Tensor]:
    """The generator's tensors from a checkpoint path, a checkpoint dict (its `g_ema` entry) or a bare state dict,
    restricted to the keys under `prefix` (stripped). Paths load weights-only (`honestface.checkpoints.load_checkpoint`)."""
    from honestface.checkpoints import read_checkpoint

    obj, _ = read_checkpoint(path_or_state_dict, "StyleGAN2 checkpoint")
    if "g_ema" in obj and isinstance(obj["g_ema"], Mapping):
        obj = obj["g_ema"]
    if prefix:
        obj = {k[len(prefix):]: v for k, v in obj.items() if k.startswith(prefix)}
        if not obj:
            raise ValueError(f"no StyleGAN2 tensors under the prefix {prefix!r} in the checkpoint")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _infer_config(state: Mapping[str, torch.Tensor]) -> dict:
    """size, style_dim and n_mlp of a rosinality generator state dict."""
    n_rgb = sum(1 for k in state if k.startswith("to_rgbs.") and k.endswith(".conv.weight"))
    n_mlp = sum(1 for k in state if k.startswith("style.") and k.endswith(".weight"))
    if n_rgb == 0 or n_mlp == 0 or "style.1.weight" not in state:
        raise ValueError("not a rosinality StyleGAN2 generator state dict (no 'style.1.weight' / 'to_rgbs.*' keys)")
    return {"size": 2 ** (n_rgb + 2), "style_dim": int(state["style.1.weight"].shape[1]), "n_mlp": n_mlp}


def load_rosinality_state_dict(model: StyleGAN2Generator, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Strictly load a rosinality-layout generator state dict (or a checkpoint dict holding `g_ema`) into `model`.

    Raises ValueError (one line) naming missing / unexpected keys or mismatched shapes.
    """
    state = select_state_dict(state_dict)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "") if keys else "none"

        cfg = {k: model.config[k] for k in ("size", "style_dim", "n_mlp", "channel_multiplier", "channel_max")}
        raise ValueError(f"StyleGAN2 state dict does not match the generator {cfg}: "
                         f"missing keys: {show(missing)}; unexpected keys: {show(unexpected)}")
    bad = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if state[k].shape != v.shape]
    if bad:
        raise ValueError(f"StyleGAN2 state dict shapes do not match the generator (checkpoint vs model): "
                         f"{'; '.join(bad[:4])}" + (f" (+{len(bad) - 4} more)" if len(bad) > 4 else ""))
    model.load_state_dict(state, strict=True)
