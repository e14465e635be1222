"""One output folder, one run: a new run refuses another run's folder, `train.overwrite` replaces it safely, pruning
only touches this run's checkpoints, the export swaps in atomically, and `train.report_to` takes accelerate's
trackers. Tiny `vae` stage, CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from honestface.config import load_config
from honestface.training import checkpoint as ckpt
from honestface.training import run_folder
from honestface.training.run_folder import RunFolderError
from honestface.training.tasks import build_task
from honestface.training.trackers import check_report_to, log_image_grid
from honestface.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def vae_cfg(data: Path, out: Path, *overrides: str):
    return load_config(REPO / "configs" / "tiny" / "vae.yaml", [
        f"data.train_dir={data}", f"train.output_dir={out}", "data.batch_size=2", "train.report_to=none",
        "train.num_val_images=0", "train.save_every=1", "train.stage_params.scaling_batches=1", *overrides])


def trainer(cfg) -> Trainer:
    return Trainer(cfg, build_task(cfg.train.stage, cfg))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def earlier_run(sample_identities, tmp_path_factory) -> Path:
    """A finished 2-step run (checkpoints step_1, step_2, final/, tensorboard logs with a validation grid)."""
    out = tmp_path_factory.mktemp("earlier") / "run"
    cfg = vae_cfg(sample_identities, out, "train.max_steps=2", "train.report_to=tensorboard",
                  "train.num_val_images=2", "train.eval_every=2")
    assert trainer(cfg).train() == 0
    return out


def test_a_new_run_refuses_a_folder_holding_another_run(sample_identities, earlier_run, tmp_path):
    before = snapshot(earlier_run)
    with pytest.raises(RunFolderError) as err:
        trainer(vae_cfg(sample_identities, earlier_run, "train.max_steps=3"))
    message = str(err.value)
    assert "\n" not in message and str(earlier_run) in message
    assert "train.resume=latest" in message and "train.overwrite=true" in message
    assert snapshot(earlier_run) == before  # config.yaml, checkpoints and final/ untouched
    with pytest.raises(RunFolderError, match="set only one"):
        trainer(vae_cfg(sample_identities, earlier_run, "train.overwrite=true", "train.resume=latest"))
    assert snapshot(earlier_run) == before


def test_tensorboard_gets_the_validation_grid(earlier_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = []
    for events in (earlier_run / "logs").rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags += acc.Tags()["images"]
    assert any(t.startswith("validation/") for t in tags), tags


def test_overwrite_keeps_the_old_run_until_the_new_one_has_a_checkpoint(sample_identities, earlier_run, tmp_path):
    out = tmp_path / "run"
    import shutil

    shutil.copytree(earlier_run, out)
    old_id = run_folder.read_run_id(out)
    old_final = snapshot(out / "final")
    t = trainer(vae_cfg(sample_identities, out, "train.max_steps=2", "train.overwrite=true"))
    assert t.run_id != old_id and run_folder.read_run_id(out) == t.run_id
    aside = out / f".replaced-{t.run_id}"
    assert snapshot(aside / "final") == old_final  # moved aside whole, not deleted yet
    assert [p.name for p in ckpt.list_checkpoints(aside)] == ["step_1", "step_2"]
    assert ckpt.list_checkpoints(out) == [] and not (out / "final").exists()
    real_save, seen = t.save, []

    def save_and_look():  # the old run goes only once this run's first checkpoint is committed
        seen.append(aside.is_dir())
        done = real_save()
        assert not aside.exists()
        return done

    t.save = save_and_look
    assert t.train() == 0
    assert seen == [True, False]
    assert {ckpt.read_state(p)["run_id"] for p in ckpt.list_checkpoints(out)} == {t.run_id}
    assert json.loads((out / "final" / "training.json").read_text())["step"] == 2


def test_pruning_only_touches_this_runs_checkpoints(tmp_path):
    root = ckpt.checkpoint_root(tmp_path)
    for step in (10, 11, 12):  # another run's checkpoints, with higher step numbers
        (root / f"step_{step}").mkdir(parents=True)
        ckpt.write_state(root / f"step_{step}", {"step": step, "run_id": "other"})
    for step in (1, 2, 3):
        tmp = ckpt.temporary_dir(tmp_path, step)
        ckpt.write_state(tmp, {"step": step, "run_id": "mine"})
        ckpt.commit(tmp, step, keep_last=2, run_id="mine")
    assert [p.name for p in ckpt.list_checkpoints(tmp_path, "mine")] == ["step_2", "step_3"]
    assert [p.name for p in ckpt.list_checkpoints(tmp_path, "other")] == ["step_10", "step_11", "step_12"]
    (tmp_path / run_folder.RUN_FILE).write_text(json.dumps({"run_id": "mine"}))
    latest = ckpt.resolve_resume("latest", tmp_path, run_folder.read_run_id(tmp_path))
    assert latest.name == "step_3"  # the folder's own run, not the highest step number


def test_a_failing_export_leaves_the_old_final_intact(sample_identities, earlier_run, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(earlier_run, out)
    before = snapshot(out / "final")
    t = trainer(vae_cfg(sample_identities, out, "train.max_steps=2", "train.resume=latest"))

    def broken_export(module, directory):
        directory.mkdir(parents=True)
        (directory / "half.safetensors").write_bytes(b"partial")
        raise OSError("disk full")

    t.task.export = broken_export
    with pytest.raises(OSError, match="disk full"):
        t.export()
    assert snapshot(out / "final") == before
    assert not (out / ".tmp-final").exists() and not (out / run_folder.OLD_FINAL_DIR).exists()
    # A crash between the two renames of a swap leaves the complete old export aside; the next export restores it.
    (out / "final").rename(out / run_folder.OLD_FINAL_DIR)
    run_folder.recover_final(out)
    assert snapshot(out / "final") == before
    del t.task.export  # the task's own export again
    assert t.export() == out / "final" and not (out / run_folder.OLD_FINAL_DIR).exists()


def test_report_to_takes_accelerates_trackers():
    from accelerate.tracking import get_available_trackers
    from accelerate.utils import LoggerType

    assert check_report_to("none") is None and check_report_to("tensorboard") == "tensorboard"
    with pytest.raises(ValueError, match="allowed: none, all, .*tensorboard.*wandb.*mlflow") as err:
        check_report_to("tensorbord")
    assert "\n" not in str(err.value)
    installed = {t.value for t in get_available_trackers()}
    missing = [t.value for t in LoggerType if t.value not in installed and t.value != "all"]
    assert missing, "every tracker is installed: nothing to check"
    with pytest.raises(ValueError, match=f"train.report_to={missing[0]} needs the {missing[0]} package"):
        check_report_to(missing[0])
    load_config(None, ["train.report_to=mlflow"])  # the config takes every name; the trainer checks it


def test_image_grid_goes_to_trackers_that_take_images():
    class Images:
        name = "imagey"

        def __init__(self):
            self.got = []

        def log_images(self, values, step=None):
            self.got.append((values, step))

    class ScalarsOnly:
        name = "scalars"

    takes = Images()
    grid = torch.rand(3, 8, 12)
    assert log_image_grid([takes, ScalarsOnly()], "validation/x", grid, 5) == 1
    (values, step), = takes.got
    image = values["validation/x"][0]
    assert step == 5 and image.shape == (8, 12, 3) and image.dtype.name == "uint8"
