"""`vre` stage: train the VRE's dual HQ/LQ VQ autoencoders with the association loss; export a frozen VRE.

Paper component: stage 1 of OSDFace (Wang et al., CVPR 2025), the "VRE Encoder + LQ Dict" that HonestFace
(arXiv 2505.18469) keeps frozen; trained DAEFR-style (Tsai et al., ICLR 2024; see `honestface.models.vq_association`
for the model, the association loss and the sources).

Schedule (OSDFace author answer, github.com/jkwang28/OSDFace issue #11: HQ dictionary 50 epochs and LQ dictionary
10 epochs with lambda_assoc = 0, then 10 epochs with lambda_assoc = 1), in steps:

    steps [0, hq_steps)                  phase "hq": HQ autoencoder, self-reconstruction of the HQ face
    steps [0, lq_steps)                  phase "lq": LQ autoencoder, self-reconstruction of the degraded face
    steps [max(hq, lq), ... + assoc)     phases "hq", "lq", each adding assoc_weight * L_assoc

Our choices: the two dictionaries train side by side from step 0 (they are independent until the association; a
step runs the phases whose dictionary is still training), and the association phase simply continues if
`train.max_steps` is longer than the schedule. Unset step counts split `train.max_steps` in OSDFace's 50 : 10 : 10
epoch proportions (hq = 5/6, lq = 1/6, assoc = the rest). Each phase's optimiser owns one autoencoder ("hq", "lq";
the association's learnable temperature belongs to "lq", the side that is exported); in a phase, the other
encoder's features are computed without gradient (what DAEFR's per-optimiser Lightning steps amount to), so a
phase's loss reaches exactly the parameters of its optimiser. `param_groups` lists "lq" first, so an EMA
(`train.ema_decay`) tracks the exported LQ side. Autoencoder loss: l1_weight * L1 + perceptual_weight *
L_Per (`loss.perceptual_type`; untrained networks with `loss.networks=random`) + codebook_weight * VQ loss (beta =
0.25), as DAEFR minus its patch discriminator.

LQ faces are made on the device in `prepare_batch` by `Degradation(degradation.preset, **degradation.params)`,
image i of a batch at step s with seed `sample_seed(train.seed, index_i, s)` (a resumed run draws the same LQ);
when the draw makes the LQ gray, its HQ is made gray too (GFPGAN's gt_gray). Inputs are mapped to [-1, 1].

`export(module, dir)`: `<dir>/vre` (`VisualRepresentationEmbedder.save_pretrained`: LQ encoder, quant_conv and LQ
codebook, randomly initialised projection, input_transform "unit") and `<dir>/vq_association`
(`DualVQAutoencoder.save_pretrained`).

stage_params (all optional): preset ("tiny" | "osdface"; default "tiny" when model.preset is "tiny", else
"osdface"), vre (architecture overrides: base_channels, channel_multipliers, ... beta, temperature), num_tokens /
proj_hidden / out_dim (VRE head, default: the preset's), hq_steps, lq_steps, assoc_steps, assoc_weight (1.0),
l1_weight (1.0), perceptual_weight (1.0), codebook_weight (1.0).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from honestface.config import config_to_dict
from honestface.models.vq_association import ARCH_KEYS, DualVQAutoencoder, association_loss
from honestface.models.vre import VRE_PRESETS
from honestface.training.task import TrainingTask
from honestface.training.tasks.common import (
    FaceFolderData,
    build_perceptual,
    check_weights,
    face_dataset,
    stage_params,
    to_model_range,
)

PHASES = ("hq", "lq")
VRE_DEFAULTS: dict[str, Any] = {
    "preset": None, "vre": {}, "num_tokens": None, "proj_hidden": None, "out_dim": None, "hq_steps": None,
    "lq_steps": None, "assoc_steps": None, "assoc_weight": 1.0, "l1_weight": 1.0, "perceptual_weight": 1.0,
    "codebook_weight": 1.0,
}
_INT_KEYS = ("num_tokens", "proj_hidden", "out_dim", "hq_steps", "lq_steps", "assoc_steps")


class VRETrainingModule(nn.Module):
    """The dual autoencoders and their losses; forward(batch, phase in ("hq", "lq")) -> (loss, logs, carry), carry
    always empty."""

    def __init__(self, dual: DualVQAutoencoder, perceptual: nn.Module | None, l1_weight: float,
                 perceptual_weight: float, codebook_weight: float, assoc_weight: float) -> None:
        super().__init__()
        self.dual, self.perceptual = dual, perceptual
        self.l1_weight, self.perceptual_weight = l1_weight, perceptual_weight
        self.codebook_weight, self.assoc_weight = codebook_weight, assoc_weight

    def forward(self, batch: dict[str, Any], phase: str) -> tuple[torch.Tensor, dict[str, Any], dict[str, Any]]:
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r} for the vre stage; allowed: {', '.join(PHASES)}")
        other = "lq" if phase == "hq" else "hq"
        x = batch[f"{phase}_in"]  # (B, 3, H, W) in [-1, 1]
        out = self.dual.side(phase)(x)
        l1 = F.l1_loss(out.reconstruction.float(), x.float())
        loss = self.l1_weight * l1 + self.codebook_weight * out.vq_loss
        logs: dict[str, Any] = {f"loss/{phase}_l1": l1.detach(), f"loss/{phase}_vq": out.vq_loss.detach()}
        if self.perceptual is not None:
            per, _ = self.perceptual(out.reconstruction, x)
            loss = loss + self.perceptual_weight * per
            logs[f"loss/{phase}_perceptual"] = per.detach()
        if batch.get("association", False):
            with torch.no_grad():
                z_other = self.dual.side(other).encode(batch[f"{other}_in"])  # (B, D, h, w), no gradient
            scale = self.dual.logit_scale if phase == "lq" else self.dual.logit_scale.detach()
            z_hq, z_lq = (out.z, z_other) if phase == "hq" else (z_other, out.z)
            assoc, accuracy = association_loss(z_hq, z_lq, scale)
            loss = loss + self.assoc_weight * assoc
            logs.update({f"loss/{phase}_assoc": assoc.detach(), f"assoc/{phase}_accuracy": accuracy,
                         "assoc/temperature": (-self.dual.logit_scale.detach()).exp()})
        logs[f"loss/{phase}"] = loss.detach()
        return loss, logs, {}


class VRETask(FaceFolderData, TrainingTask):
    """Dual VQ autoencoders on (HQ, degraded LQ) faces, association phase last; exports a frozen VRE."""

    name = "vre"

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        from honestface.data.degradation import Degradation

        self.params = p = stage_params(cfg, self.name, VRE_DEFAULTS)
        check_weights(p, ["assoc_weight", "l1_weight", "perceptual_weight", "codebook_weight"])
        if p["preset"] is not None and not isinstance(p["preset"], str):
            raise ValueError(f"train.stage_params.preset must be a str, got {p['preset']!r}")
        preset = p["preset"] or ("tiny" if cfg.model.preset == "tiny" else "osdface")
        if preset not in VRE_PRESETS:
            raise ValueError(f"train.stage_params.preset: unknown VRE preset {preset!r}; allowed: "
                             f"{', '.join(sorted(VRE_PRESETS))}")
        allowed = (*ARCH_KEYS, "beta", "temperature")
        bad = sorted(set(p["vre"] or {}) - set(allowed))
        if bad:
            raise ValueError(f"unknown train.stage_params.vre key {bad[0]!r}; allowed: {', '.join(allowed)}")
        for key in _INT_KEYS:
            value = p[key]
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"train.stage_params.{key} must be an int >= 0, got {value!r}")
        self.head = {k: int(VRE_PRESETS[preset][k] if p[k] is None else p[k])
                     for k in ("num_tokens", "proj_hidden", "out_dim")}
        if min(self.head.values()) < 1:
            raise ValueError(f"train.stage_params num_tokens, proj_hidden and out_dim must be >= 1, got {self.head}")
        total = int(cfg.train.max_steps)
        self.hq_steps = round(total * 5 / 6) if p["hq_steps"] is None else p["hq_steps"]
        self.lq_steps = round(total / 6) if p["lq_steps"] is None else p["lq_steps"]
        self.assoc_start = max(self.hq_steps, self.lq_steps)
        self.assoc_steps = max(total - self.assoc_start, 0) if p["assoc_steps"] is None else p["assoc_steps"]
        self.total_steps = self.assoc_start + self.assoc_steps
        if self.total_steps != total:
            warnings.warn(f"train.max_steps={total} but the vre schedule (max(hq_steps={self.hq_steps}, "
                          f"lq_steps={self.lq_steps}) + assoc_steps={self.assoc_steps}) has {self.total_steps} steps; "
                          "the run stops at train.max_steps (the association phase continues past its end)",
                          stacklevel=2)
        self.degradation = Degradation(str(cfg.degradation.preset), **config_to_dict(cfg.degradation.params))
        dual = DualVQAutoencoder.from_preset(preset, **(p["vre"] or {}))
        self._module = VRETrainingModule(dual, build_perceptual(cfg, p["perceptual_weight"]), p["l1_weight"],
                                         p["perceptual_weight"], p["codebook_weight"], p["assoc_weight"])
        self._train = face_dataset(cfg, "train")

    @property
    def module(self) -> nn.Module:
        return self._module

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        dual = self._module.dual
        # "lq" first: the trainer's EMA (train.ema_decay) follows the first group, and the LQ side is exported
        return {"lq": [*dual.lq.parameters(), dual.logit_scale], "hq": list(dual.hq.parameters())}

    def association(self, step: int) -> bool:
        """Whether `step` is in the association phase (lambda_assoc > 0)."""
        return step >= self.assoc_start

    def phases(self, step: int) -> list[str]:
        if self.association(step):
            return list(PHASES)
        return [name for name, n in (("hq", self.hq_steps), ("lq", self.lq_steps)) if step < n]

    def degrade(self, hq: torch.Tensor, index: torch.Tensor | list[int], step: int) -> tuple[torch.Tensor,
                                                                                           torch.Tensor]:
        """hq (B, 3, H, W) in [0, 1] -> (hq, grayed where the draw is gray; lq (B, 3, H, W) in [0, 1])."""
        from honestface.data.degradation import rgb_to_gray, sample_seed

        index = index.tolist() if isinstance(index, torch.Tensor) else list(index)
        seeds = [sample_seed(int(self.cfg.train.seed), int(i), step) for i in index]
        with torch.no_grad():
            out = self.degradation(hq, seeds=seeds)
        gray = out.params.get("gray")
        if gray is not None and bool(gray.any()):
            hq = torch.where(gray.bool().view(-1, 1, 1, 1).to(hq.device), rgb_to_gray(hq), hq)
        return hq, out.lq.clamp(0.0, 1.0)

    def prepare_batch(self, batch: dict[str, Any], step: int) -> dict[str, Any]:
        """Adds `lq` (when a phase of this step needs it), `hq_in` / `lq_in` in [-1, 1] and `association`."""
        batch = dict(batch)
        phases = self.phases(step)
        keys: tuple[str, ...] = ("hq",)
        if "lq" in phases or self.association(step):
            batch["hq"], batch["lq"] = self.degrade(batch["hq"], batch["index"], step)
            keys = ("hq", "lq")
        batch["association"] = self.association(step) and self.params["assoc_weight"] > 0
        return to_model_range(batch, keys)

    @torch.no_grad()
    def images(self, module: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        dual = module.dual
        out: dict[str, torch.Tensor] = {}
        for side in PHASES:
            if f"{side}_in" in batch:
                x = batch[f"{side}_in"]
                out[side] = x
                out[f"{side}_reconstruction"] = dual.side(side)(x).reconstruction.clamp(-1, 1)
        return out

    def export(self, module: nn.Module, directory: Path) -> None:
        """Write `<directory>/vre` (frozen VRE from the LQ side) and `<directory>/vq_association`."""
        directory = Path(directory)
        dual = module.dual
        dual.save_pretrained(directory / "vq_association", safe_serialization=True)
        dual.to_vre(**self.head).save_pretrained(directory / "vre", safe_serialization=True)
