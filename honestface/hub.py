"""Hugging Face Hub conventions: load a model by Hub id (`org/name`), push a model folder with a model card.

Loading (`resolve_model_dir`, called first by every `from_pretrained` and by scripts/infer.py `--model`): an
existing local path is used as it is; a released model name ("osdface", "vspbfr", `honestface.released_table`) is
passed on unchanged to the released-model code; any other string of the form `org/name` is a Hub model id, fetched
with `huggingface_hub.snapshot_download` into the Hub cache (`HF_HUB_CACHE`, or `cache_dir=`) at `revision`
(a branch, tag or commit hash; default "main"). Once cached it loads with `HF_HUB_OFFLINE=1` (huggingface_hub reads
the refs/ and snapshots/ folders of its cache). The snapshot must hold a model folder of a honestface family (its
config file at the top level). Failures are one line: not cached while offline (with the command that downloads
it), unknown revision, no such (or no readable) repository, not a honestface model.

Pushing (`push_folder`, `push_model`; `save_pretrained(dir, push_to_hub=True)` and `push_to_hub(repo_id)` of both
composites): the saved folder gets a generated model card as README.md (`honestface.model_card`) and is uploaded in
one commit with `HfApi.create_repo(exist_ok=True)` + `HfApi.upload_folder`. Our choices: a README.md the user wrote
(one without the card's marker line) is kept and uploaded as it is; a repo id without an organisation goes to the
token's own account (`create_repo` says where, and the card names that id). We do not use huggingface_hub's
`ModelHubMixin`: it brings its own `from_pretrained` flow (per-file downloads, a `config.json`), which knows
neither the released names, nor our folder formats, nor our one-line errors.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["PUSH_OPTIONS", "PushToHubMixin", "check_push_arguments", "is_hub_id", "push_folder", "push_model", "resolve_model_dir"]

PathLike = str | os.PathLike
CARD_FILE = "README.md"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# what push_folder takes besides the folder and the repo id (save_pretrained(push_to_hub=True) checks these first)
PUSH_OPTIONS = ("private", "token", "commit_message", "create_pr", "evaluation", "training", "license",
                "base_model")


def _version() -> str:
    from honestface import __version__

    return __version__


def is_hub_id(value: object) -> bool:
    """True for a string `org/name` that is a valid Hub repository id and not an existing local path."""
    if not isinstance(value, str) or not _HUB_ID.match(value) or Path(value).expanduser().exists():
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError:
        return False
    return True


def resolve_model_dir(id_or_path: PathLike, *, family: str | None = None, revision: str | None = None,
                      cache_dir: PathLike | None = None, token: str | bool | None = None,
                      local_files_only: bool = False) -> PathLike:
    """The local folder of `id_or_path` (module docstring): a local path or a released name comes back unchanged;
    a Hub id comes back as its snapshot folder in the Hub cache. `family` ("honestface" | "vspbfr"): the family
    the caller loads (a Hub model of another family is refused, naming the class to use); None: any family."""
    if not is_hub_id(id_or_path):
        if revision is not None:
            raise ValueError(f"revision={revision!r} is for Hugging Face Hub ids (org/name); {str(id_or_path)!r} "
                             "is a local path or a released model name")
        return id_or_path
    repo_id = str(id_or_path)
    folder = _download(repo_id, revision, cache_dir, token, local_files_only)
    _check_family(folder, f"the Hub model {_where(repo_id, revision)}", family)
    return folder


def _where(repo_id: str, revision: str | None) -> str:
    return f"'{repo_id}'" + (f" at revision {revision!r}" if revision is not None else "")


def _download(repo_id: str, revision: str | None, cache_dir: PathLike | None, token: str | bool | None,
              local_files_only: bool) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    where, cache = _where(repo_id, revision), Path(cache_dir or constants.HF_HUB_CACHE).expanduser()
    get = f"`hf download {repo_id}" + (f" --revision {revision}" if revision is not None else "") + "`"
    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, token=token,
                                      local_files_only=local_files_only, library_name="honestface",
                                      library_version=_version()))
    except RevisionNotFoundError:
        raise ValueError(f"unknown revision {revision!r} of the Hub model '{repo_id}' (give a branch, tag or "
                         "commit hash of that repository)") from None
    except RepositoryNotFoundError:  # also gated / private without access
        raise FileNotFoundError(f"no local folder '{repo_id}' and no Hub model repository '{repo_id}' you can read "
                                "(check the id; a private or gated one needs `hf auth login` or token=)") from None
    except LocalEntryNotFoundError as e:
        if type(e).__name__ == "IncompleteSnapshotError":  # newer huggingface_hub: a snapshot missing files
            raise FileNotFoundError(f"the cached copy of the Hub model {where} in {cache} is incomplete and the Hub "
                                    f"cannot be reached: complete it with network access ({get})") from None
        cached = _cached_revisions(repo_id, cache)
        have = f" (cached revisions: {', '.join(cached)})" if cached else ""
        if local_files_only or constants.is_offline_mode():
            why = "local_files_only=True" if local_files_only else "HF_HUB_OFFLINE=1"
            raise FileNotFoundError(f"no local folder '{repo_id}', and the Hub model {where} is not in the Hugging "
                                    f"Face cache {cache}{have} while {why} forbids downloading: run {get} with "
                                    "network access (HF_HUB_OFFLINE unset), then again") from None
        cause = type(e.__cause__ or e).__name__
        raise FileNotFoundError(f"no local folder '{repo_id}', the Hub cannot be reached ({cause}) and the Hub "
                                f"model {where} is not in the Hugging Face cache {cache}{have}: check the "
                                f"network, or run {get} where there is one") from None


def _cached_revisions(repo_id: str, cache: Path) -> list[str]:
    """'main = 1a2b3c4d5e6f' / '1a2b3c4d5e6f' for every cached snapshot of model `repo_id` (for messages only)."""
    from huggingface_hub import scan_cache_dir

    try:
        repos = scan_cache_dir(cache).repos
    except Exception:  # noqa: BLE001 - no cache at all, or one huggingface_hub cannot read: nothing to list
        return []
    out = []
    for repo in repos:
        if repo.repo_id == repo_id and repo.repo_type == "model":
            for rev in sorted(repo.revisions, key=lambda r: (not r.refs, r.commit_hash)):
                refs = ", ".join(sorted(rev.refs))
                out.append(f"{refs} = {rev.commit_hash[:12]}" if refs else rev.commit_hash[:12])
    return out


def _check_family(folder: Path, what: str, family: str | None) -> str:
    """The family of the model folder `folder` (`what`, for messages), or a one-line error."""
    from honestface.pipelines import PIPELINES, family_of_folder, pipeline_class

    found = family_of_folder(folder)
    if found is None:
        files = " or ".join(pipeline_class(f).model_config_file for f in PIPELINES)
        raise ValueError(f"{what} is not a honestface model folder (no {files} at its top level: {folder})")
    if family is not None and found != family:
        label = pipeline_class(found).family_label
        raise ValueError(f"{what} is a {label} model: load it with {label} / {label}Pipeline.from_pretrained")
    return found


# ------------------------------------------------------------------------------------------------------ pushing
def check_push_arguments(push_to_hub: bool, repo_id: str | None, options: Mapping[str, Any]) -> None:
    """Refuse, before anything is saved, push options without `push_to_hub=True` and unknown option names."""
    unknown = sorted(set(options) - set(PUSH_OPTIONS))
    if unknown:
        raise TypeError(f"unknown push_to_hub option {unknown[0]!r}; allowed: {', '.join(PUSH_OPTIONS)}")
    if not push_to_hub and (repo_id is not None or options):
        given = ", ".join(["repo_id"] * (repo_id is not None) + sorted(options))
        raise TypeError(f"{given} only apply with push_to_hub=True")


def push_folder(folder: PathLike, repo_id: str, *, private: bool | None = None, token: str | bool | None = None,
                commit_message: str | None = None, create_pr: bool = False,
                evaluation: PathLike | Mapping[str, Any] | None = None,
                training: PathLike | Mapping[str, Any] | None = None, license: str | None = None,
                base_model: str | list[str] | None = None) -> Any:
    """Upload the saved model folder `folder` to the Hub model repository `repo_id` (created when missing) with a
    generated model card (README.md; a user-written README.md is kept). evaluation: scripts/evaluate.py's
    summary.json (its path, its folder or the dict); training: a training run folder, its `final/` export or the
    resolved config dict (default: the folder itself when it is a `final/` export); license / base_model: the
    card's metadata (default: derived from the model's sources, `honestface.model_card`). Returns the commit info
    of `HfApi.upload_folder`."""
    from huggingface_hub import HfApi

    from honestface.model_card import CARD_MARKER, build_model_card

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no model folder to push: {folder}")
    family = _check_family(folder, f"the folder {folder}", None)
    options = {"evaluation": evaluation, "training": training, "license": license, "base_model": base_model}
    card = build_model_card(folder, repo_id=repo_id, **options)  # bad card inputs fail before the Hub is touched
    api = HfApi(token=token, library_name="honestface", library_version=_version())
    url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    full_id = getattr(url, "repo_id", None) or repo_id
    if full_id != repo_id:  # a name without organisation: the card shows the id it got
        card = build_model_card(folder, repo_id=full_id, **options)
    readme = folder / CARD_FILE
    if not readme.is_file() or CARD_MARKER in readme.read_text(encoding="utf-8", errors="replace"):
        card.save(readme)
    return api.upload_folder(repo_id=full_id, folder_path=folder, repo_type="model", create_pr=create_pr,
                             commit_message=commit_message or f"Upload {family} model (honestface {_version()})")


def push_model(model: Any, repo_id: str, **options: Any) -> Any:
    """`model.save_pretrained` into a temporary folder, then `push_folder` (options: `PUSH_OPTIONS`)."""
    check_push_arguments(True, repo_id, options)
    with tempfile.TemporaryDirectory(prefix="honestface-push-") as tmp:
        saved = model.save_pretrained(Path(tmp) / repo_id.rsplit("/", 1)[-1])
        return push_folder(saved, repo_id, **options)


class PushToHubMixin:
    """`push_to_hub` for a model class with `save_pretrained(folder)`, and the two steps its
    `save_pretrained(folder, push_to_hub=..., repo_id=..., **hub_options)` adds around the save."""

    def push_to_hub(self, repo_id: str, **hub_options: Any) -> Any:
        """Save into a temporary folder and upload it with a generated model card to the Hub model repository
        `repo_id` (`push_model`; hub_options: `PUSH_OPTIONS`, see `push_folder`); returns the commit info."""
        return push_model(self, repo_id, **hub_options)

    @staticmethod
    def _check_push(push_to_hub: bool, repo_id: str | None, hub_options: Mapping[str, Any]) -> None:
        check_push_arguments(push_to_hub, repo_id, hub_options)

    @staticmethod
    def _push_saved(folder: Path, push_to_hub: bool, repo_id: str | None, hub_options: Mapping[str, Any]) -> Path:
        if push_to_hub:
            push_folder(folder, repo_id or folder.name, **hub_options)
        return folder
