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
- `InferenceFolderDataset` (LQ inputs of the pipeline) finds the references of each input from a shared folder,
  per-input folders or a JSON / CSV mapping (see its docstring).
Loading rules (resize, sidecars, bad files) are those of `honestface.data.datasets`.
"""

from __future__ import annotations

import csv
import hashlib
import json
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
    """LQ inputs (a folder, any nesting, or one image file) with optional references for each.

    `references` is detected by what it is:
    - None: no references;
    - a `.json` file: {"<lq relative path, file name, stem or a path ending>": ["ref.png", ...] or "ref.png"};
    - a `.csv` file: rows `lq,ref` (repeat the row for more), `lq,ref1;ref2` or `lq,ref1,ref2`; an optional header
      row whose first cell is `lq`, `input`, `image`, `path` or `file`; relative reference paths in a mapping are
      resolved against the mapping file's folder and a missing one is a FileNotFoundError;
    - a folder that has a sub-folder named after an input (`references/<relative path without suffix>/` or
      `references/<stem>/`): per-input folders (inputs without one get no references, with a warning);
    - any other folder: all its images are the references of every input.
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
        self.reference_mode, ref_lists = self._find_references(references)
        self.ref_paths = [lst if max_references is None else lst[:max_references] for lst in ref_lists]

    def _find_references(self, references: str | os.PathLike | None) -> tuple[str, list[list[Path]]]:
        n = len(self.paths)
        if references is None:
            return "none", [[] for _ in range(n)]
        src = Path(references)
        if not src.exists():
            raise FileNotFoundError(f"references not found: {src}")
        if src.is_file():
            suffix = src.suffix.lower()
            if suffix not in (".json", ".csv"):
                raise ValueError(f"a references file must be .json or .csv, got {src}")
            mapping = _read_json_mapping(src) if suffix == ".json" else _read_csv_mapping(src)
            return suffix[1:], self._apply_mapping(mapping, src)
        subdirs = [self._input_folder(src, i) for i in range(n)]
        if any(d is not None for d in subdirs):
            missing = [self.relpaths[i] for i, d in enumerate(subdirs) if d is None]
            if missing:
                warnings.warn(f"{len(missing)} input(s) have no reference folder in {src}, e.g. {missing[0]}",
                              stacklevel=3)
            lists = [[] if d is None else self._scan_refs(list_images(d, recursive=True), d) for d in subdirs]
            return "per_input", lists
        shared = self._scan_refs(list_images(src, recursive=True), src)
        if not shared:
            raise ValueError(f"no valid reference image in {src}")
        return "shared", [list(shared) for _ in range(n)]

    def _input_folder(self, src: Path, i: int) -> Path | None:
        for name in (Path(self.relpaths[i]).with_suffix("").as_posix(), self.paths[i].stem):
            if (src / name).is_dir():
                return src / name
        return None

    def _scan_refs(self, paths: list[Path], where: Path) -> list[Path]:
        good, bad = scan_images(paths, None, True, f"references {where}")
        self.skipped.extend(bad)
        return good

    def _apply_mapping(self, mapping: dict[str, list[str]], src: Path) -> list[list[Path]]:
        keys: dict[str, list[int]] = {}
        for i, (p, rel) in enumerate(zip(self.paths, self.relpaths)):
            for k in dict.fromkeys((rel, Path(rel).with_suffix("").as_posix(), p.name, p.stem)):
                keys.setdefault(k, []).append(i)
        lists: list[list[Path]] = [[] for _ in self.paths]
        unused = []
        for key, refs in mapping.items():
            k = key.replace("\\", "/")
            targets = keys.get(k) or [i for i, p in enumerate(self.paths) if f"/{p.as_posix()}".endswith(f"/{k}")]
            if not targets:
                unused.append(key)
                continue
            resolved = [r if r.is_absolute() else src.parent / r for r in map(Path, refs)]
            for r in resolved:
                if not r.is_file():
                    raise FileNotFoundError(f"reference image {r} (for {key!r} in {src}) not found")
            good = self._scan_refs(resolved, src)
            for i in targets:
                lists[i].extend(r for r in good if r not in lists[i])
        if unused:
            warnings.warn(f"{src}: {len(unused)} of {len(mapping)} entries match no input image, e.g. {unused[0]!r}",
                          stacklevel=4)
        return lists

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


def _read_json_mapping(path: Path) -> dict[str, list[str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object {{input: [references]}}")  # noqa: TRY004 (bad file content)
    out: dict[str, list[str]] = {}
    for key, value in data.items():
        refs = [value] if isinstance(value, str) else value
        if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
            raise ValueError(f"{path}: the references of {key!r} must be a path or a list of paths")
        out[str(key)] = refs
    return out


def _read_csv_mapping(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row_no, row in enumerate(csv.reader(f), start=1):
            cells = [c.strip() for c in row]
            if not any(cells) or cells[0].startswith("#"):
                continue
            if row_no == 1 and cells[0].lower() in ("lq", "input", "image", "path", "file"):
                continue  # header
            refs = [r.strip() for c in cells[1:] for r in c.split(";") if r.strip()]
            if not cells[0] or not refs:
                raise ValueError(f"{path}, line {row_no}: expected 'lq,ref' or 'lq,ref1;ref2', got {row}")
            out.setdefault(cells[0], []).extend(r for r in refs if r not in out.get(cells[0], []))
    return out
