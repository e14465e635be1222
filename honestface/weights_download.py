"""Downloads of registry weights (`fetch_weight`, used by `scripts/weights.py fetch`); the registry and the lookup
are `honestface.weights`.

Entries hosted on the Hugging Face Hub (`WeightEntry.hub`) are fetched with huggingface_hub's `hf_hub_download` at
the entry's revision into a hidden staging folder next to the target (it resumes there after an interruption);
other URLs with urllib: bytes go to `<target>.part`, an existing `.part` is resumed with a `Range` request (a
server that answers 200 instead of 206 restarts from zero). Either way the size and sha256 are checked when the
table knows them, and only then is the file renamed into place, so a final path never holds a partial or
unverified file. Zip packs are extracted flat.

A fetch never deletes a file it did not write (our rule): present files are kept (`force=True` replaces a file
only after its new copy is verified), a zip the user already has is used and kept, and only the fetch's own
staging files (`.part`, the staging folder, the archive it downloaded) are removed.
"""

from __future__ import annotations

import functools
import http.client
import os
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from honestface.weights import (
    _CHUNK,
    _HASH_CACHE,
    ChecksumError,
    NameOrEntry,
    PathLike,
    WeightEntry,
    WeightsError,
    _cache_key,
    _find_inner,
    _sha256_of_file,
    get_entry,
    resolve_weight,
    verify_weight,
    weights_home,
)

__all__ = ["fetch_weight"]

_USER_AGENT = "honestface-weights/1 (urllib)"


class _Progress:
    def __init__(self, label: str, total: int | None, enabled: bool) -> None:
        self.label, self.total, self.enabled = label, total, enabled
        self.last = 0.0

    def update(self, done: int, final: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not final and now - self.last < 0.25):
            return
        self.last = now
        mib = done / 2**20
        if self.total:
            text = f"{mib:.1f}/{self.total / 2**20:.1f} MiB ({100 * done / self.total:.0f}%)"
        else:
            text = f"{mib:.1f} MiB"
        sys.stderr.write(f"\r{self.label}: {text}" + ("\n" if final else ""))
        sys.stderr.flush()


def _content_range_start(value: str | None) -> int | None:
    # "bytes 100-199/200" -> 100
    try:
        return int(value.split()[1].split("-")[0]) if value else None
    except (IndexError, ValueError):
        return None


def _download(entry: WeightEntry, url: str, target: Path, sha256: str | None, size: int | None,
              timeout: float, progress: bool) -> None:
    """One URL -> target via target.part (resumed with Range when it exists); verify, then rename."""
    part = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):  # a second round only when the server resumed at the wrong offset
        offset = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as e:
            e.close()
            if e.code == 416 and offset:  # nothing left to send: the .part is already complete
                break
            raise
        with response:
            if offset and response.status == 206:
                if _content_range_start(response.headers.get("Content-Range")) != offset:
                    part.unlink()
                    continue
                mode = "ab"
            else:  # 200: the server ignored Range (or there was nothing to resume): start from zero
                offset, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            expected = int(length) if length is not None else None
            total = offset + expected if expected is not None else size
            bar = _Progress(f"{entry.name} <- {url}", total, progress)
            received = 0
            try:
                with open(part, mode) as f:
                    for chunk in iter(functools.partial(response.read, _CHUNK), b""):
                        f.write(chunk)
                        received += len(chunk)
                        bar.update(offset + received)
            except (OSError, http.client.HTTPException) as e:
                raise WeightsError(f"download of {url} interrupted after {offset + received} bytes ({e}); "
                                   f"run the same fetch again to resume from {part}") from e
            bar.update(offset + received, final=True)
        if expected is not None and received < expected:
            raise WeightsError(f"download of {url} stopped after {offset + received} of {offset + expected} bytes; "
                               f"run the same fetch again to resume from {part}")
        break
    digest = _verify_staged(entry, part, url, sha256, size)
    os.replace(part, target)
    if digest is not None:
        _HASH_CACHE[_cache_key(target)] = digest


def _verify_staged(entry: WeightEntry, got: Path, source: str, sha256: str | None, size: int | None) -> str | None:
    """Size and sha256 of a staged download (deleted when wrong); returns the digest when one was computed."""
    if size is not None and got.stat().st_size != size:
        n = got.stat().st_size
        got.unlink()
        raise ChecksumError(f"size mismatch for {source} (weight '{entry.name}'): expected {size} bytes, got {n}; "
                            "the downloaded file was deleted")
    digest = _sha256_of_file(got) if sha256 is not None else None
    if digest is not None and not digest.startswith(sha256):
        got.unlink()
        raise ChecksumError(f"sha256 mismatch for {source} (weight '{entry.name}', config key {entry.config_key}): "
                            f"expected {sha256}, got {digest}; the downloaded file was deleted")
    return digest


def _hub_download(entry: WeightEntry, rel: str, target: Path, sha256: str | None, size: int | None) -> None:
    """`rel` (a path inside the entry) from the entry's Hub repository at its revision -> target, verified."""
    from huggingface_hub import hf_hub_download

    hub = entry.hub
    assert hub is not None
    filename = f"{hub.subfolder.strip('/')}/{rel}" if hub.subfolder else rel
    source = f"hf://{hub.repo_id}@{hub.revision}/{filename}"
    stage = target.parent / f".{target.name}.hub-download"
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        got = Path(hf_hub_download(hub.repo_id, filename, revision=hub.revision, local_dir=stage))
    except Exception as e:  # huggingface_hub raises many types (offline, 404, HTTP, OS); one line for all
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"{source}: {type(e).__name__}: {first}") from e
    digest = _verify_staged(entry, got, source, sha256, size)
    os.replace(got, target)
    shutil.rmtree(stage, ignore_errors=True)
    if digest is not None:
        _HASH_CACHE[_cache_key(target)] = digest


def _fetch_file(entry: WeightEntry, rel: str, target: Path, sha256: str | None, size: int | None,
                urls: list[str], use_hub: bool, timeout: float, progress: bool) -> None:
    """One file of an entry: the Hub source first (when the entry has one and no URL was forced), then `urls`."""
    errors: list[str] = []
    if use_hub and entry.hub is not None:
        try:
            _hub_download(entry, rel, target, sha256, size)
            return
        except WeightsError as e:
            if not urls:
                raise
            errors.append(str(e))
    try:
        _download_first(entry, urls, target, sha256, size, timeout, progress)
    except WeightsError as e:
        if not errors:
            raise
        raise type(e)(" | ".join([*errors, str(e)])) from e


def _download_first(entry: WeightEntry, urls: list[str], target: Path, sha256: str | None, size: int | None,
                    timeout: float, progress: bool) -> None:
    """Try mirrors in order. A .part left by a previous run is resumed from the first URL only."""
    errors: list[str] = []
    last: Exception | None = None
    for i, url in enumerate(urls):
        part = target.with_name(target.name + ".part")
        if i > 0 and part.exists():
            part.unlink()  # never splice bytes of two different mirrors
        try:
            _download(entry, url, target, sha256, size, timeout, progress)
            return
        except ChecksumError as e:
            last = e
            errors.append(str(e))
        except (urllib.error.URLError, OSError, http.client.HTTPException, WeightsError) as e:
            last = e
            errors.append(f"{url}: {e}")
    if len(urls) == 1 and last is not None and isinstance(last, WeightsError):
        raise last
    error = ChecksumError if isinstance(last, ChecksumError) else WeightsError
    raise error(f"could not download weight '{entry.name}' to {target}: {' | '.join(errors)}; "
                f"get it by hand from: {entry.hint}")


def _extract_zip(entry: WeightEntry, archive: Path, folder: Path, force: bool, ours: bool) -> None:
    """Extract every file of `archive` flat into `folder` (basenames only), each through a .part rename.
    A broken archive is deleted only when this fetch downloaded it (`ours`)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                base = Path(info.filename).name
                if info.is_dir() or not base or base.startswith(".") or "__MACOSX" in info.filename:
                    continue
                out = folder / base
                if out.exists() and not force:
                    continue
                part = out.with_name(out.name + ".part")
                with zf.open(info) as src, open(part, "wb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)
                os.replace(part, out)
    except zipfile.BadZipFile as e:
        if ours:
            archive.unlink()
            raise WeightsError(f"downloaded archive {archive} for weight '{entry.name}' is not a zip ({e}); "
                               "it was deleted, run the fetch again") from e
        raise WeightsError(f"{archive} (weight '{entry.name}') is not a zip ({e}); it was left as it is: move it "
                           "away and run the fetch again") from e


def fetch_weight(name: NameOrEntry, dest: PathLike | None = None, url: str | None = None, *, force: bool = False,
                 progress: bool = True, timeout: float = 60.0, home: PathLike | None = None) -> Path:
    """Download weight `name` (to `dest`, default $HONESTFACE_HOME/<relpath>) and return its resolved path.

    url: overrides the table's URLs (for a folder entry: the base URL; for a zip entry: the archive URL).
    Present files are kept unless `force`; a present file with a published hash is verified first.
    """
    entry = get_entry(name)
    target = Path(dest).expanduser() if dest is not None else weights_home(home) / entry.relpath
    if entry.kind == "file" and target.is_dir():  # a folder was given: the file goes inside it
        target = target / Path(entry.relpath).name
    urls = [url] if url else list(entry.urls)
    use_hub = url is None and entry.hub is not None
    if not urls and not use_hub:
        raise WeightsError(f"weight '{entry.name}' has no direct download URL; get it from: {entry.hint}; "
                           f"then put it at {target} or point config key {entry.config_key} at it")
    if entry.kind == "dir":
        target.mkdir(parents=True, exist_ok=True)
        for wf in entry.files:
            if not force and _find_inner(target, wf) is not None:
                continue
            errors: list[str] = []
            for inner in wf.names():
                try:
                    sha, size = (wf.sha256, wf.size) if inner == wf.path else (None, None)
                    _fetch_file(entry, inner, target / inner, sha, size,
                                [f"{u.rstrip('/')}/{inner}" for u in urls], use_hub, timeout, progress)
                    break
                except WeightsError as e:
                    errors.append(str(e))
            else:
                raise WeightsError(" | ".join(errors))
        return resolve_weight(entry, target)
    if target.exists() and not force:
        verify_weight(entry, target)
        return target
    if force:
        target.with_name(target.name + ".part").unlink(missing_ok=True)
    if entry.archive == "zip":
        zip_name = Path(urllib.parse.urlparse(urls[0]).path).name if urls else f"{entry.name}.zip"
        archive = target.parent / zip_name
        ours = not archive.exists()  # a zip the user put there is used and kept
        if ours:
            archive = target.parent / f".{zip_name}.download"
            _fetch_file(entry, Path(zip_name).name, archive, None, None, urls, use_hub, timeout, progress)
        _extract_zip(entry, archive, target.parent, force, ours)
        if ours:
            archive.unlink(missing_ok=True)
        if not target.is_file():
            raise WeightsError(f"archive {zip_name} holds no file named {target.name} (weight '{entry.name}')")
        verify_weight(entry, target)
    else:
        _fetch_file(entry, Path(entry.relpath).name, target, entry.sha256, entry.size, urls, use_hub, timeout,
                    progress)
    return resolve_weight(entry, target)
