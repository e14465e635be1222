"""Visual Representation Embedder (VRE): the LQ face -> p_L prompt tokens of HonestFace (and OSDFace).

HonestFace (Wang et al., arXiv 2505.18469) draws a frozen "VRE Encoder + LQ Dict" that turns the LQ input x_L into
p_L; it is inherited from OSDFace (Wang et al., CVPR 2025). Facts used here (team notes
docs/architecture.md, from the official OSDFace code github.com/jkwang28/OSDFace,
`infer.py` and `lq_embed/inference.py`, and DAEFR github.com/LIAGM/DAEFR, `DAEFR/modules/vqvae/vqvae_arch.py`,
`DAEFR/models/association_stage.py`):

1. A VQGAN encoder (ch 64, ch_mult (1,2,2,2,4,8), 2 res blocks, attention at 16, z 512) plus a 1x1 `quant_conv` maps
   a 512x512 face to a 16x16 grid of 512-d features.
2. Every cell's nearest entry of a 1024x512 LQ codebook and its squared distance are found; cells are sorted by that
   distance (ascending) and the first 77 *distinct* codes are kept. Their codebook vectors, (B, 77, 512), are zero
   rows when fewer than 77 distinct codes occur.
3. A trainable projection, two kernel-1 Conv1d layers 512 -> 256 -> 1024 each followed by SiLU (OSDFace's
   `TwoLayerConv1x1`, weights `embedding_change_weights.pth` with keys conv1.weight/bias, conv2.weight/bias), gives
   p_L of shape (B, 77, 1024) = SD-2.1's cross-attention context width.
4. Released weights: the Lightning checkpoint `associate_2.ckpt`; its `state_dict` holds the LQ autoencoder under
   `vqvae_LQ.` (DAEFR's association model: `vqvae_LQ.encoder.*`, `vqvae_LQ.quant_conv.*`,
   `vqvae_LQ.quantize.embedding.weight`, plus the unused `vqvae_LQ.decoder.*` and `vqvae_LQ.post_quant_conv.*`).
5. OSDFace resizes the VRE input to 512 (bilinear, align_corners=False) and applies (x - 0.5) / 0.5 to an image that
   is already in [-1, 1], so its encoder sees [-3, 1] (`input_transform="osdface"`, set by `from_osdface`).

Our choices: the selection is done per sample and vectorised (OSDFace's loop is only correct at batch size 1); the
sort is stable (ties keep grid order); distances are float32 and indices int64 whatever the autocast/model dtype;
padded slots get index -1, valid=False and a zero vector (the projection still runs on them, as in OSDFace);
`input_transform="unit"` (the encoder sees the [-1, 1] image) is the default for training our own VRE; resizing is
off unless `input_size` is set. The encoder never receives gradients from p_L (the code choice is an argmin), so the
encoder pass always runs without autograd.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import Tensor, nn

from honestface.checkpoints import load_state_dict
from honestface.weights import resolve_weight

from .vqgan import Encoder, VectorQuantizer, squared_distances

PathLike = str | os.PathLike

VRE_PRESETS: dict[str, dict[str, Any]] = {
    # OSDFace's released VRE (associate_2.ckpt + embedding_change_weights.pth); 512x512 input -> 16x16 grid.
    "osdface": {"in_channels": 3, "base_channels": 64, "channel_multipliers": (1, 2, 2, 2, 4, 8),
                "num_res_blocks": 2, "attn_resolutions": (16,), "resolution": 512, "z_channels": 512,
                "codebook_size": 1024, "codebook_dim": 512, "num_tokens": 77, "proj_hidden": 256, "out_dim": 1024,
                "norm_groups": 32},
    # CPU tests: 64x64 input -> 16x16 grid (attention at that grid), 8 tokens of width 32.
    "tiny": {"in_channels": 3, "base_channels": 32, "channel_multipliers": (1, 2, 2), "num_res_blocks": 1,
             "attn_resolutions": (16,), "resolution": 64, "z_channels": 64, "codebook_size": 64, "codebook_dim": 32,
             "num_tokens": 8, "proj_hidden": 16, "out_dim": 32, "norm_groups": 8},
}
INPUT_TRANSFORMS = ("unit", "osdface")
BACKBONE_PREFIXES = ("encoder.", "quant_conv.", "quantize.")


@dataclass
class VREOutput(BaseOutput):
    """prompt_embeds (B, T, out_dim) = p_L; indices (B, T) int64 (-1 = padding); valid (B, T) bool;
    codes (B, T, codebook_dim) the selected codebook vectors (zero rows where not valid)."""

    prompt_embeds: Tensor
    indices: Tensor
    valid: Tensor
    codes: Tensor


def select_unique_codes(z: Tensor, codebook: Tensor, num_tokens: int) -> tuple[Tensor, Tensor]:
    """Per sample: nearest code of every cell, cells by ascending distance, first `num_tokens` distinct codes.

    z (B, D, h, w), codebook (K, D) -> indices (B, num_tokens) int64 (-1 where fewer distinct codes exist),
    valid (B, num_tokens) bool. Vectorised over batch and cells (sort + first-occurrence mask + scatter).
    """
    if z.ndim != 4:
        raise ValueError(f"z must be (B, D, h, w), got shape {tuple(z.shape)}")
    b, n, k = z.shape[0], z.shape[2] * z.shape[3], codebook.shape[0]
    dist = squared_distances(z.flatten(2).transpose(1, 2), codebook)  # (B, N, K) float32
    min_dist, nearest = dist.min(dim=2)  # (B, N), (B, N) int64; ties -> lowest code index
    order = torch.sort(min_dist, dim=1, stable=True).indices  # (B, N)
    codes = nearest.gather(1, order)  # (B, N) code of each cell, closest cell first
    pos = torch.arange(n, device=z.device).expand(b, n)
    first = torch.full((b, k), n, dtype=torch.long, device=z.device)
    first.scatter_reduce_(1, codes, pos, reduce="amin")  # (B, K) first sorted position of each code
    is_first = first.gather(1, codes) == pos  # (B, N)
    rank = is_first.long().cumsum(1) - 1
    slot = torch.where(is_first & (rank < num_tokens), rank, num_tokens)  # overflow -> dump column
    indices = torch.full((b, num_tokens + 1), -1, dtype=torch.long, device=z.device)
    indices = indices.scatter(1, slot, codes)[:, :num_tokens]  # (B, T)
    return indices, indices >= 0


class TokenProjection(nn.Module):
    """Per-token MLP as two kernel-1 Conv1d layers, SiLU after each (OSDFace `TwoLayerConv1x1` layout)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(in_dim, hidden_dim, kernel_size=1)
        self.conv2 = nn.Conv1d(hidden_dim, out_dim, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, in_dim) -> (B, T, out_dim)
        x = x.transpose(1, 2).to(self.conv1.weight.dtype)
        return F.silu(self.conv2(F.silu(self.conv1(x)))).transpose(1, 2)


def osdface_backbone_state_dict(state: dict[str, Tensor], prefix: str = "vqvae_LQ.") -> dict[str, Tensor]:
    """Keys of a DAEFR/OSDFace association checkpoint -> our `encoder.`/`quant_conv.`/`quantize.` keys.

    Keeps keys under `prefix`, strips it, drops the decoder side (`decoder.`, `post_quant_conv.`) and the
    cross-attention `norm2` of attention blocks; taming-style attention `norm.` is renamed to our `norm1.`.
    """
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        key = key[len(prefix):]
        if key.startswith(("decoder.", "post_quant_conv.")):
            continue
        if ".attn" in key:
            if ".norm2." in key:
                continue
            key = key.replace(".norm.", ".norm1.")
        out[key] = value
    return out


def osdface_sizes(backbone: dict[str, Tensor], projection: dict[str, Tensor] | None = None,
                  resolution: int = 512) -> dict[str, Any]:
    """The VRE sizes a released OSDFace VRE file holds, read from its tensor shapes (our key names, see
    `osdface_backbone_state_dict`; `projection`: the `embedding_change_weights.pth` state).

    Read: base_channels, channel_multipliers, num_res_blocks, z_channels, codebook_size / codebook_dim, the levels
    with attention (as `attn_resolutions` at input `resolution`), and proj_hidden / out_dim from the projection.
    Not in the files, kept from the "osdface" preset: num_tokens (77) and norm_groups (32, the released
    GroupNorm). At the released sizes this gives the "osdface" preset exactly (test)."""
    try:
        base = int(backbone["encoder.conv_in.weight"].shape[0])
        levels = 1 + max(int(k.split(".")[2]) for k in backbone if k.startswith("encoder.down."))
        blocks = 1 + max(int(k.split(".")[4]) for k in backbone if k.startswith("encoder.down.0.block."))
        mult = tuple(int(backbone[f"encoder.down.{i}.block.{blocks - 1}.conv2.weight"].shape[0]) // base
                     for i in range(levels))
        attn = tuple(resolution // 2 ** i for i in range(levels)
                     if f"encoder.down.{i}.attn.0.q.weight" in backbone)
        size, dim = (int(n) for n in backbone["quantize.embedding.weight"].shape)
        z = int(backbone["encoder.conv_out.weight"].shape[0])
    except (KeyError, ValueError) as e:
        raise ValueError(f"not an OSDFace VRE state dict: cannot read its sizes ({e})") from None
    out = {"base_channels": base, "channel_multipliers": mult, "num_res_blocks": blocks, "attn_resolutions": attn,
           "resolution": resolution, "z_channels": z, "codebook_size": size, "codebook_dim": dim}
    if projection:
        proj = {k.removeprefix("module.").removeprefix("projection."): v for k, v in projection.items()}
        if "conv1.weight" in proj and "conv2.weight" in proj:
            out.update(proj_hidden=int(proj["conv1.weight"].shape[0]), out_dim=int(proj["conv2.weight"].shape[0]))
    return out


class VisualRepresentationEmbedder(ModelMixin, ConfigMixin):
    """LQ face (B, 3, H, W) in [-1, 1] -> p_L (B, num_tokens, out_dim) through a frozen VQ encoder + codebook."""

    @register_to_config
    def __init__(self, in_channels: int = 3, base_channels: int = 64,
                 channel_multipliers: tuple[int, ...] = (1, 2, 2, 2, 4, 8), num_res_blocks: int = 2,
                 attn_resolutions: tuple[int, ...] = (16,), resolution: int = 512, z_channels: int = 512,
                 codebook_size: int = 1024, codebook_dim: int = 512, num_tokens: int = 77, proj_hidden: int = 256,
                 out_dim: int = 1024, input_transform: str = "unit", norm_groups: int = 32,
                 input_size: int | None = None) -> None:
        super().__init__()
        if input_transform not in INPUT_TRANSFORMS:
            raise ValueError(f"input_transform must be one of {INPUT_TRANSFORMS}, got {input_transform!r}")
        if num_tokens < 1:
            raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
        if input_size is not None and input_size < 1:
            raise ValueError(f"input_size must be a positive int or None, got {input_size}")
        self.encoder = Encoder(in_channels, base_channels, tuple(channel_multipliers), num_res_blocks,
                               tuple(attn_resolutions), resolution, z_channels, norm_groups)
        self.quant_conv = nn.Conv2d(z_channels, codebook_dim, 1)
        self.quantize = VectorQuantizer(codebook_size, codebook_dim)
        self.projection = TokenProjection(codebook_dim, proj_hidden, out_dim)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> VisualRepresentationEmbedder:
        """A randomly initialised VRE from `VRE_PRESETS[name]`, with `overrides` applied."""
        if name not in VRE_PRESETS:
            raise ValueError(f"unknown VRE preset {name!r}; choose from {sorted(VRE_PRESETS)}")
        return cls(**{**VRE_PRESETS[name], **overrides})

    @property
    def codebook(self) -> Tensor:  # (codebook_size, codebook_dim)
        return self.quantize.embedding.weight

    def preprocess(self, lq: Tensor) -> Tensor:
        """Validate, optionally resize, and apply `input_transform`; returns what the encoder sees."""
        if lq.ndim != 4 or lq.shape[1] != self.config.in_channels:
            raise ValueError(f"lq must be (B, {self.config.in_channels}, H, W), got shape {tuple(lq.shape)}")
        x = lq.to(self.encoder.conv_in.weight.dtype)
        size = self.config.input_size
        if size is not None and tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        if self.config.input_transform == "osdface":
            x = (x - 0.5) / 0.5  # OSDFace quirk: [-1, 1] -> [-3, 1]
        return x

    def encode(self, lq: Tensor) -> Tensor:
        """lq (B, 3, H, W) in [-1, 1] -> z (B, codebook_dim, H / 2^(L-1), W / 2^(L-1)) before quantisation."""
        return self.quant_conv(self.encoder(self.preprocess(lq)))

    def select_codes(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """z (B, codebook_dim, h, w) -> indices (B, T) int64, valid (B, T) bool, vectors (B, T, codebook_dim)."""
        indices, valid = select_unique_codes(z.detach(), self.codebook, self.config.num_tokens)
        vectors = F.embedding(indices.clamp(min=0), self.codebook)  # (B, T, D)
        vectors = torch.where(valid.unsqueeze(-1), vectors, torch.zeros((), dtype=vectors.dtype,
                                                                         device=vectors.device))
        return indices, valid, vectors

    def embed(self, lq: Tensor) -> VREOutput:
        """Everything the VRE computes for lq (B, 3, H, W): p_L plus the selected codes and their validity."""
        with torch.no_grad():
            z = self.encode(lq)  # (B, D, h, w); argmin below stops any gradient to the encoder anyway
        indices, valid, vectors = self.select_codes(z)
        return VREOutput(prompt_embeds=self.projection(vectors), indices=indices, valid=valid, codes=vectors)

    def forward(self, lq: Tensor) -> Tensor:
        """lq (B, 3, H, W) in [-1, 1] -> p_L (B, num_tokens, out_dim)."""
        return self.embed(lq).prompt_embeds

    def freeze_backbone(self) -> None:
        """Freeze encoder, quant_conv and codebook (requires_grad False, eval mode); the projection stays trainable."""
        for module in (self.encoder, self.quant_conv, self.quantize):
            module.requires_grad_(False)
            module.eval()

    def load_backbone_state_dict(self, state: dict[str, Tensor], source: str = "state dict") -> None:
        """Strictly load encoder/quant_conv/quantize weights (our key names); clear error on any mismatch."""
        own = {k: v for k, v in self.state_dict().items() if k.startswith(BACKBONE_PREFIXES)}
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        shapes = [f"{k}: {tuple(state[k].shape)} vs model {tuple(v.shape)}" for k, v in own.items()
                  if k in state and state[k].shape != v.shape]
        if missing or unexpected or shapes:
            parts = [f"{len(missing)} missing (e.g. {missing[:3]})" if missing else "",
                     f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})" if unexpected else "",
                     f"{len(shapes)} shape mismatches (e.g. {shapes[:2]}; check the VRE config)" if shapes else ""]
            raise ValueError(f"{source}: VRE backbone keys do not match: " + "; ".join(p for p in parts if p))
        self.load_state_dict(state, strict=False)

    def load_projection_state_dict(self, state: dict[str, Tensor], key_map: dict[str, str] | None = None,
                                   source: str = "state dict") -> None:
        """Load projection weights in OSDFace's layout (conv1.*, conv2.*); `key_map` renames keys first."""
        key_map = key_map or {}
        state = {key_map.get(k, k): v for k, v in state.items()}
        state = {k.removeprefix("module.").removeprefix("projection."): v for k, v in state.items()}
        own = self.projection.state_dict()
        bad = sorted(set(own) ^ set(state)) + [k for k in own if k in state and state[k].shape != own[k].shape]
        if bad:
            raise ValueError(f"{source}: projection keys/shapes do not match {sorted(own)}: problem with {bad[:4]} "
                             f"(pass projection_key_map to rename keys)")
        # a projection built on the meta device (loading a saved folder) adopts the tensors instead of copying
        self.projection.load_state_dict(state, assign=any(p.is_meta for p in self.projection.parameters()))

    @classmethod
    def from_osdface(cls, vre_checkpoint: PathLike | None = None, projection_weights: PathLike | bool | None = None,
                     *, projection_key_map: dict[str, str] | None = None, freeze: bool = True,
                     **config: Any) -> VisualRepresentationEmbedder:
        """Build the OSDFace VRE from its released files.

        vre_checkpoint: `associate_2.ckpt` (None -> registry entry `osdface_vre` under $HONESTFACE_HOME).
        projection_weights: `embedding_change_weights.pth`, or a folder holding it; True -> the `osdface_lora`
        folder under $HONESTFACE_HOME; None/False -> projection left randomly initialised.
        config: overrides of the sizes read from the files (`osdface_sizes`: the "osdface" preset for the released
        files) and of input_transform="osdface", input_size=512.
        """
        ckpt = resolve_weight("osdface_vre", vre_checkpoint)
        state = osdface_backbone_state_dict(load_state_dict(ckpt, strip_prefix=None))
        if not state:
            raise ValueError(f"{ckpt}: no 'vqvae_LQ.' encoder keys found; is this OSDFace's associate_2.ckpt?")
        proj, proj_state = None, None
        if projection_weights is not None and projection_weights is not False:
            if projection_weights is True:
                proj = resolve_weight("osdface_lora") / "embedding_change_weights.pth"
            else:
                proj = Path(projection_weights)
                proj = proj / "embedding_change_weights.pth" if proj.is_dir() else proj
            proj_state = load_state_dict(proj, strip_prefix=None)
            if projection_key_map:
                proj_state = {projection_key_map.get(k, k): v for k, v in proj_state.items()}
        sizes = osdface_sizes(state, proj_state, resolution=int(config.get("resolution", 512)))
        model = cls(**{**VRE_PRESETS["osdface"], "input_transform": "osdface", "input_size": 512, **sizes, **config})
        model.load_backbone_state_dict(state, source=str(ckpt))
        if proj_state is not None:
            model.load_projection_state_dict(proj_state, source=str(proj))
        if freeze:
            model.freeze_backbone()
        return model.eval()
