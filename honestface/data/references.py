"""Reference-based face datasets: one folder per identity, K references of the same person for every target.

Task: the training and test data of reference-based restoration. HonestFace (arXiv 2505.18469) trains and tests
on Reface-HQ (MGFR, ICLR 2025) and CelebRef-HQ (DMDNet, TPAMI 2022; ~1,005 identities, 3-20 images each); ReF-LDM's
FFHQ-Ref uses an identity-disjoint split. All of them store one folder per identity, which is what we read:
`root/<identity>/*.png` (deeper nesting inside an identity folder is allowed). The paper does not say how many
references it samples or how its test split was made; the choices below are ours:

- Every image of a kept identity is a target once per epoch. Its references are other images of the same person,
  never the target itself: in training a random K-subset drawn from (seed, index, epoch); in testing the K images
  that follow the target in sorted order (cyclically), which does not depend on the seed or the epoch, and the LQ
  is drawn with epoch 0, so a test set is the same every time.
- Fewer than K other images: the missing slots are zeros, with `ref_mask` False. Valid references come first.
- Identities with fewer than `min_images` valid images are skipped with a warning (default 2: one reference).
- `split_identities` ranks identities by a seeded SHA-256 hash and puts the first round(n * test_fraction) in the
  test set: stable for a seed, independent of input order, and an identity's rank does not move when others are
  added. Split files hold one identity per line, `#` starts a comment line.
- `InferenceFolderDataset` (LQ inputs of the pipeline) finds the references of each input by the rule of
  `honestface.data.reference_rule` (shared with evaluation).
Loading rules (resize, sidecars, bad files) are those of `honestface.data.datasets`.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from honestface.data.datasets import (
    BadImageError,
    FaceFolderBase,
    find_lq,
    index_lq_folder,
    load_face,
    load_image,
    resize_face,
    scan_images,
)
from honestface.data.reference_rule import resolve_references
from honestface.io import atomic_write_text, list_images

__all__ = [
    "InferenceFolderDataset", "ReferenceFaceDataset", "list_identities", "read_split_file", "split_identities",
    "write_split_file",
]


def split_identities(identities: Iterable[str], test_fraction: float = 0.1, seed: int = 0) -> tuple[list[str], list[str]]:
    """Identity-disjoint split -> (train, test), both sorted. At least one test identity when test_fraction > 0
    and there are two or more identities; at least one train identity when test_fraction < 1."""
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
    ids = sorted(set(identities))
    n = len(ids)
    n_test = round(n * test_fraction)
    if test_fraction > 0 and n >= 2:
        n_test = max(n_test, 1)
    if test_fraction < 1 and n >= 2:
        n_test = min(n_test, n - 1)
    rank = sorted(ids, key=lambda s: hashlib.sha256(f"{seed}\0{s}".encode()).hexdigest())
    test = set(rank[:n_test])
    return [s for s in ids if s not in test], [s for s in ids if s in test]


def read_split_file(path: str | os.PathLike) -> list[str]:
    """Identities listed in a split file (one per line; blank lines and lines starting with '#' are ignored)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: {path}")
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return list(dict.fromkeys(line for line in lines if line and not line.startswith("#")))


def write_split_file(
    path: str | os.PathLike, identities: Iterable[str], comment: str | None = None, overwrite: bool = False
) -> Path:
    """Write identities one per line (an optional `# comment` header); refuses to overwrite unless asked."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"refusing to overwrite existing split file {path} (pass overwrite=True)")
    ids = list(identities)
    for s in ids:
        if not s or s != s.strip() or "\n" in s or s.startswith("#"):
            raise ValueError(f"identity {s!r} cannot be written to a split file (empty, padded, newline or '#')")
    header = "".join(f"# {line}\n" for line in comment.splitlines()) if comment else ""
    return atomic_write_text(path, header + "".join(f"{s}\n" for s in ids))


def list_identities(root: str | os.PathLike) -> list[str]:
    """Identity folder names under `root` (sorted, hidden folders skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"reference dataset folder not found: {root}")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


class ReferenceFaceDataset(FaceFolderBase):
    """Targets with their LQ and K same-identity references, from `root/<identity>/...` folders.

    Sample: `hq` (3, R, R), `lq` (3, R, R) (absent without degradation and lq_root), `refs` (K, 3, R, R),
    `ref_mask` (K,) bool, `identity`, `ref_paths` (the valid ones, in slot order), `index`, `path`, `seed`, the
    target's sidecar fields (`landmarks`, `points5`, `scheme`) and, when some reference has them, `ref_landmarks`
    (K, P, 2) / `ref_points5` (K, 5, 2) with NaN rows for references without (and for padding).
    `lq_root` (optional) holds precomputed LQ targets with the same relative paths (`<identity>/<name>`).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        num_references: int = 4,
        resolution: int = 512,
        degradation: Any | None = None,
        train: bool = True,
        seed: int = 0,
        identities: Sequence[str] | None = None,
        min_images: int = 2,
        lq_root: str | os.PathLike | None = None,
        with_sidecar: bool = True,
        min_size: int | None = None,
        check_files: bool = True,
    ) -> None:
        super().__init__()
        if num_references < 0 or resolution <= 0 or min_images < 1:
            raise ValueError(f"need num_references >= 0, resolution > 0, min_images >= 1; got {num_references}, "
                             f"{resolution}, {min_images}")
        if degradation is not None and lq_root is not None:
            raise ValueError("give either a degradation or lq_root (precomputed LQ), not both")
        self.root = Path(root)
        self.num_references, self.resolution, self.degradation = int(num_references), int(resolution), degradation
        self.train, self.seed, self.with_sidecar = train, int(seed), with_sidecar
        self.min_size = max(1, self.resolution // 4) if min_size is None else int(min_size)
        found = list_identities(self.root)
        loose = list_images(self.root, recursive=False)
        if loose:
            warnings.warn(f"{self.root}: ignoring {len(loose)} image(s) outside identity folders, e.g. {loose[0]}",
                          stacklevel=2)
        if identities is not None:
            wanted = list(dict.fromkeys(identities))
            absent = sorted(set(wanted) - set(found))
            if absent:
                raise ValueError(f"{len(absent)} listed identities have no folder in {self.root}, e.g. {absent[0]!r}")
            found = sorted(wanted)
        self.identities: list[str] = []
        self.images: dict[str, list[Path]] = {}
        too_few = []
        for ident in found:
            paths, bad = scan_images(list_images(self.root / ident, recursive=True), self.min_size, check_files,
                                     str(self.root / ident))
            self.skipped.extend(bad)
            if len(paths) < min_images:
                too_few.append(ident)
                continue
            self.identities.append(ident)
            self.images[ident] = paths
        if too_few:
            warnings.warn(f"{self.root}: skipping {len(too_few)} identities with fewer than {min_images} valid "
                          f"images: {', '.join(too_few[:20])}{' ...' if len(too_few) > 20 else ''}", stacklevel=2)
        if not self.identities:
            raise ValueError(f"no identity in {self.root} has {min_images} or more valid images")
        self.targets = [(ident, k) for ident in self.identities for k in range(len(self.images[ident]))]
        self.lq_paths: list[Path] | None = None
        if lq_root is not None:
            index = index_lq_folder(Path(lq_root))
            self.lq_paths = [find_lq(self.images[i][k], self.root, Path(lq_root), index) for i, k in self.targets]

    def __len__(self) -> int:
        return len(self.targets)

    def _candidates(self, j: int, seed: int) -> list[Path]:
        """The target's other images, in the order references are taken from."""
        ident, k = self.targets[j]
        images = self.images[ident]
        others = images[k + 1:] + images[:k]  # test order: the images after the target, cyclically
        if self.train:
            rng = np.random.default_rng([seed, 0x5EF])  # own stream, independent of the degradation's draws
            others = [others[i] for i in rng.permutation(len(others))]
        return others

    def _references(self, j: int, seed: int, found: list) -> tuple[torch.Tensor, torch.Tensor, list[str], list]:
        K, R = self.num_references, self.resolution
        refs = torch.zeros(K, 3, R, R)
        mask = torch.zeros(K, dtype=torch.bool)
        paths: list[str] = []
        fields: list[dict] = []
        for cand in self._candidates(j, seed):
            if len(paths) == K:
                break
            if self._is_bad(cand):
                continue
            try:
                img, meta = load_face(cand, R, self.min_size, self.with_sidecar)  # (3, R, R)
            except BadImageError as e:
                self._mark_bad(cand, str(e), found)
                continue
            refs[len(paths)], mask[len(paths)] = img, True
            paths.append(str(cand))
            fields.append(meta)
        return refs, mask, paths, fields

    def _make(self, j: int) -> dict[str, Any]:
        from honestface.data.degradation import sample_seed

        ident, k = self.targets[j]
        path = self.images[ident][k]
        seed = sample_seed(self.seed, j, self.epoch if self.train else 0)
        sample, fields = self._target(j, path, seed)
        sample["identity"] = ident
        found: list[tuple[str, str]] = []
        refs, mask, ref_paths, ref_fields = self._references(j, seed, found)
        sample.update(refs=refs, ref_mask=mask, ref_paths=ref_paths, **fields)
        for key in ("landmarks", "points5"):
            pts = [f.get(key) for f in ref_fields]
            if any(p is not None for p in pts):
                P = max(p.shape[0] for p in pts if p is not None)
                out = torch.full((self.num_references, P, 2), float("nan"))
                for slot, p in enumerate(pts):
                    if p is not None:
                        out[slot, : p.shape[0]] = p
                sample[f"ref_{key}"] = out  # (K, P, 2)
        if found:
            sample["skipped"] = found
        return sample

    def _files(self, j: int) -> list[Path]:
        ident, k = self.targets[j]
        return [self.images[ident][k]] + ([] if self.lq_paths is None else [self.lq_paths[j]])

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._first_valid(self._check_index(index), self._files, self._make)


class InferenceFolderDataset(FaceFolderBase):
    """LQ inputs (a folder, any nesting, or one image file) with optional references for each, found by the rule
    of `honestface.data.reference_rule.resolve_references` (a mapping file, per-input folders, identity folders or
    one shared folder; the same rule as evaluation).
    At most `max_references` references per input (the first ones in sorted / listed order; None = all). Sample:
    `lq` (3, H, W) (resized only when `resolution` is given), `index`, `path`, `relpath`, `size` (H, W) of the file,
    `refs` (a list of (3, h, w) tensors, not padded) and `ref_paths`. LQ inputs have no minimum size. A reference
    that cannot be read is left out of its sample, recorded in `skipped`; an input that cannot be read is replaced
    by the next one (so it appears twice in that pass: consumers writing outputs should skip a `path` seen before).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        references: str | os.PathLike | None = None,
        resolution: int | None = None,
        max_references: int | None = 4,
        check_files: bool = True,
    ) -> None:
        super().__init__()
        if resolution is not None and resolution <= 0:
            raise ValueError(f"resolution must be > 0 or None, got {resolution}")
        if max_references is not None and max_references < 0:
            raise ValueError(f"max_references must be >= 0 or None, got {max_references}")
        self.root, self.resolution, self.max_references = Path(root), resolution, max_references
        if self.root.is_file():
            files, base = [self.root], self.root.parent
        else:
            files, base = list_images(self.root, recursive=True), self.root
            if not files:
                raise ValueError(f"no image files in {self.root}")
        self.paths, self.skipped = scan_images(files, None, check_files, str(self.root))
        if not self.paths:
            raise ValueError(f"no valid image in {self.root}: all {len(files)} files are unreadable")
        self.relpaths = [p.relative_to(base).as_posix() for p in self.paths]
        found = resolve_references(self.paths, self.relpaths, references, max_references)
        self.reference_mode, self.ref_paths = found.mode, found.lists
        self.skipped.extend(found.skipped)

    def __len__(self) -> int:
        return len(self.paths)

    def _make(self, j: int) -> dict[str, Any]:
        image = load_image(self.paths[j], None)  # (H, W, 3)
        sample: dict[str, Any] = {
            "lq": resize_face(image, self.resolution), "index": j, "path": str(self.paths[j]),
            "relpath": self.relpaths[j], "size": torch.tensor(image.shape[:2]),
        }
        refs, ref_paths, found = [], [], []
        for r in self.ref_paths[j]:
            if self._is_bad(r):
                continue
            try:
                refs.append(resize_face(load_image(r, None), self.resolution))  # (3, h, w)
                ref_paths.append(str(r))
            except BadImageError as e:
                self._mark_bad(r, str(e), found)
        sample.update(refs=refs, ref_paths=ref_paths)
        if found:
            sample["skipped"] = found
        return sample

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._first_valid(self._check_index(index), lambda j: [self.paths[j]], self._make)
