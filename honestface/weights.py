"""Weights registry: find, verify and download every external weight honestface uses.

Task: one place that knows where each pretrained file lives (SD 2.1-base, the OSDFace VRE/LoRA, CLIP ViT-H/14,
face-toolkit detectors/landmarks/ArcFace/parsers, IQA metric weights, VSPBFR checkpoints); the table itself is in
`honestface.weights_table` (with the sources of every URL and hash).

Lookup order of `resolve_weight(name, path)`: an explicit `path` (a config value) wins and must exist; otherwise
`$HONESTFACE_HOME` (default `~/.cache/honestface`) / the entry's relative path. A missing weight raises
`MissingWeightError` whose one-line message names the file, the config key and where to get it.

Downloads (`fetch_weight`) are in `honestface.weights_download`.

Our choices: names are matched case-insensitively with `.`/`-` treated as `_` (so `weights.retinaface_mobilenet0_25`
works as a config key); hash results are cached in memory by (path, size, mtime); zip packs are extracted flat.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from honestface.log import get_logger
from honestface.weights_table import ENTRIES, WeightEntry, WeightFile

log = get_logger(__name__)

__all__ = [
    "CheckResult", "ChecksumError", "MissingWeightError", "WeightEntry", "WeightFile",
    "WeightsError", "check_weight", "file_sha256", "get_entry", "list_entries", "register_weight",
    "resolve_weight", "unknown_weight_key", "unregister_weight", "verify_weight", "weight_config_names",
    "weight_status", "weights_home",
]

ENV_HOME = "HONESTFACE_HOME"
DEFAULT_HOME = "~/.cache/honestface"
FETCH_COMMAND = "python scripts/weights.py fetch"
_CHUNK = 1 << 20

NameOrEntry = str | WeightEntry
PathLike = str | os.PathLike[str]


class WeightsError(Exception):
    """Any problem with an external weight. Messages are one line."""


class MissingWeightError(WeightsError, FileNotFoundError):
    """The weight (or a file inside a weight folder) is not on disk."""


class ChecksumError(WeightsError):
    """A file's size or sha256 does not match the published value."""


# --------------------------------------------------------------------------------------------------- registry

_REGISTRY: dict[str, WeightEntry] = {}
_CANONICAL: dict[str, str] = {}  # canonical spelling -> registered name


def _canonical(name: str) -> str:
    return name.strip().lower().replace(".", "_").replace("-", "_")


def register_weight(entry: WeightEntry, *, overwrite: bool = False) -> WeightEntry:
    """Add an entry to the registry (e.g. a project-specific checkpoint). Returns it."""
    if not isinstance(entry, WeightEntry):
        raise TypeError(f"register_weight expects a WeightEntry, got {type(entry).__name__}")
    key = _canonical(entry.name)
    if key in _CANONICAL and not overwrite:
        raise ValueError(f"weight '{entry.name}' is already registered (pass overwrite=True to replace it)")
    _REGISTRY.pop(_CANONICAL.get(key, entry.name), None)
    _REGISTRY[entry.name] = entry
    _CANONICAL[key] = entry.name
    return entry


def unregister_weight(name: str) -> None:
    """Remove an entry (no error if it is not registered)."""
    registered = _CANONICAL.pop(_canonical(name), None)
    if registered is not None:
        _REGISTRY.pop(registered, None)


for _entry in ENTRIES:
    register_weight(_entry)


def get_entry(name: NameOrEntry) -> WeightEntry:
    """The registry entry for `name` (an entry object passes through). Unknown names raise KeyError."""
    if isinstance(name, WeightEntry):
        return name
    registered = _CANONICAL.get(_canonical(str(name)))
    if registered is not None:
        return _REGISTRY[registered]
    close = difflib.get_close_matches(str(name), list(_REGISTRY), n=5, cutoff=0.5)
    tail = f"did you mean: {', '.join(close)}?" if close else f"known: {', '.join(_REGISTRY)}"
    raise KeyError(f"unknown weight {name!r}; {tail}")


def list_entries() -> list[WeightEntry]:
    """Every registered entry, in table order."""
    return list(_REGISTRY.values())


# Names a `weights.<name>` config key may use besides the registry's: weights that ship inside an installed package
# and are looked up by name too (a path under this key replaces the bundled file).
BUNDLED_WEIGHTS = {"dlib_resnet": "dlib's face recogniser from face-recognition-models (identity_weights: dlib_resnet)"}


def weight_config_names() -> list[str]:
    """Every `<name>` of a valid `weights.<name>` config key: the registry's entries (a `.` in a name written as
    `_`) and the bundled weights."""
    return [e.config_key.removeprefix("weights.") for e in list_entries()] + list(BUNDLED_WEIGHTS)


def unknown_weight_key(name: str) -> str | None:
    """None when `weights.<name>` names a known weight; else a one-line message naming the key and the closest
    known names (difflib), for the config loader to raise."""
    if _canonical(name) in _CANONICAL or _canonical(name) in BUNDLED_WEIGHTS:
        return None
    close = difflib.get_close_matches(name, weight_config_names(), n=3, cutoff=0.6)
    hint = (f"did you mean {', '.join('weights.' + c for c in close)}?" if close
            else f"known weights: see `{FETCH_COMMAND.removesuffix(' fetch')} list`")
    return f"unknown config key 'weights.{name}' ({hint})"


def weights_home(home: PathLike | None = None) -> Path:
    """`home` if given, else $HONESTFACE_HOME, else ~/.cache/honestface (not created)."""
    chosen = home if home is not None else (os.environ.get(ENV_HOME) or DEFAULT_HOME)
    return Path(chosen).expanduser()


# --------------------------------------------------------------------------------------------------- messages

def _where(entry: WeightEntry) -> str:
    text = f"get it from: {entry.hint}"
    if entry.downloadable:
        text += f"; or run: {FETCH_COMMAND} {entry.name}"
    return text


def _missing(entry: WeightEntry, what: str) -> MissingWeightError:
    return MissingWeightError(f"weight '{entry.name}': {what}; {_where(entry)}")


def _refetch(entry: WeightEntry) -> str:
    if entry.downloadable:
        return f"delete it and run: {FETCH_COMMAND} {entry.name} --force"
    return f"replace it; {_where(entry)}"


# --------------------------------------------------------------------------------------------------- hashing

_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def _sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(functools.partial(f.read, _CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cache_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def file_sha256(path: PathLike, *, use_cache: bool = True) -> str:
    """sha256 hex digest of a file; cached by (path, size, mtime) so a GB file is hashed once per change."""
    path = Path(path)
    key = _cache_key(path)
    if use_cache and key in _HASH_CACHE:
        return _HASH_CACHE[key]
    digest = _sha256_of_file(path)
    _HASH_CACHE[key] = digest
    return digest


def _check_file(entry: WeightEntry, path: Path, sha256: str | None, size: int | None) -> None:
    if size is not None and path.stat().st_size != size:
        raise ChecksumError(f"size mismatch for {path} (weight '{entry.name}', config key {entry.config_key}): "
                            f"expected {size} bytes, found {path.stat().st_size}; {_refetch(entry)}")
    if sha256 is not None:
        actual = file_sha256(path)
        if not actual.startswith(sha256):
            raise ChecksumError(f"sha256 mismatch for {path} (weight '{entry.name}', config key {entry.config_key}): "
                                f"expected {sha256}, got {actual}; {_refetch(entry)}")


# --------------------------------------------------------------------------------------------------- lookup

def _find_inner(folder: Path, wf: WeightFile) -> Path | None:
    for name in wf.names():
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def _locate(entry: WeightEntry, path: PathLike | None, home: PathLike | None) -> Path:
    """The existing on-disk path of a weight (file or folder), without checking a folder's contents."""
    if path is not None and str(path) != "":
        p = Path(path).expanduser()
        if not p.exists():
            raise _missing(entry, f"{p} (given by config key {entry.config_key}) does not exist")
        if entry.kind == "file" and p.is_dir():
            inner = p / Path(entry.relpath).name
            if not inner.is_file():
                raise _missing(entry, f"{p} (given by config key {entry.config_key}) is a folder without {inner.name}")
            p = inner
        return p
    p = weights_home(home) / entry.relpath
    if not p.exists():
        raise _missing(entry, f"{p} not found; put it there or set config key {entry.config_key} to its path")
    return p


def verify_weight(name: NameOrEntry, path: PathLike) -> None:
    """Check sizes and sha256 (where the table knows them) of an on-disk weight; raise ChecksumError."""
    entry = get_entry(name)
    p = Path(path)
    if entry.kind == "file":
        _check_file(entry, p, entry.sha256, entry.size)
        return
    for wf in entry.files:
        found = _find_inner(p, wf)
        if found is not None and found == p / wf.path:  # alternatives carry no published hash
            _check_file(entry, found, wf.sha256, wf.size)


def resolve_weight(name: NameOrEntry, path: PathLike | None = None, *, verify: bool = False,
                   home: PathLike | None = None) -> Path:
    """Path of weight `name`: `path` if given (must exist), else $HONESTFACE_HOME/<relpath>.

    Folder entries must hold their required files. `verify=True` also checks published sizes/sha256.
    Raises MissingWeightError / ChecksumError (one-line messages) and KeyError for unknown names.
    """
    entry = get_entry(name)
    p = _locate(entry, path, home)
    if entry.kind == "file" and not p.is_file():
        raise _missing(entry, f"{p} is not a file (config key {entry.config_key})")
    if entry.kind == "dir":
        if not p.is_dir():
            raise _missing(entry, f"{p} is not a folder (config key {entry.config_key})")
        for wf in entry.files:
            if _find_inner(p, wf) is None:
                raise _missing(entry, f"folder {p} lacks {' or '.join(wf.names())} (config key {entry.config_key})")
    if verify:
        verify_weight(entry, p)
    log.debug(f"weight '{entry.name}': {p}{' (verified)' if verify else ''}")
    return p


@dataclass
class CheckResult:
    """Outcome of `check_weight`. status: "ok" (hash verified), "present" (no hash published; sizes fine),
    "missing" (or incomplete folder), "corrupt" (size/sha256 mismatch)."""

    name: str
    status: str
    path: Path | None
    detail: str = ""


def check_weight(name: NameOrEntry, path: PathLike | None = None, *, home: PathLike | None = None,
                 hash_files: bool = True) -> CheckResult:
    """Resolve and verify one weight without raising for missing or corrupt files."""
    entry = get_entry(name)
    try:
        p = resolve_weight(entry, path, home=home)
    except MissingWeightError as e:
        return CheckResult(entry.name, "missing", None, str(e))
    hashes = [entry.sha256] if entry.kind == "file" else [wf.sha256 for wf in entry.files]
    if not hash_files:
        return CheckResult(entry.name, "present", p, "hash not checked")
    try:
        verify_weight(entry, p)
    except ChecksumError as e:
        return CheckResult(entry.name, "corrupt", p, str(e))
    if any(h is not None for h in hashes):
        return CheckResult(entry.name, "ok", p, "sha256 verified")
    return CheckResult(entry.name, "present", p, "no published sha256")


def weight_status(name: NameOrEntry, *, home: PathLike | None = None) -> str:
    """Cheap on-disk status at the default location: "present", "missing" or "incomplete" (folder)."""
    entry = get_entry(name)
    p = weights_home(home) / entry.relpath
    if entry.kind == "file":
        return "present" if p.is_file() else "missing"
    if not p.is_dir():
        return "missing"
    return "present" if all(_find_inner(p, wf) is not None for wf in entry.files) else "incomplete"
