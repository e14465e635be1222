"""Face parsing: facexlib's BiSeNet and ParseNet (19 CelebAMask-HQ classes) with our own pre/post-processing.

Task: per-pixel face-component labels for the Masked Face Alignment loss and the paste-back mask, with the
same region names as the landmark polygons of `honestface.face.masks` (skin, brows, eyes, nose, lips,
inner_mouth, face) plus what only parsing sees (hair, ears, neck, ...).

Sources (facts checked against facexlib 0.3.0 and its repository):
- Networks: `facexlib.parsing.BiSeNet(num_class=19)` (from zllrunning/face-parsing.PyTorch) and
  `facexlib.parsing.ParseNet(in_size=512, out_size=512, parsing_ch=19)` (from PSFRGAN, Chen et al. CVPR 2021);
  weights `parsing_bisenet.pth` / `parsing_parsenet.pth` (facexlib releases v0.2.0 / v0.2.2, plain state dicts).
- Pre-processing: resize to 512x512 (bilinear), RGB in [0, 1], then ImageNet mean/std for BiSeNet
  (facexlib `inference/inference_parsing.py`) and (x - 0.5) / 0.5, i.e. [-1, 1], for ParseNet
  (`inference/inference_parsing_parsenet.py` and `FaceRestoreHelper.paste_faces_to_input_image`).
- Outputs: BiSeNet returns (out, out16, out32), ParseNet returns (mask, image); the first is the logits.
- Class orders differ: BiSeNet follows face-parsing.PyTorch (comment in inference_parsing.py), ParseNet the
  CelebAMask-HQ release order (comment in inference_parsing_parsenet.py).
- The `head` region (face + hair + ears + earrings, not hat / neck / necklace / clothes) is the set facexlib's
  paste-back keeps (`MASK_COLORMAP` in FaceRestoreHelper).

Our choices: logits are resized back to the input resolution (bilinear), so `forward` maps (B, 3, H, W) in
[0, 1] to (B, 19, H, W) and stays differentiable; `skin` includes the nose (as in the landmark builder).
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from honestface.checkpoints import check_state_dict, load_state_dict
from honestface.weights import resolve_weight

BISENET_CLASSES = (
    "background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "ear_r",
    "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat",
)  # fmt: skip
PARSENET_CLASSES = (
    "background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
    "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth",
)  # fmt: skip
CLASS_TABLES = {"bisenet": BISENET_CLASSES, "parsenet": PARSENET_CLASSES}

_FACE = ("skin", "nose", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "mouth", "u_lip", "l_lip")
# region name -> CelebAMask-HQ class names it is made of
REGION_CLASSES: dict[str, tuple[str, ...]] = {
    "face": _FACE,
    "skin": ("skin", "nose"),
    "brows": ("l_brow", "r_brow"),
    "eyes": ("l_eye", "r_eye"),
    "nose": ("nose",),
    "lips": ("u_lip", "l_lip"),
    "inner_mouth": ("mouth",),
    "glasses": ("eye_g",),
    "hair": ("hair",),
    "ears": ("l_ear", "r_ear"),
    "earrings": ("ear_r",),
    "neck": ("neck",),
    "necklace": ("neck_l",),
    "cloth": ("cloth",),
    "hat": ("hat",),
    "background": ("background",),
    "head": _FACE + ("hair", "l_ear", "r_ear", "ear_r"),
}
LANDMARK_REGIONS = ("face", "skin", "brows", "eyes", "nose", "lips", "inner_mouth")  # shared with masks.py

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
ARCHS = ("bisenet", "parsenet")


def region_class_ids(region: str, classes: str = "bisenet") -> list[int]:
    """Class indices of a region in a class table ("bisenet" or "parsenet")."""
    if classes not in CLASS_TABLES:
        raise ValueError(f"unknown parsing class table {classes!r}; allowed: {', '.join(CLASS_TABLES)}")
    if region not in REGION_CLASSES:
        raise ValueError(f"unknown parsing region {region!r}; allowed: {', '.join(REGION_CLASSES)}")
    table = CLASS_TABLES[classes]
    return [table.index(c) for c in REGION_CLASSES[region]]


def parsing_region_masks(labels, classes: str = "bisenet", regions=LANDMARK_REGIONS) -> dict:
    """Label map (H, W) or (B, H, W), numpy or torch -> {region: mask of the same shape}.

    numpy gives float32 arrays, torch gives float32 tensors on the labels' device.
    """
    out = {}
    for region in regions:
        ids = region_class_ids(region, classes)
        if isinstance(labels, torch.Tensor):
            out[region] = torch.isin(labels, torch.tensor(ids, device=labels.device)).float()
        else:
            out[region] = np.isin(np.asarray(labels), ids).astype(np.float32)
    return out


def _build_net(arch: str, input_size: int) -> nn.Module:
    from facexlib.parsing import BiSeNet, ParseNet

    if arch == "bisenet":
        return BiSeNet(num_class=19)
    if arch == "parsenet":
        return ParseNet(in_size=input_size, out_size=input_size, parsing_ch=19)
    raise ValueError(f"unknown parsing network {arch!r}; allowed: {', '.join(ARCHS)}")


class FaceParser(nn.Module):
    """A facexlib parsing network with its pre-processing. forward: (B, 3, H, W) in [0, 1] -> (B, 19, H, W)."""

    def __init__(self, arch: str = "bisenet", input_size: int = 512) -> None:
        super().__init__()
        self.arch = arch
        self.input_size = int(input_size)
        self.net = _build_net(arch, self.input_size)
        if arch == "bisenet":
            mean, std = _IMAGENET_MEAN, _IMAGENET_STD
        else:
            mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @property
    def classes(self) -> tuple[str, ...]:
        return CLASS_TABLES[self.arch]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got shape {tuple(images.shape)}")
        h, w = images.shape[-2:]
        x = images.to(self.mean.dtype)
        if (h, w) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size,) * 2, mode="bilinear", align_corners=False)
        logits = self.net((x - self.mean) / self.std)[0]  # (B, 19, S, S)
        if logits.shape[-2:] != (h, w):
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        return logits  # (B, 19, H, W)

    @torch.no_grad()
    def parse(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> label map (B, H, W) int64."""
        return self(images).argmax(1)

    def region_masks(self, images: torch.Tensor, regions=LANDMARK_REGIONS) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) -> {region: (B, H, W) float32}."""
        return parsing_region_masks(self.parse(images), self.arch, regions)

    @torch.no_grad()
    def predict(self, image: np.ndarray) -> np.ndarray:
        """One RGB image (H, W, 3), uint8 or float in [0, 1] -> label map (H, W) int64 (numpy)."""
        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"image must be (H, W, 3) RGB, got shape {img.shape}")
        x = torch.from_numpy(img.astype(np.float32) / (255.0 if img.dtype == np.uint8 else 1.0))
        x = x.permute(2, 0, 1)[None].to(self.mean.device)
        return self.parse(x)[0].cpu().numpy()


def build_parser(
    arch: str = "bisenet",
    weights: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    input_size: int = 512,
) -> FaceParser:
    """A FaceParser in eval mode with its weights loaded (registry `parsing_<arch>`, or the explicit path).

    Raises honestface.weights.MissingWeightError when the file is missing. The released weights were trained at
    512; BiSeNet is fully convolutional and runs at another `input_size` with the same weights (faster, coarser),
    while ParseNet's layer count depends on it (other sizes need weights trained at that size).
    """

    if arch not in ARCHS:
        raise ValueError(f"unknown parsing network {arch!r}; allowed: {', '.join(ARCHS)}")
    path = resolve_weight(f"parsing_{arch}", weights)
    parser = FaceParser(arch, input_size)
    state = load_state_dict(path)
    check_state_dict(parser.net, state, str(path), f"a facexlib {arch} (input_size {input_size})")
    parser.net.load_state_dict(state, strict=True)
    return parser.eval().to(device) if device is not None else parser.eval()
