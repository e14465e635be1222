"""Face alignment: 5-point similarity transforms onto the ArcFace and FFHQ templates, in numpy/OpenCV and torch.

Task: the "aligned face" every model of the pipeline sees. The restoration network works on FFHQ-style
512x512 crops (as GFPGAN / CodeFormer / DiffBIR via facexlib's FaceRestoreHelper); the identity encoder works
on ArcFace 112x112 crops (insightface `norm_crop`). Both are a least-squares similarity transform (rotation,
uniform scale, translation) from the 5 detected points onto a fixed template, then a bilinear warp.

Sources (numbers only):
- ArcFace 112x112 template: insightface `python-package/insightface/utils/face_align.py`, `arcface_dst`.
- FFHQ 512x512 template: facexlib `facexlib/utils/face_restoration_helper.py`, `FaceRestoreHelper.face_template`
  (5 landmarks "for FFHQ faces with 512 x 512"; checked against facexlib 0.3.0 in our venv).
- Similarity estimation: S. Umeyama, "Least-squares estimation of transformation parameters between two point
  patterns", TPAMI 1991 (numpy, via SVD). The torch version uses the equivalent closed form of the 2-D linear
  least-squares problem over [[a, -b], [b, a]] (same optimum, no SVD, so gradients are stable).

Conventions:
- A matrix `M` (2, 3) maps image pixel coordinates to crop pixel coordinates, as `cv2.warpAffine(image, M, ...)`.
  Pixel (i, j) has its centre at x = j, y = i (OpenCV's and the templates' convention).
- Our choice: a template is scaled to another output size by multiplying all coordinates by size / base_size,
  exactly as insightface (`arcface_dst * ratio`) and facexlib (`face_template * face_size / 512`) do, so crops
  match what pretrained models were trained on (a pixel-centre exact rescale would be (p + 0.5) * s - 0.5).
- The torch warp reproduces `cv2.warpAffine(..., INTER_LINEAR)` with the same border mode: output pixel
  centres are mapped through M^-1 in pixel units and normalised with the `align_corners` convention whose
  reflection matches the OpenCV border (False for constant/replicate/reflect, True for reflect101).
  OpenCV computes source coordinates in fixed point and samples on a 1/32 px grid (INTER_BITS = 5), which alone
  moves values by up to ~1e-2 on sharp edges; `match_opencv=True` (default) reproduces that arithmetic with a
  straight-through estimator, so values match OpenCV to float precision and gradients still flow to the
  matrices / points (as if the positions were exact).
"""

from __future__ import annotations

import cv2
import numpy as np

# (5, 2) x, y in a 112x112 crop: left eye, right eye, nose tip, left mouth corner, right mouth corner.
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
# (5, 2) x, y in a 512x512 FFHQ-style crop, same point order.
FFHQ_512 = np.array(
    [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935], [201.26117, 371.41043],
     [313.08905, 371.15118]],
    dtype=np.float64,
)
TEMPLATES: dict[str, tuple[np.ndarray, int]] = {"arcface": (ARCFACE_112, 112), "ffhq": (FFHQ_512, 512)}

_BORDERS = {
    "constant": cv2.BORDER_CONSTANT,
    "replicate": cv2.BORDER_REPLICATE,
    "reflect": cv2.BORDER_REFLECT,
    "reflect101": cv2.BORDER_REFLECT_101,
}
# border -> (grid_sample padding_mode, align_corners giving the same out-of-image values as OpenCV)
_TORCH_BORDERS = {
    "constant": ("zeros", False),
    "replicate": ("border", False),
    "reflect": ("reflection", False),
    "reflect101": ("reflection", True),
}
_INTER_TAB = 32  # OpenCV INTER_TAB_SIZE = 1 << INTER_BITS
_AB_SCALE = 1024  # OpenCV 1 << AB_BITS, the fixed-point scale of warpAffine coordinates


def template(name: str | np.ndarray = "ffhq", size: int | None = None) -> np.ndarray:
    """(5, 2) float64 template points for a `size` x `size` crop (default: the template's own size).

    `name` is "arcface" or "ffhq"; an array (5, 2) is returned as is (a user's own template, already in pixels).
    """
    if not isinstance(name, str):
        pts = np.asarray(name, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise ValueError(f"a template array must be (N, 2), got shape {pts.shape}")
        return pts
    if name not in TEMPLATES:
        raise KeyError(f"unknown face template {name!r}; allowed: {', '.join(TEMPLATES)}")
    pts, base = TEMPLATES[name]
    if size is None:
        return pts.copy()
    if size <= 0:
        raise ValueError(f"template size must be positive, got {size}")
    return pts * (size / base)


_template = template  # for functions whose `template` argument shadows the name


def estimate_similarity(src_pts: np.ndarray, dst_pts: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama) mapping src onto dst: (..., N, 2), (..., N, 2) -> (..., 2, 3)."""
    src = np.asarray(src_pts, dtype=np.float64)
    dst = np.asarray(dst_pts, dtype=np.float64)
    if src.shape[-1] != 2 or src.ndim < 2 or src.shape[-2] < 2:
        raise ValueError(f"src_pts must be (..., N>=2, 2), got shape {src.shape}")
    if dst.shape[-2:] != src.shape[-2:]:
        raise ValueError(f"dst_pts shape {dst.shape} does not match src_pts shape {src.shape}")
    src, dst = np.broadcast_arrays(src, dst)
    n = src.shape[-2]
    mu_s, mu_d = src.mean(-2, keepdims=True), dst.mean(-2, keepdims=True)
    sc, dc = src - mu_s, dst - mu_d
    var_s = (sc**2).sum((-2, -1)) / n  # (...)
    if np.any(var_s <= 1e-12):
        raise ValueError("estimate_similarity: the source points are all at one location")
    cov = np.swapaxes(dc, -1, -2) @ sc / n  # (..., 2, 2) = E[d s^T]
    u, s, vt = np.linalg.svd(cov)
    d = np.where(np.linalg.det(u) * np.linalg.det(vt) < 0, -1.0, 1.0)  # keep a rotation, never a reflection
    diag = np.stack([np.ones_like(d), d], -1)  # (..., 2)
    rot = (u * diag[..., None, :]) @ vt
    scale = (s * diag).sum(-1) / var_s  # (...)
    a = scale[..., None, None] * rot
    t = mu_d[..., 0, :] - (a @ mu_s[..., 0, :, None])[..., 0]
    return np.concatenate([a, t[..., None]], axis=-1)


def inverse_affine(M: np.ndarray) -> np.ndarray:
    """Inverse of an affine (..., 2, 3) matrix, as (..., 2, 3)."""
    M = np.asarray(M, dtype=np.float64)
    if M.shape[-2:] != (2, 3):
        raise ValueError(f"an affine matrix must be (..., 2, 3), got shape {M.shape}")
    a = M[..., :2]
    a_inv = np.linalg.inv(a)
    t = -(a_inv @ M[..., 2:])
    return np.concatenate([a_inv, t], axis=-1)


def _border(border: str) -> int:
    if border not in _BORDERS:
        raise ValueError(f"unknown border mode {border!r}; allowed: {', '.join(_BORDERS)}")
    return _BORDERS[border]


def align_face(
    image: np.ndarray,
    points5: np.ndarray,
    template: str | np.ndarray = "ffhq",
    size: int = 512,
    border: str = "reflect",
    border_value: float | tuple[float, ...] = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Warp one face onto a template. image (H, W, C) -> (crop (size, size, C) same dtype, M (2, 3)).

    `points5` (5, 2) are in the FaceDetection.points5 order; `template` is "ffhq", "arcface" or a (5, 2)
    array already in crop pixels. `border` is constant | replicate | reflect | reflect101.
    """
    pts = np.asarray(points5, dtype=np.float64)
    dst = _template(template, size)
    if pts.shape != dst.shape:
        raise ValueError(f"points5 must be {dst.shape} to match the template, got shape {pts.shape}")
    M = estimate_similarity(pts, dst)
    return warp_affine(image, M, (size, size), border=border, border_value=border_value), M


def warp_affine(
    image: np.ndarray,
    M: np.ndarray,
    out_shape: tuple[int, int],
    border: str = "constant",
    border_value: float | tuple[float, ...] = 0.0,
) -> np.ndarray:
    """Bilinear warp of an (H, W[, C]) image by M into an (out_h, out_w[, C]) array of the same dtype."""
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {image.shape}")
    h, w = int(out_shape[0]), int(out_shape[1])
    src = image.astype(np.float32) if image.dtype == np.float16 else image
    if np.isscalar(border_value):
        border_value = (float(border_value),) * 4
    out = cv2.warpAffine(
        src, np.asarray(M, dtype=np.float64), (w, h), flags=cv2.INTER_LINEAR, borderMode=_border(border),
        borderValue=tuple(border_value),
    )
    if out.ndim == 2 and image.ndim == 3:  # OpenCV drops a singleton channel axis
        out = out[..., None]
    return out.astype(image.dtype, copy=False)


def warp_back(
    crop: np.ndarray, M: np.ndarray, out_shape: tuple[int, ...], border: str = "constant"
) -> np.ndarray:
    """Warp an aligned crop back into the frame of the original image: (S, S, C) -> (out_h, out_w, C)."""
    return warp_affine(crop, inverse_affine(M), (out_shape[0], out_shape[1]), border=border)


# ----------------------------------------------------------------------------------------------- torch version


def estimate_similarity_torch(src_pts, dst_pts):
    """Differentiable least-squares similarity: (B, N, 2), (B or 1, N, 2) tensors -> (B, 2, 3).

    Closed form of min over a, b, t of sum ||dst - [[a, -b], [b, a]] src - t||^2 (equal to Umeyama in 2-D).
    """
    import torch

    if src_pts.ndim != 3 or src_pts.shape[-1] != 2:
        raise ValueError(f"src_pts must be (B, N, 2), got shape {tuple(src_pts.shape)}")
    dst_pts = torch.as_tensor(dst_pts, dtype=src_pts.dtype, device=src_pts.device)
    if dst_pts.ndim == 2:
        dst_pts = dst_pts[None]
    src, dst = torch.broadcast_tensors(src_pts, dst_pts)
    mu_s, mu_d = src.mean(1, keepdim=True), dst.mean(1, keepdim=True)
    sc, dc = src - mu_s, dst - mu_d
    ss = (sc**2).sum((1, 2)).clamp_min(1e-12)  # (B,)
    a = (sc * dc).sum((1, 2)) / ss
    b = (sc[..., 0] * dc[..., 1] - sc[..., 1] * dc[..., 0]).sum(1) / ss
    lin = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], -2)  # (B, 2, 2)
    t = mu_d[:, 0] - (lin @ mu_s[:, 0, :, None])[..., 0]
    return torch.cat([lin, t[..., None]], -1)


def inverse_affine_torch(M):
    """(B, 2, 3) -> (B, 2, 3) inverse, differentiable."""
    import torch

    a_inv = torch.linalg.inv(M[..., :2])
    return torch.cat([a_inv, -(a_inv @ M[..., 2:])], -1)


def _opencv_coords(inv, out_h: int, out_w: int, dtype):
    """Source pixel coordinates exactly as cv2.warpAffine computes them: (B, out_h*out_w, 2), no gradient.

    OpenCV evaluates M^-1 in fixed point with AB_BITS = 10, rounding the row part and the column part
    separately, then keeps INTER_BITS = 5 fractional bits (a 1/32 px grid). Matching that grid (not just
    rounding the exact coordinate to 1/32) is what makes the torch warp agree with OpenCV to float precision.
    """
    import torch

    inv = inv.detach().to(dtype)
    xs = torch.arange(out_w, dtype=dtype, device=inv.device)
    ys = torch.arange(out_h, dtype=dtype, device=inv.device)
    col = torch.round(inv[:, :, None, 0:1] * xs[None, None, :, None] * _AB_SCALE)  # (B, 2, W, 1)
    row = torch.round((inv[:, :, None, 1:2] * ys[None, None, :, None] + inv[:, :, None, 2:3]) * _AB_SCALE)
    fixed = row[:, :, :, None, 0] + _AB_SCALE // _INTER_TAB // 2 + col[:, :, None, :, 0]  # (B, 2, H, W)
    coords = torch.floor(fixed / (_AB_SCALE // _INTER_TAB)) / _INTER_TAB
    return coords.flatten(2).transpose(1, 2)


def warp_affine_torch(
    images,
    M,
    out_size: tuple[int, int],
    border: str = "constant",
    border_value: float = 0.0,
    match_opencv: bool = True,
):
    """Torch twin of `warp_affine`: images (B, C, H, W), M (B, 2, 3) or (2, 3) -> (B, C, out_h, out_w).

    Bilinear and differentiable w.r.t. `images` and `M`. With `match_opencv` the sampling positions are snapped
    to OpenCV's fixed-point grid (straight-through, so the gradient w.r.t. M is that of the exact positions).
    """
    import torch
    import torch.nn.functional as F

    if border not in _TORCH_BORDERS:
        raise ValueError(f"unknown border mode {border!r}; allowed: {', '.join(_TORCH_BORDERS)}")
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    padding, align_corners = _TORCH_BORDERS[border]
    b, _, h, w = images.shape
    out_h, out_w = int(out_size[0]), int(out_size[1])
    dtype = images.dtype if images.is_floating_point() else torch.float32
    device = images.device
    wide = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
    M = torch.as_tensor(M, device=device)
    if M.ndim == 2:
        M = M[None]
    if M.shape[-2:] != (2, 3) or M.shape[0] not in (1, b):
        raise ValueError(f"M must be (2, 3) or (B={b}, 2, 3), got shape {tuple(M.shape)}")
    inv = inverse_affine_torch(M.to(wide)).expand(b, 2, 3)  # (B, 2, 3) crop pixels -> image pixels
    gy, gx = torch.meshgrid(
        torch.arange(out_h, dtype=wide, device=device), torch.arange(out_w, dtype=wide, device=device), indexing="ij"
    )
    grid = torch.stack([gx, gy, torch.ones_like(gx)], -1).reshape(1, -1, 3)  # (1, P, 3) output pixel centres
    src = grid @ inv.transpose(1, 2)  # (B, P, 2) exact source pixel coordinates
    if match_opencv:
        src = src + (_opencv_coords(inv, out_h, out_w, wide) - src).detach()
    size = torch.tensor([w, h], dtype=wide, device=device)
    norm = 2 * src / (size - 1) - 1 if align_corners else (2 * src + 1) / size - 1
    # Half-precision sampling: bf16 holds a normalised coordinate to ~1/256 (a pixel at 512), and CPU grid_sample in
    # bf16 returned values of 1e34 on random input (measured, torch 2.14): sample in float32, return in `dtype`.
    work = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    norm = norm.to(work).reshape(b, out_h, out_w, 2)
    x = images.to(work)
    if border == "constant" and border_value != 0:  # zeros padding of (x - v), shifted back, pads with v
        out = F.grid_sample(x - border_value, norm, "bilinear", padding, align_corners) + border_value
    else:
        out = F.grid_sample(x, norm, mode="bilinear", padding_mode=padding, align_corners=align_corners)
    return out.to(dtype)


def align_faces_torch(
    images,
    points5=None,
    template: str | np.ndarray = "arcface",
    size: int = 112,
    matrices=None,
    border: str = "constant",
    border_value: float = 0.0,
    match_opencv: bool = True,
):
    """Differentiable batch alignment: images (B, 3, H, W) with points5 (B, 5, 2) or matrices (B, 2, 3).

    The second argument may hold either (told apart by shape), or name `matrices=`. Returns crops (B, 3, size, size). Gradients flow to `images` and, when the matrices are estimated here,
    to `points5`. Matches `align_face` / `cv2.warpAffine` with the same border (see module notes).
    """
    import torch

    if matrices is None and points5 is not None and tuple(np.shape(points5)[-2:]) == (2, 3):
        points5, matrices = None, points5  # matrices given positionally
    if (points5 is None) == (matrices is None):
        raise ValueError("align_faces_torch: give exactly one of points5 or matrices")
    if matrices is None:
        pts = torch.as_tensor(points5, device=images.device)
        if pts.ndim != 3 or pts.shape[-1] != 2:
            raise ValueError(f"points5 must be (B, 5, 2), got shape {tuple(pts.shape)}")
        wide = torch.float32 if images.device.type == "mps" else torch.float64  # float32 M flips OpenCV's grid
        dst = torch.as_tensor(_template(template, size), dtype=wide, device=images.device)
        if dst.shape[0] != pts.shape[1]:
            raise ValueError(f"points5 has {pts.shape[1]} points but the template has {dst.shape[0]}")
        matrices = estimate_similarity_torch(pts.to(wide), dst)
    return warp_affine_torch(
        images, matrices, (size, size), border=border, border_value=border_value, match_opencv=match_opencv
    )
