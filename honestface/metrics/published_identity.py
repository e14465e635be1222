"""Published identity protocols as named metrics, each computed the way its upstream script computes it.

A number in a paper's "Deg." / "IDD" / "IDS" column is only comparable with ours when it comes from the same
recogniser, the same file reading and the same averaging. These metrics reproduce three public scripts step by step
(the facts below were read from the scripts; the code is ours). Per-pair values are in the metric's unit;
`aggregate` gives the number the script prints.

`deg` - `TencentARC/VQFR:metric_paper/calculate_cos_dist.py` (also used by PMRF and BFRffusion), degrees, lower better.
- Recogniser `resnet_face18(use_se=False)` of `ronghuaiyang/arcface-pytorch:models/resnet.py`, weights
  `resnet18_110.pth` (registry `deg_arcface_resnet18`), saved from `DataParallel` (`honestface.face.resnet_face`).
- Each file: `cv2.imread(path, 0)` (OpenCV's own grayscale read: for JPEG the decoder's luma, for PNG OpenCV's
  conversion; neither equals `cvtColor(BGR2GRAY)` of the colour read), `cv2.resize` to 128x128 `INTER_LINEAR` of
  the whole image (no detection, no crop), float32, (x - 127.5) / 127.5, shape (1, 128, 128).
- GT and restored go through the network as one batch of two in eval mode; on the float32 features
  cos = dot(f_gt, f_res) / (|f_gt| |f_res|) (float32), angle = arccos(cos) / pi * 180.
- A pair with angle < 1 degree is "almost identical": it is counted and left out of the mean. arccos of a
  cosine that rounds above 1 (an image against itself) is NaN, which is not < 1, so it enters the mean and the
  printed result is nan; an empty list (every pair identical) makes the script divide by zero (we give NaN).
- Files are paired by sorted path (`zip` of the two sorted globs, truncating to the shorter list). Our evaluation
  runner pairs by relative name, which is the same pairing when both folders hold the same names.

`idd` - `LIAGM/DAEFR:scripts/metrics/cal_identity_distance.py` (the same script is in RestoreFormer++), radians,
lower better. The paper columns call it IDD or IDA.
- Recogniser GFPGAN `ResNetArcFace(IRBlock, [2, 2, 2, 2], use_se=False)` (the same architecture and keys as
  resnet_face18), weights `arcface_resnet18.pth` (registry `ida_arcface_resnet18`), `module.` stripped if present.
- Each file: `cv2.imread(path)` (BGR uint8), float32 / 255, gray = 0.2989 * c0 + 0.5870 * c1 + 0.1140 * c2 on
  the channels in file (BGR) order, i.e. 0.2989 weighs BLUE and 0.1140 red; `F.interpolate(..., (128, 128),
  mode='bilinear', align_corners=False)` (no antialias); no normalisation to [-1, 1].
- GT and restored are separate forward passes; the value is arccos(cos) in radians (the script names the function
  `cosine_similarity`, but it returns the angle).
- The restored file looked up for GT `name.ext` is `name.png` (or `name_00.png` with `--need_post 1`); a missing one
  is skipped with a message, yet the mean divides by the number of GT files: skipped pairs count as 0.
  A cosine that rounds above 1 gives a NaN line and a NaN mean in the script.

`ids_refldm` - `ChiWeiHsiao/ref-ldm:scripts/eval.py` with `ldm/modules/losses/identity_loss.py`, cosine, higher
better.
- Recogniser `pretrained/insightface_webface_r50.onnx`, the insightface model-zoo ArcFace R50 trained on
  WebFace600K (ReF-LDM's README links the model-zoo Google Drive file), which is the recogniser of the buffalo_l pack,
  `w600k_r50.onnx` (registry `arcface_w600k_r50`). ReF-LDM converts it with onnx2torch; we run the ONNX with
  onnxruntime (float32 results agree to about 1e-6, not bit for bit).
- Each file: PIL `Image.open`, `resize((512, 512))` with PIL's default filter when the size differs (before any
  mode conversion), `convert('RGB')`, float32 / 255, x * 2 - 1, centre crop rows/cols [int(0.0625 s), int(0.9375 s))
  (32:480 at 512), `F.interpolate(..., (112, 112), mode='area')`; RGB NCHW into the network, no alignment.
- ids = 1 - float(1 - cosine_similarity(e_res, e_gt)) (torch, float32); the reported IDS is `np.mean` over the
  images. Only restored files matching `*.png` are evaluated (the GT must have the same name, else the script stops).

Our choices: the three scripts run one image (or pair) at a time on CUDA; we batch pairs (BatchNorm in eval mode,
so each image's result does not depend on its batch) and run on `device`. Where numpy 1 and numpy 2 differ
(float32 scalar times a Python float), we follow numpy 1, the version of the scripts' time: the float32 arccos
is widened to float64 before the degree conversion and the sums. An unreadable file raises (the scripts crash).
A pair the script would not evaluate has the value NaN: in `idd` a restored path that is not an existing `.png`
file, in `ids_refldm` a restored path whose name does not end in `.png`.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "PUBLISHED_IDENTITY", "PublishedIdentityMetric", "PublishedMetricInfo", "build_published_identity",
    "deg_read", "idd_read", "refldm_read",
]


@dataclass(frozen=True)
class PublishedMetricInfo:
    """What a published identity metric is: weights are registry names, source is `owner/repo:path`."""

    description: str
    weights: tuple[str, ...]
    higher_is_better: bool
    unit: str
    source: str


PUBLISHED_IDENTITY: dict[str, PublishedMetricInfo] = {
    "deg": PublishedMetricInfo(
        "VQFR 'Deg.': identity angle of gray 128 px whole images under arcface-pytorch resnet_face18; pairs under 1 "
        "degree are left out of the mean (counted as 'identical')",
        ("deg_arcface_resnet18",), False, "degrees", "TencentARC/VQFR:metric_paper/calculate_cos_dist.py"),
    "idd": PublishedMetricInfo(
        "DAEFR / RestoreFormer++ identity distance (IDD/IDA): arccos of the cosine of GFPGAN ResNetArcFace "
        "features of BGR-weighted gray 128 px images; the mean divides by the number of GT files",
        ("ida_arcface_resnet18",), False, "radians", "LIAGM/DAEFR:scripts/metrics/cal_identity_distance.py"),
    "ids_refldm": PublishedMetricInfo(
        "ReF-LDM IDS: cosine similarity of insightface WebFace600K R50 embeddings of the centre 7/8 crop "
        "area-resized to 112 px (no alignment)",
        ("arcface_w600k_r50",), True, "cosine", "ChiWeiHsiao/ref-ldm:scripts/eval.py"),
}

IDD_GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)  # applied to channels 0, 1, 2 of the BGR array


# ------------------------------------------------------------------------------------------------ file reading

def _unreadable(path: Path) -> ValueError:
    return ValueError(f"{path}: cannot be read as an image (the published script would stop here)")


def deg_read(path: str | os.PathLike) -> np.ndarray:
    """VQFR Deg. input of one file: (1, 128, 128) float32 in [-1, 1]."""
    import cv2

    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)  # OpenCV's grayscale read of the file
    if gray is None:
        raise _unreadable(Path(path))
    x = cv2.resize(gray, (128, 128), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    x -= 127.5
    x /= 127.5
    return x[None]  # (1, 128, 128)


def idd_read(path: str | os.PathLike) -> torch.Tensor:
    """DAEFR IDD input of one file: (1, 128, 128) float32 gray in [0, 1] (BGR-ordered weights, bilinear)."""
    import cv2

    bgr = cv2.imread(str(path))  # (H, W, 3) uint8, B, G, R
    if bgr is None:
        raise _unreadable(Path(path))
    x = torch.from_numpy(bgr.astype(np.float32) / 255.0).permute(2, 0, 1)[None]  # (1, 3, H, W)
    w0, w1, w2 = IDD_GRAY_WEIGHTS
    gray = (w0 * x[:, 0] + w1 * x[:, 1] + w2 * x[:, 2])[:, None]  # (1, 1, H, W)
    gray = torch.nn.functional.interpolate(gray, (128, 128), mode="bilinear", align_corners=False)
    return gray[0]  # (1, 128, 128)


def refldm_read(path: str | os.PathLike) -> torch.Tensor:
    """ReF-LDM IDS input of one file: (3, 112, 112) float32 RGB in [-1, 1]."""
    from PIL import Image

    with Image.open(str(path)) as img:
        if img.size != (512, 512):
            img = img.resize((512, 512))  # PIL's default filter, before the mode conversion, as the script
        if img.mode != "RGB":
            img = img.convert("RGB")
        arr = np.array(img)
    x = torch.from_numpy(arr.astype(np.float32).transpose(2, 0, 1)[None]) / 255.0  # (1, 3, 512, 512)
    x = x * 2.0 - 1.0
    h, w = x.shape[-2:]
    x = x[:, :, int(h * 0.0625): int(h * 0.9375), int(w * 0.0625): int(w * 0.9375)]  # (1, 3, 448, 448)
    x = torch.nn.functional.interpolate(x, (112, 112), mode="area")
    return x[0]  # (3, 112, 112)


# --------------------------------------------------------------------------------------------------- the metrics

def _cosine_f32(a: np.ndarray, b: np.ndarray) -> np.float32:
    """dot(a, b) / (|a| |b|) on float32 vectors, as numpy computes it in the scripts."""
    return np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))


def _arccos_f32(cos: np.float32) -> float:
    with np.errstate(invalid="ignore"):  # cos > 1 by rounding: NaN, as in the scripts
        return float(np.arccos(cos))


class PublishedIdentityMetric(ABC):
    """Base of the three protocols: `pair_values` per (restored, GT) file pair, `aggregate` the printed number."""

    name: str = ""

    def __init__(self, device: str | torch.device | None = None, batch_size: int = 16) -> None:
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.batch_size = int(batch_size)
        self.info = PUBLISHED_IDENTITY[self.name]

    def pair_values(self, restored: Sequence[Path], gt: Sequence[Path]) -> np.ndarray:
        """(N,) float64 per-pair values in `info.unit`; NaN where the script would not evaluate the pair."""
        if len(restored) != len(gt):
            raise ValueError(f"{self.name}: {len(restored)} restored files but {len(gt)} GT files")
        restored, gt = [Path(p) for p in restored], [Path(p) for p in gt]
        out = np.full(len(gt), np.nan)
        todo = [i for i in range(len(gt)) if self._evaluated(restored[i])]
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start: start + self.batch_size]
            out[chunk] = self._values([restored[i] for i in chunk], [gt[i] for i in chunk])
        return out

    def _evaluated(self, restored: Path) -> bool:
        return True

    @abstractmethod
    def _values(self, restored: list[Path], gt: list[Path]) -> list[float]:
        """Values of pairs the script evaluates (one batch)."""

    @abstractmethod
    def aggregate(self, values: np.ndarray, num_gt: int) -> dict:
        """{"value": the number the script prints, plus its quirk counts}."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, device={str(self.device)!r})"


class DegMetric(PublishedIdentityMetric):
    """VQFR Deg.: degrees between resnet_face18 features of OpenCV-gray 128 px whole images."""

    name = "deg"

    def __init__(self, weights: str | os.PathLike, device=None, batch_size: int = 16) -> None:
        from honestface.face.resnet_face import load_resnet_face18

        super().__init__(device, batch_size)
        self.net = load_resnet_face18(weights, self.device)

    def _values(self, restored: list[Path], gt: list[Path]) -> list[float]:
        # rows 2k, 2k+1 = GT, restored of pair k: the script's batch of two, stacked over pairs
        x = np.stack([deg_read(p) for pair in zip(gt, restored) for p in pair])  # (2B, 1, 128, 128)
        with torch.inference_mode():
            feats = self.net(torch.from_numpy(x).to(self.device)).float().cpu().numpy()  # (2B, 512)
        return [_arccos_f32(_cosine_f32(feats[2 * k], feats[2 * k + 1])) / math.pi * 180 for k in range(len(gt))]

    def aggregate(self, values: np.ndarray, num_gt: int) -> dict:
        """{"value": mean angle of the pairs not under 1 degree (NaN if any is NaN or none is left),
        "identical": pairs under 1 degree, "count": pairs averaged, "nan": NaN angles among them}."""
        values = np.asarray(values, dtype=np.float64)
        identical = values < 1.0  # NaN is not < 1: it stays in the list, as in the script
        kept = [float(v) for v in values[~identical]]
        mean = sum(kept) / len(kept) if kept else math.nan
        return {"value": mean, "identical": int(identical.sum()), "count": len(kept),
                "nan": int(np.isnan(values).sum())}


class IddMetric(PublishedIdentityMetric):
    """DAEFR IDD: radians between ResNetArcFace features of BGR-weighted gray 128 px images."""

    name = "idd"

    def __init__(self, weights: str | os.PathLike, device=None, batch_size: int = 16) -> None:
        from honestface.face.resnet_face import load_resnet_face18

        super().__init__(device, batch_size)
        self.net = load_resnet_face18(weights, self.device)

    def _evaluated(self, restored: Path) -> bool:
        return restored.suffix == ".png" and restored.is_file()  # the script reads `<name>.png` if it exists

    def _values(self, restored: list[Path], gt: list[Path]) -> list[float]:
        x = torch.stack([idd_read(p) for pair in zip(gt, restored) for p in pair])  # (2B, 1, 128, 128)
        with torch.inference_mode():
            feats = self.net(x.to(self.device)).float().cpu().numpy()  # (2B, 512)
        return [_arccos_f32(_cosine_f32(feats[2 * k], feats[2 * k + 1])) for k in range(len(gt))]

    def aggregate(self, values: np.ndarray, num_gt: int) -> dict:
        """{"value": sum of the evaluated angles / num_gt (a skipped pair counts as 0), "count": pairs evaluated,
        "skipped": num_gt - count}. A NaN value is a skipped pair."""
        values = np.asarray(values, dtype=np.float64)
        done = values[~np.isnan(values)]
        total = 0.0
        for v in done:  # the script's running float sum, in GT order
            total += float(v)
        mean = total / num_gt if num_gt > 0 else math.nan
        return {"value": mean, "count": int(done.size), "skipped": int(num_gt - done.size)}


class RefLdmIdsMetric(PublishedIdentityMetric):
    """ReF-LDM IDS: cosine of insightface WebFace600K R50 (ONNX) embeddings of centre-cropped 112 px images."""

    name = "ids_refldm"

    def __init__(self, weights: str | os.PathLike, device=None, batch_size: int = 16) -> None:
        import onnxruntime as ort

        super().__init__(device, batch_size)
        providers: list = ["CPUExecutionProvider"]
        if self.device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers = [("CUDAExecutionProvider", {"device_id": self.device.index or 0}), "CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(weights), providers=providers)
        inp = self.session.get_inputs()[0]
        if len(inp.shape) != 4 or inp.shape[1] != 3:
            raise ValueError(f"{weights}: expected a (B, 3, 112, 112) input, got {inp.shape}")
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name
        self.fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None  # e.g. 1 in some exports

    def _evaluated(self, restored: Path) -> bool:
        return restored.name.endswith(".png")  # the script globs `*.png` in the restored folder

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        blob = np.ascontiguousarray(x.numpy(), dtype=np.float32)  # (N, 3, 112, 112)
        step = self.fixed_batch or len(blob)
        outs = [self.session.run([self.output_name], {self.input_name: blob[i: i + step]})[0]
                for i in range(0, len(blob), step)]
        return torch.from_numpy(np.concatenate(outs).reshape(len(blob), -1))  # (N, 512)

    def _values(self, restored: list[Path], gt: list[Path]) -> list[float]:
        for p in gt:
            if not p.is_file():
                raise FileNotFoundError(f"{p}: GT file missing (the ReF-LDM script asserts it exists)")
        e_res = self._embed(torch.stack([refldm_read(p) for p in restored]))  # (B, 512)
        e_gt = self._embed(torch.stack([refldm_read(p) for p in gt]))  # (B, 512)
        loss = 1 - torch.nn.functional.cosine_similarity(e_res, e_gt, dim=1)  # (B,) float32
        return [1.0 - float(v) for v in loss]

    def aggregate(self, values: np.ndarray, num_gt: int) -> dict:
        """{"value": mean IDS of the evaluated pairs, "count": their number, "skipped": NaN pairs (not `*.png`)}."""
        values = np.asarray(values, dtype=np.float64)
        done = values[~np.isnan(values)]
        mean = float(np.mean(done)) if done.size else math.nan
        return {"value": mean, "count": int(done.size), "skipped": int(values.size - done.size)}


_CLASSES: dict[str, type] = {"deg": DegMetric, "idd": IddMetric, "ids_refldm": RefLdmIdsMetric}


def build_published_identity(name: str, device: str | torch.device | None = None,
                             weights: dict | None = None) -> PublishedIdentityMetric:
    """The published identity metric `name` ("deg", "idd", "ids_refldm") on `device` (None = CPU).

    weights: {registry name: file} overriding the registry's default location (e.g. the config's `weights.*`
    values). A missing file raises `honestface.weights.MissingWeightError` (a WeightsError) naming the file, the
    config key and where to get it.
    """
    from honestface.weights import resolve_weight

    if name not in PUBLISHED_IDENTITY:
        raise ValueError(f"unknown published identity metric {name!r}; known: {', '.join(PUBLISHED_IDENTITY)}")
    (entry,) = PUBLISHED_IDENTITY[name].weights
    path = resolve_weight(entry, (weights or {}).get(entry))
    return _CLASSES[name](path, device=device)
