"""Identity embeddings of faces: one interface over dlib, insightface ArcFace ONNX and a PyTorch iResNet.

Used by the ArcFace identity loss and the Face Identity Encoder of HonestFace (Wang et al., arXiv 2505.18469), and by
the identity metrics (cosine similarity / angle between the embeddings of a restored face and its ground truth).

Backends (`build_identity_encoder(name, ...)`):
- `dlib`: dlib's ResNet face descriptor (`dlib_face_recognition_resnet_model_v1.dat`, bundled with the
  face-recognition-models package, so it works offline). 128-D, not differentiable. Crops: dlib's own
  `get_face_chip` alignment, 150x150 with padding 0.25 (dlib's defaults).
- `arcface_onnx`: an insightface ArcFace recogniser in ONNX (buffalo_l `w600k_r50.onnx`, antelopev2
  `glintr100.onnx`), run through onnxruntime. Preprocessing follows insightface `ArcFaceONNX`: RGB, (x - 127.5) /
  127.5, except for converted MXNet graphs (a Sub and a Mul node among the first 8 nodes) which normalise inside
  the graph (mean 0, std 1). Crops: insightface `norm_crop`, i.e. the ArcFace 112 template with a black border
  (`alignment.align_face(..., template="arcface", border="constant")`). 512-D, frozen.
- `iresnet`: the PyTorch iResNet of insightface `arcface_torch` (see `iresnet.py`), frozen but differentiable
  with respect to its input image, for identity losses. Input (B, 3, 112, 112) in [-1, 1]. 512-D.

Every `embed*` returns L2-normalised rows (dlib's raw descriptors are not unit-norm; its usual "same person"
threshold of 0.6 applies to the raw Euclidean distance, not to these normalised vectors).

The 5-point dlib chip: dlib's `get_face_chip` needs its own 5- or 68-point shapes. For bare `points5` (eye
centres, nose tip, mouth corners) we fit a similarity transform onto the same five points of dlib's mean face
(the `mean_face_shape_x/y` constants of dlib's `get_face_chip_details`, points 17..67), mapped into the chip the
way dlib maps them: (padding + p) / (1 + 2 * padding) * size. This is our choice.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from honestface.face.alignment import align_face
from honestface.face.detection import as_rgb_uint8
from honestface.face.schemes import DLIB68
from honestface.face.types import FaceDetection

# dlib's mean face (normalised coordinates of 68-point landmarks 17..67), from dlib get_face_chip_details.
_DLIB_MEAN_X = np.array([
    0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124, 0.904991, 0.98004,
    0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036, 0.490127, 0.554217, 0.613373, 0.121737,
    0.187122, 0.265825, 0.334606, 0.260918, 0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751,
    0.719335, 0.254149, 0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
    0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874, 0.553364, 0.490127, 0.42689,
])  # fmt: skip
_DLIB_MEAN_Y = np.array([
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891, 0.0187482, 0.038915, 0.106454,
    0.203352, 0.307009, 0.409805, 0.515625, 0.587326, 0.609345, 0.628106, 0.609345, 0.587326, 0.216423,
    0.178758, 0.179852, 0.231733, 0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423, 0.244077,
    0.245099, 0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805, 0.902192,
    0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746, 0.784792, 0.824182, 0.831803, 0.824182,
])  # fmt: skip

ARCFACE_ONNX_WEIGHTS = {"w600k_r50": "arcface_w600k_r50", "glintr100": "arcface_glintr100"}
IRESNET_WEIGHTS = {"ir50": "arcface_torch_r50", "ir100": "arcface_torch_r100"}


def dlib_chip_points5(size: int = 150, padding: float = 0.25) -> np.ndarray:
    """The five FaceDetection.points5 positions of dlib's mean face inside a `get_face_chip` crop: (5, 2)."""
    mean = np.stack([np.concatenate([np.zeros(17), _DLIB_MEAN_X]), np.concatenate([np.zeros(17), _DLIB_MEAN_Y])], -1)
    five = DLIB68.to_five(mean)  # (5, 2), from the full 68-point layout (points 0..16 unused)
    return (padding + five) / (1 + 2 * padding) * size


def _stack_crops(faces: np.ndarray | Sequence[np.ndarray], size: int) -> np.ndarray:
    """Aligned crops (list of (S, S, 3) or one (N, S, S, 3)/(S, S, 3) array) -> uint8 (N, S, S, 3)."""
    if isinstance(faces, np.ndarray) and faces.ndim == 3:
        faces = faces[None]
    crops = [as_rgb_uint8(f) for f in faces]
    for i, c in enumerate(crops):
        if c.shape[:2] != (size, size):
            raise ValueError(f"face crop {i} is {c.shape[1]}x{c.shape[0]}; this encoder needs aligned {size}x{size}")
    return np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)


def _as_face_list(faces: Any) -> list:
    """One face spec or a batch of them -> list of specs (FaceDetection, (P, 2) array or backend shape object)."""
    if isinstance(faces, FaceDetection):
        return [faces]
    if isinstance(faces, np.ndarray):
        if faces.ndim == 2:
            return [faces]
        if faces.ndim == 3:
            return list(faces)
        raise ValueError(f"face points must be (P, 2) or (N, P, 2), got shape {faces.shape}")
    if isinstance(faces, (list, tuple)):
        if faces and np.ndim(faces[0]) == 1:  # a single (P, 2) given as nested lists
            return [np.asarray(faces, dtype=np.float64)]
        return list(faces)
    return [faces]


def _points5_of(face: Any) -> np.ndarray:
    """FaceDetection / (5, 2) / (68, 2) -> (5, 2) float points in the FaceDetection.points5 order."""
    if isinstance(face, FaceDetection):
        if face.points5 is None:
            raise ValueError("this FaceDetection has no points5; use a detector that gives 5 points (e.g. mtcnn)")
        return np.asarray(face.points5, dtype=np.float64)
    pts = np.asarray(face, dtype=np.float64)
    if pts.shape == (68, 2):
        return DLIB68.to_five(pts)
    if pts.shape != (5, 2):
        raise ValueError(f"expected a FaceDetection or points of shape (5, 2) or (68, 2), got {pts.shape}")
    return pts


def _align_arcface(image: np.ndarray, face: Any, size: int) -> np.ndarray:
    """insightface `norm_crop`: 5-point similarity onto the ArcFace template, bilinear, black border."""
    crop, _ = align_face(image, _points5_of(face), template="arcface", size=size, border="constant")
    return as_rgb_uint8(crop)


def _l2n(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class IdentityEncoder(ABC):
    """Common interface. `embed` takes aligned RGB crops (uint8 or float in [0, 1]) of side `crop_size`;
    `embed_image` aligns faces of a whole image itself. Both return L2-normalised float32 (N, dim)."""

    name: str
    dim: int
    crop_size: int
    differentiable: bool = False

    @abstractmethod
    def _embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """uint8 (N, S, S, 3) -> raw (N, dim) embeddings."""

    @abstractmethod
    def align(self, image: np.ndarray, face: Any) -> np.ndarray:
        """Aligned uint8 (S, S, 3) crop of one face of an RGB image."""

    def embed(self, faces: np.ndarray | Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """Aligned crops: one (S, S, 3), a batch (N, S, S, 3) or a list of (S, S, 3) -> (N, dim), S = crop_size."""
        crops = _stack_crops(faces, self.crop_size)  # (N, S, S, 3) uint8
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32)
        out = [self._embed_crops(crops[i : i + batch_size]) for i in range(0, len(crops), batch_size)]
        return _l2n(np.concatenate(out, axis=0))  # (N, dim)

    def embed_image(self, image: np.ndarray, faces: Any) -> np.ndarray:
        """Embed the faces of one RGB image. `faces`: a FaceDetection, (5, 2) or (68, 2) points, or a list/batch
        of them. Returns (N, dim)."""
        image = as_rgb_uint8(image)
        crops = [self.align(image, f) for f in _as_face_list(faces)]
        return self.embed(crops)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, crop_size={self.crop_size})"


class DlibIdentityEncoder(IdentityEncoder):
    """dlib ResNet descriptor (128-D). `weights`: path of the recognition .dat (default: the bundled one)."""

    name = "dlib"
    dim = 128
    crop_size = 150
    chip_padding = 0.25

    def __init__(self, weights: str | os.PathLike | None = None):
        import dlib

        models = _face_recognition_models_dir()
        rec_path = Path(weights) if weights is not None else models / "dlib_face_recognition_resnet_model_v1.dat"
        sp_path = models / "shape_predictor_5_face_landmarks.dat"
        for p in (rec_path, sp_path):
            if not p.is_file():
                raise FileNotFoundError(f"dlib model file not found: {p}")
        self._dlib = dlib
        self.model = dlib.face_recognition_model_v1(str(rec_path))
        self.shape_predictor = dlib.shape_predictor(str(sp_path))
        self._template5 = dlib_chip_points5(self.crop_size, self.chip_padding)

    def _embed_crops(self, crops: np.ndarray) -> np.ndarray:
        descs = self.model.compute_face_descriptor([np.ascontiguousarray(c) for c in crops])
        return np.array([np.array(d) for d in descs], dtype=np.float32)  # (N, 128)

    def align(self, image: np.ndarray, face: Any) -> np.ndarray:
        dlib = self._dlib
        if isinstance(face, dlib.full_object_detection):
            shape = face
        elif isinstance(face, FaceDetection):
            x0, y0, x1, y1 = (round(float(v)) for v in face.box)
            shape = self.shape_predictor(image, dlib.rectangle(x0, y0, x1, y1))
        else:
            pts = np.asarray(face, dtype=np.float64)
            if pts.shape == (5, 2):
                return self._align_points5(image, pts)
            if pts.shape != (68, 2):
                raise ValueError(f"dlib alignment needs a FaceDetection, (5, 2) or (68, 2) points, got {pts.shape}")
            lo, hi = pts.min(0), pts.max(0)
            rect = dlib.rectangle(int(lo[0]), int(lo[1]), int(np.ceil(hi[0])), int(np.ceil(hi[1])))
            shape = dlib.full_object_detection(rect, [dlib.point(round(x), round(y)) for x, y in pts])
        return dlib.get_face_chip(image, shape, size=self.crop_size, padding=self.chip_padding)

    def _align_points5(self, image: np.ndarray, points5: np.ndarray) -> np.ndarray:
        crop, _ = align_face(image, points5, template=self._template5, size=self.crop_size, border="constant")
        return crop


class ArcFaceONNXEncoder(IdentityEncoder):
    """insightface ArcFace recogniser (ONNX) run with onnxruntime on `device` ("cpu", "cuda", "cuda:1")."""

    name = "arcface_onnx"

    def __init__(self, weights: str | os.PathLike, device: str | torch.device | None = None):
        import onnx
        import onnxruntime as ort

        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"ArcFace ONNX model not found: {path}")
        graph = onnx.load(str(path), load_external_data=False).graph
        first = [n.name for n in graph.node[:8]]
        mxnet_style = any(n.startswith(("Sub", "_minus")) for n in first) and any(
            n.startswith(("Mul", "_mul")) for n in first
        )
        self.input_mean, self.input_std = (0.0, 1.0) if mxnet_style else (127.5, 127.5)

        dev = torch.device(device or "cpu")
        providers: list = ["CPUExecutionProvider"]
        if dev.type == "cuda":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers = [("CUDAExecutionProvider", {"device_id": dev.index or 0}), "CPUExecutionProvider"]
            else:
                warnings.warn(f"onnxruntime has no CUDA provider; running {path.name} on CPU", stacklevel=2)
        self.device = dev
        self.session = ort.InferenceSession(str(path), providers=providers)
        inp, outs = self.session.get_inputs()[0], self.session.get_outputs()
        if len(outs) != 1 or len(inp.shape) != 4:
            raise ValueError(f"{path} is not an ArcFace recogniser (input {inp.shape}, {len(outs)} outputs)")
        side = inp.shape[2] if isinstance(inp.shape[2], int) else 112
        self.crop_size = int(side)
        self.input_name, self.output_name = inp.name, outs[0].name
        out_dim = outs[0].shape[-1]
        if not isinstance(out_dim, int):  # symbolic output size: run one blank crop to find it
            out_dim = self._embed_crops(np.zeros((1, self.crop_size, self.crop_size, 3), np.uint8)).shape[1]
        self.dim = int(out_dim)

    def _embed_crops(self, crops: np.ndarray) -> np.ndarray:
        blob = (crops.astype(np.float32) - self.input_mean) / self.input_std  # (N, S, S, 3) RGB
        blob = np.ascontiguousarray(blob.transpose(0, 3, 1, 2))  # (N, 3, S, S)
        return self.session.run([self.output_name], {self.input_name: blob})[0].reshape(len(crops), -1)

    def align(self, image: np.ndarray, face: Any) -> np.ndarray:
        return _align_arcface(image, face, self.crop_size)


class IResNetIdentityEncoder(IdentityEncoder):
    """Frozen arcface_torch iResNet; differentiable w.r.t. its input (`embed_torch`)."""

    name = "iresnet"
    dim = 512
    crop_size = 112
    differentiable = True

    def __init__(self, weights: str | os.PathLike, arch: str | None = None, device: str | torch.device | None = None):
        from honestface.face.iresnet import IResNet

        self.device = torch.device(device or "cpu")
        self.net = IResNet.from_checkpoint(weights, arch).to(self.device).eval()
        self.net.requires_grad_(False)
        self.dim = self.net.num_features
        self.arch = self.net.arch

    def embed_torch(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, 112, 112) in [-1, 1] -> (B, 512) unit-norm, on the encoder's device; gradients reach `images`."""
        if images.ndim != 4 or images.shape[1:] != (3, self.crop_size, self.crop_size):
            raise ValueError(f"embed_torch expects (B, 3, 112, 112) in [-1, 1], got {tuple(images.shape)}")
        if self.net.training:
            self.net.eval()
        x = images.to(device=self.device, dtype=self.net.conv1.weight.dtype)
        return F.normalize(self.net(x), dim=-1)

    def embed_aligned_torch(self, images: torch.Tensor, points5: torch.Tensor) -> torch.Tensor:
        """Whole images (B, 3, H, W) in [-1, 1] plus their points5 (B, 5, 2) -> (B, 512), differentiable."""
        from honestface.face.alignment import align_faces_torch

        crops = align_faces_torch(images, points5, template="arcface", size=self.crop_size, border="constant",
                                  border_value=-1.0)  # black in [-1, 1], like insightface norm_crop
        return self.embed_torch(crops)  # crops: (B, 3, 112, 112)

    @torch.no_grad()
    def _embed_crops(self, crops: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(crops).to(self.device).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (N, 3, 112, 112)
        return self.net(x).float().cpu().numpy()

    def align(self, image: np.ndarray, face: Any) -> np.ndarray:
        return _align_arcface(image, face, self.crop_size)


def _face_recognition_models_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")  # find_spec does not run its pkg_resources import
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the dlib identity encoder needs the package 'face_recognition_models' (pip install)")
    return Path(spec.submodule_search_locations[0]) / "models"


IDENTITY_ENCODERS = ("dlib", "arcface_onnx", "iresnet")


def build_identity_encoder(
    name: str,
    *,
    device: str | torch.device | None = None,
    weights: str | os.PathLike | None = None,
    arch: str | None = None,
) -> IdentityEncoder:
    """Build an identity encoder by name: `dlib`, `arcface_onnx` or `iresnet`.

    weights: explicit weight file (wins over the registry). arch: for `arcface_onnx` the model (`w600k_r50`,
    default, or `glintr100`); for `iresnet` the preset (ir18 ... ir200; default ir50, or inferred from an explicit
    `weights` file). Registry entries: arcface_w600k_r50, arcface_glintr100, arcface_torch_r50, arcface_torch_r100.
    """
    if name == "dlib":
        return DlibIdentityEncoder(weights)
    if name == "arcface_onnx":
        from honestface.weights import resolve_weight

        key = arch or "w600k_r50"
        if key not in ARCFACE_ONNX_WEIGHTS:
            raise ValueError(f"unknown arcface_onnx model {key!r}; allowed: {', '.join(ARCFACE_ONNX_WEIGHTS)}")
        return ArcFaceONNXEncoder(resolve_weight(ARCFACE_ONNX_WEIGHTS[key], weights), device=device)
    if name == "iresnet":
        from honestface.weights import resolve_weight

        if weights is None:
            preset = arch or "ir50"
            if preset not in IRESNET_WEIGHTS:
                have = ", ".join(IRESNET_WEIGHTS)
                raise ValueError(f"no registry weights for iresnet arch {preset!r} (have {have}); pass weights=")
            path = resolve_weight(IRESNET_WEIGHTS[preset])
        else:
            entry = IRESNET_WEIGHTS.get(arch or "ir50", IRESNET_WEIGHTS["ir50"])
            path = resolve_weight(entry, weights)
        return IResNetIdentityEncoder(path, arch=arch, device=device)
    raise ValueError(f"unknown identity encoder {name!r}; allowed: {', '.join(IDENTITY_ENCODERS)}")


def _is_torch(*xs: Any) -> bool:
    return any(isinstance(x, torch.Tensor) for x in xs)


def cosine_similarity(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, eps: float = 1e-12):
    """Row-wise cosine similarity of (..., D) and (..., D) (broadcast) -> (...).

    Numpy in, numpy (float64) out; any torch tensor in, torch out (differentiable)."""
    if _is_torch(a, b):
        a, b = torch.as_tensor(a), torch.as_tensor(b)
        return (F.normalize(a, dim=-1, eps=eps) * F.normalize(b, dim=-1, eps=eps)).sum(-1)
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    na = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), eps)
    nb = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), eps)
    return (na * nb).sum(-1)


def identity_angle_degrees(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor):
    """Angle between embeddings in degrees: arccos of the cosine clipped to [-1, 1] -> (...)."""
    cos = cosine_similarity(a, b)
    if isinstance(cos, torch.Tensor):
        return torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0)))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def pairwise_cosine(A: np.ndarray | torch.Tensor, B: np.ndarray | torch.Tensor, eps: float = 1e-12):
    """All-pairs cosine similarity of (N, D) and (M, D) -> (N, M)."""
    if _is_torch(A, B):
        A, B = torch.as_tensor(A), torch.as_tensor(B)
        return F.normalize(A, dim=-1, eps=eps) @ F.normalize(B, dim=-1, eps=eps).T
    A, B = np.asarray(A, np.float64), np.asarray(B, np.float64)
    A = A / np.maximum(np.linalg.norm(A, axis=-1, keepdims=True), eps)
    B = B / np.maximum(np.linalg.norm(B, axis=-1, keepdims=True), eps)
    return A @ B.T
