"""VSPBFR training stage 0 (`vspbfr_encoder`): fine-tune the e4e style encoder on (LQ, HQ) pairs.

Paper: Lu et al., "Visual Style Prompt Learning Using Diffusion Models for Blind Face Restoration" (arXiv
2412.21042); the stage is the released encoder trainer LonglongaaaGo/e4e_trainer (facts read from its
sources; docs/architecture.md#vspbfr), i.e. e4e (Tov et al., "Designing an Encoder for StyleGAN Image Manipulation", SIGGRAPH 2021;
facts from github.com/omertov/encoder4editing `training/coach.py` and `models/discriminator.py`) with (LQ, HQ) pairs.
The code is our own; what the stages share (model, freezing, data, seeding, export) is in `common.py`.

Stage 0, `vspbfr_encoder` (e4e fine-tuning on (LQ, HQ) pairs; StyleGAN2 frozen), phases "latent_discriminator"
then "style_encoder" (e4e's order):
    L_E = l2 * MSE(G(E(LQ)), HQ) + lpips * LPIPS + id * ID + w_disc * mean_i softplus(-D_w(w_i))
          + delta_norm * sum_i ||delta_i||_2          (G's output average-pooled to data.resolution)
    L_D = softplus(D_w(fake)) + softplus(-D_w(real)), real = mapping(z), fake = the base code w_0 of E(LQ);
          R1 (r1 / 2 * ||grad||^2 * r1_every) on the real codes every `r1_every` steps, as a second D phase.
  D_w is e4e's latent-code discriminator (`LatentCodeDiscriminator`, its `mlp.*` names). Our choices, documented:
  the codes fed to D_w include the StyleGAN mean latent in both phases (e4e feeds raw encoder codes to the D step
  but pSp codes with latent_avg to the encoder step); no w-pool (e4e's history of 50 codes is state the trainer
  cannot checkpoint; batches only); the delta norm covers every active delta (e4e skips the newest one); progressive
  deltas (e4e: progressive_start 20000, one more delta every 2000 steps) are off by default (`progressive_start`
  None: all deltas from step 0, fine-tuning an already trained encoder) and on in configs/vspbfr_encoder.yaml;
  `e4e_checkpoint` initialises encoder, latent_avg and StyleGAN2 from an e4e / `style_encoder_decoder.pt` file.
  Identity: our ArcFace loss (`honestface.losses.IdentityLoss`), not e4e's IR-SE-50 TreB1eN; LPIPS kind from
  `loss.perceptual_type` (e4e: AlexNet). Optimiser: e4e uses Ranger lr 1e-4; the trainer uses AdamW (configs: lr 1e-4,
  weight decay 0); D_w lr `optim.disc_lr` (e4e 2e-5).

stage_params (all optional; unknown keys and wrong types: one-line ValueError): l2_weight (1.0), lpips_weight (0.8),
id_weight (0.5), w_disc_weight (0.1; 0 = no latent discriminator), delta_norm_weight (2e-4), w_disc_layers (4), r1
(10.0), r1_every (16), progressive_start (None), progressive_every (2000), e4e_checkpoint (None), hflip (0.5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from honestface.models.vspbfr.latent_discriminator import LatentCodeDiscriminator
from honestface.training.tasks.common import (
    VSPBFRStageTask,
    build_identity,
    build_perceptual,
    check_int,
    frozen_call,
    generator_for,
    pool_to,
    r1_due,
)

ENCODER_DEFAULTS: dict[str, Any] = {
    "l2_weight": 1.0, "lpips_weight": 0.8, "id_weight": 0.5, "w_disc_weight": 0.1, "delta_norm_weight": 2e-4,
    "w_disc_layers": 4, "r1": 10.0, "r1_every": 16, "progressive_start": None, "progressive_every": 2000,
    "e4e_checkpoint": None, "hflip": 0.5,
}


class EncoderStageModule(nn.Module):
    """Stage 0: forward(batch, phase in ("style_encoder", "latent_discriminator")) -> (loss, logs, carry)."""

    def __init__(self, model: nn.Module, perceptual: nn.Module | None, identity: nn.Module | None,
                 discriminator: nn.Module | None, params: dict[str, Any]) -> None:
        super().__init__()
        from honestface.losses import AdversarialLoss

        self.model, self.perceptual, self.identity, self.discriminator = model, perceptual, identity, discriminator
        self.p = params
        self.adversarial = AdversarialLoss("softplus", r1_weight=float(params["r1"]))
        self.train()

    def forward(self, batch: dict[str, Any], phase: str) -> tuple[torch.Tensor, dict[str, Any], dict[str, Any]]:
        if phase == "style_encoder":
            return self.encoder_phase(batch)
        if phase == "latent_discriminator" and self.discriminator is not None:
            return self.r1_phase(batch) if batch.get("r1_pending") else self.discriminator_phase(batch)
        raise ValueError(f"unknown phase {phase!r} for the vspbfr_encoder stage")

    def encoder_phase(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any], dict[str, Any]]:
        lq, hq, stage = batch["lq_in"], batch["hq_in"], int(batch["progressive_stage"])
        enc, p = self.model.style_encoder, self.p
        w = enc(lq, progressive_stage=stage)  # (B, n, D), latent_avg included
        image = self.model.stylegan(w, generator=generator_for(batch, 1, lq.device)).image  # (B, 3, S, S)
        image = pool_to(image, hq.shape[-1])  # (B, 3, R, R)
        terms = {"l2": F.mse_loss(image.float(), hq.float())}
        if self.perceptual is not None:
            terms["lpips"], _ = self.perceptual(image, hq)
        if self.identity is not None:
            terms["id"], _ = self.identity(image, hq)
        if self.discriminator is not None:
            rows = w[:, :stage + 1].reshape(-1, w.shape[-1])  # the codes of every active row
            terms["w_disc"] = F.softplus(-frozen_call(self.discriminator, rows).float()).mean()
        offsets = w if enc.latent_avg is None else w - enc.latent_avg.to(w.dtype)  # base + deltas
        deltas = offsets[:, 1:stage + 1] - offsets[:, :1]  # (B, stage, D)
        terms["delta_norm"] = deltas.float().norm(dim=-1).sum(1).mean() if stage > 0 else w.new_zeros(())
        loss = sum(float(p[f"{k}_weight"]) * v for k, v in terms.items())
        logs = {f"loss/{k}": v.detach() for k, v in terms.items()} | {"loss/style_encoder": loss.detach()}
        return loss, logs, {}

    def discriminator_phase(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any], dict[str, Any]]:
        lq = batch["lq_in"]
        with torch.no_grad():
            g = generator_for(batch, 2, lq.device)
            z = torch.randn(lq.shape[0], self.model.stylegan.style_dim, generator=g, device=lq.device)
            real = self.model.stylegan.mapping(z.to(lq.dtype))  # (B, D)
            fake = self.model.style_encoder(lq, progressive_stage=int(batch["progressive_stage"]))[:, 0]  # (B, D)
        loss, terms = self.adversarial.discriminator_loss(self.discriminator(real), self.discriminator(fake))
        logs = {f"w_disc/{k}": v for k, v in terms.items()} | {"loss/latent_discriminator": loss.detach()}
        return loss, logs, {"r1_pending": bool(batch.get("r1_due")), "real_w": real}

    def r1_phase(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any], dict[str, Any]]:
        real = batch["real_w"].detach().requires_grad_(True)
        logits = self.discriminator(real)
        penalty, terms = self.adversarial.r1_penalty(logits, real)
        # lazy regularisation scaled by its interval; + 0 * logits keeps every D parameter in the graph (rosinality)
        loss = penalty * int(self.p["r1_every"]) + 0 * logits.float().sum()
        logs = {"loss/w_disc_r1": loss.detach(), "w_disc/r1_grad_norm2": terms["r1_grad_norm2"]}
        return loss, logs, {"r1_pending": False}


class VSPBFREncoderTask(VSPBFRStageTask):
    """Stage 0: fine-tune the e4e style encoder on (LQ, HQ) pairs, with e4e's latent-code discriminator."""

    name = "vspbfr_encoder"
    defaults = ENCODER_DEFAULTS
    trained = ("style_encoder",)

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        p = self.params
        if p["e4e_checkpoint"] is not None:
            self.load_e4e(p["e4e_checkpoint"])
        dim = self.model.stylegan.style_dim
        disc = LatentCodeDiscriminator(dim, p["w_disc_layers"]) if p["w_disc_weight"] > 0 else None
        self._module = EncoderStageModule(self.model, build_perceptual(cfg, p["lpips_weight"]),
                                          build_identity(cfg, p["id_weight"]), disc, p)

    def check_params(self, params: dict[str, Any]) -> None:
        check_int(params, "w_disc_layers", 1)
        check_int(params, "r1_every", 1)
        check_int(params, "progressive_start", 0, optional=True)
        check_int(params, "progressive_every", 1)
        if params["r1"] < 0:
            raise ValueError(f"train.stage_params.r1 must be >= 0, got {params['r1']}")
        path = params["e4e_checkpoint"]
        if path is not None and not isinstance(path, str):
            raise ValueError(f"train.stage_params.e4e_checkpoint must be a path string, got {path!r}")
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"train.stage_params.e4e_checkpoint: no such file: {path}")

    def load_e4e(self, path: str) -> None:
        """Encoder, latent_avg and StyleGAN2 from an e4e checkpoint (e4e_ffhq_encode.pt / style_encoder_decoder.pt)."""
        from honestface.checkpoints import load_checkpoint
        from honestface.models.vspbfr.style_encoder import load_e4e_state_dict
        from honestface.models.vspbfr.stylegan2 import load_rosinality_state_dict, select_state_dict

        ckpt = load_checkpoint(path)
        load_e4e_state_dict(self.model.style_encoder, ckpt)
        weights = {k.removeprefix("module."): v for k, v in ckpt.get("state_dict", {}).items()}
        load_rosinality_state_dict(self.model.stylegan, select_state_dict(weights, prefix="decoder."))

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = {"style_encoder": list(self.model.style_encoder.parameters())}  # first: the EMA follows it
        if self._module.discriminator is not None:
            groups["latent_discriminator"] = list(self._module.discriminator.parameters())
        return groups

    def learning_rates(self) -> dict[str, float]:
        return {"style_encoder": float(self.cfg.optim.lr), "latent_discriminator": float(self.cfg.optim.disc_lr)}

    def r1_step(self, step: int) -> bool:
        p = self.params
        return self._module.discriminator is not None and p["r1"] > 0 and r1_due(step, p["r1_every"])

    def phases(self, step: int) -> list[str]:
        if self._module.discriminator is None:
            return ["style_encoder"]
        return ["latent_discriminator"] * (2 if self.r1_step(step) else 1) + ["style_encoder"]

    def progressive_stage(self, step: int) -> int:
        """Active deltas at `step` (e4e's progressive training): 0 before progressive_start, then one more every
        progressive_every steps; all (n - 1) when progressive_start is None."""
        last, start = self.model.n_latent - 1, self.params["progressive_start"]
        if start is None:
            return last
        return 0 if step < start else min(last, 1 + (step - start) // self.params["progressive_every"])

    def prepare_batch(self, batch: dict[str, Any], step: int) -> dict[str, Any]:
        out = super().prepare_batch(batch, step)
        return out | {"progressive_stage": self.progressive_stage(step), "r1_due": self.r1_step(step)}

    @torch.no_grad()
    def images(self, module: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        model, lq = module.model, batch["lq_in"]
        w = model.style_encoder(lq)  # all deltas, as at inference
        image = model.stylegan(w, generator=torch.Generator(lq.device).manual_seed(0)).image
        return {"lq": lq, "inverted": pool_to(image, lq.shape[-1]), "gt": batch["hq_in"]}
