"""Planning an inference run (`honestface.apps.infer`): which files are inputs, where each output goes, which
references each input gets, and the checks that stop a run before any work (one-line `InferenceSetupError`).
The rules are listed in `honestface.apps.infer`'s docstring."""

from __future__ import annotations

import glob
import warnings
from pathlib import Path

from omegaconf import DictConfig

from honestface.io import IMAGE_EXTENSIONS, list_images

__all__ = ["InferenceSetupError", "check_not_inputs", "check_output", "find_inputs", "find_references",
           "plan_outputs", "within"]

_GLOB_CHARS = "*?["


class InferenceSetupError(ValueError):
    """The run cannot start (bad paths, existing outputs, output inside the input): one line, exit code 2."""


def within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def find_inputs(spec: str) -> tuple[Path, list[Path], Path]:
    """`infer.input` -> (base folder of the relative paths, input files, protected folder).

    The protected folder is what the output may not be or be inside: the folder given, the fixed prefix of a glob,
    or (one file) the file's own folder (sub-folders of it are allowed then)."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path.parent, [path], path.parent
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise InferenceSetupError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in input folder {path}")
        return path, files, path
    if any(c in spec for c in _GLOB_CHARS):
        parts = Path(spec).expanduser().parts
        fixed = next((i for i, p in enumerate(parts) if any(c in p for c in _GLOB_CHARS)), len(parts))
        base = Path(*parts[:fixed]) if fixed else Path(".")
        hits = sorted(Path(p) for p in glob.glob(str(Path(spec).expanduser()), recursive=True))
        files = [p for p in hits if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                 and not any(part.startswith(".") for part in p.relative_to(base).parts)]
        if not files:
            raise InferenceSetupError(f"no image files match the input pattern {spec}")
        return base, files, base
    raise InferenceSetupError(f"input not found: {spec} (give a folder, an image file or a glob pattern)")


def plan_outputs(files: list[Path], base: Path, output: Path, save_comparison: bool
                 ) -> list[tuple[str, Path, Path | None]]:
    """Per input: (relative path, output PNG, comparison PNG or None). Same-stem inputs keep their extension."""
    stems: dict[str, int] = {}
    rels = [f.relative_to(base).as_posix() for f in files]
    for rel in rels:
        key = str(Path(rel).with_suffix(""))
        stems[key] = stems.get(key, 0) + 1
    plan = []
    for rel in rels:
        stem = Path(rel).with_suffix("")
        if stems[str(stem)] > 1:
            stem = stem.with_name(f"{stem.name}_{Path(rel).suffix.lstrip('.').lower()}")
        out = output / stem.with_suffix(".png")
        comp = out.with_name(f"{out.stem}_comparison.png") if save_comparison else None
        plan.append((rel, out, comp))
    return plan


def find_references(icfg: DictConfig, base: Path, files: list[Path]) -> tuple[str, list[list[Path]]]:
    """Auto mode: (how the references were found, reference files per input), by the rule evaluation uses too
    (`honestface.data.reference_rule`)."""
    from honestface.data.reference_rule import resolve_references

    rels = [f.relative_to(base).as_posix() for f in files]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # inputs without references are reported per file below
        found = resolve_references(files, rels, icfg.references, icfg.max_references)
    return found.mode, found.lists


def check_output(protected: Path, output: Path, allow_inside: bool, single_file: bool) -> None:
    out = output.resolve()
    if output.exists() and not output.is_dir():
        raise InferenceSetupError(f"output {output} exists and is not a folder")
    inside = out == protected.resolve() if single_file else within(out, protected.resolve())
    if inside and not allow_inside:
        where = "the input folder" if out == protected.resolve() else "inside the input folder"
        raise InferenceSetupError(f"refusing to write into the input folder: output {output} is {where} "
                                  f"{protected} (pass --allow-output-in-input to permit it)")


def check_not_inputs(files: list[Path], plan: list) -> None:
    inputs = {f.resolve() for f in files}
    for _, o, c in plan:
        for p in (o, c):
            if p is not None and p.resolve() in inputs:
                raise InferenceSetupError(f"refusing to overwrite the input file {p}")
