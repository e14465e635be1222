"""Frechet Inception Distance of a folder of restored faces, in the two conventions face-restoration tables use.

Paper component: the FID column of the HonestFace tables (Wang et al., arXiv 2505.18469; pyiqa `fid`) and the FID
of the BasicSR-based papers it is compared with (VQFR, DAEFR: BasicSR's `calculate_fid_folder.py` against
`inception_FFHQ_512.pth`). FID: Heusel et al., NeurIPS 2017, d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)).

Both use the pytorch-fid Inception-v3 (port of the TF 2015-12-05 graph, registry `fid_inception`; pool3 features,
2048-D), features stored as float32, mean with `np.mean` (float32), covariance with `np.cov` (float64):
- `mode="clean"` = pyiqa 0.1.16 `fid` default (chaofengc/IQA-PyTorch:pyiqa/archs/fid_arch.py, `mode='clean'`,
  the clean-fid convention of Parmar et al., CVPR 2022): every image under the folder (recursive), opened with
  Pillow and converted to RGB, each channel resized as a float32 image to 299x299 with Pillow's bicubic filter,
  clipped to [0, 255], mapped by (x - 128) / 128; reference statistics `.npz` {mu, sigma} (e.g. clean-fid's
  `ffhq_clean_trainval70k_512.npz`, registry `fid_ffhq512_clean_stats`).
- `mode="basicsr"` = BasicSR / VQFR `calculate_fid_folder.py` (TencentARC/VQFR:metric_paper/calculate_fid_folder.py,
  vqfr/data/single_image_dataset.py, vqfr/metrics/fid.py, vqfr/archs/inception.py): the image files directly in
  the folder (not recursive, hidden files skipped, sorted), decoded by OpenCV (`cv2.imdecode`, IMREAD_COLOR,
  8 bit), float32 / 255, BGR -> RGB, normalised (x - 0.5) / 0.5, resized inside the network to 299x299 by
  bilinear interpolation (align_corners=False); reference statistics a torch `.pth` {mean, cov} (e.g.
  `inception_FFHQ_512.pth`, registry `fid_ffhq512_stats`). VQFR's script uses only the first `num_sample` (3000)
  images; `max_images` reproduces that.
The distance follows the stable formula both use: scipy `sqrtm` of S1 S2, and if it is not finite, of
(S1 + 1e-6 I)(S2 + 1e-6 I); an imaginary part above 1e-3 on the diagonal is an error, a smaller one is dropped.

Our choices: images are listed by `honestface.io.list_images` (our extension list: bmp, jpeg, jpg, png, tif, tiff,
webp); statistics files are read weights-only (`.pth`) or without pickles (`.npz`).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from honestface.weights import WeightsError

FID_MODES = ("clean", "basicsr")


def fid_inception_architecture() -> torch.nn.Module:
    """The pytorch-fid Inception-v3 (torchvision's with pyiqa's FID blocks, 1008 classes), randomly initialised:
    the module whose state dict `pt_inception-2015-12-05-6726825d.pth` holds."""
    from pyiqa.archs import inception as inc

    with warnings.catch_warnings():  # torchvision's deprecation notes on pyiqa's `pretrained=False` call
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        net = inc._inception_v3(num_classes=1008, aux_logits=False, pretrained=False)
    for name, block in (("Mixed_5b", inc.FIDInceptionA(192, pool_features=32)),
                        ("Mixed_5c", inc.FIDInceptionA(256, pool_features=64)),
                        ("Mixed_5d", inc.FIDInceptionA(288, pool_features=64)),
                        ("Mixed_6b", inc.FIDInceptionC(768, channels_7x7=128)),
                        ("Mixed_6c", inc.FIDInceptionC(768, channels_7x7=160)),
                        ("Mixed_6d", inc.FIDInceptionC(768, channels_7x7=160)),
                        ("Mixed_6e", inc.FIDInceptionC(768, channels_7x7=192)),
                        ("Mixed_7b", inc.FIDInceptionE_1(1280)), ("Mixed_7c", inc.FIDInceptionE_2(2048))):
        setattr(net, name, block)
    return net


def build_fid_inception(path: str | os.PathLike) -> torch.nn.Module:
    """pytorch-fid Inception-v3 (pyiqa's FID blocks) with weights from `path`.

    forward: (B, 3, 299, 299) in [-1, 1] -> (B, 2048) pool3 features."""
    from honestface.metrics.iqa_networks import load_into

    net = fid_inception_architecture()
    load_into(net, Path(path), "the pytorch-fid Inception-v3 (weights.fid_inception)")
    order = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
             "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
             "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool")
    net = torch.nn.Sequential(*[getattr(net, n) for n in order], torch.nn.Flatten()).eval()
    return net.requires_grad_(False)


def load_fid_statistics(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(mu (2048,), sigma (2048, 2048)) from a `.npz` {"mu", "sigma"} or a BasicSR `.pth` {"mean", "cov"}."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            return np.asarray(f["mu"], np.float64), np.asarray(f["sigma"], np.float64)
    globs = [np.ndarray, np.dtype, np.dtypes.Float64DType, np.dtypes.Float32DType]
    globs.append(getattr(np, "_core", np).multiarray._reconstruct)
    with torch.serialization.safe_globals(globs):
        stats = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(stats, dict) or not {"mean", "cov"} <= set(stats):
        raise WeightsError(f"{path}: FID statistics must hold 'mean' and 'cov' (BasicSR) or be an .npz with mu/sigma")
    return np.asarray(stats["mean"], np.float64), np.asarray(stats["cov"], np.float64)


def _read_clean(path: Path) -> torch.Tensor:
    """pyiqa clean mode: (3, 299, 299) float32 in [-1, 1] (Pillow RGB, per-channel float bicubic resize)."""
    from PIL import Image

    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"))  # (H, W, 3) uint8
    channels = []
    for c in range(3):
        resized = Image.fromarray(rgb[:, :, c].astype(np.float32)).resize((299, 299), resample=Image.BICUBIC)
        channels.append(np.asarray(resized).clip(0, 255))
    x = torch.from_numpy(np.stack(channels).astype(np.float32))  # (3, 299, 299) in [0, 255]
    return (x - 128) / 128


def _read_basicsr(path: Path) -> torch.Tensor:
    """BasicSR: (3, 299, 299) float32 in [-1, 1] (cv2 decode, /255, RGB, (x - 0.5) / 0.5, bilinear 299)."""
    import cv2

    from honestface.io import ImageReadError

    bgr = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageReadError(f"cannot read image {path}: OpenCV could not decode it")
    rgb = cv2.cvtColor(bgr.astype(np.float32) / 255.0, cv2.COLOR_BGR2RGB)
    x = (torch.from_numpy(rgb.transpose(2, 0, 1).copy()) - 0.5) / 0.5  # (3, H, W)
    return F.interpolate(x[None], size=(299, 299), mode="bilinear", align_corners=False)[0]


def folder_features(net: torch.nn.Module, folder: str | os.PathLike, mode: str = "clean", batch_size: int = 8,
                    device: torch.device | str = "cpu", max_images: int | None = None) -> np.ndarray:
    """(N, 2048) float32 Inception pool3 features of the images of `folder`, read and resized as `mode` says."""
    from honestface.io import list_images

    if mode not in FID_MODES:
        raise ValueError(f"unknown FID mode {mode!r}; allowed: {', '.join(FID_MODES)}")
    files = list_images(folder, recursive=(mode == "clean"))
    if max_images is not None:
        files = files[:max_images]
    if len(files) < 2:
        raise ValueError(f"FID needs at least 2 images in {folder}, found {len(files)}")
    read = _read_clean if mode == "clean" else _read_basicsr
    feats = []
    for i in range(0, len(files), batch_size):
        x = torch.stack([read(f) for f in files[i : i + batch_size]]).to(device)  # (b, 3, 299, 299) in [-1, 1]
        with torch.no_grad():
            feats.append(net(x).float().cpu().numpy())
    return np.concatenate(feats)  # (N, 2048)


def feature_statistics(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) as pyiqa and BasicSR compute them: np.mean of the float32 features, np.cov (float64)."""
    return np.mean(feats, axis=0), np.cov(feats, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """|mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr(sqrtm(S1 S2)), with pyiqa's / BasicSR's singular-product fallback."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"FID statistics differ in size: {mu1.shape} / {sigma1.shape} vs {mu2.shape} / {sigma2.shape}")
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: imaginary component {np.max(np.abs(covmean.imag))} in sqrtm(S1 S2)")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))
