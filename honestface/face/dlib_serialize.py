"""Reader for dlib's binary serialization of DNN networks (enough for dlib's face recognition ResNet).

Used by `honestface.face.dlib_resnet` to load `dlib_face_recognition_resnet_model_v1.dat` (the network behind
`dlib.face_recognition_model_v1`, shipped by `pip install face-recognition-models`) into PyTorch without dlib.

Format facts, read from davisking/dlib (the code here is our own):
- `serialize.h`: an integer is one control byte (low 4 bits: number of payload bytes, bit 0x80: negative) followed
  by that many little-endian magnitude bytes. A string is an integer length then raw bytes. A bool is the character
  '1' or '0'. A float/double is a `float_details` (`float_details.h`): integer mantissa then integer exponent,
  value = mantissa * 2**exponent, with exponents 32000/32001/32002 meaning +inf/-inf/nan (a first byte with any
  0x70 bit set means the pre-2013 ASCII format, which we refuse).
- `dnn/tensor.h`: a `resizable_tensor` is int version, then num_samples, k, nr, nc as integers; version 2 stores
  the values as raw little-endian float32 (version 1 as one `float_details` per value). An `alias_tensor` is
  int version 1 then its four dimensions (no data: it is a view into a layer's `params`).
- `dnn/core.h`: `add_loss_layer` = int 1, loss details, subnetwork. `add_layer` = int version (2; 1 is older),
  subnetwork, layer details, three bools, x_grad and cached_output tensors, and in version 2 params_grad. The
  `add_layer` that sits on the input layer instead has int version 2 or 3, input layer, details, three bools,
  x_grad, cached_output, grad_final and (version 3) an unsigned sample expansion factor. `add_tag_layer` and
  `add_skip_layer` are both int 1 followed by the subnetwork: their tag ids are not stored, so the file alone
  cannot tell a tag from a skip (the network module resolves them from dlib's ResNet block patterns).
- Layer details begin with a version string: "con_4".."con_6", "affine_"/"affine_2", "relu_", "max_pool_2",
  "avg_pool_2", "add_prev_", "fc_2"/"fc_3" (`dnn/layers.h`), "input_rgb_image"/"input_rgb_image_sized"
  (`dnn/input.h`), "loss_metric_"/"loss_metric_2" (`dnn/loss.h`); their fields are listed in `_read_details`.

Our choices: the file is read into memory once and walked with an offset (no stream objects); bulk tensors are
decoded with `numpy.frombuffer`; the nested network is flattened into a list of `DlibLayer`s in input -> output
order, which is what a feed-forward module needs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_SPECIAL_EXPONENTS = {32000: float("inf"), 32001: float("-inf"), 32002: float("nan")}


class DlibFormatError(ValueError):
    """Raised when a file does not follow the dlib serialization layout this reader understands."""


@dataclass
class DlibLayer:
    """One layer of a dlib network: `kind` ("con", "affine", "relu", "max_pool", "avg_pool", "add_prev", "fc",
    "tag_or_skip", "input") and its decoded fields (`params` arrays are float32 numpy arrays)."""

    kind: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class DlibNet:
    """A parsed dlib network: the loss details and the layers in input -> output order (input layer first)."""

    loss: dict[str, Any]
    layers: list[DlibLayer]


class DlibReader:
    """Sequential reader over the bytes of a dlib-serialized object."""

    def __init__(self, data: bytes, name: str = "<bytes>"):
        self.data = data
        self.pos = 0
        self.name = name

    def _fail(self, what: str) -> DlibFormatError:
        return DlibFormatError(f"{self.name}: {what} at byte {self.pos}")

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise self._fail(f"unexpected end of file (wanted {n} bytes)")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def read_int(self) -> int:
        control = self._take(1)[0]
        size = control & 0x0F
        if size > 8 or control & 0x70:
            raise self._fail(f"bad integer control byte 0x{control:02x}")
        value = int.from_bytes(self._take(size), "little") if size else 0
        return -value if control & 0x80 else value

    def read_float(self) -> float:
        if self.pos < len(self.data) and self.data[self.pos] & 0x70:
            raise self._fail("old ASCII float format is not supported")
        mantissa = self.read_int()
        exponent = self.read_int()
        if exponent in _SPECIAL_EXPONENTS:
            return _SPECIAL_EXPONENTS[exponent]
        return float(np.ldexp(float(mantissa), exponent))

    def read_bool(self) -> bool:
        ch = self._take(1)
        if ch not in (b"0", b"1"):
            raise self._fail(f"bad bool byte {ch!r}")
        return ch == b"1"

    def read_string(self) -> str:
        n = self.read_int()
        if n < 0 or n > 1 << 20:
            raise self._fail(f"implausible string length {n}")
        return self._take(n).decode("latin-1")

    def peek_string(self) -> str | None:
        """The string at the current position if one plausibly starts there (a short ASCII word), else None."""
        start = self.pos
        try:
            n = self.read_int()
            if not 1 <= n <= 64:
                return None
            raw = self._take(n)
        except DlibFormatError:
            return None
        finally:
            self.pos = start
        text = raw.decode("latin-1")
        return text if text.replace("_", "a").isalnum() and text.isascii() else None

    def read_tensor(self) -> np.ndarray:
        """A `resizable_tensor` as a float32 array of shape (num_samples, k, nr, nc)."""
        version = self.read_int()
        shape = tuple(self.read_int() for _ in range(4))
        if any(s < 0 for s in shape):
            raise self._fail(f"negative tensor shape {shape}")
        count = int(np.prod(shape))
        if version == 2:
            values = np.frombuffer(self._take(4 * count), dtype="<f4").astype(np.float32)
        elif version == 1:
            values = np.array([self.read_float() for _ in range(count)], dtype=np.float32)
        else:
            raise self._fail(f"unknown tensor version {version}")
        return values.reshape(shape)

    def read_alias_tensor(self) -> tuple[int, int, int, int]:
        version = self.read_int()
        if version != 1:
            raise self._fail(f"unknown alias_tensor version {version}")
        return tuple(self.read_int() for _ in range(4))  # type: ignore[return-value]


def _split_params(params: np.ndarray, *shapes: tuple[int, ...]) -> list[np.ndarray]:
    """Cut a layer's flat `params` tensor into consecutive arrays of the given shapes (dlib's alias tensors)."""
    flat = params.reshape(-1)
    out, offset = [], 0
    for shape in shapes:
        n = int(np.prod(shape))
        if offset + n > flat.size:
            raise DlibFormatError(f"params hold {flat.size} values, aliases need more ({shapes})")
        out.append(flat[offset : offset + n].reshape(shape))
        offset += n
    return out


def _read_details(r: DlibReader) -> DlibLayer:
    """Read one layer-details object (starts with its version string)."""
    version = r.read_string()
    if version in ("con_4", "con_5", "con_6"):
        params = r.read_tensor()
        num_filters, nr, nc = r.read_int(), r.read_int(), r.read_int()
        stride = (r.read_int(), r.read_int())
        padding = (r.read_int(), r.read_int())
        filters, biases = r.read_alias_tensor(), r.read_alias_tensor()
        for _ in range(4):  # learning-rate and weight-decay multipliers of weights and biases
            r.read_float()
        use_bias = r.read_bool() if version in ("con_5", "con_6") else True
        if version == "con_6":
            r.read_bool()  # use_relu: only set by dlib's fused con+relu optimisation
        has_bias = use_bias and int(np.prod(biases)) > 0
        parts = _split_params(params, filters, *([(num_filters,)] if has_bias else []))
        weight, bias = parts[0], (parts[1] if has_bias else None)
        return DlibLayer("con", {"weight": weight, "bias": bias, "num_filters": num_filters, "kernel": (nr, nc),
                                 "stride": stride, "padding": padding})
    if version in ("affine_", "affine_2"):
        params = r.read_tensor()
        gamma_shape, beta_shape = r.read_alias_tensor(), r.read_alias_tensor()
        mode = r.read_int()  # 0: CONV_MODE (per channel), 1: FC_MODE (per element)
        disabled = r.read_bool() if version == "affine_2" else False
        gamma, beta = _split_params(params, gamma_shape, beta_shape)
        return DlibLayer("affine", {"gamma": gamma, "beta": beta, "conv_mode": mode == 0, "disabled": disabled})
    if version == "relu_":
        return DlibLayer("relu")
    if version in ("max_pool_2", "avg_pool_2"):
        nr, nc = r.read_int(), r.read_int()
        stride = (r.read_int(), r.read_int())
        padding = (r.read_int(), r.read_int())
        return DlibLayer(version[:-2], {"window": (nr, nc), "stride": stride, "padding": padding})
    if version == "add_prev_":
        return DlibLayer("add_prev")
    if version in ("fc_2", "fc_3"):
        num_outputs, num_inputs = r.read_int(), r.read_int()
        params = r.read_tensor()
        weights_shape = r.read_alias_tensor()
        r.read_alias_tensor()  # biases alias: its size follows from num_outputs
        bias_mode = r.read_int()  # 0: FC_HAS_BIAS, 1: FC_NO_BIAS
        for _ in range(4):
            r.read_float()
        use_bias = r.read_bool() if version == "fc_3" else True
        has_bias = bias_mode == 0 and use_bias
        shapes = [weights_shape] + ([(num_outputs,)] if has_bias else [])
        parts = _split_params(params, *shapes)
        # dlib computes output = input @ weights with weights (num_inputs, num_outputs)
        weight = parts[0].reshape(num_inputs, num_outputs)
        return DlibLayer("fc", {"weight": weight, "bias": parts[1] if has_bias else None,
                                "num_inputs": num_inputs, "num_outputs": num_outputs})
    raise DlibFormatError(f"{r.name}: unsupported dlib layer '{version}' at byte {r.pos}")


def _read_input_layer(r: DlibReader) -> DlibLayer:
    version = r.read_string()
    if version not in ("input_rgb_image", "input_rgb_image_sized"):
        raise DlibFormatError(f"{r.name}: unsupported dlib input layer '{version}'")
    means = (r.read_float(), r.read_float(), r.read_float())  # avg_red, avg_green, avg_blue
    size = (r.read_int(), r.read_int()) if version == "input_rgb_image_sized" else None
    return DlibLayer("input", {"means": means, "size": size})


def _skip_layer_state(r: DlibReader, tensors: int) -> None:
    """The bookkeeping an `add_layer` stores after its details: three bools, then training-time tensors."""
    for _ in range(3):
        r.read_bool()
    for _ in range(tensors):
        r.read_tensor()


def read_dlib_net(path: str | os.PathLike) -> DlibNet:
    """Parse a dlib DNN file (`add_loss_layer` at the top) into a `DlibNet` with layers in input -> output order."""
    path = os.fspath(path)
    with open(path, "rb") as fh:
        r = DlibReader(fh.read(), name=path)
    if r.read_int() != 1:
        raise DlibFormatError(f"{path}: not a dlib add_loss_layer (version mismatch)")
    loss_name = r.read_string()
    loss: dict[str, Any] = {"name": loss_name}
    if loss_name == "loss_metric_2":
        loss["margin"], loss["distance_threshold"] = r.read_float(), r.read_float()
    elif loss_name != "loss_metric_":
        raise DlibFormatError(f"{path}: unsupported dlib loss '{loss_name}'")

    # Walk down the nested subnetworks (outermost first), remembering what kind of wrapper each level is.
    stack: list[tuple[str, int]] = []
    while True:
        version = r.read_int()
        following = r.peek_string()
        if following is not None and following.startswith("input_"):
            if version == 1:  # a tag layer directly on the input layer
                stack.append(("tag_or_skip", version))
                inner = None
            else:
                inner = version
            input_layer = _read_input_layer(r)
            break
        if version == 2:
            stack.append(("layer", version))
        elif version == 1:
            stack.append(("tag_or_skip", version))
        else:
            raise DlibFormatError(f"{path}: unexpected layer version {version} at byte {r.pos}")

    layers = [input_layer]
    if inner is not None:  # the add_layer that owns the input layer
        layers.append(_read_details(r))
        _skip_layer_state(r, tensors=3)
        if inner >= 3:
            r.read_int()  # sample_expansion_factor
    for kind, _ in reversed(stack):  # unwind: details follow each subnetwork, innermost first
        if kind == "tag_or_skip":
            layers.append(DlibLayer("tag_or_skip"))
        else:
            layers.append(_read_details(r))
            _skip_layer_state(r, tensors=3)
    if r.pos != len(r.data):
        raise DlibFormatError(f"{path}: {len(r.data) - r.pos} trailing bytes after the network")
    return DlibNet(loss=loss, layers=layers)


__all__ = ["DlibFormatError", "DlibLayer", "DlibNet", "DlibReader", "read_dlib_net"]
