"""VSPBFR training stage 2 (`vspbfr_restoration`): the restoration network G and the StyleGAN2 discriminator D.

Paper: Lu et al., "Visual Style Prompt Learning Using Diffusion Models for Blind Face Restoration" (arXiv 2412.21042,
Fig. 1 (c), (d)). The recipe follows the released `restoration_train.py` (LonglongaaaGo/VSPBFR; summary in
docs/architecture.md#vspbfr), which is the rosinality StyleGAN2 training loop; the code is our own.
Shared parts (model loading, freezing, data, seeding, export) are in `common.py`.

Per step, with the style encoder, code diffuser and StyleGAN2 frozen (a `model.pretrained` folder of stage 1):
  prompt   w0 = diffusion chain on E(LQ), feature bank = StyleGAN2(w0) features: computed once, under no_grad, by
           the step's first phase and handed to the later ones (carry), as the official loop shares them;
  "discriminator"  L_D = softplus(D(G(LQ, w0, bank, z1))) + softplus(-D(HQ))   (G under no_grad)
  R1 (steps 0, r1_every, 2 r1_every, ...: a second "discriminator" phase, as rosinality's separate lazy step)
                   r1 / 2 * E||grad_HQ D(HQ)||^2 * r1_every
  "restoration"    L_G = adv * softplus(-D(G(LQ, w0, bank, z2))).mean() + lpips * LPIPS(G(.), HQ) + id * ID(G(.), HQ)
New codes z (with style mixing probability `mixing`, official 0.5), noise and the dropout mask of the global code c
are drawn for each phase, all seeded by (train.seed, step), so a resumed run continues exactly. D's parameters get no
gradient from L_G (it is evaluated with detached weights), so each phase's loss reaches exactly its optimiser's
parameters. The trainer's EMA (`train.ema_decay`, the official
0.5^(32/10000) ~ 0.99778 in the configs) follows the "restoration" group and is what validation and the export use.

Official quirks, documented rather than copied: LPIPS is summed over the batch there (`lpips_reduction: sum`); we
average (`mean`, default), so its weight does not grow with the batch (with batch 4, `sum` equals `mean` x 4). The
identity loss is our ArcFace (`honestface.losses.IdentityLoss`; official: a ResNet-101 256-d "ArcFace" on 112 px
resizes). The official Adam optimisers have per-optimiser betas ((0, 0.99^0.8) for G, (0, 0.99^(16/17)) for D); the
trainer's AdamW has one `optim.betas` (configs: G's) and `optim.disc_lr` for D (0.002 * 16/17).

Export: the whole VSPBFR folder (`VSPBFR.save_pretrained`: the EMA restoration net when enabled, the trained
discriminator), loadable by `VSPBFR.from_pretrained`. `data.resolution` must equal the restoration size.

stage_params (all optional): adv_weight (1.0), lpips_weight (0.5), id_weight (0.1), lpips_reduction ("mean" |
"sum"), r1 (10.0, 0 = off), r1_every (16), mixing (0.5), hflip (0.5).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from honestface.training.tasks.common import (
    VSPBFRStageTask,
    build_identity,
    build_perceptual,
    check_int,
    check_probability,
    frozen_call,
    generator_for,
    r1_due,
    seeded_global_rng,
)

RESTORATION_DEFAULTS: dict[str, Any] = {
    "adv_weight": 1.0, "lpips_weight": 0.5, "id_weight": 0.1, "lpips_reduction": "mean", "r1": 10.0, "r1_every": 16,
    "mixing": 0.5, "hflip": 0.5,
}
LPIPS_REDUCTIONS = ("mean", "sum")


class RestorationStageModule(nn.Module):
    """Stage 2: forward(batch, phase in ("discriminator", "restoration")) -> (loss, logs, carry)."""

    def __init__(self, model: nn.Module, perceptual: nn.Module | None, identity: nn.Module | None,
                 params: dict[str, Any]) -> None:
        super().__init__()
        from honestface.losses import AdversarialLoss

        self.model, self.perceptual, self.identity, self.p = model, perceptual, identity, params
        self.adversarial = AdversarialLoss("softplus", r1_weight=float(params["r1"]))
        self.train()

    def forward(self, batch: dict[str, Any], phase: str) -> tuple[torch.Tensor, dict[str, Any], dict[str, Any]]:
        if phase == "restoration":
            return self.generator_phase(batch)
        if phase == "discriminator":
            return self.r1_phase(batch) if batch.get("r1_pending") else self.discriminator_phase(batch)
        raise ValueError(f"unknown phase {phase!r} for the vspbfr_restoration stage; allowed: discriminator, "
                         "restoration")

    def prompt(self, batch: dict[str, Any]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(w0 (B, n, D), the bank maps the decoder uses) of the step: carried, or computed here without gradient."""
        if "w0" in batch:
            return batch["w0"], batch["bank"]
        m, lq = self.model, batch["lq_in"]
        with torch.no_grad():
            w0 = m.style_prompt(m.encode_lq(lq), generator=generator_for(batch, 1, lq.device))
            _, features = m.feature_bank(w0, generator=generator_for(batch, 2, lq.device))
        bank = [f for f in features if f.shape[-1] in m.restoration.decoder_resolutions]  # 8 .. size px
        return w0, bank

    def restore(self, batch: dict[str, Any], w0: torch.Tensor, bank: list[torch.Tensor], salt: int) -> torch.Tensor:
        lq = batch["lq_in"]
        g = generator_for(batch, salt, lq.device)
        with seeded_global_rng(int(batch["seed"]) + 100 + salt, lq.device):  # the dropout on the global code c
            return self.model.restoration(lq, w0, bank, generator=g, mixing=float(self.p["mixing"]))  # (B, 3, R, R)

    def discriminator_phase(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any], dict[str, Any]]:
        w0, bank = self.prompt(batch)
        with torch.no_grad():
            fake = self.restore(batch, w0, bank, salt=3)
        disc = self.model.discriminator
        loss, terms = self.adversarial.discriminator_loss(disc(batch["hq_in"]), disc(fake))
        logs = {f"disc/{k}": v for k, v in terms.items()} | {"loss/discriminator": loss.detach()}
        return loss, logs, {"w0": w0, "bank": bank, "r1_pending": bool(batch.get("r1_due"))}

    def r1_phase(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any], dict[str, Any]]:
        real = batch["hq_in"].detach().requires_grad_(True)
        logits = self.model.discriminator(real)
        penalty, terms = self.adversarial.r1_penalty(logits, real)
        # lazy regularisation scaled by its interval; + 0 * logits keeps every D parameter in the graph (rosinality)
        loss = penalty * int(self.p["r1_every"]) + 0 * logits.float().sum()
        return loss, {"loss/r1": loss.detach(), "disc/r1_grad_norm2": terms["r1_grad_norm2"]}, {"r1_pending": False}

    def generator_phase(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any], dict[str, Any]]:
        w0, bank = self.prompt(batch)
        hq, p = batch["hq_in"], self.p
        fake = self.restore(batch, w0, bank, salt=4)  # new z and noise
        terms: dict[str, torch.Tensor] = {}
        if p["adv_weight"] > 0:
            terms["adv"] = F.softplus(-frozen_call(self.model.discriminator, fake).float()).mean()
        if self.perceptual is not None:
            terms["lpips"], _ = self.perceptual(fake, hq)  # batch mean
            if p["lpips_reduction"] == "sum":
                terms["lpips"] = terms["lpips"] * hq.shape[0]
        if self.identity is not None:
            terms["id"], _ = self.identity(fake, hq)
        loss = sum(float(p[f"{k}_weight"]) * v for k, v in terms.items())
        logs = {f"loss/{k}": v.detach() for k, v in terms.items()} | {"loss/restoration": loss.detach()}
        return loss, logs, {"w0": w0, "bank": bank}


class VSPBFRRestorationTask(VSPBFRStageTask):
    """Stage 2: restoration network + StyleGAN2 discriminator on frozen prompts and feature banks."""

    name = "vspbfr_restoration"
    defaults = RESTORATION_DEFAULTS
    trained = ("restoration", "discriminator")
    with_discriminator = True

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        if int(cfg.data.resolution) != self.model.size:
            raise ValueError(f"data.resolution {cfg.data.resolution} must equal the restoration size "
                             f"{self.model.size} of the VSPBFR model")
        p = self.params
        if p["adv_weight"] == 0:  # no adversarial term: the discriminator is not trained either
            self.model.discriminator.requires_grad_(False)
        self._module = RestorationStageModule(self.model, build_perceptual(cfg, p["lpips_weight"]),
                                              build_identity(cfg, p["id_weight"]), p)

    def check_params(self, params: dict[str, Any]) -> None:
        if params["lpips_reduction"] not in LPIPS_REDUCTIONS:
            raise ValueError(f"train.stage_params.lpips_reduction must be one of {', '.join(LPIPS_REDUCTIONS)}, "
                             f"got {params['lpips_reduction']!r}")
        check_int(params, "r1_every", 1)
        check_probability(params, "mixing")
        if params["r1"] < 0:
            raise ValueError(f"train.stage_params.r1 must be >= 0, got {params['r1']}")

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = {"restoration": list(self.model.restoration.parameters())}  # first: the EMA follows it
        if self.params["adv_weight"] > 0:
            groups["discriminator"] = list(self.model.discriminator.parameters())
        return groups

    def learning_rates(self) -> dict[str, float]:
        return {"restoration": float(self.cfg.optim.lr), "discriminator": float(self.cfg.optim.disc_lr)}

    def r1_step(self, step: int) -> bool:
        return self.params["adv_weight"] > 0 and self.params["r1"] > 0 and r1_due(step, self.params["r1_every"])

    def phases(self, step: int) -> list[str]:
        if self.params["adv_weight"] == 0:
            return ["restoration"]
        return ["discriminator"] * (2 if self.r1_step(step) else 1) + ["restoration"]

    def prepare_batch(self, batch: dict[str, Any], step: int) -> dict[str, Any]:
        return super().prepare_batch(batch, step) | {"r1_due": self.r1_step(step)}

    @torch.no_grad()
    def images(self, module: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        model, lq = module.model, batch["lq_in"]
        out = model(lq, generator=torch.Generator(lq.device).manual_seed(0))  # no style mixing
        return {"lq": lq, "inverted": out.inverted, "restored": out.image, "gt": batch["hq_in"]}
