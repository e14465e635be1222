"""Which references belong to an image: the one rule that inference (`scripts/infer.py`, `InferenceFolderDataset`)
and evaluation (`scripts/evaluate.py`, reference honesty) share, so a `refs` argument means the same references in
both.

Inputs are named by their path relative to the input folder (`rel`, e.g. `alice/003.png`). What `references` is
decides the mode (our rule; the paper's test sets store one folder per identity, case 4):
1. None: no references (`none`).
2. a `.json` file {"<rel, rel without suffix, file name, stem or a path ending>": ["ref.png", ...] or "ref.png"}
   or a `.csv` file (rows `lq,ref`, repeated for more, `lq,ref1;ref2` or `lq,ref1,ref2`; an optional header row
   whose first cell is lq / input / image / path / file): as listed (`json` / `csv`). Relative reference paths are
   resolved against the mapping file's folder; a missing one is a FileNotFoundError.
3. a folder holding a sub-folder named after an input, `refs/<rel without suffix>/` or `refs/<stem>/`: that
   folder's images, any nesting (`per_input`).
4. else a folder holding a sub-folder named after an input's parent, `refs/<parent of rel>/` (the identity layout
   `refs/<person>/<image>`): the images directly in it except the one named like the input itself (a reference is
   never the image's own ground truth when `refs` is the HQ folder) (`identity`).
5. any other folder: all its images, for every input (`shared`).
In modes 3 and 4, inputs without a folder get no references (one warning names how many). Lists are sorted (mapping:
as listed), unreadable files are left out and reported in `skipped`, and at most `max_references` are kept.
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from honestface.io import list_images

__all__ = ["REFERENCE_MODES", "ReferenceResolution", "read_csv_mapping", "read_json_mapping", "resolve_references"]

REFERENCE_MODES = ("none", "json", "csv", "per_input", "identity", "shared")


@dataclass
class ReferenceResolution:
    """mode (one of REFERENCE_MODES), the reference files of every input (in input order), and the reference files
    left out as unreadable: [{"path", "error"}]."""

    mode: str
    lists: list[list[Path]]
    skipped: list[dict[str, str]] = field(default_factory=list)


def resolve_references(paths: Sequence[str | os.PathLike], relpaths: Sequence[str],
                       references: str | os.PathLike | None, max_references: int | None = None,
                       check_files: bool = True) -> ReferenceResolution:
    """The references of each input (module docstring). paths: the input files; relpaths: their paths relative to
    the input folder (posix); check_files: open every reference once and leave unreadable ones out."""
    from honestface.data.datasets import scan_images

    if max_references is not None and max_references < 0:
        raise ValueError(f"max_references must be >= 0 or None, got {max_references}")
    paths, n = [Path(p) for p in paths], len(paths)
    skipped: list[dict[str, str]] = []

    def readable(files: list[Path], where: Path) -> list[Path]:
        good, bad = scan_images(files, None, check_files, f"references {where}")
        skipped.extend(bad)
        return good

    def done(mode: str, lists: list[list[Path]]) -> ReferenceResolution:
        return ReferenceResolution(mode, [lst if max_references is None else lst[:max_references] for lst in lists],
                                   skipped)

    if references is None or max_references == 0:
        return done("none", [[] for _ in range(n)])
    src = Path(references)
    if not src.exists():
        raise FileNotFoundError(f"references not found: {src}")
    if src.is_file():
        suffix = src.suffix.lower()
        if suffix not in (".json", ".csv"):
            raise ValueError(f"a references file must be .json or .csv, got {src}")
        mapping = read_json_mapping(src) if suffix == ".json" else read_csv_mapping(src)
        return done(suffix[1:], _apply_mapping(mapping, src, paths, relpaths, readable))
    own = [_first_dir(src, [Path(r).with_suffix("").as_posix(), p.stem]) for p, r in zip(paths, relpaths)]
    if any(d is not None for d in own):
        _warn_missing(own, relpaths, src, "reference folder")
        return done("per_input", [[] if d is None else readable(list_images(d, recursive=True), d) for d in own])
    parents = [None if Path(r).parent == Path(".") else _first_dir(src, [Path(r).parent.as_posix()]) for r in relpaths]
    if any(d is not None for d in parents):
        _warn_missing(parents, relpaths, src, "identity folder")
        lists = []
        for d, r in zip(parents, relpaths):
            stem = Path(r).with_suffix("").name
            lists.append([] if d is None else readable(
                [f for f in list_images(d, recursive=False) if f.with_suffix("").name != stem], d))
        return done("identity", lists)
    shared = readable(list_images(src, recursive=True), src)
    if not shared:
        raise ValueError(f"no valid reference image in {src}")
    return done("shared", [list(shared) for _ in range(n)])


def _first_dir(root: Path, names: list[str]) -> Path | None:
    return next((root / name for name in names if name and (root / name).is_dir()), None)


def _warn_missing(found: list[Path | None], relpaths: Sequence[str], src: Path, what: str) -> None:
    missing = [r for d, r in zip(found, relpaths) if d is None]
    if missing:
        warnings.warn(f"{len(missing)} input(s) have no {what} in {src}, e.g. {missing[0]}", stacklevel=3)


def _apply_mapping(mapping: dict[str, list[str]], src: Path, paths: list[Path], relpaths: Sequence[str],
                   readable) -> list[list[Path]]:
    keys: dict[str, list[int]] = {}
    for i, (p, rel) in enumerate(zip(paths, relpaths)):
        for k in dict.fromkeys((rel, Path(rel).with_suffix("").as_posix(), p.name, p.stem)):
            keys.setdefault(k, []).append(i)
    lists: list[list[Path]] = [[] for _ in paths]
    unused = []
    for key, refs in mapping.items():
        k = key.replace("\\", "/")
        targets = keys.get(k) or [i for i, p in enumerate(paths) if f"/{p.as_posix()}".endswith(f"/{k}")]
        if not targets:
            unused.append(key)
            continue
        resolved = [r if r.is_absolute() else src.parent / r for r in map(Path, refs)]
        for r in resolved:
            if not r.is_file():
                raise FileNotFoundError(f"reference image {r} (for {key!r} in {src}) not found")
        good = readable(resolved, src)
        for i in targets:
            lists[i].extend(r for r in good if r not in lists[i])
    if unused:
        warnings.warn(f"{src}: {len(unused)} of {len(mapping)} entries match no input image, e.g. {unused[0]!r}",
                      stacklevel=4)
    return lists


def read_json_mapping(path: Path) -> dict[str, list[str]]:
    """{input key: [reference paths]} of a JSON mapping file (a one-line ValueError for anything else)."""
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


def read_csv_mapping(path: Path) -> dict[str, list[str]]:
    """{input key: [reference paths]} of a CSV mapping file (rows `lq,ref`, `lq,ref1;ref2` or `lq,ref1,ref2`)."""
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
