"""The HonestFace training task: generator (LoRA, IDE heads, VRE projection, fusion) and latent discriminator,
trained alternately (adversarial distillation), as the HonestFace pipeline figure draws it (arXiv 2505.18469).

Generator phase: x̂_H = G(x_L, refs); loss = λ_mse·L_MSE + λ_per·L_Per + λ_id·L_ID + λ_mfa·L_MFA + λ_adv·L_G.
Discriminator phase: softplus(D(ẑ_H)) + softplus(−D(z_H)) (or hinge) on noised latents conditioned on p, + R1.

Our choices (the paper states none of them; all are config keys): the weights `loss.*`; the identity loss uses the
model's own frozen ArcFace (the IDE's identity backbone) when it has one; MFA region masks come from the landmark
sidecars written by `scripts/prepare_data.py align` (samples without landmarks add nothing to L_MFA); LQ faces are
made on the training device from the HQ batch by `degradation.preset`, seeded by (train.seed, sample, step).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from honestface.config import config_to_dict
from honestface.training.task import TrainingTask
from honestface.training.tasks.common import build_identity, build_perceptual, step_seed


class HonestFaceTrainingModule(nn.Module):
    """Everything one step uses: the model and its losses. forward(batch, phase) -> (loss, logs, carry)."""

    def __init__(self, model: nn.Module, cfg: DictConfig) -> None:
        super().__init__()
        from honestface.losses import (
            AdversarialLoss,
            MaskedFaceAlignmentLoss,
            ReconstructionLoss,
        )

        lw, weights, random = cfg.loss, dict(cfg.weights), cfg.loss.networks == "random"
        self.model = model
        self.lw = {k: float(lw[k]) for k in ("mse", "perceptual", "identity", "mfa", "adversarial")}
        self.reconstruction = ReconstructionLoss(space=lw.mse_space)
        self.perceptual = build_perceptual(cfg, self.lw["perceptual"])
        self.identity = build_identity(cfg, self.lw["identity"], getattr(model, "identity_backbone", None))
        self.mfa = None
        if self.lw["mfa"] > 0:
            self.mfa = MaskedFaceAlignmentLoss(
                region_weights=dict(lw.mfa_region_weights) or None, texture=lw.mfa_texture,
                use_references=lw.mfa_references, weights=weights.get("vgg16_imagenet"), random_init=random)
        self.adversarial = AdversarialLoss(kind=lw.adversarial_type, r1_weight=lw.r1)

    def train(self, mode: bool = True) -> HonestFaceTrainingModule:
        super().train(mode)
        for loss in (self.perceptual, self.identity, self.mfa):  # frozen networks stay in eval mode
            if loss is not None:
                loss.eval()
        return self

    def forward(self, batch: dict[str, Any], phase: str) -> tuple[torch.Tensor, dict[str, Any], dict[str, Any]]:
        if phase == "generator":
            return self.generator_phase(batch)
        if phase == "discriminator":
            return self.discriminator_phase(batch)
        raise ValueError(f"unknown phase {phase!r}")

    def generator_phase(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any], dict[str, Any]]:
        lq, hq = batch["lq"], batch["hq"]  # (B, 3, H, W) in [-1, 1]
        gen = torch.Generator(lq.device).manual_seed(batch["seed_vae"])
        out = self.model(lq, batch.get("refs"), batch.get("ref_mask"), drop_refs=batch.get("drop"), generator=gen)
        terms: dict[str, torch.Tensor] = {}
        z_hq = None
        if self.reconstruction.space != "pixel":
            with torch.no_grad():
                z_hq = self.model.encode_latents(hq, generator=gen)  # (B, 4, H/8, W/8)
        terms["mse"], _ = self.reconstruction(out.x_hat, hq, out.z_hat, z_hq)
        if self.perceptual is not None:
            terms["perceptual"], _ = self.perceptual(out.x_hat, hq)
        if self.identity is not None:
            terms["identity"], _ = self.identity(out.x_hat, hq)
        if self.mfa is not None and batch.get("masks") is None:
            terms["mfa"] = out.x_hat.new_zeros(())  # no sample of this batch has landmarks
        elif self.mfa is not None:
            with_refs = batch.get("mfa_ref_mask") is not None  # references with landmarks, for the texture pull
            terms["mfa"], _ = self.mfa(out.x_hat, hq, batch["masks"], refs=batch["refs"] if with_refs else None,
                                       ref_landmarks=batch.get("ref_landmarks"), ref_mask=batch.get("mfa_ref_mask"),
                                       target_landmarks=batch.get("landmarks"))
        if batch.get("adversarial") and self.model.discriminator is not None:
            g = torch.Generator(lq.device).manual_seed(batch["seed_disc"])
            logits = self.model.discriminator(out.z_hat, out.prompt_embeds, generator=g)  # (B,)
            terms["adversarial"], _ = self.adversarial.generator_loss(logits)
        loss = sum(self.lw[k] * v for k, v in terms.items())
        logs = {f"loss/{k}": v.detach() for k, v in terms.items()} | {"loss/generator": loss.detach()}
        carry = {"fake_latents": out.z_hat.detach(), "prompt_embeds": out.prompt_embeds.detach()}
        return loss, logs, carry

    def discriminator_phase(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any], dict[str, Any]]:
        hq, fake, p = batch["hq"], batch["fake_latents"], batch["prompt_embeds"]
        gen = torch.Generator(hq.device).manual_seed(batch["seed_vae"])
        with torch.no_grad():
            real = self.model.encode_latents(hq, generator=gen)  # z_H (B, 4, H/8, W/8)
        disc = self.model.discriminator
        r1 = self.adversarial.r1_weight > 0
        real = real.requires_grad_(r1)
        g = torch.Generator(hq.device).manual_seed(batch["seed_disc"] + 1)
        real_logits = disc(real, p, generator=g)
        fake_logits = disc(fake, p, generator=g)
        loss, terms = self.adversarial.discriminator_loss(real_logits, fake_logits)
        if r1:
            penalty, _ = self.adversarial.r1_penalty(real_logits, real)
            loss, terms = loss + penalty, {**terms, "r1": penalty.detach()}
        logs = {f"disc/{k}": v for k, v in terms.items()} | {"loss/discriminator": loss.detach()}
        return loss, logs, {}


class HonestFaceTask(TrainingTask):
    name = "honestface"

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        from honestface.data.degradation import Degradation
        from honestface.models import HonestFace

        params = config_to_dict(cfg.model.params)
        if cfg.model.pretrained:
            model = HonestFace.from_pretrained(cfg.model.pretrained, weights=dict(cfg.weights),
                                               revision=cfg.model.revision)
        else:
            model = HonestFace.from_preset(cfg.model.preset or "sd21", weights=dict(cfg.weights), **params)
        model.native = model.native.replace(resolution=int(cfg.data.resolution))  # the size it is trained at
        if cfg.train.gradient_checkpointing:
            model.enable_gradient_checkpointing()
        self._module = HonestFaceTrainingModule(model, cfg)
        self.degradation = Degradation(cfg.degradation.preset, **config_to_dict(cfg.degradation.params))
        self._train_data = self._dataset(cfg.data.train_dir, train=True)
        self._val_data = self._dataset(cfg.data.val_dir, train=False, lq_root=cfg.data.lq_dir) \
            if cfg.data.val_dir else None

    @property
    def module(self) -> nn.Module:
        return self._module

    def _dataset(self, root: str | None, train: bool, lq_root: str | None = None):
        from honestface.data.datasets import PairedFaceDataset
        from honestface.data.references import ReferenceFaceDataset, read_split_file

        d = self.cfg.data
        if not root:
            raise ValueError("data.train_dir is not set: point it at a folder of aligned faces "
                             "(scripts/prepare_data.py align makes one)")
        if d.dataset == "paired":
            return PairedFaceDataset(root, resolution=d.resolution, seed=self.cfg.train.seed, lq_root=lq_root)
        identities = read_split_file(d.split_file) if (d.split_file and train) else None
        return ReferenceFaceDataset(root, num_references=d.num_references, resolution=d.resolution, train=train,
                                    seed=self.cfg.train.seed, identities=identities, lq_root=lq_root)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        model = self._module.model
        groups = {"generator": model.trainable_parameters()}
        if model.discriminator is not None and self.cfg.loss.adversarial > 0:
            groups["discriminator"] = model.discriminator_parameters()
        return groups

    def learning_rates(self) -> dict[str, float]:
        return {"generator": float(self.cfg.optim.lr), "discriminator": float(self.cfg.optim.disc_lr)}

    def phases(self, step: int) -> list[str]:
        t = self.cfg.train
        if "discriminator" in self.param_groups() and step >= t.disc_start_step:
            return ["generator"] + ["discriminator"] * t.d_steps_per_g
        return ["generator"]

    def train_dataset(self):
        return self._train_data

    def val_dataset(self):
        return self._val_data

    def collate(self):
        from honestface.data.datasets import collate_faces

        return collate_faces

    def prepare_batch(self, batch: dict[str, Any], step: int) -> dict[str, Any]:
        """HQ -> LQ on the device, images to [-1, 1], reference dropout, region masks; draws seeded by step."""
        from honestface.data.degradation import rgb_to_gray, sample_seed
        from honestface.losses.mfa import build_region_masks
        from honestface.models.fusion import sample_reference_dropout

        cfg, seed = self.cfg, int(self.cfg.train.seed)
        hq = batch["hq"]  # (B, 3, H, W) in [0, 1]
        if "lq" in batch:  # precomputed LQ (a fixed test set)
            lq = batch["lq"]
        else:
            deg = self.degradation(hq, [sample_seed(seed, int(i), step) for i in batch["index"]])
            lq, gray = deg.lq, deg.params.get("gray")
            if gray is not None and bool(gray.any()):  # gray LQ trains toward a gray target (GFPGAN's gt_gray)
                hq = torch.where(gray.to(hq.device).bool()[:, None, None, None], rgb_to_gray(hq), hq)
        out: dict[str, Any] = {"hq": hq * 2 - 1, "lq": lq * 2 - 1, "index": batch["index"]}
        out["seed_vae"], out["seed_disc"] = step_seed(seed, step, 1), step_seed(seed, step, 2)
        out["adversarial"] = "discriminator" in self.phases(step) and cfg.loss.adversarial > 0
        b = hq.shape[0]
        if "refs" in batch and batch["refs"].shape[1] > 0:
            out["refs"], out["ref_mask"] = batch["refs"] * 2 - 1, batch["ref_mask"]  # (B, K, 3, H, W), (B, K)
            g = torch.Generator().manual_seed(step_seed(seed, step, 3))
            out["drop"] = sample_reference_dropout(b, cfg.data.reference_dropout, g).to(hq.device)  # (B,)
            ref_lm = batch.get("ref_landmarks")  # (B, K, P, 2), NaN rows for references without a sidecar
            if ref_lm is not None:
                usable = batch["ref_mask"] & ~torch.isnan(ref_lm).flatten(2).any(2)  # (B, K)
                if bool(usable.any()):
                    out["ref_landmarks"] = torch.nan_to_num(ref_lm)
                    out["mfa_ref_mask"] = usable
        landmarks = batch.get("landmarks")
        if self._module.mfa is not None and landmarks is not None:
            has = ~torch.isnan(landmarks).flatten(1).any(1)  # (B,) samples with a landmark sidecar
            if bool(has.any()):
                scheme = next(s for s in batch.get("scheme", ["dlib68"]) if s)
                filled = torch.where(has[:, None, None], landmarks, landmarks[has][:1].expand_as(landmarks))
                masks = build_region_masks(filled, scheme=scheme, size=tuple(hq.shape[-2:]),
                                           regions=self._module.mfa.regions, device=hq.device)
                out["masks"] = masks * has[:, None, None, None].to(masks.dtype)  # (B, R, H, W)
                out["landmarks"] = filled
        return out

    @torch.no_grad()
    def images(self, module: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        gen = torch.Generator(batch["lq"].device).manual_seed(0)
        out = module.model(batch["lq"], batch.get("refs"), batch.get("ref_mask"), generator=gen)
        cols = {"lq": batch["lq"]}
        if batch.get("refs") is not None:
            cols["ref"] = batch["refs"][:, 0]
        return cols | {"output": out.x_hat, "gt": batch["hq"]}

    def export(self, module: nn.Module, directory: Path) -> None:
        module.model.save_pretrained(directory)
