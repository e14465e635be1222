"""Reconstruction loss of HonestFace training: MSE in image space and/or SD latent space.

Paper component: the fidelity term of the generator step. HonestFace's figure does not draw a pixel loss, but its
predecessor OSDFace trains with `L_MSE(x̂_H, x_H)` next to EA-DISTS, L_ID and L_G (OSDFace, Wang et al., CVPR 2025;
docs/architecture.md). The latent variant (MSE between ẑ_H and the VAE encoding
z_H of the ground truth) is our addition: it skips the VAE decoder, which makes cheap warm-up steps possible.

Our choices: plain mean squared error (mean over every element, i.e. over the batch too); `space="both"` adds the two
terms with their weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

RECONSTRUCTION_SPACES = ("pixel", "latent", "both")


def _check_pair(a: torch.Tensor | None, b: torch.Tensor | None, names: str) -> tuple[torch.Tensor, torch.Tensor]:
    if a is None or b is None:
        raise ValueError(f"ReconstructionLoss needs both {names}; got None")
    if a.shape != b.shape:
        raise ValueError(f"{names} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return a, b


class ReconstructionLoss(nn.Module):
    """Mean squared error between the restoration and the ground truth.

    Args:
        space: "pixel" (x̂_H vs x_H, images in [-1, 1]), "latent" (ẑ_H vs z_H) or "both".
        pixel_weight: weight of the image term.
        latent_weight: weight of the latent term.

    forward(x_hat, x, z_hat=None, z=None) -> (loss scalar, terms dict of detached scalars "mse_pixel" /
    "mse_latent"). Images (B, 3, H, W); latents (B, 4, h, w). For space="latent" the images may be None.
    """

    def __init__(self, space: str = "pixel", pixel_weight: float = 1.0, latent_weight: float = 1.0):
        super().__init__()
        if space not in RECONSTRUCTION_SPACES:
            raise ValueError(f"unknown reconstruction space {space!r}; allowed: {', '.join(RECONSTRUCTION_SPACES)}")
        self.space = space
        self.pixel_weight = float(pixel_weight)
        self.latent_weight = float(latent_weight)

    def forward(
        self,
        x_hat: torch.Tensor | None,
        x: torch.Tensor | None,
        z_hat: torch.Tensor | None = None,
        z: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        terms: dict[str, torch.Tensor] = {}
        loss: torch.Tensor | None = None
        if self.space in ("pixel", "both"):
            a, b = _check_pair(x_hat, x, "x_hat and x")
            mse = F.mse_loss(a.float(), b.float())
            terms["mse_pixel"] = mse.detach()
            loss = self.pixel_weight * mse
        if self.space in ("latent", "both"):
            a, b = _check_pair(z_hat, z, "z_hat and z")
            mse = F.mse_loss(a.float(), b.float())
            terms["mse_latent"] = mse.detach()
            loss = self.latent_weight * mse if loss is None else loss + self.latent_weight * mse
        assert loss is not None  # space is validated in __init__
        return loss, terms
