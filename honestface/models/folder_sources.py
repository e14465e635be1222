"""The frozen parts a model folder does not hold (SD 2.1-base, the OSDFace VRE, ArcFace or dlib, the CLIP tower):
named in the folder by weights-registry name and content hash, never by a local path, and found again through the
registry when the folder is loaded, on this machine or on any other (issue 21).

A HonestFace folder records such a part as `{"weights": <registry name>, "sha256": <content hash>}`. Our choices:

- Content hash: for a weight that is one file, that file's sha256 (hex; the value publishers print). For a folder
  weight, the sha256 of the text made of one line `<relative posix path>\\0<file sha256>\\n` per file, sorted by
  path, over the files its registry entry names (for each, the first of its accepted names that exists: for
  `sd21_base` the UNet's and VAE's config and weights and the scheduler config), so the extra files of a full
  download (a text encoder, a second weights format, `.cache/`) leave it unchanged; a folder weight whose entry
  names no files hashes every file below it whose relative path has no part starting with ".".
- Hash cache: file hashes are kept in `$HONESTFACE_HOME/sha256_cache.json`, keyed by the resolved path with its size
  and mtime_ns, so a multi-GB part is hashed once per machine and per change; saving and loading then cost one
  `stat` per file. A home that cannot be written only loses the cache.
- Loading (`resolve_folder_sources`): a part is found as `honestface.weights.resolve_weight` finds it, the `weights`
  mapping (the config's `weights:` section) first, else `$HONESTFACE_HOME` (the bundled dlib recogniser: the
  installed package's copy); a folder written before this format, with a `path` key, falls back to that path last.
  A missing part is one `MissingWeightError` line (the registry's message: registry name, config key
  `weights.<name>`, where to get it), prefixed with the folder and the part. By default a part whose content hash
  differs from the recorded one is refused with one `SourceMismatchError` line (both hashes, and the two ways out:
  `weights.<name>` pointing at the weights the model was saved with, or `verify_sources=False`): other weights
  under the same name would silently give another model.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from typing_extensions import Self  # typing.Self is Python 3.11+; we support 3.10 (a torch dependency)

from honestface.log import get_logger
from honestface.weights import (
    BUNDLED_WEIGHTS,
    ChecksumError,
    MissingWeightError,
    WeightEntry,
    file_sha256,
    get_entry,
    resolve_weight,
    weights_home,
)

__all__ = ["HASH_CACHE_FILE", "SourceMismatchError", "content_sha256", "resolve_folder_sources", "source_path",
           "source_record"]

HASH_CACHE_FILE = "sha256_cache.json"
log = get_logger(__name__)
PathLike = str | os.PathLike


class SourceMismatchError(ChecksumError, ValueError):
    """A frozen part found for a folder is not the one the folder was saved with (its content hash differs)."""


def _entry(name: str) -> WeightEntry | None:
    try:
        return get_entry(name)
    except KeyError:
        return None


def _config_key(name: str) -> str:
    entry = _entry(name)
    return entry.config_key if entry is not None else f"weights.{name}"


def _bundled_path(name: str, path: PathLike | None) -> Path:
    from honestface.face.dlib_resnet import default_dlib_resnet_path

    hint = f"get it from: {BUNDLED_WEIGHTS[name]}, or set config key weights.{name} to a copy of the file"
    if path is not None and str(path) != "":
        p = Path(path).expanduser()
        if not p.is_file():
            raise MissingWeightError(f"weight '{name}': {p} (given by config key weights.{name}) is not a file; {hint}")
        return p
    try:
        p = default_dlib_resnet_path()
    except FileNotFoundError as e:
        raise MissingWeightError(f"weight '{name}': {e}; {hint}") from None
    if not p.is_file():
        raise MissingWeightError(f"weight '{name}': {p} not found; {hint}")
    return p


def source_path(name: str, path: PathLike | None = None) -> Path:
    """Where weight `name` is on this machine: `path` (a `weights.<name>` value) when given, else its registry
    location under $HONESTFACE_HOME, or for a bundled weight (`dlib_resnet`) the installed package's file.
    Raises MissingWeightError (one line), KeyError for a name that is neither."""
    if name in BUNDLED_WEIGHTS:
        return _bundled_path(name, path)
    return resolve_weight(name, path)


def _hashed_files(name: str, root: Path) -> list[tuple[str, Path]]:
    """(relative posix path, file) of every file the content hash of folder weight `name` at `root` covers."""
    entry = _entry(name)
    if entry is not None and entry.files:
        found = []
        for wf in entry.files:
            rel = next((n for n in wf.names() if (root / n).is_file()), None)
            if rel is None:
                raise MissingWeightError(f"weight '{name}': folder {root} lacks {' or '.join(wf.names())} "
                                         f"(config key {entry.config_key})")
            found.append((rel, root / rel))
        return sorted(found)
    files = (p for p in root.rglob("*") if p.is_file())
    return sorted((p.relative_to(root).as_posix(), p) for p in files
                  if not any(part.startswith(".") for part in p.relative_to(root).parts))


class _HashCache:
    """File sha256s on disk (module docstring): read on entry, written back (atomically) on exit when it grew."""

    def __enter__(self) -> Self:
        self.file = weights_home() / HASH_CACHE_FILE
        try:
            files = json.loads(self.file.read_text()).get("files", {})
        except (OSError, ValueError, AttributeError):
            files = {}
        self.files: dict[str, Any] = files if isinstance(files, dict) else {}
        self.changed = False
        return self

    def sha256(self, path: Path) -> str:
        resolved = path.resolve()
        st = resolved.stat()
        hit = self.files.get(str(resolved))
        if isinstance(hit, dict) and hit.get("size") == st.st_size and hit.get("mtime_ns") == st.st_mtime_ns \
                and isinstance(hit.get("sha256"), str):
            return hit["sha256"]
        digest = file_sha256(resolved)
        self.files[str(resolved)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
        self.changed = True
        return digest

    def __exit__(self, *exc: object) -> None:
        if not self.changed:
            return
        from honestface.io import atomic_write_text

        kept = {k: v for k, v in self.files.items() if Path(k).is_file()}  # files gone since: dropped
        try:
            atomic_write_text(self.file, json.dumps({"version": 1, "files": kept}, indent=1, sort_keys=True) + "\n")
        except OSError as e:
            log.debug("cannot write the hash cache %s (%s); hashes are recomputed next time", self.file, e)


def content_sha256(name: str, path: PathLike) -> str:
    """The content hash of weight `name` at `path` (a file or a folder; definition in the module docstring)."""
    root = Path(path)
    with _HashCache() as cache:
        if root.is_file():
            return cache.sha256(root)
        text = "".join(f"{rel}\0{cache.sha256(f)}\n" for rel, f in _hashed_files(name, root))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def source_record(name: str, path: PathLike | None = None) -> dict[str, str]:
    """What a folder config records for a frozen part: `{"weights": name, "sha256": content hash}`, hashing the
    part at `path` (where it was loaded from on this machine; None: `source_path(name)`)."""
    return {"weights": name, "sha256": content_sha256(name, source_path(name, path))}


def _locate(name: str, given: PathLike | None, legacy: PathLike | None) -> Path:
    if given is not None:
        return source_path(name, given)
    try:
        return source_path(name)
    except MissingWeightError:
        if legacy is None or not Path(legacy).expanduser().exists():
            raise
    log.info("weight '%s' not in the registry; using %s, the path recorded by an older honestface version "
             "(set config key %s to keep this machine's copy)", name, legacy, _config_key(name))
    return source_path(name, legacy)


def resolve_folder_sources(folder: PathLike, sources: dict[str, dict[str, Any]], weights: dict[str, Any],
                           verify: bool = True) -> dict[str, Path]:
    """part -> path on this machine of every frozen part `sources` (a folder config's) names, found through the
    registry (`weights`: registry name -> path, then $HONESTFACE_HOME; an old folder's `path` last) and, when
    `verify`, checked against the recorded content hash. Raises MissingWeightError / SourceMismatchError."""
    found: dict[str, Path] = {}
    for part, src in sources.items():
        name = src["weights"]
        try:
            found[part] = _locate(name, weights.get(name), src.get("path"))
        except MissingWeightError as e:
            raise MissingWeightError(f"{folder}: frozen part '{part}' needs {e}") from None
        recorded = src.get("sha256")
        if verify and recorded:
            actual = content_sha256(name, found[part])
            if actual != recorded:
                raise SourceMismatchError(
                    f"{folder}: frozen part '{part}' (weight '{name}') at {found[part]} has content sha256 {actual}, "
                    f"but the model was saved with {recorded}: these are not the weights it was trained with; set "
                    f"config key {_config_key(name)} to those, or load with verify_sources=False to use these anyway")
    return found
