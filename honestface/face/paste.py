"""Paste restored aligned faces back into the original photo.

Task: the last step of every face-restoration pipeline (GFPGAN / CodeFormer / DiffBIR through facexlib's
`FaceRestoreHelper.paste_faces_to_input_image`, and our one-step HonestFace pipeline): warp the restored
aligned crop back with the inverse similarity transform and blend it in with a soft mask.

What we keep from that practice (facts, not code): the inverse warp of the crop, a soft mask built in the crop
frame and warped back with the same matrix, erosion at the crop border so no dark seam shows, and a
parsing-based mask that covers face, hair and ears but not hat, neck or clothes.

Our choices:
- Masks are built in the crop frame (`crop_mask`): `square` (the whole crop), `ellipse` (placed from the
  template's 5 points, so it fits FFHQ and ArcFace crops alike), `polygon` (the landmark `face` region of
  `honestface.face.masks`) or `parsing` (the `head` region of a parsing label map). Every mask is cut to zero
  in a band of width ceil(3 sigma) + 2 px along the crop border, then Gaussian-blurred with sigma =
  `feather` x crop size; the blur kernel has radius ceil(3 sigma), so the mask is exactly 0 on the crop's last
  2 pixels and the warped-back mask never samples beyond the crop (no seam, no border colour).
- Blending happens in float32 over the face's bounding box only (cheap for big photos and many faces);
  wherever the warped mask is 0 the output pixel is the input pixel, bit for bit (also for uint8).
- Faces are pasted one after the other, so a later face wins where two masks overlap.
- Faces partly outside the photo: only the part inside is written.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from honestface.face.alignment import inverse_affine
from honestface.face.alignment import template as get_template

MASK_KINDS = ("ellipse", "polygon", "parsing", "square")


def _ellipse(h: int, w: int, tpl: np.ndarray) -> np.ndarray:
    """A filled ellipse around the face whose 5 template points (crop pixels) are `tpl`."""
    eyes, mouth = tpl[:2].mean(0), tpl[3:5].mean(0)
    d = float(np.linalg.norm(mouth - eyes))  # eye-to-mouth distance: 131 px in the FFHQ-512 template
    up = (eyes - mouth) / max(d, 1e-6)
    # Our choice, fitted by eye on FFHQ crops: centre 0.4 d below the eyes, 1.35 d tall, 1.05 d wide (semi-axes).
    centre = eyes - 0.4 * d * up
    angle = math.degrees(math.atan2(up[0], -up[1]))  # tilt of the face's vertical axis
    mask = np.zeros((h, w), np.uint8)
    cx, cy = np.rint(centre * 16).astype(int)  # 4 sub-pixel bits
    axes = (int(1.05 * d * 16), int(1.35 * d * 16))
    cv2.ellipse(mask, (int(cx), int(cy)), axes, angle, 0, 360, 1, thickness=-1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(np.float32)


def crop_mask(
    size: int | tuple[int, int],
    kind: str = "ellipse",
    feather: float = 0.02,
    template: str | np.ndarray = "ffhq",
    landmarks: np.ndarray | None = None,
    scheme: str = "dlib68",
    labels: np.ndarray | None = None,
    classes: str = "bisenet",
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Soft paste mask in the crop frame: float32 (h, w) in [0, 1], exactly 0 on the crop's last 2 pixels.

    kind: ellipse (uses `template`), polygon (needs `landmarks` (P, 2) in crop pixels of `scheme`),
    parsing (needs a label map `labels` (h, w) of the `classes` table), square. A given `mask` (h, w) is used
    instead of `kind`. `feather` is the blur sigma as a fraction of the crop size (0 = hard edge).
    """
    h, w = (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    if feather < 0:
        raise ValueError(f"feather must be >= 0, got {feather}")
    if mask is not None:
        base = np.asarray(mask, dtype=np.float32)
        if base.shape != (h, w):
            raise ValueError(f"mask must be ({h}, {w}) like the crop, got shape {base.shape}")
    elif kind == "square":
        base = np.ones((h, w), np.float32)
    elif kind == "ellipse":
        tpl = get_template(template, max(h, w))
        base = _ellipse(h, w, tpl)
    elif kind == "polygon":
        if landmarks is None:
            raise ValueError("mask_kind='polygon' needs landmarks (P, 2) in crop pixels")
        from honestface.face.masks import region_masks

        base = region_masks(landmarks, scheme, (h, w), regions=("face",))["face"]
    elif kind == "parsing":
        if labels is None:
            raise ValueError("mask_kind='parsing' needs a parsing label map `labels` (h, w)")
        from honestface.face.parsing import parsing_region_masks

        lab = np.asarray(labels)
        if lab.shape != (h, w):
            lab = cv2.resize(lab.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
        base = parsing_region_masks(lab, classes=classes, regions=("head",))["head"].astype(np.float32)
    else:
        raise ValueError(f"unknown mask kind {kind!r}; allowed: {', '.join(MASK_KINDS)}")
    sigma = feather * min(h, w)
    radius = math.ceil(3 * sigma) if sigma > 0 else 0
    band = radius + 2
    if 2 * band >= min(h, w):
        raise ValueError(f"feather {feather} is too large for a {h}x{w} crop")
    out = np.zeros((h, w), np.float32)
    out[band:-band, band:-band] = np.clip(base[band:-band, band:-band], 0.0, 1.0)
    if radius > 0:
        out = cv2.GaussianBlur(out, (2 * radius + 1, 2 * radius + 1), sigma, borderType=cv2.BORDER_CONSTANT)
        out = np.clip(out, 0.0, 1.0)
    return out


def _to_dtype_of(crop: np.ndarray, image: np.ndarray) -> np.ndarray:
    """The crop as float32 on the image's value scale (0..255 for uint8 images, 0..1 for float images)."""
    c = crop.astype(np.float32)
    if image.dtype == np.uint8 and crop.dtype != np.uint8:
        c = c * 255.0
    elif image.dtype != np.uint8 and crop.dtype == np.uint8:
        c = c / 255.0
    return c


def _paste_one(out: np.ndarray, crop: np.ndarray, M: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Blend one crop into `out` (modified in place) and return the full-frame warped mask (H, W)."""
    H, W = out.shape[:2]
    h, w = crop.shape[:2]
    inv = inverse_affine(M)  # crop pixels -> image pixels
    corners = np.array([[-0.5, -0.5, 1], [w - 0.5, -0.5, 1], [-0.5, h - 0.5, 1], [w - 0.5, h - 0.5, 1]])
    xy = corners @ inv.T
    x0, y0 = max(int(np.floor(xy[:, 0].min())) - 1, 0), max(int(np.floor(xy[:, 1].min())) - 1, 0)
    x1, y1 = min(int(np.ceil(xy[:, 0].max())) + 2, W), min(int(np.ceil(xy[:, 1].max())) + 2, H)
    full = np.zeros((H, W), np.float32)
    if x1 <= x0 or y1 <= y0:  # the face is entirely outside the photo
        return full
    local = inv.copy()
    local[:, 2] -= (x0, y0)
    size = (x1 - x0, y1 - y0)
    face = cv2.warpAffine(_to_dtype_of(crop, out), local, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(mask, local, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    alpha = np.clip(alpha, 0.0, 1.0)
    if face.ndim == 2:
        face = face[..., None]
    region = out[y0:y1, x0:x1]
    base = region.astype(np.float32)
    blend = base + alpha[..., None] * (face - base)
    if out.dtype == np.uint8:
        blend = np.clip(np.rint(blend), 0, 255)
    inside = alpha > 0
    region[inside] = blend[inside].astype(out.dtype)
    full[y0:y1, x0:x1] = alpha
    return full


def paste_back(
    image: np.ndarray,
    restored_crop: np.ndarray | Sequence[np.ndarray],
    M: np.ndarray | Sequence[np.ndarray],
    mask: np.ndarray | Sequence[np.ndarray | None] | None = None,
    feather: float = 0.02,
    mask_kind: str = "ellipse",
    template: str | np.ndarray = "ffhq",
    landmarks: np.ndarray | Sequence[np.ndarray] | None = None,
    scheme: str = "dlib68",
    labels: np.ndarray | Sequence[np.ndarray] | None = None,
    classes: str = "bisenet",
    return_mask: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Paste one or several restored crops into `image` (H, W, C); returns a new array of the input's dtype.

    restored_crop: (S, S, C) crop, or a list / (N, S, S, C) stack of crops; M: the (2, 3) matrix (or (N, 2, 3))
    that aligned each crop, i.e. image pixels -> crop pixels (as returned by `align_face`). Crops may be uint8
    or float in [0, 1] whatever the image dtype. mask / landmarks / labels: one per face (see `crop_mask`).
    With `return_mask`, also returns the (H, W) float32 union of the warped masks (the pasted area).
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {image.shape}")
    mats = np.asarray(M, dtype=np.float64)
    single = mats.ndim == 2
    crops = [restored_crop] if single else list(restored_crop)
    mats = mats[None] if single else mats
    if mats.shape[1:] != (2, 3) or len(mats) != len(crops):
        raise ValueError(f"M must be (2, 3) per crop: got M shape {np.shape(M)} for {len(crops)} crop(s)")

    def per_face(x, name):
        if x is None:
            return [None] * len(crops)
        items = [x] if single else list(x)
        if len(items) != len(crops):
            raise ValueError(f"{name}: {len(items)} given for {len(crops)} crop(s)")
        return items

    masks, lms, labs = per_face(mask, "mask"), per_face(landmarks, "landmarks"), per_face(labels, "labels")
    out = image.copy()
    squeeze = out.ndim == 2
    if squeeze:
        out = out[..., None]
    union = np.zeros(out.shape[:2], np.float32)
    for crop, m, msk, lm, lab in zip(crops, mats, masks, lms, labs):
        crop = np.asarray(crop)
        if crop.ndim == 2:
            crop = crop[..., None]
        if crop.ndim != 3 or crop.shape[2] != out.shape[2]:
            raise ValueError(f"crop shape {crop.shape} does not match the image's {out.shape[2]} channel(s)")
        soft = crop_mask(
            crop.shape[:2], mask_kind, feather, template, landmarks=lm, scheme=scheme, labels=lab,
            classes=classes, mask=msk,
        )
        union = np.maximum(union, _paste_one(out, crop, m, soft))
    out = out[..., 0] if squeeze else out
    return (out, union) if return_mask else out
