"""One output folder, one run: the run marker, refusing another run's folder, `train.overwrite`, atomic export swap.

Our choices:
- A run has an id (a random hex string) written to `<output_dir>/run.json` and into every checkpoint's trainer
  state. A resumed run keeps the id of the checkpoint it continues; a checkpoint written before run ids existed
  continues under a new id. Pruning (`train.keep_last`) only deletes checkpoints that carry the current run's id.
- A new run (`train.resume` unset) refuses a folder that holds another run's checkpoints or its `final/` export,
  with one line naming the folder and the options: `train.resume=latest` (continue it), `train.overwrite=true`
  (replace it) or another `train.output_dir`.
- `train.overwrite=true` moves the earlier run's files (checkpoints/, final/, logs/, config.yaml, run.json; nothing
  else in the folder is touched) into the hidden sibling `.replaced-<new run id>/` and deletes that folder only
  once the new run has committed its first checkpoint. A new run that dies before then leaves the earlier run
  recoverable there.
- `swap_in` puts a finished export in place by renames only: the old `final/` is renamed to `.old-final`, the new
  folder renamed to `final/`, then the old one deleted. A crash between the two renames leaves `.old-final`
  complete; `recover_final` (called before every export) renames it back.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from honestface.log import get_logger
from honestface.training import checkpoint as ckpt

logger = get_logger(__name__)

RUN_FILE = "run.json"
FINAL_DIR = "final"
OLD_FINAL_DIR = ".old-final"
ASIDE_PREFIX = ".replaced-"
RUN_ARTEFACTS = (ckpt.CHECKPOINT_DIR, FINAL_DIR, "logs", "config.yaml", RUN_FILE)


class RunFolderError(ValueError):
    """The output folder belongs to another run (the message is one line naming the folder and the options)."""


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def read_run_id(output_dir: str | os.PathLike) -> str | None:
    """The id in `<output_dir>/run.json`, or None when there is none (or it is unreadable)."""
    path = Path(output_dir) / RUN_FILE
    try:
        return str(json.loads(path.read_text())["run_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def earlier_run(output_dir: str | os.PathLike) -> list[str]:
    """What in the folder belongs to an earlier run: its checkpoints and its export (empty list: nothing)."""
    out = Path(output_dir)
    found = [f"{ckpt.CHECKPOINT_DIR}/{p.name}" for p in ckpt.list_checkpoints(out)]
    if (out / FINAL_DIR).exists() or (out / OLD_FINAL_DIR).exists():
        found.append(f"{FINAL_DIR}/")
    return found


def check_new_run(output_dir: str | os.PathLike, resume: str | None, overwrite: bool) -> bool:
    """Whether this run may use the folder; raises `RunFolderError` when a new run meets another run's files.

    Returns True when the earlier run's files must be moved aside (`overwrite` and there are some)."""
    if resume is not None and overwrite:
        raise RunFolderError(f"train.resume={resume!r} continues the run in {output_dir} while train.overwrite=true "
                             f"replaces it; set only one")
    found = earlier_run(output_dir)
    if not found or resume is not None:
        return False
    if overwrite:
        return True
    shown = ", ".join(found[-2:]) + (f" and {len(found) - 2} more" if len(found) > 2 else "")
    raise RunFolderError(f"{output_dir} holds another run ({shown}); continue it with train.resume=latest, replace "
                         f"it with train.overwrite=true, or choose another train.output_dir")


def move_aside(output_dir: str | os.PathLike, run_id: str) -> Path:
    """Move the earlier run's files (see RUN_ARTEFACTS) into `<output_dir>/.replaced-<run_id>/`; returns it."""
    out = Path(output_dir)
    aside = out / f"{ASIDE_PREFIX}{run_id}"
    aside.mkdir(parents=True)
    for name in (*RUN_ARTEFACTS, OLD_FINAL_DIR):
        if (out / name).exists():
            os.replace(out / name, aside / name)
    logger.info("train.overwrite=true: the earlier run in %s is in %s until this run saves its first checkpoint",
                out, aside)
    return aside


def write_run_file(output_dir: str | os.PathLike, run_id: str, resumed_from: Path | None) -> None:
    from honestface.io import atomic_write_text

    info = {"run_id": run_id, "resumed_from": None if resumed_from is None else str(resumed_from)}
    atomic_write_text(Path(output_dir) / RUN_FILE, json.dumps(info, indent=1))


def drop_aside(aside: Path | None) -> None:
    """Delete the earlier run's moved files (called once the new run has a committed checkpoint)."""
    if aside is not None and aside.exists():
        shutil.rmtree(aside)
        logger.info("deleted the replaced run's files in %s", aside)


def recover_final(output_dir: str | os.PathLike) -> None:
    """After a crash between the two renames of `swap_in`: put the complete old export back as `final/`."""
    out = Path(output_dir)
    old, final = out / OLD_FINAL_DIR, out / FINAL_DIR
    if old.exists():
        if final.exists():
            shutil.rmtree(old)
        else:
            os.replace(old, final)


def swap_in(new: Path, output_dir: str | os.PathLike) -> Path:
    """Rename the complete export folder `new` to `<output_dir>/final`, keeping the old one until it is in place."""
    out = Path(output_dir)
    recover_final(out)
    final, old = out / FINAL_DIR, out / OLD_FINAL_DIR
    if final.exists():
        os.replace(final, old)
    os.replace(new, final)
    if old.exists():
        shutil.rmtree(old)
    return final


def claim(accelerator: Any, cfg: DictConfig, resume: Path | None, schedule: dict[str, Any]) -> tuple[str, Path | None]:
    """Make the output folder this run's; returns (run id, folder of an overwritten run or None).

    Every process checks the folder (`check_new_run`) and the resumed checkpoint (same process count, same
    schedule) before anything changes it; the run id is the resumed checkpoint's, else a new one, broadcast from the
    main process; then the main process moves an overwritten run aside and writes run.json and config.yaml."""
    from accelerate.utils import broadcast_object_list

    from honestface.config import save_config
    from honestface.training.schedule import check_same_schedule

    t, out, n = cfg.train, Path(cfg.train.output_dir), accelerator.num_processes
    replace = check_new_run(out, t.resume, t.overwrite)
    recorded = None
    if resume is not None:
        state = ckpt.read_state(resume)
        if state.get("num_processes", n) != n:
            raise ValueError(f"{resume} was saved by {state['num_processes']} processes; resume it with the same "
                             f"number (now {n}) so the data order continues exactly")
        check_same_schedule(state.get("schedule"), schedule, resume)
        recorded = state.get("run_id")
    run_id = broadcast_object_list([recorded or new_run_id()])[0]
    aside = None
    accelerator.wait_for_everyone()  # every process has looked at the folder before it changes
    if accelerator.is_main_process:
        if replace:
            aside = move_aside(out, run_id)
        write_run_file(out, run_id, resume)
        save_config(cfg, out)
    return run_id, aside
