"""Small-scale recipe stages for the trainer: the `vae` task (tiny AutoencoderKL) and the `vre` task (dual HQ/LQ VQ
autoencoders with the association loss, exported as a frozen VRE). Tiny random models, 64x64 sample faces, CPU."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from honestface.config import load_config
from honestface.data import samples
from honestface.data.degradation import Degradation, sample_seed
from honestface.models.presets import _PRESETS
from honestface.models.vq_association import DualVQAutoencoder, association_loss
from honestface.models.vre import VRE_PRESETS, VisualRepresentationEmbedder
from honestface.training.tasks import TASKS, build_task

REPO = Path(__file__).resolve().parents[1]
FACES = ("astronaut", "grace_hopper", "tom_hanks_aligned", "group_t1")


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest)


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faces")
    for i, name in enumerate(FACES):
        image = samples.load_sample(name)
        if name == "group_t1":  # one face of the group photo
            image = image[100:400, 300:600]
        Image.fromarray(np.ascontiguousarray(image)).resize((64, 64), Image.BICUBIC).save(root / f"{i:02d}.png")
    return root


def make_cfg(stage: str, faces: Path, out: Path, *overrides: str):
    return load_config(REPO / "configs" / "tiny" / f"{stage}.yaml",
                       [f"data.train_dir={faces}", f"train.output_dir={out}", "train.report_to=none",
                        "data.batch_size=2", *overrides])


def first_batch(task, step: int = 0, n: int = 2) -> dict:
    batch = task.collate()([task.train_dataset()[i] for i in range(n)])
    return task.prepare_batch(batch, step)


def grads_of(module: torch.nn.Module) -> set[int]:
    return {id(p) for p in module.parameters() if p.grad is not None}


def train_steps(task, batch: dict, phases: list[str], steps: int, lr: float = 1e-3) -> None:
    opts = {ph: torch.optim.Adam(task.param_groups()[ph], lr=lr) for ph in phases}
    for _ in range(steps):
        for ph in phases:
            opts[ph].zero_grad(set_to_none=True)
            loss, _, _ = task.module(batch, ph)
            loss.backward()
            opts[ph].step()


# ------------------------------------------------------------------------------------------------------- vae
@pytest.fixture(scope="module")
def vae_task(faces: Path, tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    return build_task("vae", make_cfg("vae", faces, tmp_path_factory.mktemp("vae_run")))


def test_tasks_table():
    assert {"vae", "vre"} <= set(TASKS)


def test_vae_forward_gradients_and_training(vae_task):
    task = vae_task
    batch = first_batch(task)
    assert batch["hq_in"].min() >= -1 and batch["hq_in"].max() <= 1 and batch["hq_in"].min() < -0.5
    assert task.phases(0) == ["generator"]
    loss, logs, carry = task.module(batch, "generator")
    assert torch.isfinite(loss) and carry == {}
    assert {"loss/l1", "loss/kl", "loss/perceptual", "loss/vae"} <= set(logs)
    with torch.no_grad():  # KL per image summed over the latent, on the per-value scale of the mean L1
        kl = task.module.vae.encode(batch["hq_in"]).latent_dist.kl().mean() / (3 * 64 * 64)
    torch.testing.assert_close(logs["loss/kl"], kl)
    task.module.zero_grad(set_to_none=True)
    loss.backward()
    group = task.param_groups()["generator"]
    assert grads_of(task.module) == {id(p) for p in group}  # the whole VAE, nothing of the frozen LPIPS
    with pytest.raises(ValueError, match="phase 'hq'"):
        task.module(batch, "hq")

    def l1() -> float:
        with torch.no_grad():
            rec, _ = task.module.reconstruct(batch["hq_in"], sample=False)
        return float((rec - batch["hq_in"]).abs().mean())

    images = task.images(task.module, batch)
    assert list(images) == ["hq", "reconstruction"] and images["reconstruction"].shape == (2, 3, 64, 64)
    before = l1()
    torch.manual_seed(1)
    train_steps(task, batch, ["generator"], steps=8)
    assert l1() < 0.8 * before


def test_vae_export_loads_with_measured_scaling_factor(vae_task, tmp_path: Path):
    from diffusers import AutoencoderKL

    task = vae_task
    task.export(task.module, tmp_path)
    vae = AutoencoderKL.from_pretrained(tmp_path / "vae")
    # 1 / std of posterior samples over the training faces (a single batch of all 4 here), independently
    x = task.collate()([task.train_dataset()[i] for i in range(4)])["hq"] * 2 - 1
    with torch.no_grad():
        gen = torch.Generator().manual_seed(task.cfg.train.seed)
        z = torch.cat([vae.encode(x[i:i + 2]).latent_dist.sample(generator=gen) for i in (0, 2)])
        ours = task.module.vae.encode(x).latent_dist.mode()
    assert vae.config.scaling_factor == pytest.approx(1 / z.double().std(unbiased=False).item(), rel=1e-4)
    assert vae.config.scaling_factor != 0.18215
    torch.testing.assert_close(vae.encode(x).latent_dist.mode(), ours)


# ------------------------------------------------------------------------------------------------------- vre
@pytest.fixture(scope="module")
def vre_task(faces: Path, tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    cfg = make_cfg("vre", faces, tmp_path_factory.mktemp("vre_run"), "train.max_steps=10",
                   "train.stage_params.hq_steps=4", "train.stage_params.lq_steps=2", "train.stage_params.assoc_steps=6")
    return build_task("vre", cfg)


def test_vre_schedule_and_default_split(vre_task, faces: Path, tmp_path: Path):
    assert [vre_task.phases(s) for s in (0, 1, 2, 3, 4, 9, 50)] == [["hq", "lq"]] * 2 + [["hq"]] * 2 + [["hq", "lq"]] * 3
    assert [vre_task.association(s) for s in (3, 4)] == [False, True]
    # no step counts: OSDFace's 50:10:10 epoch proportions of train.max_steps; preset from model.preset (tiny)
    cfg = load_config(REPO / "configs" / "tiny" / "honestface.yaml",
                      [f"data.train_dir={faces}", f"train.output_dir={tmp_path}", "train.stage=vre", "train.max_steps=60",
                       "loss.networks=random"])
    task = build_task("vre", cfg)
    assert (task.hq_steps, task.lq_steps, task.assoc_start, task.total_steps) == (50, 10, 50, 60)
    assert task.head == {k: VRE_PRESETS["tiny"][k] for k in ("num_tokens", "proj_hidden", "out_dim")}
    with pytest.warns(UserWarning, match="schedule"):  # a schedule that does not fit max_steps is pointed out
        build_task("vre", make_cfg("vre", faces, tmp_path, "train.max_steps=100", "train.stage_params.hq_steps=200",
                                   "train.stage_params.lq_steps=40", "train.stage_params.assoc_steps=40"))


def test_vre_lq_is_seeded_by_seed_index_step(vre_task):
    task = vre_task
    raw = task.collate()([task.train_dataset()[i] for i in (1, 3)])
    a, b, c = task.prepare_batch(raw, 0), task.prepare_batch(raw, 0), task.prepare_batch(raw, 1)
    torch.testing.assert_close(a["lq"], b["lq"])
    assert not torch.equal(a["lq"], c["lq"])
    seeds = [sample_seed(task.cfg.train.seed, i, 0) for i in (1, 3)]
    direct = Degradation(task.cfg.degradation.preset)(raw["hq"], seeds=seeds).lq.clamp(0, 1)
    torch.testing.assert_close(a["lq"], direct)
    torch.testing.assert_close(a["lq_in"], a["lq"] * 2 - 1)
    assert "lq" not in task.prepare_batch(raw, 2)  # HQ-only step: no degradation drawn
    images = task.images(task.module, a)
    assert list(images) == ["hq", "hq_reconstruction", "lq", "lq_reconstruction"]
    assert all(v.shape == (2, 3, 64, 64) and v.min() >= -1 and v.max() <= 1 for v in images.values())


def test_vre_gray_draw_grays_the_hq_target(faces: Path, tmp_path: Path):
    task = build_task("vre", make_cfg("vre", faces, tmp_path, "degradation.params.gray_prob=1.0",
                                      "train.stage_params.perceptual_weight=0.0"))
    batch = first_batch(task, 0)
    for key in ("hq", "lq"):
        torch.testing.assert_close(batch[key][:, 0], batch[key][:, 2])
    assert not torch.equal(task.train_dataset()[0]["hq"][0], task.train_dataset()[0]["hq"][2])


@pytest.mark.parametrize("step", [0, 5])  # dictionaries, then association
def test_vre_gradients_reach_exactly_the_phase_group(vre_task, step: int):
    task = vre_task
    batch = first_batch(task, step)
    groups = task.param_groups()
    dual = task.module.dual
    assert {id(p) for g in groups.values() for p in g} == {id(p) for p in dual.parameters()}
    for phase in ("hq", "lq"):
        task.module.zero_grad(set_to_none=True)
        loss, logs, _ = task.module(batch, phase)
        assert torch.isfinite(loss)
        assert (f"loss/{phase}_assoc" in logs) == (step == 5)
        loss.backward()
        expected = {id(p) for p in groups[phase]}
        if step == 0 and phase == "lq":
            expected.discard(id(dual.logit_scale))  # the temperature only learns in the association phase
        assert grads_of(task.module) == expected
    task.module.zero_grad(set_to_none=True)


def test_vre_training_reduces_reconstruction(vre_task):
    task = vre_task
    batch = first_batch(task, 0)

    def l1(side: str) -> float:
        with torch.no_grad():
            return float(task.module(batch, side)[1][f"loss/{side}_l1"])

    before = {s: l1(s) for s in ("hq", "lq")}
    train_steps(task, batch, ["hq", "lq"], steps=10)
    after = {s: l1(s) for s in ("hq", "lq")}
    for side in ("hq", "lq"):
        assert after[side] < 0.9 * before[side], side


def test_association_loss_is_a_contrastive_loss():
    scale = torch.tensor(math.log(1 / 0.07))
    same = torch.ones(2, 8, 3, 3)  # every patch identical: uniform logits
    loss, _ = association_loss(same, same, scale)
    assert loss.item() == pytest.approx(math.log(18), rel=1e-5)
    eye = torch.eye(18).reshape(18, 2, 3, 3).permute(1, 0, 2, 3)  # (2, 18, 3, 3): orthogonal patches
    matched, acc = association_loss(eye, eye, torch.tensor(math.log(100.0)))
    shuffled, acc_shuffled = association_loss(eye, eye.roll(1, dims=0), torch.tensor(math.log(100.0)))
    assert matched.item() < 1e-6 and acc.item() == 1.0
    assert shuffled.item() > 50 and acc_shuffled.item() == 0.0
    with pytest.raises(ValueError, match="same shape|one shape"):
        association_loss(eye, eye[:1], scale)


def test_association_phase_aligns_matched_hq_lq_patches(faces: Path, tmp_path: Path):
    torch.manual_seed(0)
    task = build_task("vre", make_cfg("vre", faces, tmp_path, "train.max_steps=4", "train.stage_params.hq_steps=0",
                                      "train.stage_params.lq_steps=0", "train.stage_params.assoc_steps=4",
                                      "train.stage_params.perceptual_weight=0.0"))
    batch = first_batch(task, 0)
    assert batch["association"]
    dual = task.module.dual

    def losses() -> tuple[float, float]:
        with torch.no_grad():
            z_hq, z_lq = dual.hq.encode(batch["hq_in"]), dual.lq.encode(batch["lq_in"])
            return dual.association_loss(z_hq, z_lq)[0].item(), dual.association_loss(z_hq, z_lq.roll(1, 0))[0].item()

    start, _ = losses()
    train_steps(task, batch, ["hq", "lq"], steps=6)
    matched, shuffled = losses()
    assert matched < start and matched < shuffled


def test_to_vre_copies_the_lq_encoder_and_codebook():
    torch.manual_seed(0)
    dual = DualVQAutoencoder.from_preset("tiny")
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():  # codebook = perturbed encoder features (a k-means-like init), so many codes are in use
        cells = dual.lq.encode(x).permute(0, 2, 3, 1).flatten(0, 2)  # (B * h * w, D)
        book = dual.lq.quantize.embedding.weight
        book.copy_(cells[torch.randperm(len(cells))[:len(book)]] + 1e-3 * torch.randn_like(book))
    vre = dual.to_vre(num_tokens=64, proj_hidden=16, out_dim=32)
    assert not any(p.requires_grad for n, p in vre.named_parameters() if not n.startswith("projection."))
    with torch.no_grad():
        torch.testing.assert_close(vre.encode(x), dual.lq.encode(x))
        indices = dual.lq(x).indices  # (B, h, w)
        out = vre.embed(x)
    for b in range(2):
        assert set(out.indices[b][out.valid[b]].tolist()) == set(indices[b].flatten().tolist())
    small = dual.to_vre(num_tokens=8, proj_hidden=16, out_dim=32)
    with torch.no_grad():
        chosen = small.embed(x).indices
    assert set(chosen[0].tolist()) <= set(indices[0].flatten().tolist())


def test_vre_export_loads_and_fits_the_tiny_honestface(vre_task, tmp_path: Path):
    task = vre_task
    task.export(task.module, tmp_path)
    vre = VisualRepresentationEmbedder.from_pretrained(tmp_path / "vre")
    dual = DualVQAutoencoder.from_pretrained(tmp_path / "vq_association")
    x = first_batch(task, 0)["lq_in"]
    with torch.no_grad():
        torch.testing.assert_close(vre.encode(x), task.module.dual.lq.encode(x))
        torch.testing.assert_close(dual.lq.encode(x), task.module.dual.lq.encode(x))
        assert vre(x).shape == (2, 8, 32)
    assert vre.config.num_tokens == VRE_PRESETS[_PRESETS["tiny"]["vre"]]["num_tokens"]
    assert vre.config.input_transform == "unit"


# ------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("stage, override, match", [
    ("vae", "train.stage_params.kl_wieght=1", (r"unknown train.stage_params key 'kl_wieght' for stage 'vae'; "
                                              r"allowed: kl_weight, l1_weight, perceptual_weight")),
    ("vae", "train.stage_params.vae.latent_chanels=8", "latent_chanels"),
    ("vae", "train.stage_params.kl_weight=-1.0", "kl_weight must be >= 0"),
    ("vre", "train.stage_params.assoc=1", (r"unknown train.stage_params key 'assoc' for stage 'vre'; allowed: "
                                          r"assoc_steps, assoc_weight")),
    ("vre", "train.stage_params.hq_steps=abc", "hq_steps must be"),
    ("vre", "train.stage_params.vre.channels=3", "unknown train.stage_params.vre key 'channels'"),
    ("vre", "train.stage_params.preset=big", "unknown VRE preset 'big'"),
])
def test_bad_stage_params_are_one_line_errors(faces: Path, tmp_path: Path, stage: str, override: str, match: str):
    with pytest.raises(ValueError, match=match) as info:
        build_task(stage, make_cfg(stage, faces, tmp_path, override))
    assert "\n" not in str(info.value)


def test_missing_train_dir_is_a_clear_error(tmp_path: Path):
    cfg = load_config(REPO / "configs" / "tiny" / "vae.yaml", [f"train.output_dir={tmp_path}"])
    with pytest.raises(ValueError, match="data.train_dir is not set"):
        build_task("vae", cfg)


# ------------------------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("stage, overrides", [
    ("vae", ["train.max_steps=3"]),
    ("vre", ["train.max_steps=4", "train.stage_params.hq_steps=2", "train.stage_params.lq_steps=1",
             "train.stage_params.assoc_steps=2"]),
])
def test_run_training_exports_a_loadable_stage(faces: Path, tmp_path: Path, stage: str, overrides: list[str]):
    from honestface.training import run_training

    out = tmp_path / "run"
    cfg = make_cfg(stage, faces, out, "train.save_every=1000", "train.num_val_images=0", *overrides)
    torch.manual_seed(0)
    assert run_training(cfg) == 0
    final = out / "final"
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    if stage == "vae":
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(final / "vae")
        assert vae.config.scaling_factor > 0 and vae.decode(vae.encode(x).latent_dist.mode()).sample.shape == x.shape
    else:
        vre = VisualRepresentationEmbedder.from_pretrained(final / "vre")
        dual = DualVQAutoencoder.from_pretrained(final / "vq_association")
        with torch.no_grad():
            torch.testing.assert_close(vre.encode(x), dual.lq.encode(x))
            assert vre(x).shape == (1, 8, 32)
