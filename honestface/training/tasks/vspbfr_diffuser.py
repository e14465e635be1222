"""VSPBFR training stage 1 (`vspbfr_diffuser`, the code diffuser); what the three stages share is in `common.py`.

Paper: Lu et al., "Visual Style Prompt Learning Using Diffusion Models for Blind Face Restoration" (arXiv 2412.21042).
The paper's training details were not reachable; the recipe follows the released code (LonglongaaaGo/VSPBFR
`code_diffuser_train.py`, `restoration_train.py`; summary in docs/architecture.md#vspbfr). The
code is our own. Stage 0 (`vspbfr_encoder`) is in `vspbfr_encoder.py`, stage 2 (`vspbfr_restoration`) in
`vspbfr_restoration.py`. Every stage trains one part of a `VSPBFR` (built from `model.preset` + `model.params`
per-part overrides, or loaded from the `model.pretrained` folder of an earlier stage), freezes the others explicitly
(requires_grad False, eval mode) and exports the whole model folder (`VSPBFR.save_pretrained`, loadable by
`VSPBFR.from_pretrained`), so stage k + 1 sets `model.pretrained` to stage k's `<output_dir>/final`.

Stage 1, `vspbfr_diffuser` (code diffuser; style encoder and StyleGAN2 frozen, gradients flow through G to the
diffuser but G's parameters are not optimised), phase "code_diffuser":
    w0 = WPlusDiffusion.train_chain(diffuser, x_start, cond = E(LQ))   (x_{T-1} = q_sample(x_start), full chain)
    L = l1 * |w0 - E(HQ)| + lpips * LPIPS(G(w0), HQ) + id * ID(G(w0), HQ)
  Official quirks: the 0.1 LPIPS / ID factors are hard-coded there (its weight flags only switch the terms on): here
  they are the defaults of real weights; x_start is the LQ code (`x_start: lq_code`, default) or, as the paper's
  Fig. 2 suggests, the HQ code (`hq_code`); the official KD term (KL of temperature-0.15 softmaxes of w0 and E(HQ)
  over the *token* axis, batch mean) is computed but never added to the loss: we log it as `loss/kd` only.

All stages: HQ faces of `data.train_dir` (any nesting) at `data.resolution`, flipped with probability `hflip`
(official: 0.5), then degraded on the device by `degradation.preset` (the `vspbfr` preset; stages 0/1 officially use
no haze / gray: the configs set both to 0), image i of step s seeded by sample_seed(train.seed, index_i, s); every
other draw of a step (StyleGAN2 / restoration noise, diffusion start, z) is seeded by (train.seed, step). Images are
in [-1, 1] for the models. Not supported (clear error): `train.gradient_checkpointing`. Note for resumes: the
trainer checkpoints trainable parameters only, so the style encoder's BatchNorm running statistics (stage 0) restart
from the initial ones (training batches use batch statistics, so the optimisation itself continues exactly).

stage_params of `vspbfr_diffuser` (all optional; unknown keys and wrong types: one-line ValueError): l1_weight (1.0),
lpips_weight (0.1), id_weight (0.1), x_start ("lq_code" | "hq_code"), kd_temperature (0.15), hflip (0.5).
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
    generator_for,
    pool_to,
)

DIFFUSER_DEFAULTS: dict[str, Any] = {"l1_weight": 1.0, "lpips_weight": 0.1, "id_weight": 0.1, "x_start": "lq_code",
                                     "kd_temperature": 0.15, "hflip": 0.5}
X_START = ("lq_code", "hq_code")


# -------------------------------------------------------------------------------------------------- stage 1
class DiffuserStageModule(nn.Module):
    """Stage 1: forward(batch, phase="code_diffuser") -> (loss, logs, carry), carry always empty."""

    def __init__(self, model: nn.Module, perceptual: nn.Module | None, identity: nn.Module | None,
                 params: dict[str, Any]) -> None:
        super().__init__()
        self.model, self.perceptual, self.identity, self.p = model, perceptual, identity, params
        self.train()

    def forward(self, batch: dict[str, Any], phase: str) -> tuple[torch.Tensor, dict[str, Any], dict[str, Any]]:
        if phase != "code_diffuser":
            raise ValueError(f"unknown phase {phase!r} for the vspbfr_diffuser stage; allowed: code_diffuser")
        lq, hq, m, p = batch["lq_in"], batch["hq_in"], self.model, self.p
        with torch.no_grad():
            w_lq, w_hq = m.encode_lq(lq), m.encode_lq(hq)  # (B, n, D): condition and target
        x_start = w_lq if p["x_start"] == "lq_code" else w_hq
        w0 = m.diffusion.train_chain(m.code_diffuser, x_start, w_lq, generator=generator_for(batch, 1, lq.device))
        image = pool_to(m.stylegan(w0, generator=generator_for(batch, 2, lq.device)).image, hq.shape[-1])
        terms = {"l1": (w0.float() - w_hq.float()).abs().mean()}
        if self.perceptual is not None:
            terms["lpips"], _ = self.perceptual(image, hq)
        if self.identity is not None:
            terms["id"], _ = self.identity(image, hq)
        loss = sum(float(p[f"{k}_weight"]) * v for k, v in terms.items())
        with torch.no_grad():  # the official KD term: logged, never optimised
            t = float(p["kd_temperature"])
            kd = F.kl_div(F.log_softmax(w0.float() / t, dim=1), F.softmax(w_hq.float() / t, dim=1),
                          reduction="batchmean")
        logs = {f"loss/{k}": v.detach() for k, v in terms.items()}
        logs |= {"loss/kd": kd, "loss/code_diffuser": loss.detach()}
        return loss, logs, {}


class VSPBFRDiffuserTask(VSPBFRStageTask):
    """Stage 1: the code diffuser on frozen style-encoder codes, supervised by E(HQ) and G(w0) vs HQ."""

    name = "vspbfr_diffuser"
    defaults = DIFFUSER_DEFAULTS
    trained = ("code_diffuser",)

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        p = self.params
        self._module = DiffuserStageModule(self.model, build_perceptual(cfg, p["lpips_weight"]),
                                           build_identity(cfg, p["id_weight"]), p)

    def check_params(self, params: dict[str, Any]) -> None:
        if params["x_start"] not in X_START:
            raise ValueError(f"train.stage_params.x_start must be one of {', '.join(X_START)}, "
                             f"got {params['x_start']!r}")
        if params["kd_temperature"] <= 0:
            raise ValueError(f"train.stage_params.kd_temperature must be > 0, got {params['kd_temperature']}")

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"code_diffuser": list(self.model.code_diffuser.parameters())}

    def phases(self, step: int) -> list[str]:
        return ["code_diffuser"]

    @torch.no_grad()
    def images(self, module: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        model, lq = module.model, batch["lq_in"]
        g = torch.Generator(lq.device).manual_seed(0)
        w_hat = model.encode_lq(lq)
        w0 = model.style_prompt(w_hat, generator=g)
        size = lq.shape[-1]
        return {"lq": lq, "inverted_lq": pool_to(model.stylegan(w_hat, generator=g).image, size),
                "prompt": pool_to(model.stylegan(w0, generator=g).image, size), "gt": batch["hq_in"]}
