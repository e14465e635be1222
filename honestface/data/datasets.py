"""Datasets of aligned faces for training, testing and inference; the shared loading rules they follow.

Task: feed the trainer and the pipeline (HonestFace, arXiv 2505.18469; VSPBFR, arXiv 2412.21042) with aligned
face crops. `PairedFaceDataset` serves (HQ, LQ) pairs from an FFHQ-style folder; `collate_faces` batches the
samples of every dataset. The reference datasets (`ReferenceFaceDataset` for training and testing,
`InferenceFolderDataset` for LQ inputs with optional references) live in `honestface.data.references` and follow
the rules below; both can also be imported from here.
The FFHQ layout (any nesting of `*.png`) is that of NVlabs/ffhq-dataset; everything else here is our choice:

- Images are float32 (3, H, W) in [0, 1] (the model side maps them to [-1, 1]).
- Resize to `resolution`: a non-square image is first centre-cropped to its shorter side; then a larger image is
  shrunk with area averaging (exact box filter for FFHQ's 1024 -> 512) and a smaller one enlarged bicubically
  (clamped to [0, 1]). Sidecar landmarks (`honestface.data.sidecar`) follow the same crop and scale, with the
  pixel-centre exact mapping x' = (x - x0 + 0.5) * s - 0.5 (pixel (i, j) has its centre at x = j, y = i).
- LQ on the fly: `degradation(hq[None], seeds=[sample_seed(seed, index, epoch)])`, so a (seed, index, epoch)
  triple always gives the same LQ, in any worker. `set_epoch` changes the draws between epochs. When the draw
  made the LQ gray, the HQ is made gray too (GFPGAN's `gt_gray`).
- Bad files: at construction every file's header is probed (cheap: no pixel decode); an unreadable file, a text
  file named `.png`, an empty file or an HQ image whose shorter side is below `min_size` (default resolution // 4:
  it would be upscaled more than 4x, which is no longer "high quality") is dropped with one warning naming the
  files, and listed in `dataset.skipped` as (path, reason). A file that only fails when decoded (a truncated PNG)
  is found in `__getitem__`: it is recorded, warned about, and the next valid sample (index + 1, ...) is returned
  instead, so an epoch never stops half way. DataLoader workers hold their own copy of the dataset, so such a
  sample also carries `skipped`, which `collate_faces` gathers into `batch["skipped"]` for the main process.
- A folder with no valid image at all is a ValueError naming it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from honestface.data.sidecar import read_sidecar
from honestface.io import ImageReadError, list_images, read_image

__all__ = [
    "BadImageError", "FaceFolderBase", "PairedFaceDataset", "collate_faces", "load_face", "probe_image", "resize_face",
    "scan_images",
]

_MAX_BAD_READS = 64  # consecutive bad files tolerated by one __getitem__ before giving up
_NAN_PADDED = ("landmarks", "points5", "ref_landmarks", "ref_points5")  # optional float arrays padded with NaN
_MASKED = ("landmarks", "points5")  # ... that also get a `has_<key>` mask in a batch


class BadImageError(ValueError):
    """A dataset file that cannot be used (unreadable, truncated, too small)."""


# ----------------------------------------------------------------------------------------------- image helpers


def _square_geometry(h: int, w: int, resolution: int | None) -> tuple[int, int, int, int, float, float]:
    """Centre crop and scale for an (h, w) image -> (x0, y0, crop_w, crop_h, scale_x, scale_y)."""
    if resolution is None:
        return 0, 0, w, h, 1.0, 1.0
    side = min(h, w)
    x0, y0 = (w - side) // 2, (h - side) // 2
    return x0, y0, side, side, resolution / side, resolution / side


def resize_face(image: np.ndarray, resolution: int | None) -> torch.Tensor:
    """(H, W, 3) float in [0, 1] -> (3, R, R) float32: centre crop to a square, area shrink or bicubic enlarge.

    `resolution=None` keeps the image as it is.
    """
    t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))  # (3, H, W)
    if resolution is None:
        return t
    x0, y0, side, _, _, _ = _square_geometry(t.shape[1], t.shape[2], resolution)
    t = t[:, y0:y0 + side, x0:x0 + side]
    if side == resolution:
        return t.contiguous()
    mode = "area" if side > resolution else "bicubic"
    kwargs = {} if mode == "area" else {"align_corners": False}
    out = F.interpolate(t[None], size=(resolution, resolution), mode=mode, **kwargs)[0]
    return out.clamp_(0.0, 1.0)


def _map_points(points: np.ndarray, geometry: tuple[int, int, int, int, float, float]) -> np.ndarray:
    """(P, 2) points in image pixels -> the same points after `_square_geometry`'s crop and resize."""
    x0, y0, _, _, sx, sy = geometry
    out = np.asarray(points, dtype=np.float64).copy()
    out[:, 0] = (out[:, 0] - x0 + 0.5) * sx - 0.5
    out[:, 1] = (out[:, 1] - y0 + 0.5) * sy - 0.5
    return out


def probe_image(path: Path, min_size: int | None = None) -> str | None:
    """Cheap header check of an image file: None if it looks usable, else the reason (no pixel decode)."""
    try:
        if path.stat().st_size == 0:
            return "the file is empty"
        with Image.open(path) as im:
            w, h = im.size
    except UnidentifiedImageError:  # not a Pillow format: read_image may still decode it with OpenCV
        try:
            h, w = read_image(path).shape[:2]
        except (ImageReadError, OSError) as e:
            return str(e)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:  # a damaged header
        return " ".join(str(e).split()) or type(e).__name__
    if min_size is not None and min(h, w) < min_size:
        return f"too small: {w}x{h}, the shorter side must be >= {min_size}"
    return None


def load_image(path: Path, min_size: int | None) -> np.ndarray:
    """read_image with the dataset's rules; raises BadImageError (with the reason) for any unusable file."""
    try:
        image = read_image(path)  # (H, W, 3) in [0, 1]
    except (ImageReadError, OSError) as e:
        raise BadImageError(str(e)) from e
    if min_size is not None and min(image.shape[:2]) < min_size:
        h, w = image.shape[:2]
        raise BadImageError(f"too small: {w}x{h}, the shorter side must be >= {min_size}")
    return image


def load_face(
    path: Path, resolution: int | None, min_size: int | None = None, with_sidecar: bool = True
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Read one face file -> ((3, R, R) tensor, sidecar fields mapped to the resized image)."""
    image = load_image(path, min_size)
    h, w = image.shape[:2]
    fields = _sidecar_fields(path, h, w, _square_geometry(h, w, resolution)) if with_sidecar else {}
    return resize_face(image, resolution), fields


def _sidecar_fields(path: Path, h: int, w: int, geometry: tuple) -> dict[str, Any]:
    """`landmarks` (P, 2), `points5` (5, 2) float32 tensors in output pixels and `scheme` from the sidecar."""
    try:
        meta = read_sidecar(path)
    except ValueError as e:
        warnings.warn(f"ignoring the sidecar of {path}: {e}", stacklevel=3)
        return {}
    if meta is None:
        return {}
    size = meta.get("size")
    fx = fy = 1.0  # a sidecar written for another size of the same crop: bring its points to this file's pixels
    if size is not None and len(size) == 2 and min(size) > 0 and (int(size[0]), int(size[1])) != (h, w):
        fx, fy = w / float(size[1]), h / float(size[0])
    fields: dict[str, Any] = {}
    for key in ("landmarks", "points5"):
        pts = meta.get(key)
        if pts is None:
            continue
        if pts.ndim != 2 or pts.shape[1] != 2 or not np.isfinite(pts).all():
            warnings.warn(f"ignoring '{key}' of the sidecar of {path}: expected finite (P, 2), got {pts.shape}",
                          stacklevel=3)
            continue
        pts = np.stack([(pts[:, 0] + 0.5) * fx - 0.5, (pts[:, 1] + 0.5) * fy - 0.5], axis=1)
        fields[key] = torch.from_numpy(_map_points(pts, geometry).astype(np.float32))  # (P, 2)
    if fields and isinstance(meta.get("scheme"), str):
        fields["scheme"] = meta["scheme"]
    return fields


def scan_images(
    paths: Sequence[Path], min_size: int | None, check_files: bool, what: str
) -> tuple[list[Path], list[tuple[str, str]]]:
    """Probe every file -> (good paths, [(path, reason)] of the dropped ones), with one warning naming them."""
    if not check_files:
        return list(paths), []
    good, bad = [], []
    for p in paths:
        reason = probe_image(p, min_size)
        if reason is None:
            good.append(p)
        else:
            bad.append((str(p), reason))
    if bad:
        named = "; ".join(f"{p} ({r})" for p, r in bad[:20]) + (f"; and {len(bad) - 20} more" if len(bad) > 20 else "")
        warnings.warn(f"{what}: skipping {len(bad)} bad image file(s): {named}", stacklevel=3)
    return good, bad


class FaceFolderBase(Dataset):
    """Bookkeeping shared by the datasets: bad files found while loading, replacement by the next valid sample."""

    root: Path
    skipped: list[tuple[str, str]]

    def __init__(self) -> None:
        self.skipped = []
        self.epoch = 0
        self._bad: dict[str, str] = {}

    def set_epoch(self, epoch: int) -> None:
        """Draw other degradations / references from now on (call before creating the epoch's iterator)."""
        self.epoch = int(epoch)

    def _mark_bad(self, path: Path, reason: str, found: list[tuple[str, str]]) -> None:
        key = str(path)
        if key not in self._bad:
            self._bad[key] = reason
            self.skipped.append((key, reason))
            found.append((key, reason))
            warnings.warn(f"skipping bad image file {key}: {reason}", stacklevel=4)

    def _is_bad(self, path: Path) -> bool:
        return str(path) in self._bad

    def _target(self, j: int, path: Path, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """Sample j's HQ target and its LQ (precomputed in `lq_paths`, or degraded with `seed`), plus its sidecar
        fields. Needs the subclass attributes resolution, min_size, with_sidecar, lq_paths, degradation."""
        hq, fields = load_face(path, self.resolution, self.min_size, self.with_sidecar)  # (3, R, R)
        sample: dict[str, Any] = {"hq": hq, "index": j, "path": str(path), "seed": seed}
        if self.lq_paths is not None:
            try:
                sample["lq"] = resize_face(load_image(self.lq_paths[j], None), self.resolution)
            except BadImageError as e:
                raise with_path(e, self.lq_paths[j]) from e
        elif self.degradation is not None:
            degrade_sample(sample, self.degradation, seed)
        return sample, fields

    def _check_index(self, index: int) -> int:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} samples")
        return index % n

    def _first_valid(self, index: int, paths: Callable[[int], Sequence[Path]], make: Callable[[int], dict]) -> dict:
        """make(j) for j = index, index + 1, ... (mod len) until one works; files that fail are recorded.

        `paths(j)` lists the files sample j must be able to read (a known-bad one skips j without a try).
        """
        found: list[tuple[str, str]] = []
        n, tries = len(self), 0
        for step in range(n):
            j = (index + step) % n
            if any(self._is_bad(p) for p in paths(j)):
                continue
            try:
                sample = make(j)
            except BadImageError as e:
                failed = getattr(e, "path", None) or paths(j)[0]
                self._mark_bad(Path(failed), str(e), found)
                tries += 1
                if tries >= _MAX_BAD_READS:
                    break
                continue
            if found or "skipped" in sample:
                sample["skipped"] = found + sample.get("skipped", [])
            return sample
        raise RuntimeError(f"{self.root}: no readable sample found from index {index} "
                           f"({len(self.skipped)} bad files so far, see dataset.skipped)")


def with_path(error: BadImageError, path: Path) -> BadImageError:
    """Tag a BadImageError with the file it is about (for `_first_valid`)."""
    error.path = path  # type: ignore[attr-defined]
    return error


def degrade_sample(sample: dict[str, Any], degradation: Any, seed: int) -> None:
    """Add `lq` (3, H, W) and `degradation` (the drawn parameters, scalars) made from `sample["hq"]`. When the draw
    made the LQ gray, the HQ target is made gray too (GFPGAN's `gt_gray`, VSPBFR): colour cannot be restored."""
    hq = sample["hq"]  # (3, H, W)
    with torch.no_grad():
        out = degradation(hq[None], seeds=[seed])
    params = {k: v[0].cpu() for k, v in out.params.items()}
    if "gray" in params and bool(params["gray"]):
        from honestface.data.degradation import rgb_to_gray

        sample["hq"] = rgb_to_gray(hq[None])[0]
    sample["lq"], sample["degradation"] = out.lq[0].clamp(0.0, 1.0), params


def index_lq_folder(lq_root: Path) -> tuple[dict[str, Path], dict[str, list[Path]]]:
    """LQ files by relative path without suffix ('a/b/0001') and by stem ('0001')."""
    by_rel: dict[str, Path] = {}
    by_stem: dict[str, list[Path]] = {}
    for p in list_images(lq_root, recursive=True):
        by_rel[p.relative_to(lq_root).with_suffix("").as_posix()] = p
        by_stem.setdefault(p.stem, []).append(p)
    return by_rel, by_stem


def find_lq(hq: Path, hq_root: Path, lq_root: Path, index: tuple[dict[str, Path], dict[str, list[Path]]]) -> Path:
    """The LQ file of an HQ file: same relative path and stem (any image extension), else a unique stem match."""
    rel = hq.relative_to(hq_root).with_suffix("")
    by_rel, by_stem = index
    if rel.as_posix() in by_rel:
        return by_rel[rel.as_posix()]
    same_stem = by_stem.get(hq.stem, [])
    if len(same_stem) == 1:
        return same_stem[0]
    why = f"{len(same_stem)} files named {hq.stem}.* elsewhere, none at that path" if same_stem else "not found"
    raise FileNotFoundError(f"no LQ image for {hq}: expected {lq_root / rel}.<png|jpg|...> ({why})")


# ----------------------------------------------------------------------------------------------------- datasets


class PairedFaceDataset(FaceFolderBase):
    """HQ faces from a folder (any nesting), with LQ made on the fly by a degradation or read from `lq_root`.

    Sample: `hq` (3, R, R), `lq` (3, R, R) (absent without degradation and lq_root), `index`, `path`, `seed`,
    `degradation` (drawn parameters, with a degradation), and from the sidecar `landmarks` (P, 2), `points5` (5, 2)
    in output pixels and `scheme`. Precomputed LQ images are resized to `resolution` like the HQ ones.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        resolution: int = 512,
        degradation: Any | None = None,
        lq_root: str | os.PathLike | None = None,
        seed: int = 0,
        recursive: bool = True,
        with_sidecar: bool = True,
        min_size: int | None = None,
        check_files: bool = True,
    ) -> None:
        super().__init__()
        if resolution <= 0:
            raise ValueError(f"resolution must be > 0, got {resolution}")
        if degradation is not None and lq_root is not None:
            raise ValueError("give either a degradation or lq_root (precomputed LQ), not both")
        self.root = Path(root)
        self.resolution, self.degradation, self.seed = int(resolution), degradation, int(seed)
        self.with_sidecar = with_sidecar
        self.min_size = max(1, self.resolution // 4) if min_size is None else int(min_size)
        files = list_images(self.root, recursive=recursive)
        if not files:
            raise ValueError(f"no image files in {self.root}")
        self.paths, self.skipped = scan_images(files, self.min_size, check_files, str(self.root))
        if not self.paths:
            raise ValueError(f"no valid image in {self.root}: all {len(files)} files are unreadable or too small")
        self.lq_root = None if lq_root is None else Path(lq_root)
        self.lq_paths: list[Path] | None = None
        if self.lq_root is not None:
            index = index_lq_folder(self.lq_root)
            self.lq_paths = [find_lq(p, self.root, self.lq_root, index) for p in self.paths]

    def __len__(self) -> int:
        return len(self.paths)

    def _files(self, j: int) -> list[Path]:
        return [self.paths[j]] if self.lq_paths is None else [self.paths[j], self.lq_paths[j]]

    def _make(self, j: int) -> dict[str, Any]:
        from honestface.data.degradation import sample_seed

        sample, fields = self._target(j, self.paths[j], sample_seed(self.seed, j, self.epoch))
        sample.update(fields)
        return sample

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._first_valid(self._check_index(index), self._files, self._make)


# ---------------------------------------------------------------------------------------------------- collation


def _pad_nan(values: list[torch.Tensor | None]) -> torch.Tensor:
    present = [v for v in values if v is not None]
    shape = [max(v.shape[d] for v in present) for d in range(present[0].ndim)]
    out = torch.full((len(values), *shape), float("nan"), dtype=present[0].dtype)
    for i, v in enumerate(values):
        if v is not None:
            out[(i, *(slice(0, s) for s in v.shape))] = v
    return out


def collate_faces(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch samples of the face datasets (use as a DataLoader's `collate_fn`).

    Tensors of one shape are stacked, (B, ...); tensors of different shapes (inference without a resolution) and
    lists (`refs`, `ref_paths`) stay lists; ints become a (B,) tensor; strings and None stay lists. Sidecar
    `landmarks` / `points5` missing in some samples (or of different lengths) are padded with NaN, with a
    `has_landmarks` / `has_points5` (B,) bool mask; `scheme` becomes a list with None. `skipped` pairs of all
    samples are concatenated. Nested dicts (drawn degradation parameters) are collated key by key.
    """
    if not samples:
        raise ValueError("collate_faces needs at least one sample")
    keys = list(dict.fromkeys(k for s in samples for k in s))
    batch: dict[str, Any] = {}
    for key in keys:
        values = [s.get(key) for s in samples]
        if key == "skipped":
            batch[key] = [pair for v in values if v for pair in v]
        elif key in _NAN_PADDED:
            batch[key] = _pad_nan(values)
            if key in _MASKED:
                batch[f"has_{key}"] = torch.tensor([v is not None for v in values])
        elif any(v is None for v in values):
            batch[key] = values
        elif all(isinstance(v, dict) for v in values):
            batch[key] = collate_faces(values)
        elif all(isinstance(v, torch.Tensor) for v in values):
            same = all(v.shape == values[0].shape for v in values)
            batch[key] = torch.stack(values) if same else values
        elif all(isinstance(v, (bool, int, np.integer)) for v in values):
            batch[key] = torch.tensor([int(v) for v in values])
        else:
            batch[key] = values
    return batch


def __getattr__(name: str) -> Any:
    """`ReferenceFaceDataset` and `InferenceFolderDataset` live in `honestface.data.references` (which builds on
    this module); they can be imported from here too."""
    if name in ("ReferenceFaceDataset", "InferenceFolderDataset"):
        from honestface.data import references

        return getattr(references, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
