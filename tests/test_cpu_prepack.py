"""Weights packed for oneDNN (honestface/models/cpu_prepack.py): the same outputs, the same state dict, the plain
path wherever the packed kernels cannot serve a call, and the plain layers back bit for bit."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from honestface.models.cpu_prepack import (
    PrepackedConv2d,
    PrepackedLinear,
    cpu_prepacking_available,
    prepack_cpu_weights,
    unpack_cpu_weights,
)

pytestmark = pytest.mark.skipif(not cpu_prepacking_available(), reason="this PyTorch has no oneDNN")


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.SiLU(),
                                   nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False), nn.SiLU(),
                                   nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2), nn.SiLU(),
                                   nn.Conv2d(8, 6, 1))
        self.proj = nn.Linear(6, 5)  # on (B, H*W, C) tokens
        self.proj_no_bias = nn.Linear(5, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 4, 8, 8) -> (B, 16, 3)
        h = self.convs(x)  # (B, 6, 4, 4)
        return self.proj_no_bias(self.proj(h.flatten(2).transpose(1, 2)))


def _net(dtype: torch.dtype = torch.float32) -> Net:
    torch.manual_seed(0)
    return Net().to(dtype).requires_grad_(False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_layers_give_the_same_outputs_and_state_dict(dtype):
    net, x = _net(dtype), torch.randn(2, 4, 8, 8).to(dtype)
    ref, state = net(x), {k: v.clone() for k, v in net.state_dict().items()}
    assert prepack_cpu_weights(net) == 6
    assert all(isinstance(m, (PrepackedConv2d, PrepackedLinear)) and m.weight.is_mkldnn
               for m in [*net.convs[::2], net.proj, net.proj_no_bias])
    with torch.no_grad():
        out = net(x)
    assert out.dtype == dtype and out.shape == ref.shape == (2, 16, 3)
    tol = 1e-5 if dtype == torch.float32 else 2e-2  # bf16: the blocked kernels round in another order
    torch.testing.assert_close(out, ref, atol=tol, rtol=tol)
    packed_state = net.state_dict()  # what save_pretrained writes: the plain weights
    assert packed_state.keys() == state.keys()
    assert all(not v.is_mkldnn and torch.equal(v, state[k]) for k, v in packed_state.items())
    twin = copy.deepcopy(net)  # its own packed weights
    assert twin.convs[0].weight.is_mkldnn and twin.convs[0].bias is not net.convs[0].bias
    with torch.no_grad():
        assert torch.equal(twin(x), out)


def test_unpack_restores_the_plain_layers_bit_for_bit():
    net = _net().to(memory_format=torch.channels_last)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    prepack_cpu_weights(net)
    assert unpack_cpu_weights(net) == 6 and unpack_cpu_weights(net) == 0
    assert [type(m) for m in net.modules()] == [type(m) for m in _net().modules()]
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    assert all(not p.requires_grad for p in net.parameters())
    assert net.convs[0].weight.is_contiguous(memory_format=torch.channels_last)  # the layout it had


def test_only_frozen_plain_cpu_layers_are_packed():
    net = _net()
    net.proj.weight.requires_grad_(True)  # trainable: its gradient must stay a gradient
    net.convs[0] = nn.Conv2d(4, 8, 3, padding=1, padding_mode="reflect").requires_grad_(False)
    net.convs[6] = nn.Conv2d(8, 6, 1, padding="same").requires_grad_(False)

    class Scaled(nn.Conv2d):  # a subclass may compute something else
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    net.convs[2] = Scaled(8, 8, 3, stride=2, padding=1).requires_grad_(False)
    assert prepack_cpu_weights(net) == 2  # the dilated grouped convolution and proj_no_bias
    assert type(net.proj) is nn.Linear and type(net.convs[0]) is nn.Conv2d and type(net.convs[2]) is Scaled
    assert type(net.convs[6]) is nn.Conv2d and isinstance(net.convs[4], PrepackedConv2d)


def test_calls_the_packed_kernels_cannot_serve_take_the_plain_path():
    """A gradient through the layer, autocast, or another dtype: the plain computation, with correct gradients."""
    net, plain, x = _net(), _net(), torch.randn(2, 4, 8, 8)
    prepack_cpu_weights(net)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    net(xa).square().sum().backward()
    plain(xb).square().sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, atol=1e-5, rtol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        torch.testing.assert_close(net(x), plain(x), atol=0, rtol=0)
    with pytest.raises(RuntimeError):  # a float64 input fails as it fails on the plain layers
        net(x.double())


def test_to_and_load_state_dict_keep_working():
    net, plain, x = _net(), _net(), torch.randn(2, 4, 8, 8)
    prepack_cpu_weights(net)
    net.to(torch.bfloat16)
    plain.to(torch.bfloat16)
    assert net.convs[0].weight.is_mkldnn and net.convs[0].weight.dtype == torch.bfloat16  # packed again
    with torch.no_grad():
        torch.testing.assert_close(net(x.bfloat16()), plain(x.bfloat16()), atol=2e-2, rtol=2e-2)
    net.to(torch.float16)  # not a packed dtype: plain weights, plain path
    assert not net.convs[0].weight.is_mkldnn and net.convs[0].weight.dtype == torch.float16
    net.float()
    other = _net()
    other.convs[0].weight.add_(1.0)
    net.load_state_dict(other.state_dict())
    assert net.convs[0].weight.is_mkldnn
    with torch.no_grad():
        torch.testing.assert_close(net(x), other(x), atol=1e-5, rtol=1e-5)
