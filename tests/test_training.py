"""The trainer on the tiny HonestFace config (CPU, random weights, bundled faces): losses, resume, guards, export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from honestface.config import load_config
from honestface.training import run_training
from honestface.training.checkpoint import list_checkpoints, read_state
from honestface.training.tasks import build_task
from honestface.training.trainer import BadLossError, Trainer

LOSS_TERMS = ("mse", "perceptual", "identity", "mfa", "adversarial", "generator", "discriminator")


def tiny_cfg(data: Path, out: Path, *overrides: str):
    return load_config("configs/tiny/honestface.yaml", [
        f"data.train_dir={data}", f"train.output_dir={out}", "data.batch_size=2", "data.num_workers=0",
        "loss.networks=random", "train.log_every=1", "train.eval_every=1000", "train.save_every=1000",
        "train.num_val_images=2", "train.disc_start_step=0", *overrides])


def trainer(cfg) -> Trainer:
    return Trainer(cfg, build_task(cfg.train.stage, cfg))


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float]]] = {}
    for events in sorted((run_dir / "logs").rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


def trainable_state(t: Trainer) -> dict[str, torch.Tensor]:
    module = t.accelerator.unwrap_model(t.module)
    return {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}


def test_two_gd_steps_log_every_loss_term(sample_identities, tmp_path):
    cfg = tiny_cfg(sample_identities, tmp_path / "run", "train.max_steps=2", "train.eval_every=2")
    assert run_training(cfg) == 0
    logged = scalars(tmp_path / "run")
    for term in LOSS_TERMS:
        values = [v for _, v in logged[f"loss/{term}"]]
        assert len(values) == 2 and all(torch.isfinite(torch.tensor(values))), term
    assert {"disc/logits_real", "disc/logits_fake", "grad_norm/generator", "lr/generator", "perf/images_per_s"} \
        <= set(logged)
    assert (tmp_path / "run" / "config.yaml").is_file()
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step_2"]
    # The export is a complete HonestFace folder that reproduces the trained model.
    from honestface.models import HonestFace

    model = HonestFace.from_pretrained(tmp_path / "run" / "final")
    assert sum(p.numel() for p in model.trainable_parameters()) > 0


def test_resume_continues_exactly(sample_identities, tmp_path):
    straight = trainer(tiny_cfg(sample_identities, tmp_path / "a", "train.max_steps=6", "train.report_to=none"))
    assert straight.train() == 0
    first = trainer(tiny_cfg(sample_identities, tmp_path / "b", "train.max_steps=3", "train.report_to=none"))
    assert first.train() == 0
    resumed = trainer(tiny_cfg(sample_identities, tmp_path / "b", "train.max_steps=6", "train.report_to=none",
                               "train.resume=latest"))
    assert resumed.step == 3 and resumed.epoch == first.epoch and resumed.batch_in_epoch == first.batch_in_epoch
    assert resumed.train() == 0
    a, b = trainable_state(straight), trainable_state(resumed)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    for group in ("generator", "discriminator"):
        sa = straight.optimizers[group].state_dict()["state"]
        sb = resumed.optimizers[group].state_dict()["state"]
        assert all(torch.equal(sa[k]["exp_avg"], sb[k]["exp_avg"]) for k in sa)


def test_resume_across_an_epoch_boundary(sample_identities, tmp_path):
    """8 identities x 3 images, batch 8: 3 batches per epoch, so the resumed run starts in epoch 1."""
    common = ("data.batch_size=8", "train.report_to=none", "loss.mfa=0", "loss.identity=0")
    straight = trainer(tiny_cfg(sample_identities, tmp_path / "a", "train.max_steps=5", *common))
    assert straight.train() == 0
    assert trainer(tiny_cfg(sample_identities, tmp_path / "b", "train.max_steps=4", *common)).train() == 0
    resumed = trainer(tiny_cfg(sample_identities, tmp_path / "b", "train.max_steps=5", "train.resume=latest",
                               *common))
    assert (resumed.epoch, resumed.batch_in_epoch) == (1, 1)
    assert resumed.train() == 0
    a, b = trainable_state(straight), trainable_state(resumed)
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_loss_regression_first_steps(sample_identities, tmp_path):
    """Pins the first steps' losses for seed 0: a change in any of the model, losses, data or degradation code that
    moves them is caught (update the numbers only for an intended change)."""
    cfg = tiny_cfg(sample_identities, tmp_path / "run", "train.max_steps=2")
    assert run_training(cfg) == 0
    logged = scalars(tmp_path / "run")
    got = {term: [round(v, 4) for _, v in logged[f"loss/{term}"]] for term in ("mse", "generator", "discriminator")}
    expected = EXPECTED_FIRST_LOSSES
    for term, values in expected.items():
        assert got[term] == pytest.approx(values, rel=2e-3, abs=2e-4), got


EXPECTED_FIRST_LOSSES = {"mse": [0.3508, 0.4022], "generator": [0.5494, 0.6189], "discriminator": [1.4377, 1.3921]}


def test_non_finite_losses_are_skipped_then_stop(sample_identities, tmp_path, monkeypatch):
    t = trainer(tiny_cfg(sample_identities, tmp_path / "run", "train.max_steps=8", "train.save_every=2",
                         "train.max_bad_steps=2", "train.report_to=none"))
    module = t.accelerator.unwrap_model(t.module)
    real_forward = module.forward
    before = {}

    def poisoned(batch, phase):
        loss, logs, carry = real_forward(batch, phase)
        if t.step >= 2 and phase == "generator":
            if not before:
                before.update(trainable_state(t))
            loss = loss * float("nan")
        return loss, logs, carry

    monkeypatch.setattr(module, "forward", poisoned)
    with pytest.raises(BadLossError, match="non-finite"):
        t.train()
    assert t.step == 4  # steps 2 and 3 were skipped; the third bad one in a row (step 4) stops the run
    after = trainable_state(t)
    assert all(torch.equal(before[n], after[n]) for n in before)  # skipped steps changed nothing
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step_2", "step_4"]


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(sample_identities, tmp_path, monkeypatch):
    t = trainer(tiny_cfg(sample_identities, tmp_path / "run", "train.max_steps=10", "train.report_to=none"))
    real_step = t._train_step

    def interrupt(micro):
        if t.step == 3:
            raise KeyboardInterrupt
        return real_step(micro)

    monkeypatch.setattr(t, "_train_step", interrupt)
    assert t.train() == 130
    saved = list_checkpoints(tmp_path / "run")
    assert [p.name for p in saved] == ["step_3"] and read_state(saved[0])["step"] == 3
    assert not (tmp_path / "run" / "final").exists()
    assert not any(p.name.startswith(".tmp") for p in (tmp_path / "run" / "checkpoints").iterdir())


def test_bad_resume_path_is_a_clear_error(sample_identities, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        trainer(tiny_cfg(sample_identities, tmp_path / "run", f"train.resume={tmp_path}", "train.report_to=none"))


def test_starting_epochs_leaves_the_global_rng_alone(sample_identities, tmp_path):
    """Starting an epoch, or a resumed epoch that skips batches, must not draw from torch's global RNG: a resumed
    run restores it from the checkpoint, and a task with dropout would diverge if creating the iterator moved it."""
    cfg = tiny_cfg(sample_identities, tmp_path / "run", "train.max_steps=1", "train.report_to=none")
    t = trainer(cfg)
    for skip in (0, 1):
        t.epoch, t.batch_in_epoch = 0, skip
        before = torch.get_rng_state()
        next(t._batches())
        assert torch.equal(torch.get_rng_state(), before), f"skip={skip}"
