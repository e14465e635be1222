"""VQGAN building blocks: conv encoder, conv decoder and a nearest-code vector quantiser.

These are the parts of the LQ VQ autoencoder behind OSDFace's (and HonestFace's) Visual Representation Embedder
(VRE, see `honestface.models.vre`). The architecture is the taming-transformers VQGAN ("Taming Transformers for
High-Resolution Image Synthesis", Esser et al., CVPR 2021) in the variant used by DAEFR (Tsai et al., ICLR 2024,
github.com/LIAGM/DAEFR `DAEFR/modules/vqvae/vqvae_arch.py`), from which OSDFace's `lq_embed/vqvae.py` derives:

- ResnetBlock: GroupNorm(eps 1e-6) -> swish -> 3x3 conv, twice; a 1x1 `nin_shortcut` when the width changes; no
  timestep embedding.
- Self-attention block (single head, 1x1 convs `q`, `k`, `v`, `proj_out`) with its GroupNorm named `norm1`: DAEFR's
  attention block also owns a `norm2` used only for cross-attention in its decoder; our blocks are self-attention
  only, so checkpoint loaders drop `norm2` (see `vre.osdface_backbone_state_dict`).
- Downsampling: zero padding (left 0, right 1, top 0, bottom 1) then a 3x3 stride-2 conv. Upsampling: nearest x2
  then a 3x3 conv.
- Attention sits at the levels whose nominal resolution (from the `resolution` argument, halved per level) is in
  `attn_resolutions`, after every ResnetBlock of that level, and in the middle block (ResBlock, Attn, ResBlock).
- Quantiser: `embedding` of (num_codes, code_dim), initialised uniform in +-1/num_codes, beta = 0.25.

Parameter names follow that layout (`conv_in`, `down.{i}.block.{j}`, `down.{i}.attn.{j}`, `down.{i}.downsample.conv`,
`mid.block_1`, `mid.attn_1`, `mid.block_2`, `norm_out`, `conv_out`; decoder `up.{i}.upsample.conv`), so the released
checkpoints load without renaming. The code is ours; only the layout and numbers come from the sources above.
Our choices: `norm_groups` is configurable (32 in the released models) so tiny test models work, attention uses
`F.scaled_dot_product_attention` (same maths as the explicit softmax(q k^T / sqrt(C)) v), and squared distances to
the codebook are always computed in float32 outside autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-6, affine=True)


def check_norm_groups(channels: list[int], groups: int) -> None:
    """Raise ValueError when `groups` does not divide every width in `channels`."""
    bad = sorted({c for c in channels if c % groups != 0})
    if groups < 1 or bad:
        raise ValueError(f"norm_groups={groups} must divide every channel width; it does not divide {bad}")


class ResnetBlock(nn.Module):
    """Pre-activation residual block: (GN, swish, conv3x3) x 2, plus a 1x1 shortcut when widths differ."""

    def __init__(self, in_channels: int, out_channels: int | None = None, norm_groups: int = 32,
                 dropout: float = 0.0) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.norm1 = _norm(in_channels, norm_groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels, norm_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: Tensor) -> Tensor:  # (B, C_in, H, W) -> (B, C_out, H, W)
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with a residual connection."""

    def __init__(self, channels: int, norm_groups: int = 32) -> None:
        super().__init__()
        self.norm1 = _norm(channels, norm_groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, C, H, W)
        b, c, h, w = x.shape
        y = self.norm1(x)
        q, k, v = (conv(y).flatten(2).transpose(1, 2).unsqueeze(1) for conv in (self.q, self.k, self.v))  # (B,1,HW,C)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, 1, HW, C)
        out = out.squeeze(1).transpose(1, 2).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Halve H and W: pad (0, 1, 0, 1) with zeros, then a 3x3 stride-2 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """One resolution level: `block` (ResnetBlocks), `attn` (empty or one per block), optional resampler."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()

    def run(self, h: Tensor) -> Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn) > 0:
                h = self.attn[i](h)
        return h


class _Mid(nn.Module):
    def __init__(self, channels: int, norm_groups: int, dropout: float) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, norm_groups, dropout)
        self.attn_1 = AttnBlock(channels, norm_groups)
        self.block_2 = ResnetBlock(channels, channels, norm_groups, dropout)

    def forward(self, h: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class Encoder(nn.Module):
    """VQGAN encoder: (B, in_channels, H, W) -> (B, z_channels, H / 2^(L-1), W / 2^(L-1)), L = len(channel_multipliers)."""

    def __init__(self, in_channels: int = 3, base_channels: int = 64,
                 channel_multipliers: tuple[int, ...] = (1, 2, 2, 2, 4, 8), num_res_blocks: int = 2,
                 attn_resolutions: tuple[int, ...] = (16,), resolution: int = 512, z_channels: int = 512,
                 norm_groups: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        mults = tuple(int(m) for m in channel_multipliers)
        if not mults or num_res_blocks < 1:
            raise ValueError(f"need >= 1 level and >= 1 res block, got channel_multipliers={mults}, "
                             f"num_res_blocks={num_res_blocks}")
        check_norm_groups([base_channels * m for m in mults], norm_groups)
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        self.down = nn.ModuleList()
        block_in, curr_res = base_channels, resolution
        for i, mult in enumerate(mults):
            level, block_out = _Level(), base_channels * mult
            for _ in range(num_res_blocks):
                level.block.append(ResnetBlock(block_in, block_out, norm_groups, dropout))
                block_in = block_out
                if curr_res in attn_resolutions:
                    level.attn.append(AttnBlock(block_in, norm_groups))
            if i != len(mults) - 1:
                level.downsample = Downsample(block_in)
                curr_res //= 2
            self.down.append(level)
        self.mid = _Mid(block_in, norm_groups, dropout)
        self.norm_out = _norm(block_in, norm_groups)
        self.conv_out = nn.Conv2d(block_in, z_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)  # (B, C0, H, W)
        for level in self.down:
            h = level.run(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)  # (B, C_last, h, w)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, z_channels, h, w)


class Decoder(nn.Module):
    """VQGAN decoder: (B, z_channels, h, w) -> (B, out_channels, h * 2^(L-1), w * 2^(L-1)); mirror of `Encoder`.

    Each level has `num_res_blocks + 1` ResnetBlocks; `up` is indexed like `Encoder.down` (0 = full resolution)
    and run from the last level to the first.
    """

    def __init__(self, out_channels: int = 3, base_channels: int = 64,
                 channel_multipliers: tuple[int, ...] = (1, 2, 2, 2, 4, 8), num_res_blocks: int = 2,
                 attn_resolutions: tuple[int, ...] = (16,), resolution: int = 512, z_channels: int = 512,
                 norm_groups: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        mults = tuple(int(m) for m in channel_multipliers)
        if not mults or num_res_blocks < 1:
            raise ValueError(f"need >= 1 level and >= 1 res block, got channel_multipliers={mults}, "
                             f"num_res_blocks={num_res_blocks}")
        check_norm_groups([base_channels * m for m in mults], norm_groups)
        block_in = base_channels * mults[-1]
        curr_res = resolution // 2 ** (len(mults) - 1)
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, padding=1)
        self.mid = _Mid(block_in, norm_groups, dropout)
        levels: list[_Level] = []
        for i in reversed(range(len(mults))):
            level, block_out = _Level(), base_channels * mults[i]
            for _ in range(num_res_blocks + 1):
                level.block.append(ResnetBlock(block_in, block_out, norm_groups, dropout))
                block_in = block_out
                if curr_res in attn_resolutions:
                    level.attn.append(AttnBlock(block_in, norm_groups))
            if i != 0:
                level.upsample = Upsample(block_in)
                curr_res *= 2
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(block_in, norm_groups)
        self.conv_out = nn.Conv2d(block_in, out_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))  # (B, C_last, h, w)
        for level in reversed(self.up):
            h = level.run(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, out_channels, H, W)


def squared_distances(x: Tensor, codebook: Tensor) -> Tensor:
    """||x_i - e_k||^2 for x (..., D) and codebook (K, D) -> (..., K), in float32 (float64 kept) outside autocast.

    Uses |x|^2 + |e|^2 - 2 x.e like the VQGAN quantiser; low-precision inputs are upcast first, so the nearest
    code does not depend on autocast or on the model's storage dtype.
    """
    if x.shape[-1] != codebook.shape[-1]:
        raise ValueError(f"feature width {x.shape[-1]} does not match codebook width {codebook.shape[-1]}")
    dtype = torch.promote_types(torch.promote_types(x.dtype, codebook.dtype), torch.float32)
    with torch.autocast(device_type=x.device.type, enabled=False):
        x, e = x.to(dtype), codebook.to(dtype)
        return (x * x).sum(-1, keepdim=True) + (e * e).sum(-1) - 2.0 * (x @ e.t())


class VectorQuantizer(nn.Module):
    """Nearest-code quantiser with the VQ-VAE codebook/commitment loss and a straight-through estimator."""

    def __init__(self, num_codes: int = 1024, code_dim: int = 512, beta: float = 0.25) -> None:
        super().__init__()
        if num_codes < 1 or code_dim < 1:
            raise ValueError(f"num_codes and code_dim must be >= 1, got {num_codes} and {code_dim}")
        self.beta = beta
        self.embedding = nn.Embedding(num_codes, code_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / num_codes, 1.0 / num_codes)

    def nearest(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """z (B, D, h, w) -> (indices (B, h, w) int64, squared distance to that code (B, h, w) float32)."""
        dist = squared_distances(z.permute(0, 2, 3, 1), self.embedding.weight)  # (B, h, w, K)
        min_dist, indices = dist.min(dim=-1)
        return indices, min_dist

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """z (B, D, h, w) -> (z_q with straight-through gradient (B, D, h, w), VQ loss (), indices (B, h, w)).

        Loss as in taming/DAEFR (legacy weighting): ||sg(z_q) - z||^2 + beta * ||z_q - sg(z)||^2.
        """
        indices, _ = self.nearest(z)
        z_q = self.embedding(indices).permute(0, 3, 1, 2).to(z.dtype)  # (B, D, h, w)
        loss = F.mse_loss(z_q.detach(), z) + self.beta * F.mse_loss(z_q, z.detach())
        return z + (z_q - z).detach(), loss, indices
