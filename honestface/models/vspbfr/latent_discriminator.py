"""e4e's latent-code discriminator D_w: the W-space critic of VSPBFR's style-encoder stage (`vspbfr_encoder`).

VSPBFR (Lu et al., arXiv 2412.21042) fine-tunes its style encoder with the released LonglongaaaGo/e4e_trainer, i.e.
e4e (Tov et al., "Designing an Encoder for StyleGAN Image Manipulation", SIGGRAPH 2021), whose latent discriminator
(omertov/encoder4editing `models/discriminator.py:LatentCodesDiscriminator`) is an MLP on single W codes:
(n_layers - 1) x (Linear(D, D), LeakyReLU(0.2)) then Linear(D, 1), parameters under `mlp.*` so e4e's state dicts
load as they are. It is trained only in stage 0 and is not part of a saved `VSPBFR` folder.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LatentCodeDiscriminator"]


class LatentCodeDiscriminator(nn.Module):
    """e4e's W-space discriminator: (n_layers - 1) x (Linear(D, D), LeakyReLU(0.2)), Linear(D, 1); (N, D) -> (N, 1)."""

    def __init__(self, style_dim: int = 512, n_layers: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(n_layers - 1):
            layers += [nn.Linear(style_dim, style_dim), nn.LeakyReLU(0.2)]
        self.mlp = nn.Sequential(*layers, nn.Linear(style_dim, 1))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.mlp(w)
