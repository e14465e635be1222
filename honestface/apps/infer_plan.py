"""Planning an inference run (`honestface.apps.infer`): which files are inputs, where each output goes, which
references each input gets, and the checks that stop a run before any work (one-line `InferenceSetupError`).
The rules are listed in `honestface.apps.infer`'s docstring."""

from __future__ import annotations

import glob
import json
import warnings
from pathlib import Path

from omegaconf import DictConfig

from honestface.io import IMAGE_EXTENSIONS, list_images

__all__ = ["InferenceSetupError", "check_not_inputs", "check_output", "check_results_file", "find_inputs",
           "find_references", "plan_outputs", "renamed_outputs", "within"]

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
    """Per input: (relative path, output PNG, comparison PNG or None), every name used once.

    Our rule, a function of the set of relative paths only (so the same inputs get the same names on every run,
    whatever order the file system lists them in). Names are compared case-insensitively (outputs copied to a
    macOS or Windows disk must not merge), an output may not be named like an output folder, and an input's
    output and comparison are placed together:
    1. an input whose natural name (`<relative path>.png`) no other input shares keeps it, if it is still free
       (inputs taken in sorted order: `a_comparison.png` may be taken by the comparison of `a.png`);
    2. every other input, in sorted order, gets `<stem>_<extension>.png` (`a.jpg`, `a.png` -> `a_jpg.png`,
       `a_png.png`), or the first free `<stem>_<extension>_<n>.png`, n = 2, 3, ...
    """
    rels = [f.relative_to(base).as_posix() for f in files]
    comp_of = (lambda name: name.with_name(f"{name.stem}_comparison.png")) if save_comparison else None
    natural = {rel: Path(rel).with_suffix(".png") for rel in rels}
    shared: dict[str, int] = {}
    for name in natural.values():
        shared[name.as_posix().casefold()] = shared.get(name.as_posix().casefold(), 0) + 1
    taken: set[str] = set()
    folders = {q.as_posix().casefold() for name in natural.values() for q in name.parents if q != Path(".")}

    def claim(name: Path) -> bool:
        names = [name] + ([comp_of(name)] if comp_of else [])
        keys = [n.as_posix().casefold() for n in names]
        if len(set(keys)) < len(keys) or any(k in taken or k in folders for k in keys):
            return False
        taken.update(keys)
        return True

    chosen: dict[str, Path] = {}
    for rel in sorted(rels):
        if shared[natural[rel].as_posix().casefold()] == 1 and claim(natural[rel]):
            chosen[rel] = natural[rel]
    for rel in sorted(r for r in rels if r not in chosen):
        stem = natural[rel].with_suffix("")
        stem = stem.with_name(f"{stem.name}_{Path(rel).suffix.lstrip('.').lower()}")
        n = 1
        while not claim(name := stem.with_name(stem.name + (f"_{n}" if n > 1 else "") + ".png")):
            n += 1
        chosen[rel] = name
    return [(rel, output / chosen[rel], output / comp_of(chosen[rel]) if comp_of else None) for rel in rels]


def renamed_outputs(plan: list[tuple[str, Path, Path | None]], output: Path) -> dict[str, str]:
    """{input relative path: output path relative to `output`} for every input not named `<relative path>.png`."""
    out = {}
    for rel, o, _ in plan:
        name = o.relative_to(output).as_posix()
        if name != Path(rel).with_suffix(".png").as_posix():
            out[rel] = name
    return out


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


def _same_input(a: str, b: str) -> bool:
    """Two `infer.input` values name the same input: equal resolved paths, or (globs) equal patterns."""
    def norm(spec: str) -> str:
        return spec if any(c in spec for c in _GLOB_CHARS) else str(Path(spec).expanduser().resolve())

    return norm(a) == norm(b)


def check_results_file(path: Path, input_spec: str) -> None:
    """A `results.json` in the output folder is ours to replace only when this command wrote it for the same
    input (a resumed or repeated run); anything else stops the run (one line naming the file and --overwrite)."""
    if not path.exists() and not path.is_symlink():
        return
    try:
        old = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, UnicodeDecodeError, ValueError):
        old = None
    if not (isinstance(old, dict) and old.get("version") == 1 and isinstance(old.get("files"), list)
            and isinstance(old.get("input"), str)):
        raise InferenceSetupError(f"{path} exists and was not written by scripts/infer.py (pass --overwrite to "
                                  f"replace it)")
    if not _same_input(old["input"], input_spec):
        raise InferenceSetupError(f"{path} records a run on another input ({old['input']}); pass --overwrite to "
                                  f"replace it, or choose another output folder")
