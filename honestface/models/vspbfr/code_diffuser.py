"""VSPBFR code diffuser: an x0-predicting DDPM over StyleGAN2 W+ codes, conditioned on the style encoder's code.

Paper component: the "code diffuser" of the diffusion-based style prompt module (Lu et al., "Visual Style Prompt
Learning Using Diffusion Models for Blind Face Restoration", arXiv 2412.21042, Figs. 1a and 2). Starting from
Gaussian codes w^T, T reverse steps conditioned on w_hat = E(LQ) give the visual style prompt w^0 (B, 18, 512).
The paper body was not reachable; every fact below comes from the released code (LonglongaaaGo/VSPBFR,
`models/CodeDiffuser.py`, `ldm/ddpm.py`, `code_diffuser_train.py`, `restoration_test.py`), summarised in
docs/architecture.md#vspbfr. The code here is our own.

Two parts:

`CodeDiffuser` (the denoiser f_theta(x_t, w_hat, t) -> x0_hat) is `n_blocks` (4) blocks applied in sequence with no
residual between blocks (each block's output replaces x). With c = [w_hat, t / T] (B, N, D + 1), one block does:
  1. PixelNorm of x *over the token axis* (dim 1 of (B, N, D)): the official block reuses StyleGAN's PixelNorm,
     whose `mean(dim=1)` on a (B, 18, 512) tensor runs over the 18 tokens, not over the 512 channels. We keep the
     official behaviour so the released weights give the released outputs (vspbfr.md says "over the channels").
  2. Token cross-attention: K = W_k x, V = W_v x, Q = W_q c (bias-free), S = softmax_j(K Q^T / sqrt(N)), h1 = S V.
     The scale is sqrt(n_tokens), not sqrt(dim): the official code hard-codes sqrt(18) (`dk = 18`); we use
     sqrt(n_tokens), which is the same number at the default N = 18.
  3. Channel cross-attention (official class name `spatial_attention`): q = W'_q x, k = W'_k c, v = W'_v x,
     A = softmax over dim 1 of k^T q / sqrt(D) (D x D, normalised over the condition's channels), h2 = LN(v A).
  4. h = LN(h1 + h2) (LayerNorms without affine parameters).
  5. FiLM: h * (1 + gamma(c)) + beta(c), gamma = Linear -> LayerNorm -> ScaledLeakyReLU -> Linear -> sigmoid,
     beta = the same trunk ending in ScaledLeakyReLU (leaky 0.2, times sqrt 2).
Parameter names are the official ones (`att_mapper.{i}.q_matrix`, `.attention_layer.k_matrix`, `.gamma_.0`, ...), so
`code_diffuser.pt` loads without renaming. ~2.63 M parameters per block at D = 512, ~10.5 M in all.

`WPlusDiffusion` (plain class, nothing trainable) holds the schedule and the chain. Betas are the official
"sqrt-linear" schedule beta = linspace(sqrt(0.1), sqrt(0.99), T)^2 (LDM's "linear", diffusers' "scaled_linear")
with T = 4; the reverse process is deterministic: each step returns only the posterior mean
mu_t = coef1_t x0_hat + coef2_t x_t (no noise, no clipping), so at t = 0 (coef1 = 1, coef2 = 0) the chain returns the
last x0_hat. Training (DiffIR-style, official `My_DDPM(training=True)`) noises x_start to t = T - 1 and runs the
whole reverse chain with gradients, supervising only the end. The official training call uses x_start = cond = the
LQ code (`diffusion(x=low_latent, condi_in=low_latent)`); `train_chain` takes x_start as an argument so either that
or the HQ code (as the paper's Fig. 2 suggests) can be used.

Our choices: attention softmaxes run in float32 (then cast back) so bf16/fp16 match fp32 closely; noise is drawn in
float32 on the generator's device and then moved, so a seed gives the same codes on CPU and GPU; the scale uses
n_tokens (see 2.); the plain "linear" schedule is offered besides the official one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

__all__ = [
    "BETA_SCHEDULES", "ChannelCrossAttention", "CodeDiffuser", "CodeDiffuserBlock", "ScaledLeakyReLU",
    "WPlusDiffusion", "beta_schedule", "load_official_code_diffuser",
]

BETA_SCHEDULES: tuple[str, ...] = ("scaled_linear", "linear")

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class ScaledLeakyReLU(nn.Module):
    """leaky_relu(x, slope) * sqrt(2) (StyleGAN2's gain-corrected leaky ReLU, without a bias)."""

    def __init__(self, negative_slope: float = 0.2) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.negative_slope) * math.sqrt(2.0)


def _token_pixel_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """StyleGAN PixelNorm applied as the official block does: mean of squares over dim 1 (the tokens of (B, N, D))."""
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + eps)


def _softmax(scores: torch.Tensor, dim: int) -> torch.Tensor:
    return F.softmax(scores.float(), dim=dim).to(scores.dtype)


def _film_trunk(dim: int, sigmoid: bool) -> nn.Sequential:
    """Linear(D+1 -> D) -> LayerNorm(D, affine) -> ScaledLeakyReLU -> Linear(D -> D) -> sigmoid | ScaledLeakyReLU."""
    last = nn.Sigmoid() if sigmoid else ScaledLeakyReLU(0.2)
    return nn.Sequential(nn.Linear(dim + 1, dim), nn.LayerNorm(dim), ScaledLeakyReLU(0.2), nn.Linear(dim, dim), last)


class ChannelCrossAttention(nn.Module):
    """D x D attention between the channels of x and of the condition (official `spatial_attention`)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.q_matrix = nn.Linear(dim, dim, bias=False)
        self.k_matrix = nn.Linear(dim + 1, dim, bias=False)
        self.v_matrix = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, cond_t: torch.Tensor) -> torch.Tensor:
        # x (B, N, D), cond_t (B, N, D + 1) -> (B, N, D)
        q = self.q_matrix(x)
        k = self.k_matrix(cond_t)
        v = self.v_matrix(x)
        scores = k.transpose(1, 2) @ q / math.sqrt(self.dim)  # (B, D, D): [condition channel, x channel]
        out = v @ _softmax(scores, dim=1)
        return F.layer_norm(out, (self.dim,))


class CodeDiffuserBlock(nn.Module):
    """One denoiser block (official `TACC_block`): pixel norm, token + channel cross-attention, LayerNorm, FiLM."""

    def __init__(self, dim: int, n_tokens: int) -> None:
        super().__init__()
        self.dim = dim
        self.attn_scale = 1.0 / math.sqrt(n_tokens)
        self.q_matrix = nn.Linear(dim + 1, dim, bias=False)
        self.k_matrix = nn.Linear(dim, dim, bias=False)
        self.v_matrix = nn.Linear(dim, dim, bias=False)
        self.attention_layer = ChannelCrossAttention(dim)
        self.gamma_ = _film_trunk(dim, sigmoid=True)
        self.beta_ = _film_trunk(dim, sigmoid=False)

    def forward(self, x: torch.Tensor, cond_t: torch.Tensor) -> torch.Tensor:
        # x (B, N, D), cond_t (B, N, D + 1) -> (B, N, D)
        x = _token_pixel_norm(x)
        k = self.k_matrix(x)
        v = self.v_matrix(x)
        q = self.q_matrix(cond_t)
        scores = k @ q.transpose(1, 2) * self.attn_scale  # (B, N, N): [x token, condition token]
        h = _softmax(scores, dim=-1) @ v
        h = F.layer_norm(h + self.attention_layer(x, cond_t), (self.dim,))
        return h * (1.0 + self.gamma_(cond_t)) + self.beta_(cond_t)


class CodeDiffuser(ModelMixin, ConfigMixin):
    """x0-predicting denoiser over W+ codes: forward(x_t (B, N, D), cond (B, N, D), t (B,) long) -> x0_hat (B, N, D)."""

    @register_to_config
    def __init__(self, n_tokens: int = 18, dim: int = 512, n_blocks: int = 4, num_timesteps: int = 4) -> None:
        super().__init__()
        for name, value in (("n_tokens", n_tokens), ("dim", dim), ("n_blocks", n_blocks),
                            ("num_timesteps", num_timesteps)):
            if int(value) < 1:
                raise ValueError(f"CodeDiffuser: {name} must be >= 1, got {value}")
        self.n_tokens = int(n_tokens)
        self.dim = int(dim)
        self.num_timesteps = int(num_timesteps)
        self.att_mapper = nn.ModuleList(CodeDiffuserBlock(self.dim, self.n_tokens) for _ in range(int(n_blocks)))

    def forward(self, x_t: torch.Tensor, cond: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        expected = (self.n_tokens, self.dim)
        for name, value in (("x_t", x_t), ("cond", cond)):
            if value.ndim != 3 or tuple(value.shape[1:]) != expected:
                raise ValueError(f"CodeDiffuser: {name} must have shape (B, {expected[0]}, {expected[1]}), "
                                 f"got {tuple(value.shape)}")
        if x_t.shape[0] != cond.shape[0]:
            raise ValueError(f"CodeDiffuser: batch of x_t ({x_t.shape[0]}) and cond ({cond.shape[0]}) differ")
        batch = x_t.shape[0]
        t = _as_timesteps(t, batch, x_t.device, self.num_timesteps)
        t_frac = (t.to(cond.dtype) / self.num_timesteps).view(batch, 1, 1).expand(batch, self.n_tokens, 1)
        cond_t = torch.cat([cond, t_frac], dim=-1)  # (B, N, D + 1)
        x = x_t
        for block in self.att_mapper:
            x = block(x, cond_t)
        return x

    @classmethod
    def from_official(cls, checkpoint: str | os.PathLike[str] | Mapping[str, Any], **config: Any) -> CodeDiffuser:
        """Build a denoiser (`config` = constructor arguments) and load VSPBFR's `code_diffuser.pt` into it."""
        model = cls(**config)
        load_official_code_diffuser(model, checkpoint)
        return model


def load_official_code_diffuser(model: CodeDiffuser,
                                checkpoint: str | os.PathLike[str] | Mapping[str, Any]) -> CodeDiffuser:
    """Load the official checkpoint (a path, or its loaded dict) into `model`, strictly; returns `model`.

    `code_diffuser.pt` (HF `Wanglong2/VSPBFR`) is `{"att_mapper": state_dict, "mapper_optim": ..., "args": ...,
    "iter": ...}`; a bare state dict works too. Our parameter names are the official ones, so the only mapping is
    dropping a DistributedDataParallel `module.` prefix. Mismatches raise one ValueError line (not a dict: TypeError).
    """
    from honestface.checkpoints import check_state_dict, read_checkpoint

    checkpoint, source = read_checkpoint(checkpoint, "code diffuser checkpoint")
    state = checkpoint.get("att_mapper", checkpoint)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{source}: no 'att_mapper' state dict (top-level keys: {sorted(checkpoint)[:8]})")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    check_state_dict(model, state, source, f"CodeDiffuser(n_blocks={len(model.att_mapper)}, dim={model.dim})")
    model.load_state_dict(state, strict=True)
    return model


# ------------------------------------------------------------------------------------------------ diffusion math


def beta_schedule(num_timesteps: int, beta_start: float = 0.1, beta_end: float = 0.99,
                  schedule: str = "scaled_linear") -> torch.Tensor:
    """(T,) float64 betas. "scaled_linear": linspace(sqrt(start), sqrt(end), T)^2 (official); "linear": linspace."""
    if int(num_timesteps) < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
    for name, value in (("beta_start", beta_start), ("beta_end", beta_end)):
        if not 0.0 < float(value) < 1.0:
            raise ValueError(f"{name} must be in (0, 1), got {value}")
    if schedule == "scaled_linear":
        return torch.linspace(beta_start ** 0.5, beta_end ** 0.5, int(num_timesteps), dtype=torch.float64) ** 2
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, int(num_timesteps), dtype=torch.float64)
    raise ValueError(f"unknown beta schedule {schedule!r}; allowed: {', '.join(BETA_SCHEDULES)}")


def _as_timesteps(t: torch.Tensor | int, batch: int, device: torch.device, num_timesteps: int) -> torch.Tensor:
    """An int or a (B,) / 0-d integer tensor -> (B,) long on `device`, checked to lie in [0, T)."""
    if isinstance(t, int):
        if not 0 <= t < num_timesteps:
            raise ValueError(f"timestep {t} out of range [0, {num_timesteps})")
        return torch.full((batch,), t, dtype=torch.long, device=device)
    if not isinstance(t, torch.Tensor) or t.is_floating_point() or t.is_complex():
        raise ValueError(f"timesteps must be an int or an integer tensor, got {getattr(t, 'dtype', type(t))}")
    if t.ndim == 0:
        t = t.expand(batch)
    if tuple(t.shape) != (batch,):
        raise ValueError(f"timesteps must have shape ({batch},), got {tuple(t.shape)}")
    if t.device.type == "cpu" and t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_timesteps):
        raise ValueError(f"timesteps {t.tolist()} out of range [0, {num_timesteps})")
    return t.to(device=device, dtype=torch.long)


def _randn(shape: torch.Size, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """N(0, I) noise of `shape` in like's dtype/device, drawn in float32 on the generator's device (seed-stable)."""
    device = generator.device if generator is not None else like.device
    noise = torch.randn(shape, generator=generator, device=device, dtype=torch.float32)
    return noise.to(device=like.device, dtype=like.dtype)


class WPlusDiffusion:
    """Schedule, forward noising and the deterministic reverse chain of the code diffuser (nothing trainable).

    Attributes (float64, CPU, shape (T,)): betas, alphas, alphas_cumprod, alphas_cumprod_prev (1 at t = 0),
    sqrt_alphas_cumprod, sqrt_one_minus_alphas_cumprod, posterior_mean_coef1, posterior_mean_coef2,
    posterior_variance. They are cast to the tensors' dtype and device when used.
    """

    def __init__(self, num_timesteps: int = 4, beta_start: float = 0.1, beta_end: float = 0.99,
                 schedule: str = "scaled_linear") -> None:
        self.num_timesteps = int(num_timesteps)
        self.schedule = schedule
        self.betas = beta_schedule(num_timesteps, beta_start, beta_end, schedule)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        # q(x_{t-1} | x_t, x0) = N(coef1 x0 + coef2 x_t, posterior_variance)  (DDPM eq. 7)
        denom = 1.0 - self.alphas_cumprod
        self.posterior_mean_coef1 = self.betas * self.alphas_cumprod_prev.sqrt() / denom
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * self.alphas.sqrt() / denom
        self.posterior_variance = self.betas * (1.0 - self.alphas_cumprod_prev) / denom

    def __repr__(self) -> str:
        betas = ", ".join(f"{b:.4f}" for b in self.betas.tolist())
        return f"WPlusDiffusion(num_timesteps={self.num_timesteps}, schedule={self.schedule!r}, betas=[{betas}])"

    def _gather(self, values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """values[t] shaped (B, 1, ..., 1) to broadcast against `like`, in like's dtype and device."""
        dtype = like.dtype if like.is_floating_point() else torch.float32
        picked = values.to(dtype=dtype).to(like.device)[t]
        return picked.view(-1, *([1] * (like.ndim - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor | int, noise: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise; noise ~ N(0, I) from `generator` when not given."""
        t = _as_timesteps(t, x0.shape[0], x0.device, self.num_timesteps)
        if noise is None:
            noise = _randn(x0.shape, x0, generator)
        elif noise.shape != x0.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} != x0 shape {tuple(x0.shape)}")
        return (self._gather(self.sqrt_alphas_cumprod, t, x0) * x0
                + self._gather(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise)

    def posterior_mean(self, x0_hat: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """mu_t(x0_hat, x_t) = coef1_t x0_hat + coef2_t x_t (the whole reverse step: no noise is added)."""
        t = _as_timesteps(t, x_t.shape[0], x_t.device, self.num_timesteps)
        return self._gather(self.posterior_mean_coef1, t, x_t) * x0_hat + self._gather(
            self.posterior_mean_coef2, t, x_t) * x_t

    def reverse_chain(self, denoiser: Denoiser, x_t: torch.Tensor, cond: torch.Tensor,
                      start_step: int | None = None) -> torch.Tensor:
        """Run t = start_step .. 0 (default T - 1): x <- mu_t(denoiser(x, cond, t), x). Returns the final x0."""
        start = self.num_timesteps - 1 if start_step is None else int(start_step)
        if not 0 <= start < self.num_timesteps:
            raise ValueError(f"start_step {start} out of range [0, {self.num_timesteps})")
        x = x_t
        for step in range(start, -1, -1):
            t = torch.full((x.shape[0],), step, dtype=torch.long, device=x.device)
            x = self.posterior_mean(denoiser(x, cond, t), x, t)
        return x

    def sample(self, denoiser: Denoiser, cond: torch.Tensor, generator: torch.Generator | None = None,
               noise: torch.Tensor | None = None) -> torch.Tensor:
        """w^0 from x_T ~ N(0, I) (or the given `noise`) by the deterministic chain; cond (B, N, D) -> (B, N, D).

        Gradients are not disabled here; wrap the call in `torch.no_grad()` for inference.
        """
        if noise is None:
            noise = _randn(cond.shape, cond, generator)
        elif noise.shape != cond.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} != cond shape {tuple(cond.shape)}")
        return self.reverse_chain(denoiser, noise, cond)

    def train_chain(self, denoiser: Denoiser, x_start: torch.Tensor, cond: torch.Tensor,
                    noise: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """DiffIR-style training pass: x_{T-1} = q_sample(x_start, T - 1, noise), then the full reverse chain with
        gradients; returns the final x0 (B, N, D), to be supervised (e.g. L1 to E(HQ)).

        The official code passes x_start = cond = the LQ code; since sqrt(abar_{T-1}) ~ 0.05 the start is almost
        pure noise either way.
        """
        x_t = self.q_sample(x_start, self.num_timesteps - 1, noise, generator)
        return self.reverse_chain(denoiser, x_t, cond)
