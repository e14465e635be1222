"""Image I/O for honestface: read any image file a user may have, write results safely, convert to tensors.

Conventions (shared by the whole library):
- `read_image` returns float32 RGB (H, W, 3) in [0, 1]. 8-bit data is divided by 255, 16-bit data by 65535
  (its precision is kept, never truncated to 8 bit), float data (TIFF) is clipped to [0, 1] (NaN -> 0), and
  32-bit integer data (Pillow mode "I") is treated like 16 bit and clipped. Gray is replicated to 3 channels.
  The EXIF orientation tag is applied. Multi-frame files (TIFF pages, animated WebP) give their first frame.
- Alpha (RGBA, LA, palette or gray/RGB with a tRNS transparency): `alpha="white"` (default, our choice: what
  a viewer shows on a white page) or `"black"` composites the colour on that background; `"drop"` keeps the
  stored colour. `return_alpha=True` also returns alpha as (H, W) float32 (ones when the file has none).
- Decoding uses Pillow. OpenCV is used for what Pillow decodes lossily or not at all: Pillow opens 16-bit RGB,
  RGBA and gray+alpha PNG/TIFF as 8-bit images (checked with Pillow 13), and cannot open multi-channel float
  TIFF. The Pillow decode still runs first, so a damaged file is caught by Pillow's strict checks.
- A truncated file is an error, never a partially decoded image: Pillow's global `ImageFile.LOAD_TRUNCATED_IMAGES`
  is forced off while we decode (if some other library switched it on, we switch it back after our read).
- Errors are one line and name the file: FileNotFoundError for a missing file, `ImageReadError` (a ValueError)
  for anything else that cannot be read.
- `write_image` writes PNG (8 or 16 bit), JPEG (4:4:4 chroma, our choice for restoration outputs) or WebP
  (lossless at quality 100). It writes a hidden temp file in the target directory and `os.replace`s it, so a
  failure never leaves a half-written file or touches an existing one. It refuses to overwrite an existing
  file unless `overwrite=True` (FileExistsError): the project rule is to never overwrite inputs.
- Tensors: `to_tensor` gives (3, H, W) float32 in `value_range` ([-1, 1] by default, the diffusion/VAE range);
  `from_tensor` inverts it. `write_image` and `to_numpy` read tensors as [0, 1]. torch is imported lazily.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

__all__ = [
    "IMAGE_EXTENSIONS", "ImageReadError", "from_tensor", "list_images", "read_image", "to_numpy", "to_tensor",
    "write_image",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
_WRITE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
_ALPHA_MODES = ("white", "black", "drop")
_DEEP_GRAY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_TRUNCATION_LOCK = threading.Lock()


class ImageReadError(ValueError):
    """A file exists but is not a (complete) image we can decode."""


@contextlib.contextmanager
def _strict_truncation():
    """Make sure Pillow raises on truncated data instead of padding the image (the flag is process-global)."""
    if not ImageFile.LOAD_TRUNCATED_IMAGES:  # the normal case: nothing to change, no lock taken
        yield
        return
    with _TRUNCATION_LOCK:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = True


def _scale(a: np.ndarray, name: str) -> np.ndarray:
    """Integer or float array -> float32 in [0, 1] by its dtype's range."""
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype == np.uint16:
        return a.astype(np.float32) / 65535.0
    if a.dtype.kind == "f":
        return np.clip(np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    raise ImageReadError(f"cannot read image {name}: unsupported sample type {a.dtype}")


def _pil_to_array(im: Image.Image) -> np.ndarray:
    """PIL image of any mode -> (H, W, C) float32 in [0, 1], C = 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA)."""
    if im.mode in _DEEP_GRAY_MODES:
        a = np.clip(np.asarray(im, dtype=np.float32) / 65535.0, 0.0, 1.0)
    elif im.mode == "F":
        a = _scale(np.asarray(im, dtype=np.float32), str(getattr(im, "filename", "")))
    else:
        has_alpha = "A" in im.getbands() or "a" in im.getbands() or "transparency" in im.info
        if im.mode in ("1", "L", "LA", "La") and "transparency" not in im.info:
            target = "LA" if has_alpha else "L"
        else:
            target = "RGBA" if has_alpha else "RGB"
        a = np.asarray(im if im.mode == target else im.convert(target), dtype=np.float32) / 255.0
    return a[..., None] if a.ndim == 2 else a


def _cv2_decode(path: Path) -> np.ndarray:
    """Decode with OpenCV keeping bit depth -> (H, W, C) float32 in [0, 1] in RGB(A) order."""
    import cv2

    try:
        a = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as e:
        raise ImageReadError(f"cannot read image {path}: OpenCV: {str(e).strip().splitlines()[-1]}") from None
    if a is None:
        raise ImageReadError(f"cannot read image {path}: not a recognised or complete image file")
    if a.ndim == 3 and a.shape[2] in (3, 4):
        a = a[..., [2, 1, 0, 3][: a.shape[2]]]  # BGR(A) -> RGB(A)
    a = _scale(a, str(path))
    return a[..., None] if a.ndim == 2 else a


def _orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to (H, W, C), as Pillow's ImageOps.exif_transpose does."""
    ops = {
        2: lambda x: x[:, ::-1], 3: lambda x: x[::-1, ::-1], 4: lambda x: x[::-1],
        5: lambda x: x.swapaxes(0, 1), 6: lambda x: np.rot90(x, -1),
        7: lambda x: x[::-1, ::-1].swapaxes(0, 1), 8: lambda x: np.rot90(x, 1),
    }
    return np.ascontiguousarray(ops[orientation](a)) if orientation in ops else a


def _split_alpha(a: np.ndarray, alpha: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(H, W, C) -> RGB (H, W, 3) composited as `alpha` says, and alpha (H, W) or None."""
    if alpha not in _ALPHA_MODES:
        raise ValueError(f"alpha must be one of {_ALPHA_MODES}, got {alpha!r}")
    a_ch = None
    if a.shape[-1] in (2, 4):
        a, a_ch = a[..., :-1], a[..., -1]
    rgb = np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a
    if a_ch is not None and alpha != "drop":
        w = a_ch[..., None]
        rgb = rgb * w + (1.0 - w) * (1.0 if alpha == "white" else 0.0)
    return np.ascontiguousarray(rgb, dtype=np.float32), a_ch


def read_image(
    path: str | os.PathLike, *, alpha: str = "white", return_alpha: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Read an image file -> float32 RGB (H, W, 3) in [0, 1] (and alpha (H, W) if `return_alpha`)."""
    path = Path(path)
    if alpha not in _ALPHA_MODES:
        raise ValueError(f"alpha must be one of {_ALPHA_MODES}, got {alpha!r}")
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {path}")
    if path.is_dir():
        raise ImageReadError(f"cannot read image {path}: it is a directory")
    if path.stat().st_size == 0:
        raise ImageReadError(f"cannot read image {path}: the file is empty")
    try:
        with _strict_truncation(), Image.open(path) as im:
            rawmode = im.tile[0][3] if im.tile else ""
            rawmode = rawmode if isinstance(rawmode, str) else rawmode[0]
            im.load()  # full decode now: raises on truncated or corrupt data
            orientation = int(im.getexif().get(0x0112, 1))
            deep = im.format in ("PNG", "TIFF") and im.mode in ("RGB", "RGBA") and ";16" in rawmode
            a = _cv2_decode(path) if deep else _pil_to_array(im)  # (H, W, C)
    except UnidentifiedImageError:
        a, orientation = _cv2_decode(path), 1  # formats Pillow does not know (e.g. float RGB TIFF)
    except ImageReadError:
        raise
    except Exception as e:  # OSError, SyntaxError, DecompressionBombError, ... from Pillow
        msg = " ".join(str(e).split()) or type(e).__name__
        raise ImageReadError(f"cannot read image {path}: {msg}") from e
    rgb, a_ch = _split_alpha(_orient(a, orientation), alpha)
    if not return_alpha:
        return rgb
    return rgb, (np.ones(rgb.shape[:2], np.float32) if a_ch is None else np.ascontiguousarray(a_ch))


def _as_array(image: Any, value_range: Sequence[float] = (0.0, 1.0)) -> np.ndarray:
    """numpy / torch / PIL image -> (H, W, C) float32 in [0, 1], C in 1..4. Float data is read in `value_range`;
    uint8 and uint16 by their dtype. Tensors are (C, H, W) or (1, C, H, W)."""
    if isinstance(image, Image.Image):
        return _pil_to_array(image)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        if t.ndim != 3 or t.shape[0] not in (1, 2, 3, 4):
            raise ValueError(f"expected a tensor (C, H, W) or (1, C, H, W) with C in 1..4, got {tuple(image.shape)}")
        t = t.float() if t.is_floating_point() else t
        image = t.permute(1, 2, 0).numpy()  # (H, W, C)
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy array, torch tensor or PIL image, got {type(image).__name__}")
    a = image[..., None] if image.ndim == 2 else image
    if a.ndim != 3 or a.shape[-1] not in (1, 2, 3, 4) or 0 in a.shape:
        raise ValueError(f"expected an image (H, W) or (H, W, C) with C in 1..4, got shape {image.shape}")
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise ValueError("image contains NaN or inf")
        lo, hi = float(value_range[0]), float(value_range[1])
        return np.clip((a.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0)
    if a.dtype in (np.uint8, np.uint16):
        return _scale(a, "")
    raise ValueError(f"unsupported image dtype {a.dtype} (use float in [0, 1], uint8 or uint16)")


def _encode(a: np.ndarray, fmt: str, quality: int, bit_depth: int) -> bytes:
    """(H, W, C) float32 in [0, 1] -> encoded file bytes."""
    if a.shape[-1] == 2:  # gray + alpha -> RGBA (every writer below supports it)
        a = np.concatenate([np.repeat(a[..., :1], 3, axis=-1), a[..., 1:]], axis=-1)
    if fmt == "JPEG" and a.shape[-1] == 4:
        raise ValueError("JPEG has no alpha channel; drop it or composite it first (e.g. read_image(alpha=...))")
    if bit_depth == 16:
        import cv2

        q = np.round(a * 65535.0).astype(np.uint16)
        q = q[..., 0] if q.shape[-1] == 1 else q[..., [2, 1, 0, 3][: q.shape[-1]]]  # RGB(A) -> BGR(A)
        ok, buf = cv2.imencode(".png", q)
        if not ok:
            raise ValueError("OpenCV could not encode the 16-bit PNG")
        return buf.tobytes()
    q = np.round(a * 255.0).astype(np.uint8)
    im = Image.fromarray(q[..., 0] if q.shape[-1] == 1 else q)
    kwargs: dict[str, Any] = {}
    if fmt == "JPEG":
        kwargs = {"quality": quality, "subsampling": 0}
    elif fmt == "WEBP":
        kwargs = {"quality": quality, "lossless": quality >= 100}
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def atomic_write_bytes(path: str | os.PathLike, data: bytes, overwrite: bool = False) -> Path:
    """Write `data` to `path` all at once: a temp file in the same folder, fsync, then rename into place.

    Readers never see a half-written file; on failure the temp file is removed and an existing `path` is left
    as it was. Without `overwrite`, an existing `path` raises FileExistsError. Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 & ~umask, unlike mkstemp's 0o600
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
            return path
        try:
            os.link(tmp, path)  # atomic create-if-absent: never clobbers a file that appeared meanwhile
        except FileExistsError:
            raise FileExistsError(f"refusing to overwrite existing file {path} (pass overwrite=True)") from None
        except OSError:  # no hard links on this file system
            if path.exists():
                raise FileExistsError(f"refusing to overwrite existing file {path} (pass overwrite=True)") from None
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, overwrite: bool = True) -> Path:
    """`atomic_write_bytes` for UTF-8 text (configs, sidecars, manifests); replaces by default."""
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def write_image(
    path: str | os.PathLike, image: Any, *, quality: int = 95, bit_depth: int = 8, overwrite: bool = False
) -> Path:
    """Write an image atomically (.png, .jpg/.jpeg, .webp) and return its path. Parent directories are created.

    image: float (H, W, 3) / (H, W) / (H, W, 4) in [0, 1], uint8 or uint16 numpy, a torch tensor (3, H, W) or
    (1, 3, H, W) in [0, 1], or a PIL image. `bit_depth=16` writes a 16-bit PNG. Existing files are kept unless
    `overwrite=True` (FileExistsError).
    """
    path = Path(path)
    fmt = _WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot write {path}: unsupported extension {path.suffix!r} (use .png, .jpg, .jpeg, .webp)")
    if bit_depth not in (8, 16) or (bit_depth == 16 and fmt != "PNG"):
        raise ValueError(f"cannot write {path}: bit_depth={bit_depth} (8, or 16 for .png only)")
    if not 1 <= quality <= 100:
        raise ValueError(f"cannot write {path}: quality must be in 1..100, got {quality}")
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a directory")
    if path.exists() and not overwrite:
        raise FileExistsError(f"refusing to overwrite existing file {path} (pass overwrite=True)")
    try:
        data = _encode(_as_array(image), fmt, quality, bit_depth)
    except (TypeError, ValueError) as e:
        raise type(e)(f"cannot write {path}: {e}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data, overwrite)
    return path


def to_numpy(image: Any, value_range: Sequence[float] = (0.0, 1.0), alpha: str = "white") -> np.ndarray:
    """Any image (numpy, tensor (C, H, W) / (1, C, H, W), PIL) -> float32 RGB (H, W, 3) in [0, 1].
    Float input is read in `value_range`; alpha is handled as in `read_image`."""
    return _split_alpha(_as_array(image, value_range), alpha)[0]


def from_tensor(tensor: Any, value_range: Sequence[float] = (-1.0, 1.0)) -> np.ndarray:
    """Inverse of `to_tensor`: tensor (3, H, W) or (1, 3, H, W) in `value_range` -> float32 (H, W, 3) in [0, 1]."""
    return to_numpy(tensor, value_range)


def to_tensor(image: Any, value_range: Sequence[float] = (-1.0, 1.0), device: Any = None):
    """Image (path, numpy, PIL, tensor in [0, 1]) -> torch float32 (3, H, W) in `value_range` on `device`."""
    import torch

    rgb = read_image(image) if isinstance(image, (str, os.PathLike)) else to_numpy(image)  # (H, W, 3)
    lo, hi = float(value_range[0]), float(value_range[1])
    t = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))  # (3, H, W)
    return (t * (hi - lo) + lo).to(device=device)


def list_images(
    folder: str | os.PathLike, recursive: bool = True, extensions: Sequence[str] = IMAGE_EXTENSIONS
) -> list[Path]:
    """Sorted image files in `folder` (by extension, case-insensitive), skipping hidden files and directories."""
    root = Path(folder)
    if not root.exists():
        raise FileNotFoundError(f"image folder not found: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {root}")
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")] if recursive else []
        found += [Path(dirpath) / f for f in filenames if not f.startswith(".") and Path(f).suffix.lower() in exts]
    return sorted(found)
