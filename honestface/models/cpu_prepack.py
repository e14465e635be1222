"""Frozen convolution and linear weights packed once for oneDNN, for inference on a CPU.

PyTorch's eager CPU convolution and linear layers hand oneDNN a plain weight (OIHW / OI) on every call, and oneDNN
reorders it into its blocked layout each time. Where a layer has many weights and few pixels, that reorder costs
more than the arithmetic: the SD UNet's deepest levels (1280 channels at 16x16 and 8x8 latents for a 512 px face).
Measured on the 2-core AMX Xeon in bf16 (`python benchmarks/infer.py --from osdface-files --batches 1 --repeats 5`,
`prepack_comparison`, 2026-12-07): the UNet packed against plain, timed in alternation, median ratios 0.70 and 0.85
over two runs; packing it took 1.1-1.4 s once. The VAE and the VRE, whose convolutions are large in pixels and small
in weights, were no faster packed and raised the peak memory (measured with the whole model packed), so the
pipeline packs the UNet only.

The packing and the packed kernels are PyTorch's own (`torch.ops.mkldnn._reorder_convolution_weight`,
`_convolution_pointwise`, `_reorder_linear_weight`, `_linear_pointwise`), the operators `torch.compile` uses when it
freezes weights on a CPU. They give the same bits for convolutions and agree within bf16 rounding for linear layers.

Our choices:
- `prepack_cpu_weights(module)` swaps every frozen `nn.Conv2d` / `nn.Linear` whose weight is on the CPU in float32
  or bfloat16 for a `PrepackedConv2d` / `PrepackedLinear` holding the packed weight in place of the plain one (no
  second copy). Layers with a trainable weight, a non-zero padding mode or a string padding are left alone.
- The packed layers stay ordinary modules to the rest of the code: `state_dict` (so `save_pretrained`) writes the
  plain weight, `load_state_dict` packs what it loads, `.to(...)` unpacks, moves and packs again where it still can,
  `copy.deepcopy` copies through the plain layer.
  An input that needs a gradient, another dtype or device, or CPU autocast, takes the plain path (correct, slower).
- `unpack_cpu_weights(module)` puts the plain `nn.Conv2d` / `nn.Linear` back, bit for bit.
- `HonestFacePipeline.enable_cpu_prepacking` packs its UNet after merging the LoRA, on a CPU only (config key
  `infer.prepack_cpu_weights`, on by default).
"""
from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

PACKABLE_DTYPES = (torch.float32, torch.bfloat16)


def cpu_prepacking_available() -> bool:
    """Whether this PyTorch build has oneDNN and the packing operators."""
    ops = ("_reorder_convolution_weight", "_convolution_pointwise", "_reorder_linear_weight", "_linear_pointwise")
    return torch.backends.mkldnn.is_available() and all(hasattr(torch.ops.mkldnn, op) for op in ops)


class _Prepacked(nn.Module, ABC):
    """The packed weight lives in the `weight` buffer (a torch._mkldnn tensor) while on a CPU in a packable dtype,
    else as a plain tensor; `bias` stays an ordinary (frozen) parameter."""

    weight: torch.Tensor
    weight_format: torch.memory_format  # of the plain weight, given back by `dense_weight`

    @abstractmethod
    def _reorder(self, weight: torch.Tensor) -> torch.Tensor:
        """The plain weight -> oneDNN's blocked layout (a torch._mkldnn tensor)."""

    def _pack(self) -> None:
        w = self.weight
        channels_last = w.dim() == 4 and w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
        self.weight_format = torch.channels_last if channels_last else torch.contiguous_format
        if not w.is_mkldnn and w.device.type == "cpu" and w.dtype in PACKABLE_DTYPES and cpu_prepacking_available():
            self.weight = self._reorder(w.detach())

    def dense_weight(self) -> torch.Tensor:
        """The plain weight (a copy while packed, in the memory format it had)."""
        if not self.weight.is_mkldnn:
            return self.weight
        return self.weight.to_dense().contiguous(memory_format=self.weight_format)

    def _packed_path(self, x: torch.Tensor) -> bool:
        return (self.weight.is_mkldnn and x.device.type == "cpu" and x.dtype == self.weight.dtype
                and not (torch.is_grad_enabled() and x.requires_grad) and not torch.is_autocast_enabled("cpu"))

    def _apply(self, fn: Any, recurse: bool = True) -> _Prepacked:
        self.weight = self.dense_weight()  # casts, moves and memory formats apply to the plain weight
        super()._apply(fn, recurse)
        self._pack()
        return self

    @abstractmethod
    def unpacked(self) -> nn.Module:
        """The plain layer with this layer's weights."""

    def __deepcopy__(self, memo: dict) -> _Prepacked:  # oneDNN's opaque tensors have no storage to copy
        twin = type(self)(copy.deepcopy(self.unpacked(), memo))
        memo[id(self)] = twin
        return twin

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "weight"] = self.dense_weight()

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        # a fresh plain tensor to load into (a packed weight's dense copy is one already)
        self.weight = self.dense_weight() if self.weight.is_mkldnn else self.weight.clone()
        super()._load_from_state_dict(state_dict, prefix, *args)
        self._pack()


class PrepackedConv2d(_Prepacked):
    """An `nn.Conv2d` (zero padding) whose weight is packed for oneDNN. Same call, same output."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride, self.padding = conv.kernel_size, conv.stride, conv.padding
        self.dilation, self.groups = conv.dilation, conv.groups
        self.register_buffer("weight", conv.weight.detach())
        self.bias = conv.bias
        self._pack()

    def _reorder(self, weight: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._reorder_convolution_weight(weight, list(self.padding), list(self.stride),
                                                            list(self.dilation), self.groups, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, C_out, H', W')
        if not self._packed_path(x):
            return F.conv2d(x, self.dense_weight(), self.bias, self.stride, self.padding, self.dilation, self.groups)
        return torch.ops.mkldnn._convolution_pointwise(x, self.weight, self.bias, list(self.padding), list(self.stride),
                                                       list(self.dilation), self.groups, "none", [], "")

    def unpacked(self) -> nn.Conv2d:
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                         self.dilation, self.groups, bias=self.bias is not None, device="meta")
        conv.weight = nn.Parameter(self.dense_weight(), requires_grad=False)
        conv.bias = self.bias
        return conv

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, packed={self.weight.is_mkldnn}")


class PrepackedLinear(_Prepacked):
    """An `nn.Linear` whose weight is packed for oneDNN. Same call; output within the dtype's rounding."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", linear.weight.detach())
        self.bias = linear.bias
        self._pack()

    def _reorder(self, weight: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._reorder_linear_weight(weight, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in_features) -> (..., out_features)
        if not self._packed_path(x):
            return F.linear(x, self.dense_weight(), self.bias)
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")

    def unpacked(self) -> nn.Linear:
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        linear.weight = nn.Parameter(self.dense_weight(), requires_grad=False)
        linear.bias = self.bias
        return linear

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed={self.weight.is_mkldnn}"


def _packable(m: nn.Module) -> bool:
    if type(m) is nn.Conv2d:  # subclasses may change forward
        if m.padding_mode != "zeros" or isinstance(m.padding, str):
            return False
    elif type(m) is not nn.Linear:
        return False
    w = m.weight
    return not w.requires_grad and w.device.type == "cpu" and w.dtype in PACKABLE_DTYPES


def prepack_cpu_weights(module: nn.Module) -> int:
    """Swap every frozen CPU `nn.Conv2d` / `nn.Linear` (float32 / bfloat16) inside `module` for its packed twin;
    returns how many were swapped (0 where oneDNN is missing). Do it after merging LoRA weights."""
    if not cpu_prepacking_available():
        return 0
    # (parent, name) only: each plain weight is freed as soon as its layer is swapped, not all of them at the end
    places = [(parent, name) for parent in module.modules() for name, child in parent.named_children()
              if _packable(child)]
    for parent, name in places:
        child = getattr(parent, name)
        setattr(parent, name, PrepackedConv2d(child) if isinstance(child, nn.Conv2d) else PrepackedLinear(child))
        del child
    return len(places)


def unpack_cpu_weights(module: nn.Module) -> int:
    """Put the plain layers back (the same weights bit for bit, frozen); returns how many."""
    places = [(parent, name) for parent in module.modules() for name, child in parent.named_children()
              if isinstance(child, _Prepacked)]
    for parent, name in places:
        setattr(parent, name, getattr(parent, name).unpacked())
    return len(places)
