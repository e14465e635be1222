"""VSPBFR code diffuser (honestface.models.vspbfr.code_diffuser): the denoiser and the W+ diffusion math.

Schedule, forward noising and posterior coefficients against the closed form for T = 4; the deterministic chain
(same seed -> same codes, a fixed-x0 denoiser ends exactly at x0, explicit noise); train_chain gradients reach every
denoiser parameter; the denoiser against a direct re-implementation of the official block math; an official-layout
`code_diffuser.pt` loads strictly; save/load round trip; parameter count at the default size; input errors.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from honestface.models.vspbfr.code_diffuser import (
    CodeDiffuser,
    WPlusDiffusion,
    beta_schedule,
    load_official_code_diffuser,
)

N, D, B = 6, 32, 3


@pytest.fixture
def denoiser() -> CodeDiffuser:
    torch.manual_seed(0)
    return CodeDiffuser(n_tokens=N, dim=D)


def _codes(seed: int, batch: int = B) -> torch.Tensor:
    return torch.randn(batch, N, D, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------ schedule


def test_schedule_matches_closed_form():
    diff = WPlusDiffusion()
    torch.testing.assert_close(diff.betas, torch.tensor([0.1000, 0.2943, 0.5910, 0.9900], dtype=torch.float64),
                               atol=1e-4, rtol=0)
    root = torch.linspace(math.sqrt(0.1), math.sqrt(0.99), 4, dtype=torch.float64)
    torch.testing.assert_close(diff.betas, root ** 2, atol=1e-12, rtol=0)
    abar = [1.0]
    for beta in diff.betas.tolist():
        abar.append(abar[-1] * (1.0 - beta))
    torch.testing.assert_close(diff.alphas_cumprod, torch.tensor(abar[1:], dtype=torch.float64))
    torch.testing.assert_close(diff.alphas_cumprod, torch.tensor([0.9, 0.6351, 0.2598, 0.0026], dtype=torch.float64),
                               atol=1e-4, rtol=0)
    torch.testing.assert_close(beta_schedule(3, 0.1, 0.3, "linear"),
                               torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64))
    with pytest.raises(ValueError, match="cosine"):
        beta_schedule(4, schedule="cosine")
    with pytest.raises(ValueError, match="beta_end"):
        WPlusDiffusion(beta_end=1.5)


def test_posterior_mean_coefficients_closed_form():
    diff = WPlusDiffusion()
    betas, abar = diff.betas.tolist(), diff.alphas_cumprod.tolist()
    for t in range(4):
        prev = abar[t - 1] if t > 0 else 1.0
        coef1 = betas[t] * math.sqrt(prev) / (1.0 - abar[t])
        coef2 = (1.0 - prev) * math.sqrt(1.0 - betas[t]) / (1.0 - abar[t])
        assert diff.posterior_mean_coef1[t].item() == pytest.approx(coef1, abs=1e-12)
        assert diff.posterior_mean_coef2[t].item() == pytest.approx(coef2, abs=1e-12)
    assert diff.posterior_mean_coef1[0].item() == pytest.approx(1.0, abs=1e-12)
    assert diff.posterior_mean_coef2[0].item() == 0.0
    # applied to tensors, per sample
    x0, xt = _codes(1), _codes(2)
    t = torch.tensor([0, 2, 3])
    mean = diff.posterior_mean(x0, xt, t)
    for i, step in enumerate(t.tolist()):
        c1, c2 = diff.posterior_mean_coef1[step].item(), diff.posterior_mean_coef2[step].item()
        torch.testing.assert_close(mean[i], c1 * x0[i] + c2 * xt[i])


def test_q_sample_closed_form():
    diff = WPlusDiffusion()
    x0, eps = _codes(3), _codes(4)
    t = torch.tensor([3, 0, 1])
    xt = diff.q_sample(x0, t, eps)
    for i, step in enumerate(t.tolist()):
        abar = diff.alphas_cumprod[step].item()
        torch.testing.assert_close(xt[i], math.sqrt(abar) * x0[i] + math.sqrt(1.0 - abar) * eps[i])
    torch.testing.assert_close(diff.q_sample(x0, 2, eps), diff.q_sample(x0, torch.full((B,), 2), eps))
    with pytest.raises(ValueError, match="out of range"):
        diff.q_sample(x0, 4, eps)
    with pytest.raises(ValueError, match="integer"):
        diff.q_sample(x0, torch.ones(B), eps)


# ------------------------------------------------------------------------------------------------ chain


def test_sample_is_seeded_and_deterministic(denoiser):
    diff, cond = WPlusDiffusion(), _codes(5)
    with torch.no_grad():
        a = diff.sample(denoiser, cond, generator=torch.Generator().manual_seed(7))
        b = diff.sample(denoiser, cond, generator=torch.Generator().manual_seed(7))
        c = diff.sample(denoiser, cond, generator=torch.Generator().manual_seed(8))
        noise = torch.randn(B, N, D, generator=torch.Generator().manual_seed(7))
        d = diff.sample(denoiser, cond, noise=noise)
    assert a.shape == (B, N, D) and torch.isfinite(a).all()
    assert torch.equal(a, b) and torch.equal(a, d)
    assert not torch.allclose(a, c)


def test_chain_ends_at_the_predicted_x0():
    diff, cond = WPlusDiffusion(), _codes(6)
    target = _codes(9)
    calls: list[list[int]] = []

    def fixed(x_t: torch.Tensor, c: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(t.tolist())
        return target

    out = diff.sample(fixed, cond, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, target)
    assert calls == [[s] * B for s in (3, 2, 1, 0)]
    out = diff.train_chain(fixed, cond, cond, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, target)


def test_train_chain_gradients_reach_every_parameter(denoiser):
    diff, cond = WPlusDiffusion(), _codes(10)
    x0 = diff.train_chain(denoiser, cond, cond, noise=_codes(11))
    assert x0.shape == (B, N, D)
    F.l1_loss(x0, _codes(12)).backward()
    dead = [n for n, p in denoiser.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == []
    # the chain starts from q_sample at T - 1
    manual = diff.reverse_chain(denoiser, diff.q_sample(cond, 3, _codes(11)), cond)
    torch.testing.assert_close(x0, manual)


# ------------------------------------------------------------------------------------------------ denoiser


def _official_layout(n_blocks: int, dim: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the key names/shapes of the released `Code_diffuser` (att_mapper.{i}.*)."""
    g = torch.Generator().manual_seed(seed)
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(n_blocks):
        p = f"att_mapper.{i}."
        shapes |= {p + "q_matrix.weight": (dim, dim + 1), p + "k_matrix.weight": (dim, dim),
                   p + "v_matrix.weight": (dim, dim), p + "attention_layer.q_matrix.weight": (dim, dim),
                   p + "attention_layer.k_matrix.weight": (dim, dim + 1),
                   p + "attention_layer.v_matrix.weight": (dim, dim)}
        for trunk in ("gamma_", "beta_"):
            shapes |= {f"{p}{trunk}.0.weight": (dim, dim + 1), f"{p}{trunk}.0.bias": (dim,),
                       f"{p}{trunk}.1.weight": (dim,), f"{p}{trunk}.1.bias": (dim,),
                       f"{p}{trunk}.3.weight": (dim, dim), f"{p}{trunk}.3.bias": (dim,)}
    return {k: torch.randn(s, generator=g) / math.sqrt(s[-1]) for k, s in shapes.items()}


def _reference_forward(sd: dict[str, torch.Tensor], x: torch.Tensor, cond: torch.Tensor, t: torch.Tensor,
                       n_blocks: int, num_timesteps: int = 4) -> torch.Tensor:
    """The released block math written out with einsum (vspbfr.md section 3, PixelNorm over dim 1 as in the code)."""
    n, d = x.shape[1:]
    c = torch.cat([cond, (t.float() / num_timesteps)[:, None, None].expand(-1, n, 1)], dim=-1)

    def lin(v, key, bias=False):
        return F.linear(v, sd[key + ".weight"], sd[key + ".bias"] if bias else None)

    def trunk(p):
        h = F.layer_norm(lin(c, p + ".0", True), (d,), sd[p + ".1.weight"], sd[p + ".1.bias"])
        return lin(F.leaky_relu(h, 0.2) * math.sqrt(2), p + ".3", True)

    for i in range(n_blocks):
        p = f"att_mapper.{i}."
        x = x / torch.sqrt((x ** 2).mean(dim=1, keepdim=True) + 1e-8)
        k, v, q = lin(x, p + "k_matrix"), lin(x, p + "v_matrix"), lin(c, p + "q_matrix")
        s = torch.softmax(torch.einsum("bnd,bmd->bnm", k, q) / math.sqrt(n), dim=-1)
        h1 = torch.einsum("bnm,bmd->bnd", s, v)
        q2, k2, v2 = (lin(x, p + "attention_layer.q_matrix"), lin(c, p + "attention_layer.k_matrix"),
                      lin(x, p + "attention_layer.v_matrix"))
        a = torch.softmax(torch.einsum("bni,bnj->bij", k2, q2) / math.sqrt(d), dim=1)
        h2 = F.layer_norm(torch.einsum("bni,bij->bnj", v2, a), (d,))
        h = F.layer_norm(h1 + h2, (d,))
        gamma = torch.sigmoid(trunk(p + "gamma_"))
        beta = F.leaky_relu(trunk(p + "beta_"), 0.2) * math.sqrt(2)
        x = h * (1 + gamma) + beta
    return x


def test_official_checkpoint_loads_and_matches_reference_math(tmp_path):
    sd = _official_layout(4, D)
    path = tmp_path / "code_diffuser.pt"
    torch.save({"att_mapper": sd, "mapper_optim": {"state": {}}, "iter": 500}, path)
    model = CodeDiffuser.from_official(path, n_tokens=N, dim=D).eval()
    for key, value in model.state_dict().items():
        assert torch.equal(value, sd[key]), key
    x, cond, t = _codes(13), _codes(14), torch.tensor([0, 1, 3])
    with torch.no_grad():
        torch.testing.assert_close(model(x, cond, t), _reference_forward(sd, x, cond, t, 4), atol=1e-4, rtol=1e-4)
    # a DDP-prefixed bare state dict works too; a wrong layout is one ValueError line naming the key
    load_official_code_diffuser(model, {"module." + k: v for k, v in sd.items()})
    broken = dict(sd)
    del broken["att_mapper.2.gamma_.3.bias"]
    with pytest.raises(ValueError, match=r"missing keys: att_mapper\.2\.gamma_\.3\.bias") as err:
        load_official_code_diffuser(model, {"att_mapper": broken})
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="att_mapper"):
        load_official_code_diffuser(model, {"g_ema": {"x": 1}})
    with pytest.raises(ValueError, match="unexpected keys"):
        load_official_code_diffuser(CodeDiffuser(n_tokens=N, dim=D, n_blocks=3), sd)


# A random block's output in bf16 against float32 on the same input (relative L2), measured 2.1-2.7%; the four
# random blocks compound it (about 20% for the whole denoiser), which is why blocks are compared one by one.
BF16_BLOCK_REL_ERR = 0.05


def test_denoiser_shapes_dtype_and_errors(denoiser):
    x, cond = _codes(15), _codes(16)
    out = denoiser(x, cond, torch.tensor([0, 1, 2]))
    assert out.shape == (B, N, D) and torch.isfinite(out).all()
    torch.testing.assert_close(denoiser(x, cond, 2), denoiser(x, cond, torch.tensor(2)))
    with torch.no_grad():
        cond_t = torch.cat([cond, torch.full((B, N, 1), 0.5)], -1)  # t = 2 of 4, as the denoiser appends it
        full = [block(x, cond_t) for block in denoiser.att_mapper]
        half = denoiser.to(torch.bfloat16)(x.bfloat16(), cond.bfloat16(), 2)
        assert half.dtype == torch.bfloat16
        half = [block(x.bfloat16(), cond_t.bfloat16()) for block in denoiser.att_mapper]
    for f, h in zip(full, half, strict=True):  # each block on the same input: bf16 rounding (measured 2-3%)
        assert ((h.float() - f).norm() / f.norm()).item() < BF16_BLOCK_REL_ERR
    denoiser.float()
    with pytest.raises(ValueError, match="x_t must have shape"):
        denoiser(torch.randn(B, N + 1, D), cond, 0)
    with pytest.raises(ValueError, match="batch"):
        denoiser(x[:2], cond, 0)
    with pytest.raises(ValueError, match="out of range"):
        denoiser(x, cond, torch.tensor([0, 4, 1]))


def test_save_load_round_trip(denoiser, tmp_path):
    denoiser.save_pretrained(tmp_path / "cd")
    again = CodeDiffuser.from_pretrained(tmp_path / "cd")
    assert again.config.n_tokens == N and again.config.dim == D
    x, cond, t = _codes(17), _codes(18), torch.tensor([3, 2, 1])
    with torch.no_grad():
        assert torch.equal(denoiser(x, cond, t), again(x, cond, t))


def test_default_size_parameter_count():
    with torch.device("meta"):
        model = CodeDiffuser()
    per_block = sum(p.numel() for p in model.att_mapper[0].parameters())
    assert per_block == pytest.approx(2.63e6, rel=0.01)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(10.5e6, rel=0.01)


def released_sampling(denoiser: CodeDiffuser, cond: torch.Tensor) -> torch.Tensor:
    """LonglongaaaGo/VSPBFR:ldm/ddpm.py, the DDPM of restoration_test.py (`linear_start=0.1, linear_end=0.99,
    timesteps=4`, x0-parameterisation, clip_denoised False) at `forward(training=False)`, written out: the schedule in
    numpy float64 (make_beta_schedule "linear" = linspace(sqrt(start), sqrt(end))^2) registered as float32 buffers;
    x_T = torch.randn(cond.shape) from the global generator; each p_sample returns the posterior mean
    coef1[t] x0_hat + coef2[t] x_t and draws a noise it never uses (noise_like), which still advances the generator."""
    import numpy as np

    betas = np.linspace(0.1 ** 0.5, 0.99 ** 0.5, 4, dtype=np.float64) ** 2
    alphas = 1.0 - betas
    abar = np.cumprod(alphas)
    abar_prev = np.append(1.0, abar[:-1])
    coef1 = torch.tensor(betas * np.sqrt(abar_prev) / (1.0 - abar), dtype=torch.float32)
    coef2 = torch.tensor((1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar), dtype=torch.float32)
    b = cond.shape[0]
    x = torch.randn(cond.shape)
    for i in reversed(range(4)):
        t = torch.full((b,), i, dtype=torch.long)
        x0_hat = denoiser(x, cond, t)  # model_out; parameterization "x0"
        torch.randn(x.shape)  # noise_like(x.shape, device, repeat_noise=False): drawn, unused
        x = coef1[t].view(b, 1, 1) * x0_hat + coef2[t].view(b, 1, 1) * x
    return x


def test_sampling_equals_the_released_ddpm_steps(denoiser):
    """Same start noise (the released global draw = our generator of the same seed) gives the same w^0: schedule,
    x0-parameterisation, no clipping, posterior mean without noise, T = 4."""
    cond = _codes(5)
    torch.manual_seed(11)
    with torch.no_grad():
        want = released_sampling(denoiser, cond)
        got = WPlusDiffusion(4, 0.1, 0.99).sample(denoiser, cond, generator=torch.Generator().manual_seed(11))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
