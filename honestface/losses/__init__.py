"""Training losses of HonestFace (arXiv 2505.18469): L_MSE, L_Per, L_ID, L_MFA and the adversarial L_G.

Every loss is an `nn.Module` taking images in [-1, 1], (B, 3, H, W), and returning `(loss, terms)`: a scalar (batch
mean) and a dict of detached scalars for logging. Frozen networks (VGG, LPIPS, ArcFace) never receive gradients;
the losses are differentiable w.r.t. the restored image. Pretrained weights come only through `honestface.weights`.

| loss                         | module            | paper term                                          |
|------------------------------|-------------------|-----------------------------------------------------|
| `ReconstructionLoss`         | reconstruction.py | L_MSE (OSDFace), pixel and/or latent                |
| `PerceptualLoss`, `DISTS`    | perceptual.py     | L_Per: EA-DISTS (OSDFace), DISTS, LPIPS             |
| `IdentityLoss`               | identity.py       | L_ID: 1 - cos of ArcFace embeddings                 |
| `MaskedFaceAlignmentLoss`    | mfa.py            | L_MFA (our definition)                              |
| `AdversarialLoss`            | adversarial.py    | L_G and the discriminator loss (softplus / hinge, R1) |

Exports load lazily, so `import honestface.losses` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ReconstructionLoss": "reconstruction",
    "PerceptualLoss": "perceptual",
    "DISTS": "perceptual",
    "LPIPSNet": "perceptual",
    "sobel_edges": "perceptual",
    "PERCEPTUAL_KINDS": "perceptual",
    "IdentityLoss": "identity",
    "AdversarialLoss": "adversarial",
    "MaskedFaceAlignmentLoss": "mfa",
    "build_region_masks": "mfa",
    "VGGFeatures": "features",
}

__all__ = [
    "DISTS", "PERCEPTUAL_KINDS", "AdversarialLoss", "IdentityLoss", "LPIPSNet", "MaskedFaceAlignmentLoss",
    "PerceptualLoss", "ReconstructionLoss", "VGGFeatures", "build_region_masks", "sobel_edges",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'honestface.losses' has no attribute {name!r}")
    return getattr(importlib.import_module(f"honestface.losses.{_LAZY[name]}"), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
