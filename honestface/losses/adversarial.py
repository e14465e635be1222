"""Adversarial loss L_G of HonestFace and the discriminator's loss, with an optional R1 penalty.

Paper component: `L_G` of HonestFace (Wang et al., arXiv 2505.18469): a discriminator scores the restored latent ẑ_H
against the ground-truth latent z_H (conditioned on the prompt p) and is trained alternately with the generator.
The paper does not state the loss form (docs/architecture.md).

Sources (facts): the non-saturating logistic GAN loss (Goodfellow et al., NeurIPS 2014), written with softplus as in
DMD2 (Yin et al., "Improved Distribution Matching Distillation", NeurIPS 2024), whose training code OSDFace's helpers
match: generator softplus(-D(fake)), discriminator softplus(D(fake)) + softplus(-D(real)). The hinge loss (Lim & Ye
2017; Miyato et al. 2018): discriminator relu(1 - D(real)) + relu(1 + D(fake)), generator -D(fake). R1 (Mescheder et
al., "Which Training Methods for GANs do actually Converge?", ICML 2018): (gamma / 2) E[||grad_x D(x)||^2] on real
inputs.

Our choices: "softplus" is the default (DMD2; docs/architecture.md); logits of any shape ((B,), (B, 1), patch maps) are
averaged over all their elements; the R1 gradient is taken of the summed logits, so each sample's own logits drive
its gradient; losses are computed in float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

ADVERSARIAL_KINDS = ("softplus", "hinge")


class AdversarialLoss(nn.Module):
    """Generator / discriminator losses of a GAN on discriminator logits.

    Args:
        kind: "softplus" (non-saturating logistic) or "hinge".
        r1_weight: gamma of the R1 penalty (`r1_penalty` returns gamma / 2 * E||grad||^2; 0 turns it off).

    Every method returns (loss scalar, dict of detached scalars for logging). `forward(fake_logits)` is the
    generator loss.
    """

    def __init__(self, kind: str = "softplus", r1_weight: float = 0.0):
        super().__init__()
        if kind not in ADVERSARIAL_KINDS:
            raise ValueError(f"unknown adversarial loss kind {kind!r}; allowed: {', '.join(ADVERSARIAL_KINDS)}")
        if r1_weight < 0:
            raise ValueError(f"r1_weight must be >= 0, got {r1_weight}")
        self.kind = kind
        self.r1_weight = float(r1_weight)

    def generator_loss(self, fake_logits: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """L_G on D(fake): softplus(-D(fake)) or, for hinge, -D(fake); mean over all logits."""
        f = fake_logits.float()
        loss = F.softplus(-f).mean() if self.kind == "softplus" else -f.mean()
        return loss, {"logits_fake": f.mean().detach()}

    def discriminator_loss(
        self, real_logits: torch.Tensor, fake_logits: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """softplus(D(fake)) + softplus(-D(real)), or hinge relu(1 - D(real)) + relu(1 + D(fake)); each term a mean."""
        r, f = real_logits.float(), fake_logits.float()
        if self.kind == "softplus":
            loss_real, loss_fake = F.softplus(-r).mean(), F.softplus(f).mean()
        else:
            loss_real, loss_fake = F.relu(1 - r).mean(), F.relu(1 + f).mean()
        logs = {
            "d_loss_real": loss_real.detach(),
            "d_loss_fake": loss_fake.detach(),
            "logits_real": r.mean().detach(),
            "logits_fake": f.mean().detach(),
        }
        return loss_real + loss_fake, logs

    def r1_penalty(
        self,
        real_logits: torch.Tensor,
        real_inputs: torch.Tensor | Sequence[torch.Tensor],
        weight: float | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """weight / 2 * E_batch ||dD(real)/d real_inputs||^2 (weight defaults to `r1_weight`).

        `real_inputs` must require grad and be what produced `real_logits` (one tensor or several, e.g. a latent
        and its conditioning; squared norms are summed over them). The graph is kept (create_graph=True) so the
        penalty trains the discriminator. With weight 0 the gradient is not computed and the loss is 0.
        """
        gamma = self.r1_weight if weight is None else float(weight)
        inputs = [real_inputs] if isinstance(real_inputs, torch.Tensor) else list(real_inputs)
        if not inputs:
            raise ValueError("r1_penalty needs at least one real input tensor")
        if gamma == 0:
            zero = real_logits.new_zeros((), dtype=torch.float32)
            return zero, {"r1_grad_norm2": zero.detach()}
        for i, t in enumerate(inputs):
            if not t.requires_grad:
                raise ValueError(f"r1_penalty: real_inputs[{i}] does not require grad; call .requires_grad_(True) "
                                 "on it before the discriminator forward")
        if not real_logits.requires_grad:  # D does not depend on its input (or ran under no_grad): zero gradient
            norm2 = real_logits.new_zeros(inputs[0].shape[0], dtype=torch.float32)
        else:
            grads = torch.autograd.grad(real_logits.float().sum(), inputs, create_graph=True, allow_unused=True)
            norm2 = real_logits.new_zeros(inputs[0].shape[0], dtype=torch.float32)
            for g in grads:
                if g is not None:
                    norm2 = norm2 + g.float().pow(2).flatten(1).sum(1)  # (B,)
        penalty = norm2.mean()
        return 0.5 * gamma * penalty, {"r1_grad_norm2": penalty.detach()}

    def forward(self, fake_logits: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.generator_loss(fake_logits)
