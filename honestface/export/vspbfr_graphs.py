"""Export-ready wrappers of the VSPBFR inference graphs: `nn.Module`s with tensor-only inputs and outputs that
`torch.onnx.export` can trace, each computing what `VSPBFR.forward` computes for that step (see
`honestface.models.vspbfr.vspbfr` for the chain).

Graphs (names = the .onnx file stems; B is dynamic; N x D = the W+ codes, n = the restoration network's style slots,
R = the restoration size):
- `style_encoder`: lq (B, 3, R, R) in [-1, 1] -> w_hat (B, N, D) (the e4e encoder, resized to its input inside).
- `code_diffuser_step`: x_t (B, N, D), w_hat (B, N, D), t (B,) int64 -> x_prev (B, N, D): the denoiser's x0 guess
  and the posterior mean of one deterministic reverse step. The chain (t = T-1 .. 0 from Gaussian codes x_T) is a
  Python loop around this graph in the runtime, as in `WPlusDiffusion.sample`.
- `feature_bank`: w0 (B, N, D), noise (B, L_G) -> bank_8 .. bank_R (B, C_r, r, r): StyleGAN2 under w0 and its
  facial feature bank at the resolutions the restoration decoder reads (the image and maps above R are pruned).
- `restoration`: lq, w0, z (B, n, D), noise (B, L_R), bank_8 .. bank_R -> image (B, 3, R, R): the restoration
  network; z are the Gaussian codes before its mapping network, style mixing already applied.

Randomness stays outside the graphs: the diffusion start x_T, the codes z and every noise injection are inputs, so
the runtime draws them with the torch pipeline's per-face generators in the torch model's order. `noise` is the
per-layer noise maps (B, 1, h, w) of the graph's NoiseInjection calls, flattened and concatenated in call order;
`noise_shapes` records that order and the maps' sizes for the manifest.

Our choice: StyleGAN2's fused modulated convolution (one grouped conv over the batch, groups = B) cannot have a
dynamic batch in ONNX (Conv's `group` is a fixed attribute), so while these graphs are traced every modulated
convolution (`ModulatedConv2d`, the SMART branches) runs the equivalent unfused form of the StyleGAN2 paper
(Karras et al., CVPR 2020, Sec. 2.2): the input scaled by the style, the shared weight, the output scaled by the
demodulation factor 1 / sqrt(sum_ik (s_i w_oik)^2 + 1e-8); the same numbers up to float round-off. For the same
reason the FIR filters (Blur / Upsample / Downsample) read their channel and spatial sizes as constants and the
StyleGAN2 constant input expands to the traced batch. These forwards replace the modules' own only while a wrapper
below runs (`_exportable`); the torch model is left as it was.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from honestface.models.vspbfr.layers import Blur, ConstantInput, Downsample, ModulatedConv2d, Upsample, noise_hooks
from honestface.models.vspbfr.smart import DilatedModulatedConv2d

__all__ = ["VSPBFR_GRAPHS", "noise_shapes", "vspbfr_graphs"]

VSPBFR_GRAPHS = ("style_encoder", "code_diffuser_step", "feature_bank", "restoration")


def _demodulation(weight: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """(B, O) = 1 / sqrt(sum_{i,k} (weight_oik s_bi)^2 + 1e-8) for weight (O, I, k, k) (scale included), s (B, I)."""
    return torch.rsqrt(s.pow(2) @ weight.pow(2).sum((2, 3)).t() + 1e-8)


def _unfused_modulated_conv(self: ModulatedConv2d, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """`ModulatedConv2d.forward` without the grouped conv over the batch (same maths)."""
    s = self.modulation(style)  # (B, I)
    weight = self.scale * self.weight[0]  # (O, I, k, k)
    x = x * s[:, :, None, None]
    if self.upsample:
        out = self.blur(F.conv_transpose2d(x, weight.transpose(0, 1), stride=2))
    elif self.downsample:
        out = F.conv2d(self.blur(x), weight, stride=2)
    else:
        out = F.conv2d(x, weight, padding=self.padding, dilation=self.dilation)
    if self.demodulate:
        out = out * _demodulation(weight, s)[:, :, None, None]
    return out  # (B, O, H', W')


def _unfused_dilated_conv(self: DilatedModulatedConv2d, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """`DilatedModulatedConv2d.forward` (s: the modulation (B, I)) without the grouped conv (same maths)."""
    weight = self.scale * self.weight[0]  # (O, I, k, k)
    out = F.conv2d(x * s[:, :, None, None], weight, padding=self.padding, dilation=self.dilation)
    if self.demodulate:
        out = out * _demodulation(weight, s)[:, :, None, None]
    return out


def _upfirdn2d_static(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
                      pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """`layers.upfirdn2d` with the channel and spatial sizes read as constants (only the batch is dynamic), so the
    depthwise FIR conv has a known kernel and group count in the graph."""
    c, h, w = (int(v) for v in x.shape[1:])
    if up > 1:
        x = F.pad(x.reshape(-1, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(-1, c, h * up, w * up)
    p0, p1 = pad
    x = F.pad(x, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    if p0 < 0 or p1 < 0:
        hh, ww = (int(v) for v in x.shape[-2:])
        x = x[:, :, max(-p0, 0): hh - max(-p1, 0), max(-p0, 0): ww - max(-p1, 0)]
    kh, kw = kernel.shape
    weight = torch.flip(kernel, [0, 1]).to(x.dtype).view(1, 1, kh, kw).repeat(c, 1, 1, 1)
    return F.conv2d(x, weight, stride=down, groups=c)


def _blur(self: Blur, x: torch.Tensor) -> torch.Tensor:
    return _upfirdn2d_static(x, self.kernel, pad=self.pad)


def _upsample(self: Upsample, x: torch.Tensor) -> torch.Tensor:
    return _upfirdn2d_static(x, self.kernel, up=self.factor, pad=self.pad)


def _downsample(self: Downsample, x: torch.Tensor) -> torch.Tensor:
    return _upfirdn2d_static(x, self.kernel, down=self.factor, pad=self.pad)


def _traced_constant_input(self: ConstantInput, batch: int | torch.Tensor) -> torch.Tensor:
    """`ConstantInput.forward` for a batch size that is a traced (0-d tensor) size: (B, C, 4, 4)."""
    return self.input.expand(batch, -1, -1, -1)


_EXPORT_FORWARDS: dict[type, Callable[..., torch.Tensor]] = {
    ModulatedConv2d: _unfused_modulated_conv, DilatedModulatedConv2d: _unfused_dilated_conv,
    ConstantInput: _traced_constant_input, Blur: _blur, Upsample: _upsample, Downsample: _downsample}


@contextlib.contextmanager
def _exportable(module: nn.Module) -> Iterator[None]:
    """While active, the modulated convolutions of `module` run unfused (module docstring), its FIR filters read
    their sizes as constants and its constant input takes a traced batch size."""
    patched = []
    for m in module.modules():
        fn = _EXPORT_FORWARDS.get(type(m))
        if fn is not None:
            m.forward = types.MethodType(fn, m)
            patched.append(m)
    try:
        yield
    finally:
        for m in patched:
            del m.forward


@contextlib.contextmanager
def _noise_from(module: nn.Module, noise: torch.Tensor, shapes: list[tuple[int, int]]) -> Iterator[None]:
    """While active, the k-th NoiseInjection call inside `module` adds the k-th (B, 1, h, w) map of the flat
    noise (B, sum h * w) instead of drawing one."""
    calls = {"k": 0, "at": 0}

    def hook(_: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        h, w = shapes[calls["k"]]
        chunk = noise[:, calls["at"]:calls["at"] + h * w].reshape(-1, 1, h, w)
        calls["k"] += 1
        calls["at"] += h * w
        return args, {**kwargs, "noise": chunk}

    with noise_hooks(module, hook):
        yield
    if calls["k"] != len(shapes):
        raise RuntimeError(f"{type(module).__name__}: {calls['k']} noise injections, {len(shapes)} noise maps")


def noise_shapes(module: nn.Module, run: Callable[[], object]) -> list[tuple[int, int]]:
    """The (h, w) of every NoiseInjection call inside `module` while `run()` runs, in call order."""
    shapes: list[tuple[int, int]] = []

    def hook(_: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        image = args[0] if args else kwargs["image"]
        shapes.append((int(image.shape[-2]), int(image.shape[-1])))
        return args, kwargs

    with noise_hooks(module, hook), torch.no_grad():
        run()
    return shapes


class _StyleEncoder(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.encoder = model.style_encoder

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        return self.encoder(lq)


class _CodeDiffuserStep(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.denoiser = model.code_diffuser
        # the float64 schedule cast to float32 before indexing, as WPlusDiffusion._gather does
        self.register_buffer("coef1", model.diffusion.posterior_mean_coef1.float(), persistent=False)
        self.register_buffer("coef2", model.diffusion.posterior_mean_coef2.float(), persistent=False)

    def forward(self, x_t: torch.Tensor, w_hat: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x0 = self.denoiser(x_t, w_hat, t)
        return self.coef1[t].view(-1, 1, 1) * x0 + self.coef2[t].view(-1, 1, 1) * x_t


class _FeatureBank(nn.Module):
    def __init__(self, model: nn.Module, shapes: list[tuple[int, int]]) -> None:
        super().__init__()
        self.stylegan, self.shapes = model.stylegan, shapes
        self.keep = [i for i, r in enumerate(model.stylegan.resolutions) if r in model.restoration.decoder_resolutions]

    def forward(self, w0: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with _exportable(self.stylegan), _noise_from(self.stylegan, noise, self.shapes):
            features = self.stylegan(w0, return_features=True).features
        return tuple(features[i] for i in self.keep)


class _Restoration(nn.Module):
    def __init__(self, model: nn.Module, shapes: list[tuple[int, int]]) -> None:
        super().__init__()
        self.restoration, self.shapes = model.restoration, shapes

    def forward(self, lq: torch.Tensor, w0: torch.Tensor, z: torch.Tensor, noise: torch.Tensor,
                *bank: torch.Tensor) -> torch.Tensor:
        with _exportable(self.restoration), _noise_from(self.restoration, noise, self.shapes):
            return self.restoration(lq, w0, list(bank), z=z)


def vspbfr_graphs(model: nn.Module, batch: int = 2
                  ) -> tuple[dict[str, tuple[nn.Module, tuple[torch.Tensor, ...], list[str], list[str], dict]],
                             dict[str, object]]:
    """(name -> (module, example inputs, input names, output names, dynamic axes), runtime facts) for a float32
    VSPBFR in eval mode. The facts hold what the runtime needs to draw the graphs' random inputs."""
    r, n_sg, d = model.size, model.n_latent, model.stylegan.style_dim
    n_rn = model.restoration.n_latent
    g = torch.Generator().manual_seed(0)
    lq = torch.rand(batch, 3, r, r, generator=g) * 2 - 1
    w = torch.randn(batch, n_sg, d, generator=g)
    z = torch.randn(batch, n_rn, d, generator=g)
    t = torch.full((batch,), model.diffusion.num_timesteps - 1, dtype=torch.long)
    with torch.no_grad():
        bank_all = model.stylegan(w, return_features=True).features
    sg_shapes = noise_shapes(model.stylegan, lambda: model.stylegan(w))
    rn_shapes = noise_shapes(model.restoration, lambda: model.restoration(lq, w, bank_all, z=z))
    resolutions = list(model.restoration.decoder_resolutions)
    bank = tuple(f for f in bank_all if f.shape[-1] in resolutions)
    noise_sg = torch.randn(batch, sum(h * w_ for h, w_ in sg_shapes), generator=g)
    noise_rn = torch.randn(batch, sum(h * w_ for h, w_ in rn_shapes), generator=g)
    bank_names = [f"bank_{res}" for res in resolutions]
    b = {0: "batch"}
    graphs = {
        "style_encoder": (_StyleEncoder(model), (lq,), ["lq"], ["w_hat"], {"lq": b, "w_hat": b}),
        "code_diffuser_step": (_CodeDiffuserStep(model), (w, w, t), ["x_t", "w_hat", "t"], ["x_prev"],
                               {"x_t": b, "w_hat": b, "t": b, "x_prev": b}),
        "feature_bank": (_FeatureBank(model, sg_shapes), (w, noise_sg), ["w0", "noise"], bank_names,
                         {"w0": b, "noise": b, **{name: b for name in bank_names}}),
        "restoration": (_Restoration(model, rn_shapes), (lq, w, z, noise_rn, *bank),
                        ["lq", "w0", "z", "noise", *bank_names], ["image"],
                        {"lq": b, "w0": b, "z": b, "noise": b, "image": b, **{name: b for name in bank_names}}),
    }
    facts = {"codes": [n_sg, d], "restoration_codes": [n_rn, d], "num_timesteps": model.diffusion.num_timesteps,
             "bank_resolutions": resolutions, "feature_bank_noise": [list(s) for s in sg_shapes],
             "restoration_noise": [list(s) for s in rn_shapes]}
    return graphs, facts
