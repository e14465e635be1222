"""VSPBFR restoration auto-encoder: SMART encoder + StyleGAN2 decoder driven by visual style prompts and a feature bank.

Paper component: the "restoration network" of Fig. 1(c) in Lu et al., "Visual Style Prompt Learning Using Diffusion
Models for Blind Face Restoration" (arXiv 2412.21042). The paper body was not reachable, so the architecture follows
the released code (github.com/LonglongaaaGo/VSPBFR `models/RestoreNet.py`, class `Restoration_net`; facts only, summary in
docs/architecture.md#vspbfr). With n = n_latent = 2 log2(size) - 2 style slots:

- random codes z_hat (B, n, style_dim) = mapping(z), z ~ N(0, I) (PixelNorm + n_mlp EqualLinear, lr_mul 0.01); with
  probability `mixing` two codes are drawn and switched at a random crossover in [1, n - 1];
- latent_i = [w0_i ; z_hat_i] (2 style_dim), w0 = the first n rows of the code diffuser's W+ prompt;
- encoder: stem LargeConvLayer(3 -> C_size, k=1); for r = size .. 8: SMART (output kept as skip e_r) then a
  blur + stride-2 modulated StyledConv, both styled by the *flipped* slot 2j of pair j, i.e. original slot n-1-2j
  (slots 15, 13, ..., 3 at 512 px); LargeConvLayer(k=3) at 4x4 gives e_4; global code
  c = Dropout(lrelu(EqualLinear(16 C_4 -> code_dim)(e_4))) and e_4 += reshape(lrelu(EqualLinear(code_dim -> 16 C_4)(c)));
- decoder (StyleGAN2 synthesis from e_4, styles [latent_i ; c], 2 style_dim + code_dim wide): SMART(e_4) with slot 0,
  ToRGB slot 1; for r = 8 .. size with i = 1, 3, 5, ...: up StyledConv (slot i), fusion h + e_r + bank_r (a plain
  sum), SMART (slot i + 1), skip-ToRGB (slot i + 2). Slots 0 .. n-1 are all consumed; the output is the RGB skip sum.

The facial feature bank is the StyleGAN2 feature list under w0 (`StyleGAN2Generator(..., return_features=True)`:
[4, 8, ..., G_size] px); entries are matched by resolution, so the 4x4 map and maps above `size` (1024 px for the
official 1024 px StyleGAN driving the 512 px network) are ignored, exactly the official `de_feats[1:8]`.

Parameter names are the official ones, so `restoration_net.pt` ('g', 'd', 'g_ema'; from the HF repo
`Wanglong2/VSPBFR`) loads with `load_official_restoration_state_dict` after dropping the unused fixed-noise buffers
`noises.noise_*` and an optional DDP `module.` prefix.

Our choices: all randomness (z, the mixing draw, noise injection) comes from optional `torch.Generator`s, so
inference is reproducible (the official code is not); the widths come from `stylegan_channels` with `channel_max`;
`code_dim` is free (official: 2 C_4 = 1024); the dilation tuple is configurable; `bank=None` drops the bank term (the
same as zero maps); the official `nn.Dropout2d` on the (B, 1024) code (element-wise in torch <= 1.11, whole-row in
1.12) is an element-wise `nn.Dropout` here; no truncation / return_latents options.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from honestface.models.vspbfr.layers import EqualLinear, PixelNorm, StyledConv, ToRGB, sample_noise, stylegan_channels
from honestface.models.vspbfr.smart import DEFAULT_DILATIONS, LargeConvLayer, SMARTLayer

__all__ = ["RestorationNetwork", "convert_official_restoration_state_dict", "load_official_restoration_state_dict"]

BankInput = Sequence[torch.Tensor] | Mapping[int, torch.Tensor] | None


class RestorationNetwork(ModelMixin, ConfigMixin):
    """VSPBFR restoration generator G(lq, w0, bank, z_hat) -> restored face (B, 3, size, size), roughly in [-1, 1].

    Args:
        size: image size (power of two >= 8). style_dim: W+ / mapping width. n_mlp: mapping layers.
        channel_multiplier, channel_max: width table (`stylegan_channels`), the same as the StyleGAN2 whose features
            form the bank. lr_mlp: mapping lr multiplier. code_dim: width of the global code c.
        dropout: dropout on c. blur_kernel: FIR kernel of the up/down-sampling convs. dilations: SMART branches.
    """

    @register_to_config
    def __init__(self, size: int = 512, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2,
                 channel_max: int = 512, lr_mlp: float = 0.01, code_dim: int = 1024, dropout: float = 0.5,
                 blur_kernel: Sequence[int] = (1, 3, 3, 1), dilations: Sequence[int] = DEFAULT_DILATIONS) -> None:
        super().__init__()
        if size < 8 or size & (size - 1):
            raise ValueError(f"RestorationNetwork: size must be a power of two >= 8, got {size}")
        if style_dim < 1 or code_dim < 1 or n_mlp < 1:
            raise ValueError(f"RestorationNetwork: style_dim ({style_dim}), code_dim ({code_dim}) and n_mlp ({n_mlp}) "
                             "must be >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"RestorationNetwork: dropout must be in [0, 1), got {dropout}")
        blur_kernel, dilations = tuple(blur_kernel), tuple(dilations)
        self.size, self.style_dim, self.code_dim = size, style_dim, code_dim
        self.log_size = int(math.log2(size))
        self.n_latent = 2 * self.log_size - 2
        self.channels = ch = stylegan_channels(size, channel_multiplier, channel_max)
        self.encoder_resolutions = [2 ** i for i in range(self.log_size, 2, -1)]  # size, ..., 8
        self.decoder_resolutions = self.encoder_resolutions[::-1]  # 8, ..., size
        enc_dim, dec_dim = 2 * style_dim, 2 * style_dim + code_dim

        # mapping network for the random codes z_hat
        self.style = nn.Sequential(PixelNorm(), *(
            EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation="fused_lrelu") for _ in range(n_mlp)))

        # encoder
        self.down_from_big = LargeConvLayer(3, ch[size], 1, dilations)
        self.encoder_convs = nn.ModuleList()
        in_channel = ch[size]
        for res in self.encoder_resolutions:
            self.encoder_convs.append(SMARTLayer(in_channel, ch[res], 3, enc_dim, dilations))
            self.encoder_convs.append(StyledConv(ch[res], ch[res // 2], 3, enc_dim, downsample=True,
                                                 blur_kernel=blur_kernel))
            in_channel = ch[res // 2]
        self.final_layer = LargeConvLayer(in_channel, ch[4], 3, dilations)
        self.final_linear = nn.Sequential(EqualLinear(ch[4] * 16, code_dim, activation="fused_lrelu"),
                                          nn.Dropout(dropout))
        self.final_transfer = EqualLinear(code_dim, ch[4] * 16, activation="fused_lrelu")

        # decoder
        self.conv1 = SMARTLayer(ch[4], ch[4], 3, dec_dim, dilations)
        self.to_rgb1 = ToRGB(ch[4], dec_dim, upsample=False, blur_kernel=blur_kernel)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_channel = ch[4]
        for res in self.decoder_resolutions:
            self.convs.append(StyledConv(in_channel, ch[res], 3, dec_dim, upsample=True, blur_kernel=blur_kernel))
            self.convs.append(SMARTLayer(ch[res], ch[res], 3, dec_dim, dilations))
            self.to_rgbs.append(ToRGB(ch[res], dec_dim, blur_kernel=blur_kernel))
            in_channel = ch[res]

    # ------------------------------------------------------------------------------------------- style slots
    @property
    def encoder_slots(self) -> list[int]:
        """Original W+ slot styling encoder pair j (SMART + down conv at resolution size / 2^j): n - 1 - 2j."""
        return [self.n_latent - 1 - 2 * j for j in range(len(self.encoder_resolutions))]

    @property
    def decoder_slots(self) -> dict[str, int]:
        """Slot of every decoder layer: conv1 0, to_rgb1 1, then convs.2k = 2k+1, convs.2k+1 = 2k+2, to_rgbs.k = 2k+3."""
        slots = {"conv1": 0, "to_rgb1": 1}
        for k in range(len(self.decoder_resolutions)):
            slots.update({f"convs.{2 * k}": 2 * k + 1, f"convs.{2 * k + 1}": 2 * k + 2, f"to_rgbs.{k}": 2 * k + 3})
        return slots

    # ----------------------------------------------------------------------------------------- random codes
    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """(..., style_dim) Gaussian codes -> (..., style_dim) mapped codes."""
        return self.style(z)

    def sample_codes(self, batch_size: int, generator: torch.Generator | None = None, mixing: float = 0.0,
                     device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Random style codes z_hat (B, n_latent, style_dim): one mapped z per sample, or two switched at a random
        crossover with probability `mixing` (one draw and one crossover per batch, as in the official code)."""
        if not 0.0 <= mixing <= 1.0:
            raise ValueError(f"mixing must be a probability in [0, 1], got {mixing}")
        device = device if device is not None else self.device
        dtype = dtype or self.dtype
        gen_device = generator.device if generator is not None else torch.device("cpu")
        mix = mixing > 0 and float(torch.rand((), generator=generator, device=gen_device)) < mixing
        z = sample_noise((2 if mix else 1, batch_size, self.style_dim), generator=generator, device=device,
                         dtype=dtype)
        codes = self.mapping(z)  # (1 or 2, B, style_dim)
        if not mix:
            return codes[0].unsqueeze(1).expand(-1, self.n_latent, -1)
        cut = int(torch.randint(1, self.n_latent, (1,), generator=generator, device=gen_device))
        return torch.cat([codes[0].unsqueeze(1).expand(-1, cut, -1),
                          codes[1].unsqueeze(1).expand(-1, self.n_latent - cut, -1)], dim=1)

    def style_latents(self, w0: torch.Tensor, z: torch.Tensor | None = None,
                      generator: torch.Generator | None = None, mixing: float = 0.0,
                      dtype: torch.dtype | None = None) -> torch.Tensor:
        """[w0_i ; z_hat_i] for i < n_latent -> (B, n_latent, 2 style_dim). `z` (B, style_dim) or (B, n_latent,
        style_dim) Gaussian codes are mapped as given (no mixing); None draws them with `sample_codes`."""
        n, d = self.n_latent, self.style_dim
        if not 0.0 <= mixing <= 1.0:
            raise ValueError(f"mixing must be a probability in [0, 1], got {mixing}")
        if w0.ndim != 3 or w0.shape[1] < n or w0.shape[2] != d:
            raise ValueError(f"w0 must be (B, >= {n}, {d}), got {tuple(w0.shape)}")
        b, dtype = w0.shape[0], dtype or w0.dtype
        if z is None:
            z_hat = self.sample_codes(b, generator, mixing, device=w0.device, dtype=dtype)
        elif z.shape in ((b, d), (b, n, d)):
            z_hat = self.mapping(z.to(device=w0.device, dtype=dtype))
            z_hat = z_hat.unsqueeze(1).expand(-1, n, -1) if z_hat.ndim == 2 else z_hat
        else:
            raise ValueError(f"z must be (B, {d}) or (B, {n}, {d}) with B = {b}, got {tuple(z.shape)}")
        return torch.cat([w0[:, :n].to(dtype), z_hat.to(dtype)], dim=-1)  # (B, n, 2 style_dim)

    # --------------------------------------------------------------------------------------------- encoder
    def encode(self, lq: torch.Tensor, latent: torch.Tensor,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """lq (B, 3, size, size), latent (B, n_latent, 2 style_dim) in original slot order ->
        (c (B, code_dim), [e_4, e_8, ..., e_size] with e_r (B, C_r, r, r))."""
        flipped = latent.flip(1)
        out = self.down_from_big(lq)  # (B, C_size, size, size)
        skips = []
        for j in range(len(self.encoder_resolutions)):
            style = flipped[:, 2 * j]  # = latent[:, n - 1 - 2j]
            out = self.encoder_convs[2 * j](out, style, generator=generator)  # (B, C_r, r, r)
            skips.append(out)
            out = self.encoder_convs[2 * j + 1](out, style, generator=generator)  # (B, C_r/2, r/2, r/2)
        e4 = self.final_layer(out)  # (B, C_4, 4, 4)
        c = self.final_linear(e4.flatten(1))  # (B, code_dim)
        e4 = e4 + self.final_transfer(c).view_as(e4)
        return c, [e4, *skips[::-1]]

    # --------------------------------------------------------------------------------------------- decoder
    def _bank_by_resolution(self, bank: BankInput, ref: torch.Tensor) -> dict[int, torch.Tensor] | None:
        if bank is None:
            return None
        items = bank.items() if isinstance(bank, Mapping) else ((int(t.shape[-1]), t) for t in bank)
        maps: dict[int, torch.Tensor] = {}
        for res, t in items:
            if res in self.decoder_resolutions:
                if res in maps:
                    raise ValueError(f"bank holds two maps at {res} px")
                maps[int(res)] = t
        b = ref.shape[0]
        for res in self.decoder_resolutions:
            want = (b, self.channels[res], res, res)
            if res not in maps:
                raise ValueError(f"bank has no {res} px map (need {self.decoder_resolutions}, each (B, C_r, r, r))")
            if tuple(maps[res].shape) != want:
                raise ValueError(f"bank map at {res} px must be {want}, got {tuple(maps[res].shape)}")
            maps[res] = maps[res].to(device=ref.device, dtype=ref.dtype)
        return maps

    def decode(self, features: Sequence[torch.Tensor], c: torch.Tensor, latent: torch.Tensor,
               bank: BankInput = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Encoder features [e_4, ..., e_size], c (B, code_dim), latent (B, n_latent, 2 style_dim) and the bank
        (StyleGAN feature list / {res: map}; None drops the term) -> image (B, 3, size, size)."""
        maps = self._bank_by_resolution(bank, features[0])

        def style(i: int) -> torch.Tensor:
            return torch.cat([latent[:, i], c], dim=1)  # (B, 2 style_dim + code_dim)

        h = self.conv1(features[0], style(0), generator=generator)  # (B, C_4, 4, 4)
        skip = self.to_rgb1(h, style(1))  # (B, 3, 4, 4)
        for k, res in enumerate(self.decoder_resolutions):
            i = 2 * k + 1
            h = self.convs[2 * k](h, style(i), generator=generator)  # (B, C_r, r, r)
            h = h + features[k + 1]
            if maps is not None:
                h = h + maps[res]
            h = self.convs[2 * k + 1](h, style(i + 1), generator=generator)
            skip = self.to_rgbs[k](h, style(i + 2), skip)  # (B, 3, r, r)
        return skip

    def forward(self, lq: torch.Tensor, w0: torch.Tensor, bank: BankInput, z: torch.Tensor | None = None,
                generator: torch.Generator | None = None, mixing: float = 0.0,
                noise_generator: torch.Generator | None = None) -> torch.Tensor:
        """Restore `lq` (B, 3, size, size) in [-1, 1] -> (B, 3, size, size).

        w0: (B, >= n_latent, style_dim) visual style prompt (the first n_latent rows are used). bank: the StyleGAN2
        feature list under w0 (maps at 8 .. size px are used, matched by resolution), a {res: map} dict, or None.
        z: optional Gaussian codes (see `style_latents`); otherwise drawn from `generator` with style mixing
        probability `mixing`. noise_generator: noise injections (None: `generator`). Call `.eval()` first for
        reproducible outputs (dropout on c).
        """
        if lq.ndim != 4 or tuple(lq.shape[1:]) != (3, self.size, self.size):
            raise ValueError(f"lq must be (B, 3, {self.size}, {self.size}), got {tuple(lq.shape)}")
        if w0.shape[0] != lq.shape[0]:
            raise ValueError(f"w0 batch ({w0.shape[0]}) differs from lq batch ({lq.shape[0]})")
        noise_generator = noise_generator if noise_generator is not None else generator
        latent = self.style_latents(w0.to(lq.device), z, generator, mixing, dtype=lq.dtype)
        c, features = self.encode(lq, latent, generator=noise_generator)
        return self.decode(features, c, latent, bank, generator=noise_generator)


# ------------------------------------------------------------------------------------ official checkpoints

def convert_official_restoration_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official `Restoration_net` keys -> ours: strip a DDP `module.` prefix, drop the unused `noises.noise_*`."""
    out = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if not key.startswith("noises."):
            out[key] = value
    return out


def load_official_restoration_state_dict(model: RestorationNetwork,
                                         checkpoint: str | os.PathLike | Mapping[str, object],
                                         key: str = "g_ema", strict: bool = True) -> RestorationNetwork:
    """Load the released `restoration_net.pt` (a dict with 'g', 'd', 'g_ema'), a path to it, or a bare state dict
    into `model` (weights-only loading). `key` picks the sub-dict ('g_ema' is the evaluation model)."""
    from honestface.checkpoints import read_checkpoint

    checkpoint, _ = read_checkpoint(checkpoint, "restoration checkpoint")
    if key in checkpoint:
        state = checkpoint[key]
    elif checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        state = checkpoint
    else:
        raise ValueError(f"checkpoint has no {key!r} entry (keys: {sorted(map(str, checkpoint))[:8]})")
    if not isinstance(state, Mapping):
        raise TypeError(f"checkpoint[{key!r}] is not a state dict ({type(state).__name__})")
    model.load_state_dict(convert_official_restoration_state_dict(state), strict=strict)
    return model
