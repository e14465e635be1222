"""Training checkpoints: atomic folders, keep-last-K, and `resume=latest|path`.

A checkpoint is a folder `<output_dir>/checkpoints/step_<N>` written by `accelerator.save_state` (model,
optimisers, schedulers, RNG states, registered objects such as the EMA and the trainer state). It is written to
a hidden temporary folder first and renamed into place only when complete, so a crash or Ctrl-C in the middle
of a save never leaves a folder that looks like a checkpoint but is not one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step_(\d+)$")
STATE_FILE = "trainer_state.json"


def checkpoint_root(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / CHECKPOINT_DIR


def list_checkpoints(output_dir: str | os.PathLike, run_id: str | None = None) -> list[Path]:
    """Complete checkpoints in the folder, oldest first; with `run_id`, only those that run wrote."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found) if run_id is None or checkpoint_run_id(p) == run_id]


def checkpoint_run_id(directory: Path) -> str | None:
    """The run id recorded in a checkpoint (None: unreadable, or written before run ids were recorded)."""
    try:
        return read_state(directory).get("run_id")
    except (OSError, ValueError):
        return None


def resolve_resume(resume: str | None, output_dir: str | os.PathLike, run_id: str | None = None) -> Path | None:
    """`train.resume`: None -> no resume; "latest" -> newest checkpoint of the folder's run (`run_id`, from its
    run.json, when it wrote any; else the newest checkpoint; None if there is none yet); else a checkpoint folder,
    which must exist."""
    if resume is None:
        return None
    if resume == "latest":
        found = (run_id is not None and list_checkpoints(output_dir, run_id)) or list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path.is_dir() and (path / STATE_FILE).is_file()):
        raise FileNotFoundError(f"train.resume={resume!r}: not a checkpoint folder (no {STATE_FILE} inside)")
    return path


def temporary_dir(output_dir: str | os.PathLike, step: int, create: bool = True) -> Path:
    """Where checkpoint `step` is written before `commit`; `create` (the main process) clears any leftover."""
    tmp = checkpoint_root(output_dir) / f".tmp-step_{step}"
    if create:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    return tmp


def commit(tmp: Path, step: int, keep_last: int, run_id: str | None = None) -> Path:
    """Rename a finished temporary folder into place and delete the oldest checkpoints beyond `keep_last`; with
    `run_id`, only checkpoints of that run count and are deleted (another run's checkpoints are never touched)."""
    final = tmp.parent / f"step_{step}"
    replaced = tmp.parent / f".old-step_{step}"
    if final.exists():  # the same step saved again: the old folder stays complete until the new one is in place
        shutil.rmtree(replaced, ignore_errors=True)
        os.replace(final, replaced)
    os.replace(tmp, final)
    shutil.rmtree(replaced, ignore_errors=True)
    if keep_last > 0:
        for old in list_checkpoints(tmp.parent.parent, run_id)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def write_state(directory: Path, state: dict) -> None:
    """Written last into the temporary folder (before `commit`), so its presence marks a complete checkpoint."""
    (directory / STATE_FILE).write_text(json.dumps(state, indent=1))


def read_state(directory: Path) -> dict:
    return json.loads((directory / STATE_FILE).read_text())


def check_random_states(directory: Path, process_index: int) -> None:
    """Read this process's `random_states_<rank>.pkl` the way accelerate's `load_state` does (weights-only) and
    raise WeightsError when that fails. accelerate catches any failure of that file and only logs it at INFO, so a
    damaged or tampered file would silently resume with other random states: no longer the exact resume promised."""
    from accelerate.utils import load

    from honestface.weights import WeightsError

    path = directory / f"random_states_{process_index}.pkl"
    if not path.is_file():
        return  # accelerate saves none for some set-ups; it then skips the RNG states itself
    try:
        load(path)
    except Exception as err:  # torch's unpickling errors have no common type
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(f"{path}: not a weights-only random-state file, refusing to resume from it ({first})") \
            from err
