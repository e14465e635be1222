"""Dual HQ/LQ VQ autoencoders with the association loss: how the VRE's encoder and LQ codebook are trained.

Paper component: stage 1 of OSDFace (Wang et al., CVPR 2025), whose frozen "VRE Encoder + LQ Dict" HonestFace
(arXiv 2505.18469) reuses. OSDFace trains it DAEFR-style (Tsai et al., "DAEFR: Dual Associated Encoder for Face
Restoration", ICLR 2024): two VQ autoencoders, one on HQ faces and one on LQ faces, each learns its own codebook by
self-reconstruction; then an association loss pulls the LQ encoder's features towards the HQ encoder's features of
the same face, patch by patch ("enhancing the diagonal correlation" of the HQ-LQ similarity matrix). OSDFace's
schedule (author answer, github.com/jkwang28/OSDFace issue #11): HQ dictionary 50 epochs and LQ dictionary 10
epochs with lambda_assoc = 0, then 10 epochs with lambda_assoc = 1 (see `honestface.training.tasks.vre`).

Facts used (DAEFR release, github.com/LIAGM/DAEFR `DAEFR/models/association_stage.py`,
`DAEFR/modules/losses/vqperceptual_dual.py`, `configs/Association_stage.yaml`):
- the association features are the `quant_conv` outputs (before quantisation) of both encoders; every grid cell of
  every image in the batch is one "patch"; features are L2-normalised; logits = exp(logit_scale) * hq @ lq^T with a
  learnable `logit_scale` initialised to log(1 / 0.07) (CLIP's temperature); the loss is the mean of the two
  cross-entropies (HQ -> LQ rows, LQ -> HQ columns) with the diagonal as targets;
- each autoencoder's loss is L1 + perceptual + codebook loss (weight 1, beta = 0.25) + the association loss.

Our choices: the HQ/LQ autoencoders use the VRE's VQGAN blocks (`honestface.models.vqgan`) with the VRE's
hyper-parameter names, so the LQ side copies 1:1 into a `VisualRepresentationEmbedder` (`to_vre`); logits are
computed in float32 and `logit_scale` is clamped at log(100) (as CLIP); DAEFR's patch discriminator is not used.
The code is ours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import Tensor, nn

from .vqgan import Decoder, Encoder, VectorQuantizer
from .vre import VRE_PRESETS, VisualRepresentationEmbedder

SIDES = ("hq", "lq")
MAX_LOGIT_SCALE = math.log(100.0)
# Constructor arguments of DualVQAutoencoder that a VRE preset also defines.
ARCH_KEYS = ("in_channels", "base_channels", "channel_multipliers", "num_res_blocks", "attn_resolutions", "resolution",
             "z_channels", "codebook_size", "codebook_dim", "norm_groups")


@dataclass
class VQOutput(BaseOutput):
    """reconstruction (B, 3, H, W); vq_loss () codebook + beta * commitment; indices (B, h, w) int64;
    z (B, codebook_dim, h, w) the `quant_conv` features before quantisation."""

    reconstruction: Tensor
    vq_loss: Tensor
    indices: Tensor
    z: Tensor


def association_loss(z_hq: Tensor, z_lq: Tensor, logit_scale: Tensor) -> tuple[Tensor, Tensor]:
    """Patch-wise CLIP-style contrastive loss between HQ and LQ features of the same images (DAEFR).

    z_hq, z_lq: (B, D, h, w); every (image, cell) is a patch, N = B * h * w. logit_scale: () log of the inverse
    temperature. Returns (loss, accuracy): the symmetric cross-entropy of the (N, N) cosine-similarity logits with
    the diagonal as targets (log N when all features are equal, -> 0 as matched pairs separate), and the fraction
    of patches whose best match in both directions is its own partner (detached).
    """
    if z_hq.shape != z_lq.shape or z_hq.ndim != 4:
        raise ValueError(f"z_hq and z_lq must be (B, D, h, w) of one shape, got {tuple(z_hq.shape)} and "
                         f"{tuple(z_lq.shape)}")
    hq = F.normalize(z_hq.float().permute(0, 2, 3, 1).reshape(-1, z_hq.shape[1]), dim=1)  # (N, D)
    lq = F.normalize(z_lq.float().permute(0, 2, 3, 1).reshape(-1, z_lq.shape[1]), dim=1)  # (N, D)
    logits = logit_scale.float().clamp(max=MAX_LOGIT_SCALE).exp() * hq @ lq.t()  # (N, N)
    target = torch.arange(logits.shape[0], device=logits.device)
    loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
    with torch.no_grad():
        accuracy = 0.5 * ((logits.argmax(1) == target).float().mean() + (logits.argmax(0) == target).float().mean())
    return loss, accuracy


class VQAutoencoder(nn.Module):
    """One VQGAN autoencoder: encoder -> quant_conv -> codebook -> post_quant_conv -> decoder.

    Sub-module names (`encoder`, `quant_conv`, `quantize`, `post_quant_conv`, `decoder`) are those of DAEFR's
    VQVAE and of `VisualRepresentationEmbedder`, so encoder/quant_conv/codebook keys carry over unchanged.
    """

    def __init__(self, in_channels: int, base_channels: int, channel_multipliers: tuple[int, ...],
                 num_res_blocks: int, attn_resolutions: tuple[int, ...], resolution: int, z_channels: int,
                 codebook_size: int, codebook_dim: int, norm_groups: int, beta: float) -> None:
        super().__init__()
        arch = (base_channels, tuple(channel_multipliers), num_res_blocks, tuple(attn_resolutions), resolution,
                z_channels, norm_groups)
        self.encoder = Encoder(in_channels, *arch)
        self.quant_conv = nn.Conv2d(z_channels, codebook_dim, 1)
        self.quantize = VectorQuantizer(codebook_size, codebook_dim, beta)
        self.post_quant_conv = nn.Conv2d(codebook_dim, z_channels, 1)
        self.decoder = Decoder(in_channels, *arch)

    def encode(self, x: Tensor) -> Tensor:
        """x (B, 3, H, W) in [-1, 1] -> z (B, codebook_dim, h, w) before quantisation."""
        return self.quant_conv(self.encoder(x))

    def decode(self, z_q: Tensor) -> Tensor:
        """z_q (B, codebook_dim, h, w) -> reconstruction (B, 3, H, W)."""
        return self.decoder(self.post_quant_conv(z_q))

    def forward(self, x: Tensor) -> VQOutput:
        z = self.encode(x)
        z_q, vq_loss, indices = self.quantize(z)
        return VQOutput(reconstruction=self.decode(z_q), vq_loss=vq_loss, indices=indices, z=z)


class DualVQAutoencoder(ModelMixin, ConfigMixin):
    """HQ and LQ VQ autoencoders (`hq`, `lq`) of one architecture plus the association's `logit_scale`.

    The architecture arguments have the names and meaning of `VisualRepresentationEmbedder`'s. beta: commitment
    weight of both quantisers; temperature: initial CLIP temperature of the association (logit_scale = log(1/t)).
    """

    @register_to_config
    def __init__(self, in_channels: int = 3, base_channels: int = 64,
                 channel_multipliers: tuple[int, ...] = (1, 2, 2, 2, 4, 8), num_res_blocks: int = 2,
                 attn_resolutions: tuple[int, ...] = (16,), resolution: int = 512, z_channels: int = 512,
                 codebook_size: int = 1024, codebook_dim: int = 512, norm_groups: int = 32, beta: float = 0.25,
                 temperature: float = 0.07) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        arch = {"in_channels": in_channels, "base_channels": base_channels,
                    "channel_multipliers": tuple(channel_multipliers), "num_res_blocks": num_res_blocks,
                    "attn_resolutions": tuple(attn_resolutions), "resolution": resolution, "z_channels": z_channels,
                    "codebook_size": codebook_size, "codebook_dim": codebook_dim, "norm_groups": norm_groups, "beta": beta}
        self.hq = VQAutoencoder(**arch)
        self.lq = VQAutoencoder(**arch)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> DualVQAutoencoder:
        """Random dual autoencoders with the encoder sizes of `VRE_PRESETS[name]` ("osdface" | "tiny")."""
        if name not in VRE_PRESETS:
            raise ValueError(f"unknown VRE preset {name!r}; choose from {sorted(VRE_PRESETS)}")
        return cls(**{**{k: VRE_PRESETS[name][k] for k in ARCH_KEYS}, **overrides})

    def side(self, name: str) -> VQAutoencoder:
        if name not in SIDES:
            raise ValueError(f"unknown autoencoder {name!r}; allowed: {', '.join(SIDES)}")
        return self.hq if name == "hq" else self.lq

    def association_loss(self, z_hq: Tensor, z_lq: Tensor) -> tuple[Tensor, Tensor]:
        """`association_loss` with this model's learnable temperature; see there."""
        return association_loss(z_hq, z_lq, self.logit_scale)

    def forward(self, hq: Tensor, lq: Tensor) -> tuple[VQOutput, VQOutput, Tensor]:
        """hq, lq (B, 3, H, W) in [-1, 1], the same faces -> (HQ output, LQ output, association loss)."""
        out_hq, out_lq = self.hq(hq), self.lq(lq)
        return out_hq, out_lq, self.association_loss(out_hq.z, out_lq.z)[0]

    def to_vre(self, num_tokens: int = 77, proj_hidden: int = 256, out_dim: int = 1024, **vre_options: Any
               ) -> VisualRepresentationEmbedder:
        """A VRE whose encoder, quant_conv and codebook are copies of the LQ autoencoder's (backbone frozen).

        num_tokens / proj_hidden / out_dim: the VRE's token count and projection sizes (the projection is randomly
        initialised: it is trained with the generator). vre_options: other VRE arguments (input_transform,
        input_size). The VRE's codes are the LQ autoencoder's nearest codes.
        """
        cfg = {k: self.config[k] for k in ARCH_KEYS}
        vre = VisualRepresentationEmbedder(**cfg, num_tokens=num_tokens, proj_hidden=proj_hidden, out_dim=out_dim,
                                           **vre_options)
        vre = vre.to(device=self.logit_scale.device)
        state = {k: v.detach().clone() for k, v in self.lq.state_dict().items()
                 if k.startswith(("encoder.", "quant_conv.", "quantize."))}
        vre.load_backbone_state_dict(state, source="DualVQAutoencoder.lq")
        vre.freeze_backbone()
        return vre
