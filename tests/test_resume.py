"""Exact resume: every learning-rate schedule with warm-up, a real Ctrl-C (SIGINT) and a SIGKILL in the middle of a
checkpoint save, each compared bit for bit (weights, optimiser state, per-step losses and learning rates) with a
straight run. Tiny `vae` stage (the cheapest task the trainer runs), CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from honestface.config import load_config
from honestface.training.checkpoint import list_checkpoints, read_state
from honestface.training.tasks import build_task
from honestface.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def vae_cfg(data: Path, out: Path, *overrides: str):
    return load_config(REPO / "configs" / "tiny" / "vae.yaml", [
        f"data.train_dir={data}", f"train.output_dir={out}", "data.batch_size=2", "train.report_to=none",
        "train.num_val_images=0", "train.log_every=1", "train.save_every=1000", "train.stage_params.scaling_batches=1", *overrides])


class Recorded(Trainer):
    """The trainer, recording each finished step's losses and learning rates."""

    def _train_step(self, micro):
        logs = super()._train_step(micro)
        self.history = {**getattr(self, "history", {}), self.step + 1: logs}
        return logs


def run(cfg) -> Recorded:
    return Recorded(cfg, build_task(cfg.train.stage, cfg))


def assert_same_run(straight: Recorded, resumed: Recorded, steps: range) -> None:
    a = straight.accelerator.unwrap_model(straight.module).state_dict()
    b = resumed.accelerator.unwrap_model(resumed.module).state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    for group, opt in straight.optimizers.items():
        sa, sb = opt.state_dict()["state"], resumed.optimizers[group].state_dict()["state"]
        assert all(torch.equal(sa[k]["exp_avg_sq"], sb[k]["exp_avg_sq"]) for k in sa)
    for step in steps:  # losses and learning rates of every step after the resume point (timings aside)
        a_logs, b_logs = ({k: v for k, v in run.history[step].items() if not k.startswith("perf/")}
                          for run in (straight, resumed))
        assert a_logs == b_logs, step
    if straight.ema is not None:
        assert straight.ema.optimization_step == resumed.ema.optimization_step
        assert all(torch.equal(x, y) for x, y in zip(straight.ema.shadow_params, resumed.ema.shadow_params,
                                                     strict=True))
    lrs = [v for s in sorted(straight.history) for k, v in straight.history[s].items() if k.startswith("lr/")]
    assert len(set(lrs)) > 2, lrs  # the schedule did move the learning rate


SCHEDULES = [("cosine", 2), ("linear", 3), ("constant", 3)]
SCHEDULE_ARGS = {name: [f"optim.scheduler={name}", f"optim.warmup_steps={w}"] for name, w in SCHEDULES}
SCHEDULE_ARGS["cosine+ema"] = [*SCHEDULE_ARGS["cosine"], "train.ema_decay=0.9"]


@pytest.mark.parametrize("schedule", [*(s for s, _ in SCHEDULES), "cosine+ema"])
def test_ctrl_c_then_resume_equals_a_straight_run(sample_identities, tmp_path, schedule):
    """A real SIGINT in the middle of step 3: the trainer finishes that step, saves, returns 130; the resumed run
    ends bit for bit where the straight run does (warm-up, then the schedule's decay; the EMA weights too)."""
    args = ("train.max_steps=6", *SCHEDULE_ARGS[schedule])
    straight = run(vae_cfg(sample_identities, tmp_path / "a", *args))
    assert straight.train() == 0
    first = run(vae_cfg(sample_identities, tmp_path / "b", *args))
    real_step = Trainer._train_step

    def interrupted(self, micro):
        if self.step == 2:  # inside step 3, before its backward
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(self, micro)

    first._train_step = interrupted.__get__(first)
    assert first.train() == 130
    assert [p.name for p in list_checkpoints(tmp_path / "b")] == ["step_3"]
    assert not (tmp_path / "b" / "final").exists()
    resumed = run(vae_cfg(sample_identities, tmp_path / "b", *args, "train.resume=latest"))
    assert resumed.step == 3
    assert resumed.train() == 0
    assert_same_run(straight, resumed, range(4, 7))


KILLED_RUN = """
import os, signal, sys
sys.path.insert(0, {repo!r})
from honestface.config import load_config
from honestface.training import checkpoint
from honestface.training.tasks import build_task
from honestface.training.trainer import Trainer
cfg = load_config({config!r}, {overrides!r})
write_state = checkpoint.write_state
def dying_write_state(directory, state):
    if state["step"] == 4:  # the step-4 checkpoint is half written: killed before its state file
        os.kill(os.getpid(), signal.SIGKILL)
    write_state(directory, state)
checkpoint.write_state = dying_write_state
Trainer(cfg, build_task(cfg.train.stage, cfg)).train()
"""


def test_sigkill_during_a_save_resumes_from_the_last_complete_checkpoint(sample_identities, tmp_path):
    """SIGKILL while step 4's checkpoint is being written: only step_2 counts as a checkpoint; resume=latest goes
    on from it and ends equal to a straight run. A resume that asks for another schedule is refused in one line."""
    args = ["train.max_steps=6", "train.save_every=2", *SCHEDULE_ARGS["cosine"]]
    straight = run(vae_cfg(sample_identities, tmp_path / "a", *args))
    assert straight.train() == 0
    out = tmp_path / "b"
    overrides = [f"data.train_dir={sample_identities}", f"train.output_dir={out}", "data.batch_size=2",
                 "train.report_to=none", "train.num_val_images=0", "train.log_every=1",
                 "train.stage_params.scaling_batches=1", *args]
    script = KILLED_RUN.format(repo=str(REPO), config=str(REPO / "configs" / "tiny" / "vae.yaml"), overrides=overrides)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    killed = subprocess.run([sys.executable, "-c", script], check=False, cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert [p.name for p in list_checkpoints(out)] == ["step_2"]
    assert (out / "checkpoints" / ".tmp-step_4").is_dir()  # the broken save, never mistaken for a checkpoint

    with pytest.raises(ValueError, match=r"train\.max_steps=6.*train\.max_steps=8") as err:
        run(vae_cfg(sample_identities, out, *args, "train.max_steps=8", "train.resume=latest"))
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="optim.scheduler=cosine"):
        run(vae_cfg(sample_identities, out, *args, "optim.scheduler=linear", "train.resume=latest"))

    resumed = run(vae_cfg(sample_identities, out, *args, "train.resume=latest"))
    assert resumed.step == 2
    assert resumed.train() == 0
    assert_same_run(straight, resumed, range(3, 7))
    saved = list_checkpoints(out)
    assert [p.name for p in saved] == ["step_2", "step_4", "step_6"]
    assert not (out / "checkpoints" / ".tmp-step_4").exists()
    assert len({read_state(p)["run_id"] for p in saved}) == 1  # the resumed run is the same run


def test_an_interrupt_raised_inside_a_step_saves_only_a_consistent_state(sample_identities, tmp_path):
    """A KeyboardInterrupt raised inside step 4 (a second Ctrl-C, or one Python delivers outside the handler): before
    any weight changed, the checkpoint is step 3 with the data position of step 3 and resumes exactly; once the
    step's optimiser has stepped, nothing is saved and the last complete checkpoint stays the newest."""
    args = ("train.max_steps=6", *SCHEDULE_ARGS["cosine"])
    straight = run(vae_cfg(sample_identities, tmp_path / "a", *args))
    assert straight.train() == 0

    early = run(vae_cfg(sample_identities, tmp_path / "b", *args))
    real_step = Trainer._train_step

    def before_update(self, micro):  # its batches were drawn; no weight changed yet
        if self.step == 3:
            raise KeyboardInterrupt
        return real_step(self, micro)

    early._train_step = before_update.__get__(early)
    assert early.train() == 130
    assert [p.name for p in list_checkpoints(tmp_path / "b")] == ["step_3"]
    resumed = run(vae_cfg(sample_identities, tmp_path / "b", *args, "train.resume=latest"))
    assert resumed.train() == 0
    assert_same_run(straight, resumed, range(4, 7))

    late = run(vae_cfg(sample_identities, tmp_path / "c", *args, "train.save_every=2"))
    scheduler = next(iter(late.schedulers.values()))
    real_scheduler_step = scheduler.step

    def after_update(*a, **k):  # the optimiser has stepped: the step is half done
        if late.step == 3:
            raise KeyboardInterrupt
        return real_scheduler_step(*a, **k)

    scheduler.step = after_update
    assert late.train() == 130
    assert [p.name for p in list_checkpoints(tmp_path / "c")] == ["step_2"]
