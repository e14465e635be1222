"""VSPBFR training stages through the trainer: `vspbfr_encoder` (stage 0), `vspbfr_diffuser` (stage 1) and
`vspbfr_restoration` (stage 2) on the tiny preset (CPU, random weights, 32 px faces from the bundled photos)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from honestface.config import load_config
from honestface.models.vspbfr import LatentCodeDiscriminator
from honestface.models.vspbfr.vspbfr import VSPBFR
from honestface.training.tasks import TASKS, build_task
from honestface.training.tasks.common import r1_due
from honestface.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
STAGES = ("vspbfr_encoder", "vspbfr_diffuser", "vspbfr_restoration")
PARTS = ("style_encoder", "stylegan", "code_diffuser", "restoration", "discriminator")


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest)


def make_cfg(stage: str, data: Path, out: Path, *overrides: str):
    return load_config(REPO / "configs" / "tiny" / f"{stage}.yaml",
                       [f"data.train_dir={data}", f"train.output_dir={out}", "train.report_to=none", *overrides])


@pytest.fixture(scope="module")
def tasks(sample_identities: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("vspbfr_tasks")
    return {s: build_task(s, make_cfg(s, sample_identities, out / s)) for s in STAGES}


def first_batch(task, step: int = 0) -> dict:
    batch = task.collate()([task.train_dataset()[i] for i in range(2)])
    return task.prepare_batch(batch, step)


def run_phases(task, batch: dict, phases: list[str]) -> list[tuple[str, torch.Tensor, dict, set[int]]]:
    """Each phase as the trainer runs it (carry merged into the batch); the ids of the parameters it reached."""
    out = []
    for phase in phases:
        task.module.zero_grad(set_to_none=True)
        loss, logs, carry = task.module(batch, phase)
        loss.backward()
        batch = {**batch, **carry}
        out.append((phase, loss, logs, {id(p) for p in task.module.parameters() if p.grad is not None}))
    task.module.zero_grad(set_to_none=True)
    return out


def test_stages_registered_and_lazy_r1_schedule(tasks):
    assert set(STAGES) <= set(TASKS)
    assert [s for s in range(40) if r1_due(s, 16)] == [0, 16, 32]
    assert not any(r1_due(s, 0) for s in range(5))
    d, g = "discriminator", "restoration"
    assert [tasks["vspbfr_restoration"].phases(s) for s in (0, 1, 15, 16, 17)] == \
        [[d, d, g], [d, g], [d, g], [d, d, g], [d, g]]
    w, e = "latent_discriminator", "style_encoder"
    assert [tasks["vspbfr_encoder"].phases(s) for s in (0, 5, 32)] == [[w, w, e], [w, e], [w, w, e]]
    assert tasks["vspbfr_diffuser"].phases(0) == ["code_diffuser"]
    assert [first_batch(tasks["vspbfr_restoration"], s)["r1_due"] for s in (0, 1, 16)] == [True, False, True]


@pytest.mark.parametrize("stage, trained", [("vspbfr_encoder", {"style_encoder"}),
                                            ("vspbfr_diffuser", {"code_diffuser"}),
                                            ("vspbfr_restoration", {"restoration", "discriminator"})])
def test_gradients_reach_exactly_the_stage_parameters(tasks, stage: str, trained: set[str]):
    task = tasks[stage]
    model = task.module.model
    groups = task.param_groups()
    in_groups = {id(p) for g in groups.values() for p in g}
    assert in_groups == {id(p) for p in task.module.parameters() if p.requires_grad}
    for name in PARTS:
        part = getattr(model, name)
        if part is None:
            continue
        assert all(p.requires_grad == (name in trained) for p in part.parameters()), name
        assert part.training == (name in trained), name  # frozen parts stay in eval mode
    batch = first_batch(task, step=0)  # an R1 step: every phase, the lazy regulariser included
    results = run_phases(task, batch, task.phases(0))
    for phase, loss, logs, reached in results:
        assert torch.isfinite(loss), phase
        assert reached == {id(p) for p in groups[phase]}, phase  # nothing frozen, nothing of another optimiser
    if stage != "vspbfr_diffuser":
        assert [("r1" in " ".join(logs)) for _, _, logs, _ in results[:2]] == [False, True]


@pytest.mark.parametrize("stage, columns", [("vspbfr_encoder", ["lq", "inverted", "gt"]),
                                            ("vspbfr_diffuser", ["lq", "inverted_lq", "prompt", "gt"]),
                                            ("vspbfr_restoration", ["lq", "inverted", "restored", "gt"])])
def test_validation_images(tasks, stage: str, columns: list[str]):
    task = tasks[stage]
    task.module.eval()
    try:
        images = task.images(task.module, first_batch(task, 0))
    finally:
        task.module.train()
    assert list(images) == columns
    assert all(v.shape == (2, 3, 32, 32) and torch.isfinite(v).all() for v in images.values())
    assert not torch.allclose(images[columns[1]], images["lq"])


def test_encoder_losses_are_the_documented_sum(tasks):
    task = tasks["vspbfr_encoder"]
    batch = first_batch(task, 1) | {"progressive_stage": 3}
    loss, logs, _ = task.module(batch, "style_encoder")
    p = task.params
    expected = sum(p[f"{k}_weight"] * logs[f"loss/{k}"] for k in ("l2", "lpips", "id", "w_disc", "delta_norm"))
    torch.testing.assert_close(loss.detach(), expected)
    with torch.no_grad():  # the delta norm: offsets of rows 1..3 from the base code, L2 over D, summed, batch mean
        enc = task.module.model.style_encoder
        w = enc(batch["lq_in"], progressive_stage=3) - enc.latent_avg
        manual = (w[:, 1:4] - w[:, :1]).norm(dim=-1).sum(1).mean()
        assert torch.equal(w[:, 4:], w[:, :1].expand(-1, w.shape[1] - 4, -1))  # inactive deltas: the base code
    torch.testing.assert_close(logs["loss/delta_norm"], manual)


def test_encoder_progressive_schedule_and_latent_discriminator(sample_identities: Path, tmp_path: Path):
    task = build_task("vspbfr_encoder", make_cfg(
        "vspbfr_encoder", sample_identities, tmp_path, "train.stage_params.progressive_start=4",
        "train.stage_params.progressive_every=2"))
    n = task.model.n_latent
    assert [task.progressive_stage(s) for s in (0, 3, 4, 5, 6, 100)] == [0, 0, 1, 1, 2, n - 1]
    disc = LatentCodeDiscriminator(512, 4)  # e4e's LatentCodesDiscriminator(512, 4) state-dict layout
    assert [k for k in disc.state_dict() if k.endswith("weight")] == [f"mlp.{i}.weight" for i in (0, 2, 4, 6)]
    assert disc(torch.randn(3, 512)).shape == (3, 1)
    off = build_task("vspbfr_encoder", make_cfg("vspbfr_encoder", sample_identities, tmp_path,
                                                "train.stage_params.w_disc_weight=0"))
    assert off.phases(0) == ["style_encoder"] and list(off.param_groups()) == ["style_encoder"]


def test_encoder_starts_from_an_e4e_checkpoint(sample_identities: Path, tmp_path: Path):
    """`e4e_checkpoint`: encoder, latent_avg and StyleGAN2 decoder from an e4e-layout file (weights-only load)."""
    from honestface.models.vspbfr.vspbfr import build_vspbfr

    source = build_vspbfr("tiny", seed=123)
    avg = torch.randn(1, 32)
    state = {f"encoder.{k}": v for k, v in source.style_encoder.state_dict().items() if k != "latent_avg"}
    state |= {f"decoder.{k}": v for k, v in source.stylegan.state_dict().items()}
    torch.save({"state_dict": state, "latent_avg": avg}, tmp_path / "e4e.pt")
    task = build_task("vspbfr_encoder", make_cfg("vspbfr_encoder", sample_identities, tmp_path / "run",
                                                 f"train.stage_params.e4e_checkpoint={tmp_path / 'e4e.pt'}"))
    enc, sg = task.model.style_encoder, task.model.stylegan
    torch.testing.assert_close(enc.latent_avg, avg.expand(10, 32))
    for name, value in source.stylegan.state_dict().items():
        assert torch.equal(sg.state_dict()[name], value), name
    for name, value in source.style_encoder.state_dict().items():
        if name != "latent_avg":
            assert torch.equal(enc.state_dict()[name], value), name
    assert all(p.requires_grad for p in enc.parameters()) and not any(p.requires_grad for p in sg.parameters())


@pytest.mark.parametrize("x_start", ["lq_code", "hq_code"])
def test_diffuser_loss_kd_logged_only_and_x_start(tasks, x_start: str):
    task = tasks["vspbfr_diffuser"]
    task.module.p["x_start"] = x_start
    try:
        batch = first_batch(task, 3)
        loss, logs, _ = task.module(batch, "code_diffuser")
    finally:
        task.module.p["x_start"] = "lq_code"
    p = task.params
    expected = sum(p[f"{k}_weight"] * logs[f"loss/{k}"] for k in ("l1", "lpips", "id"))
    torch.testing.assert_close(loss.detach(), expected)  # the KD term is not part of the loss
    assert math.isfinite(float(logs["loss/kd"])) and float(logs["loss/kd"]) > 0
    m = task.module.model
    with torch.no_grad():  # the chain starts from the chosen code, conditioned on E(LQ), supervised by E(HQ)
        w_lq, w_hq = m.encode_lq(batch["lq_in"]), m.encode_lq(batch["hq_in"])
        g = torch.Generator().manual_seed(int(batch["seed"]) + 1)
        w0 = m.diffusion.train_chain(m.code_diffuser, w_lq if x_start == "lq_code" else w_hq, w_lq, generator=g)
    torch.testing.assert_close(logs["loss/l1"], (w0 - w_hq).abs().mean())


def test_restoration_lpips_reduction_and_shared_prompt(tasks):
    task = tasks["vspbfr_restoration"]
    batch = first_batch(task, 1)
    _, _, carry = task.module(batch, "discriminator")
    assert carry["r1_pending"] is False and carry["w0"].shape == (2, task.model.n_latent, 32)
    assert sorted(b.shape[-1] for b in carry["bank"]) == task.model.restoration.decoder_resolutions
    task.module.eval()  # no dropout: two calls give the same restoration
    try:
        _, mean_logs, _ = task.module({**batch, **carry}, "restoration")
        task.module.p["lpips_reduction"] = "sum"
        _, sum_logs, _ = task.module({**batch, **carry}, "restoration")
    finally:
        task.module.p["lpips_reduction"] = "mean"
        task.module.train()
    torch.testing.assert_close(sum_logs["loss/lpips"], 2 * mean_logs["loss/lpips"])  # official: batch sum


def test_three_stages_chain_through_the_trainer(sample_identities: Path, tmp_path: Path):
    """Stage 0 -> 1 -> 2, two steps each through the real Trainer, each from the previous export."""
    expect = {"vspbfr_encoder": ("l2", "lpips", "id", "w_disc", "delta_norm", "style_encoder", "latent_discriminator"),
              "vspbfr_diffuser": ("l1", "lpips", "id", "kd", "code_diffuser"),
              "vspbfr_restoration": ("adv", "lpips", "id", "restoration", "discriminator")}
    r1_key = {"vspbfr_encoder": "loss/w_disc_r1", "vspbfr_restoration": "loss/r1"}
    previous, exports, trainer = None, {}, None
    for stage in STAGES:
        extra = [f"model.pretrained={previous}"] if previous else []
        cfg = make_cfg(stage, sample_identities, tmp_path / stage, "train.max_steps=2", "train.log_every=1",
                       "train.save_every=1000", "train.num_val_images=0", *extra)
        trainer = Trainer(cfg, build_task(stage, cfg))
        logged: list[tuple[int, dict]] = []
        trainer.accelerator.log = lambda logs, step=None, out=logged, **_: out.append((step, dict(logs)))
        assert trainer.train() == 0
        assert [s for s, _ in logged] == [1, 2]
        for _, logs in logged:
            for term in expect[stage]:
                assert math.isfinite(logs[f"loss/{term}"]), (stage, term)
        if stage in r1_key:  # lazy R1 on trainer step 0 (logged as step 1) only
            assert [r1_key[stage] in logs for _, logs in logged] == [True, False]
        previous = tmp_path / stage / "final"
        exports[stage] = VSPBFR.from_pretrained(previous)

    def same(a: VSPBFR, b: VSPBFR, part: str) -> bool:
        sa, sb = getattr(a, part).state_dict(), getattr(b, part).state_dict()
        return all(torch.equal(sa[k], sb[k]) for k in sa)

    enc, dif, res = exports["vspbfr_encoder"], exports["vspbfr_diffuser"], exports["vspbfr_restoration"]
    assert same(enc, dif, "style_encoder") and same(enc, dif, "stylegan") and not same(enc, dif, "code_diffuser")
    for part in ("style_encoder", "stylegan", "code_diffuser"):
        assert same(dif, res, part), part  # frozen in stage 2
    assert not same(dif, res, "restoration") and res.discriminator is not None
    ema = trainer.ema.shadow_params  # the export holds the EMA restoration weights
    assert all(torch.equal(p, s) for p, s in zip(res.restoration.parameters(), ema))
    lq = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        a = res(lq, generator=torch.Generator().manual_seed(3)).image
        b = res(lq, generator=torch.Generator().manual_seed(3)).image
    assert a.shape == (1, 3, 32, 32) and torch.isfinite(a).all() and torch.equal(a, b)


def test_restoration_resume_continues_exactly(sample_identities: Path, tmp_path: Path):
    """Every draw of stage 2 (z, mixing, noise, dropout, degradation) is seeded by step: 2 + 2 steps == 4 steps."""
    def run(out: Path, steps: int, *extra: str) -> dict[str, torch.Tensor]:
        cfg = make_cfg("vspbfr_restoration", sample_identities, out, f"train.max_steps={steps}", "train.save_every=2",
                       "train.num_val_images=0", *extra)
        trainer = Trainer(cfg, build_task(cfg.train.stage, cfg))
        assert trainer.train() == 0
        module = trainer.accelerator.unwrap_model(trainer.module)
        return {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}

    straight = run(tmp_path / "a", 4)
    run(tmp_path / "b", 2)
    resumed = run(tmp_path / "b", 4, "train.resume=latest")
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


@pytest.mark.parametrize("stage, override, match", [
    ("vspbfr_encoder", "train.stage_params.l2=1.0", r"unknown train.stage_params key 'l2' for stage 'vspbfr_encoder'"),
    ("vspbfr_encoder", "train.stage_params.w_disc_layers=2.5", "w_disc_layers must be an int"),
    ("vspbfr_encoder", "train.stage_params.progressive_start=-1", "progressive_start must be an int >= 0"),
    ("vspbfr_encoder", "train.stage_params.lpips_weight=-0.1", "lpips_weight must be >= 0"),
    ("vspbfr_encoder", "train.stage_params.e4e_checkpoint=/no/such/e4e.pt", "e4e_checkpoint: no such file"),
    ("vspbfr_diffuser", "train.stage_params.x_start=noise", "x_start must be one of lq_code, hq_code"),
    ("vspbfr_diffuser", "train.stage_params.l1_weight=abc", "l1_weight must be a number"),
    ("vspbfr_restoration", "train.stage_params.lpips_reduction=max", "lpips_reduction must be one of mean, sum"),
    ("vspbfr_restoration", "train.stage_params.mixing=1.5", "mixing must be in"),
    ("vspbfr_restoration", "data.resolution=64", "data.resolution 64 must equal the restoration size 32"),
    ("vspbfr_restoration", "model.name=honestface", "set model.name=vspbfr"),
    ("vspbfr_diffuser", "model.params.code_diffuser.n_blocks=2 model.pretrained=/x", "cannot change the pretrained"),
])
def test_bad_stage_settings_are_one_line_errors(sample_identities: Path, tmp_path: Path, stage: str, override: str,
                                                match: str):
    with pytest.raises((ValueError, FileNotFoundError), match=match) as info:
        build_task(stage, make_cfg(stage, sample_identities, tmp_path, *override.split()))
    assert "\n" not in str(info.value)
