"""`vae` stage: a small SD-style KL autoencoder trained on HQ face crops, for the small-scale recipe.

Task: when no pretrained SD VAE fits (tiny or custom latent sizes), HonestFace's frozen VAE (arXiv 2505.18469,
inherited from SD 2.1 through OSDFace) is replaced by one trained here on the training faces. The objective is the
one of the latent-diffusion autoencoder (Rombach et al., CVPR 2022, "LPIPSWithDiscriminator"): L1 + perceptual +
KL, without its patch discriminator (our choice: a face-only VAE for small runs does not need it).

    loss = l1_weight * |x - x_rec|_1 + perceptual_weight * L_Per(x_rec, x) + kl_weight * KL(q(z|x) || N(0, I)) / (3 H W)

The KL is summed over the latent of each image and averaged over the batch, then divided by the number of image
values, which puts it on the per-value scale of the mean L1: with kl_weight = 1e-6 the balance is SD's (whose
reconstruction term is a per-image sum). The posterior is sampled during training (as SD).

`export` writes `<dir>/vae` with `AutoencoderKL.save_pretrained` (loadable by `AutoencoderKL.from_pretrained`).
Its `scaling_factor` is set to 1 / std of the posterior samples of the first `scaling_batches` training batches,
the rule SD used to get 0.18215 (latents of unit variance for the diffusion model). The generator uses it as
`z = E(x) * scaling_factor`.

stage_params (all optional): `vae` (AutoencoderKL config overrides of `TINY_VAE_CONFIG`), `l1_weight` (1.0),
`perceptual_weight` (0.1; kind `loss.perceptual_type`, untrained networks when `loss.networks=random`), `kl_weight`
(1e-6), `scaling_batches` (4). Faces come from `data.train_dir` (any nesting; `data.dataset` is not consulted:
this stage and `vre` read plain HQ faces). The helpers it shares with the other stages are in `common.py`.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader

from honestface.training.task import TrainingTask
from honestface.training.tasks.common import (
    FaceFolderData,
    build_perceptual,
    check_weights,
    face_dataset,
    stage_params,
    to_model_range,
)

VAE_PHASE = "generator"
VAE_DEFAULTS: dict[str, Any] = {"vae": {}, "l1_weight": 1.0, "perceptual_weight": 0.1, "kl_weight": 1e-6,
                                "scaling_batches": 4}


# ------------------------------------------------------------------------------------------------- the VAE stage
def build_vae(overrides: dict[str, Any]):
    """A randomly initialised AutoencoderKL from `TINY_VAE_CONFIG` with `overrides` (names checked)."""
    from diffusers import AutoencoderKL

    from honestface.models.presets import TINY_VAE_CONFIG

    allowed = [p for p in inspect.signature(AutoencoderKL.__init__).parameters if p != "self"]
    bad = sorted(set(overrides) - set(allowed))
    if bad:
        raise ValueError(f"unknown AutoencoderKL option {bad[0]!r} in train.stage_params.vae; allowed: "
                         f"{', '.join(allowed)}")
    return AutoencoderKL(**{**TINY_VAE_CONFIG, **overrides})


class AutoencoderModule(nn.Module):
    """The VAE and its losses; forward(batch, phase="generator") -> (loss, logs, carry), carry always empty."""

    def __init__(self, vae: nn.Module, perceptual: nn.Module | None, l1_weight: float, perceptual_weight: float,
                 kl_weight: float) -> None:
        super().__init__()
        self.vae, self.perceptual = vae, perceptual
        self.l1_weight, self.perceptual_weight, self.kl_weight = l1_weight, perceptual_weight, kl_weight

    def reconstruct(self, x: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, Any]:
        """x (B, 3, H, W) in [-1, 1] -> (reconstruction (B, 3, H, W), posterior q(z|x))."""
        posterior = self.vae.encode(x).latent_dist
        z = posterior.sample() if sample else posterior.mode()  # (B, C, h, w)
        return self.vae.decode(z).sample, posterior

    def forward(self, batch: dict[str, Any], phase: str = VAE_PHASE
                ) -> tuple[torch.Tensor, dict[str, Any], dict[str, Any]]:
        if phase != VAE_PHASE:
            raise ValueError(f"unknown phase {phase!r} for the vae stage; allowed: {VAE_PHASE}")
        x = batch["hq_in"]  # (B, 3, H, W) in [-1, 1]
        rec, posterior = self.reconstruct(x)
        l1 = F.l1_loss(rec.float(), x.float())
        mean, logvar = posterior.mean.float(), posterior.logvar.float()  # (B, C, h, w); KL in float32
        kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).flatten(1).sum(1).mean() / x[0].numel()
        loss = self.l1_weight * l1 + self.kl_weight * kl
        logs: dict[str, Any] = {"loss/l1": l1.detach(), "loss/kl": kl.detach()}
        if self.perceptual is not None:
            per, _ = self.perceptual(rec, x)
            loss = loss + self.perceptual_weight * per
            logs["loss/perceptual"] = per.detach()
        logs["loss/vae"] = loss.detach()
        return loss, logs, {}


class AutoencoderTask(FaceFolderData, TrainingTask):
    """Train a small AutoencoderKL on HQ faces; export a diffusers VAE folder with a measured scaling factor."""

    name = "vae"

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.params = p = stage_params(cfg, self.name, VAE_DEFAULTS)
        check_weights(p, ["l1_weight", "perceptual_weight", "kl_weight"])
        if p["scaling_batches"] < 1:
            raise ValueError(f"train.stage_params.scaling_batches must be >= 1, got {p['scaling_batches']}")
        vae = build_vae(dict(p["vae"] or {}))
        if cfg.train.gradient_checkpointing:
            vae.enable_gradient_checkpointing()
        self._module = AutoencoderModule(vae, build_perceptual(cfg, p["perceptual_weight"]), p["l1_weight"],
                                         p["perceptual_weight"], p["kl_weight"])
        self._train = face_dataset(cfg, "train")

    @property
    def module(self) -> nn.Module:
        return self._module

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {VAE_PHASE: [q for q in self._module.vae.parameters() if q.requires_grad]}

    def phases(self, step: int) -> list[str]:
        return [VAE_PHASE]

    def prepare_batch(self, batch: dict[str, Any], step: int) -> dict[str, Any]:
        return to_model_range(batch, ("hq",))  # adds hq_in (B, 3, H, W) in [-1, 1]

    @torch.no_grad()
    def images(self, module: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        own = module
        x = batch["hq_in"] if "hq_in" in batch else batch["hq"] * 2 - 1
        rec, _ = own.reconstruct(x.to(own.vae.device, own.vae.dtype), sample=False)
        return {"hq": x, "reconstruction": rec.clamp(-1, 1)}

    @torch.no_grad()
    def latent_std(self, vae: nn.Module, seed: int = 0) -> float:
        """Std of posterior samples over the first `scaling_batches` batches of the training set (in order)."""
        from honestface.data.datasets import collate_faces

        loader = DataLoader(self._train, batch_size=int(self.cfg.data.batch_size), shuffle=False,
                            collate_fn=collate_faces, num_workers=0)
        gen = torch.Generator(device=vae.device).manual_seed(seed)
        total = total_sq = count = 0.0
        for i, batch in enumerate(loader):
            if i == self.params["scaling_batches"]:
                break
            x = batch["hq"].to(vae.device, vae.dtype) * 2 - 1  # (B, 3, H, W)
            z = vae.encode(x).latent_dist.sample(generator=gen).double()  # (B, C, h, w)
            total, total_sq, count = total + z.sum().item(), total_sq + (z * z).sum().item(), count + z.numel()
        var = total_sq / count - (total / count) ** 2
        if not var > 0:
            raise ValueError(f"latent variance is {var} over {int(count)} values: cannot set scaling_factor")
        return var ** 0.5

    def export(self, module: nn.Module, directory: Path) -> None:
        """Write `<directory>/vae` (diffusers AutoencoderKL folder) with scaling_factor = 1 / latent std."""
        vae = module.vae
        was_training = vae.training
        vae.eval()
        try:
            scale = 1.0 / self.latent_std(vae, seed=int(self.cfg.train.seed))
        finally:
            vae.train(was_training)
        vae.register_to_config(scaling_factor=scale)
        vae.save_pretrained(Path(directory) / "vae", safe_serialization=True)
