"""VSPBFR's three released checkpoints, written from the released source code (never from our tensors), loaded
strictly through `VSPBFR.from_official`; the loaded model restores a real face and continues training.

Key tables (released module -> state_dict key -> shape) transcribed from LonglongaaaGo/VSPBFR:models/RestoreNet.py
(Restoration_net with SMART_layer, StyledConv, StyledConv_down, LargeConvLayer, ToRGB; Discriminator with
`encoder_input_convs` / `encoder_convs`), models/CodeDiffuser.py (Code_diffuser, TACC_block, spatial_attention) and
LonglongaaaGo/e4e_trainer:models/encoders/{psp_encoders,helpers}.py (Encoder4Editing, bottleneck_IR_SE, SEModule,
GradualStyleBlock), models/stylegan2/model.py (Generator). The saved dicts: restoration_train.py (g, d, g_ema,
g_optim, d_optim, args, ada_aug_p, iter), code_diffuser_train.py (att_mapper, mapper_optim, args, iter, best_path,
best_fid), e4e_trainer training/Restore_coach.py (state_dict, opts = vars(opts), latent_avg; with
save_training_data also global_step, optimizer, best_val_loss).

The released modules hard-code widths (StyleGAN2's channel table up to 512, e4e's 64..512 IR-SE widths and 512-wide
style heads, the SE reduction 16, the decoder style width 4 * style_dim = 2 * style_dim + 2 * channels[4]); the
tables take them as arguments: released values for the full-size comparison with our models (built on the meta
device), the tiny preset's narrower widths for the files (SE width max(1, width // 16)).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest
import torch

from honestface.models.vspbfr.discriminator import convert_official_discriminator_state_dict
from honestface.models.vspbfr.vspbfr import VSPBFR, VSPBFR_PRESETS, build_vspbfr

Table = dict[str, tuple[int, ...]]
REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest)


def channels(multiplier: int = 2, cap: int = 512) -> dict[int, int]:
    """The released channel table ({4..32: 512, 64: 256 m, ..., 1024: 16 m}), capped at `cap` for tiny files."""
    full = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * multiplier, 128: 128 * multiplier, 256: 64 * multiplier,
            512: 32 * multiplier, 1024: 16 * multiplier}
    return {r: min(c, cap) for r, c in full.items()}


# -------------------------------------------------------------------------------------- e4e style encoder
def _bn(p: str, c: int) -> Table:
    return {f"{p}.weight": (c,), f"{p}.bias": (c,), f"{p}.running_mean": (c,), f"{p}.running_var": (c,),
            f"{p}.num_batches_tracked": ()}


def e4e_encoder(units: list[int], widths: list[int], n_styles: int, input_size: int, in_channel: int = 3) -> Table:
    """Encoder4Editing on bottleneck_IR_SE units (get_blocks(50): units 3, 4, 14, 3; widths 64..512)."""
    w0, top = widths[0], widths[-1]
    t: Table = {"input_layer.0.weight": (w0, in_channel, 3, 3), **_bn("input_layer.1", w0), "input_layer.2.weight": (w0,)}
    i, cin = 0, w0
    for n, depth in zip(units, widths):
        for u in range(n):
            p, cin = f"body.{i}", cin if u == 0 else depth
            if cin != depth:
                t.update({f"{p}.shortcut_layer.0.weight": (depth, cin, 1, 1), **_bn(f"{p}.shortcut_layer.1", depth)})
            se = max(1, depth // 16)
            t.update({**_bn(f"{p}.res_layer.0", cin), f"{p}.res_layer.1.weight": (depth, cin, 3, 3),
                      f"{p}.res_layer.2.weight": (depth,), f"{p}.res_layer.3.weight": (depth, depth, 3, 3),
                      **_bn(f"{p}.res_layer.4", depth), f"{p}.res_layer.5.fc1.weight": (se, depth, 1, 1),
                      f"{p}.res_layer.5.fc2.weight": (depth, se, 1, 1)})
            i, cin = i + 1, depth
    for s in range(n_styles):  # GradualStyleBlock(512, 512, spatial 16 / 32 / 64 at 256 px: c3, p2, p1)
        spatial = input_size // 16 * (1 if s < 3 else 2 if s < 7 else 4)
        for j in range(int(math.log2(spatial))):
            t.update({f"styles.{s}.convs.{2 * j}.weight": (top, top, 3, 3), f"styles.{s}.convs.{2 * j}.bias": (top,)})
        t.update({f"styles.{s}.linear.weight": (top, top), f"styles.{s}.linear.bias": (top,)})
    return {**t, "latlayer1.weight": (top, widths[2], 1, 1), "latlayer1.bias": (top,),
            "latlayer2.weight": (top, widths[1], 1, 1), "latlayer2.bias": (top,)}


# ------------------------------------------------------------------ StyleGAN2 / restoration net / discriminator
def styled(p: str, cin: int, cout: int, style: int, blur: bool = False) -> Table:  # StyledConv(_down)
    t = {f"{p}.conv.weight": (1, cout, cin, 3, 3), f"{p}.conv.modulation.weight": (cin, style),
         f"{p}.conv.modulation.bias": (cin,), f"{p}.noise.weight": (1,), f"{p}.activate.bias": (cout,)}
    return {**t, f"{p}.conv.blur.kernel": (4, 4)} if blur else t


def to_rgb(p: str, cin: int, style: int, upsample: bool = True) -> Table:
    t = {f"{p}.conv.weight": (1, 3, cin, 1, 1), f"{p}.conv.modulation.weight": (cin, style),
         f"{p}.conv.modulation.bias": (cin,), f"{p}.bias": (1, 3, 1, 1)}
    return {**t, f"{p}.upsample.kernel": (4, 4)} if upsample else t


def smart(p: str, cin: int, cout: int, style: int) -> Table:  # SMART_layer, rates (1, 2, 4, 8)
    t = {f"{p}.ModulatedConv2ds.{r}.weight": (1, cout // 4, cin, 3, 3) for r in range(4)}
    return {**t, f"{p}.modulation.weight": (cin, style), f"{p}.modulation.bias": (cin,),
            f"{p}.fusion.0.weight": (cout, cout, 3, 3), f"{p}.fusion.1.bias": (cout,), f"{p}.noise.weight": (1,),
            f"{p}.activate.bias": (cout,)}


def large_conv(p: str, cin: int, cout: int, k: int) -> Table:  # LargeConvLayer (no downsampling, activated)
    t = {f"{p}.dilated_convs.{r}.weight": (cout // 4, cin, k, k) for r in range(4)}
    return {**t, f"{p}.fusion.0.weight": (cout, cout, 1, 1), f"{p}.fusion.1.bias": (cout,), f"{p}.activate.bias": (cout,)}


def mapping(style_dim: int, n_mlp: int) -> Table:
    return {k: v for i in range(1, n_mlp + 1)
            for k, v in ((f"style.{i}.weight", (style_dim, style_dim)), (f"style.{i}.bias", (style_dim,)))}


def noises(size: int) -> Table:
    return {f"noises.noise_{k}": (1, 1, 2 ** ((k + 5) // 2), 2 ** ((k + 5) // 2))
            for k in range((int(math.log2(size)) - 2) * 2 + 1)}


def generator(size: int, style_dim: int, n_mlp: int, ch: dict[int, int]) -> Table:
    """rosinality `Generator` (the `decoder.` of style_encoder_decoder.pt)."""
    t = {**mapping(style_dim, n_mlp), "input.input": (1, ch[4], 4, 4), **styled("conv1", ch[4], ch[4], style_dim),
         **to_rgb("to_rgb1", ch[4], style_dim, upsample=False), **noises(size)}
    cin = ch[4]
    for j, i in enumerate(range(3, int(math.log2(size)) + 1)):
        t.update({**styled(f"convs.{2 * j}", cin, ch[2 ** i], style_dim, blur=True),
                  **styled(f"convs.{2 * j + 1}", ch[2 ** i], ch[2 ** i], style_dim),
                  **to_rgb(f"to_rgbs.{j}", ch[2 ** i], style_dim)})
        cin = ch[2 ** i]
    return t


def restoration(size: int, style_dim: int, n_mlp: int, ch: dict[int, int]) -> Table:
    """`Restoration_net`: decoder styles 4 * style_dim wide (= [w0 row, z row, c], c = 2 * channels[4])."""
    log, dec, enc = int(math.log2(size)), 2 * style_dim + 2 * ch[4], 2 * style_dim
    t = {**mapping(style_dim, n_mlp), **smart("conv1", ch[4], ch[4], dec),
         **to_rgb("to_rgb1", ch[4], dec, upsample=False), **noises(size)}
    cin = ch[4]
    for j, i in enumerate(range(3, log + 1)):
        t.update({**styled(f"convs.{2 * j}", cin, ch[2 ** i], dec, blur=True),
                  **smart(f"convs.{2 * j + 1}", ch[2 ** i], ch[2 ** i], dec), **to_rgb(f"to_rgbs.{j}", ch[2 ** i], dec)})
        cin = ch[2 ** i]
    t.update(large_conv("down_from_big", 3, ch[size], 1))
    cin = ch[size]
    for k, i in enumerate(range(log, 2, -1)):
        t.update({**smart(f"encoder_convs.{2 * k}", cin, ch[2 ** i], enc),
                  **styled(f"encoder_convs.{2 * k + 1}", ch[2 ** i], ch[2 ** (i - 1)], enc, blur=True)})
        cin = ch[2 ** (i - 1)]
    return {**t, **large_conv("final_layer", cin, ch[4], 3), "final_linear.0.weight": (2 * ch[4], 16 * ch[4]),
            "final_linear.0.bias": (2 * ch[4],), "final_transfer.weight": (16 * ch[4], 2 * ch[4]),
            "final_transfer.bias": (16 * ch[4],)}


def discriminator(size: int, ch: dict[int, int]) -> Table:
    t: Table = {"encoder_input_convs.0.weight": (ch[size], 3, 1, 1), "encoder_input_convs.1.bias": (ch[size],)}
    cin = ch[size]
    for k, i in enumerate(range(int(math.log2(size)), 2, -1)):
        p, cout = f"encoder_convs.{k}", ch[2 ** (i - 1)]
        t.update({f"{p}.conv1.0.weight": (cin, cin, 3, 3), f"{p}.conv1.1.bias": (cin,), f"{p}.conv2.0.kernel": (4, 4),
                  f"{p}.conv2.1.weight": (cout, cin, 3, 3), f"{p}.conv2.2.bias": (cout,), f"{p}.skip.0.kernel": (4, 4),
                  f"{p}.skip.1.weight": (cout, cin, 1, 1)})
        cin = cout
    return {**t, "final_conv.0.weight": (ch[4], cin + 1, 3, 3), "final_conv.1.bias": (ch[4],),
            "final_linear.0.weight": (ch[4], 16 * ch[4]), "final_linear.0.bias": (ch[4],),
            "final_linear.1.weight": (1, ch[4]), "final_linear.1.bias": (1,)}


def code_diffuser(dim: int) -> Table:  # Code_diffuser: 4 TACC_blocks
    t: Table = {}
    for b in range(4):
        p = f"att_mapper.{b}"
        t.update({f"{p}.q_matrix.weight": (dim, dim + 1), f"{p}.k_matrix.weight": (dim, dim),
                  f"{p}.v_matrix.weight": (dim, dim), f"{p}.attention_layer.q_matrix.weight": (dim, dim),
                  f"{p}.attention_layer.k_matrix.weight": (dim, dim + 1),
                  f"{p}.attention_layer.v_matrix.weight": (dim, dim)})
        for head in ("gamma_", "beta_"):
            t.update({f"{p}.{head}.0.weight": (dim, dim + 1), f"{p}.{head}.0.bias": (dim,),
                      f"{p}.{head}.1.weight": (dim,), f"{p}.{head}.1.bias": (dim,),
                      f"{p}.{head}.3.weight": (dim, dim), f"{p}.{head}.3.bias": (dim,)})
    return t


# ------------------------------------------------------------------------------------------------ helpers
def fill(table: Table, seed: int) -> dict[str, torch.Tensor]:
    """Random tensors (fan-in scaled; BN counters int64, variances positive) and the released blur kernels:
    make_kernel([1, 3, 3, 1]), x 4 where the blur follows an upsampling (ToRGB, up-StyledConv `convs.<even>`)."""
    g = torch.Generator().manual_seed(seed)
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    kernel = k[None] * k[:, None] / 64
    out = {}
    for key, shape in table.items():
        up = ".upsample." in key or (key.startswith("convs.") and int(key.split(".")[1]) % 2 == 0)
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(11)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith(".kernel"):
            out[key] = kernel * (4 if up else 1)
        elif len(shape) >= 2:
            fan_in = math.prod(shape[2:]) if len(shape) == 5 else math.prod(shape[1:])
            out[key] = torch.randn(shape, generator=g) / math.sqrt(fan_in)
        else:
            out[key] = torch.randn(shape, generator=g) * 0.1
    return out


def same_layout(ours: dict[str, torch.Tensor], table: Table) -> None:
    assert sorted(ours) == sorted(table), sorted(set(ours) ^ set(table))[:6]
    bad = [(k, tuple(ours[k].shape), s) for k, s in table.items() if tuple(ours[k].shape) != s]
    assert not bad, bad[:4]


def adam_state(tensors: dict[str, torch.Tensor]) -> dict:
    """`optim.Adam(...).state_dict()` after one step, as the released scripts save it."""
    params = [torch.nn.Parameter(v.clone()) for v in tensors.values() if v.is_floating_point()]
    opt = torch.optim.Adam(params, lr=1e-3, betas=(0.0, 0.99))
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    return opt.state_dict()


def tables(preset: str) -> dict[str, Table]:
    c = VSPBFR_PRESETS[preset]
    se, sg, rn, ds = c["style_encoder"], c["stylegan"], c["restoration"], c["discriminator"]
    return {"encoder": e4e_encoder(se["units"], se["widths"], se["n_styles"], se["input_size"]),
            "decoder": generator(sg["size"], sg["style_dim"], sg["n_mlp"],
                                 channels(sg["channel_multiplier"], sg.get("channel_max", 512))),
            "att_mapper": code_diffuser(c["code_diffuser"]["dim"]),
            "g": restoration(rn["size"], rn["style_dim"], rn["n_mlp"],
                             channels(rn["channel_multiplier"], rn.get("channel_max", 512))),
            "d": discriminator(ds["size"], channels(ds["channel_multiplier"], ds.get("channel_max", 512)))}


def test_released_tables_match_the_full_model() -> None:
    """At the released sizes every released key (and shape) has its place in our model, and nothing else exists."""
    model = VSPBFR.from_config(VSPBFR_PRESETS["full"], device="meta")
    t = tables("full")
    same_layout({k: v for k, v in model.style_encoder.state_dict().items() if k != "latent_avg"}, t["encoder"])
    same_layout(model.stylegan.state_dict(), t["decoder"])
    same_layout(model.code_diffuser.state_dict(), t["att_mapper"])
    same_layout(model.restoration.state_dict(), {k: v for k, v in t["g"].items() if not k.startswith("noises.")})
    meta = {k: torch.empty(s, device="meta") for k, s in t["d"].items()}
    assert sum(k.startswith("encoder_") for k in meta) == 51  # the released names that used to fail
    converted = convert_official_discriminator_state_dict(meta)
    same_layout(model.discriminator.state_dict(), {k: tuple(v.shape) for k, v in converted.items()})


def write_released_files(folder: Path, seed: int = 0) -> dict[str, dict]:
    """The three files at the tiny preset's size, in the released layout (module.-prefixed `d` as DDP saves it)."""
    t = tables("tiny")
    enc, dec, att = fill(t["encoder"], seed), fill(t["decoder"], seed + 1), fill(t["att_mapper"], seed + 2)
    g, g_ema, d = fill(t["g"], seed + 3), fill(t["g"], seed + 4), fill(t["d"], seed + 5)
    latent_avg = torch.randn(VSPBFR_PRESETS["tiny"]["style_encoder"]["n_styles"], 32)
    run = argparse.Namespace(path="data/ffhq", iter=500000, batch=4, size=512, r1=10.0, d_reg_every=16, mixing=0.5,
                             lr=0.002, channel_multiplier=2, percept_loss_weight=0.5, ddpm_ckpt="pre-train/cd.pt",
                             distributed=False, latent=512, n_mlp=8, start_iter=0)
    torch.save({"state_dict": {**{f"encoder.{k}": v for k, v in enc.items()}, **{f"decoder.{k}": v for k, v in
                                                                                 dec.items()}},
                "opts": {"stylegan_size": 1024, "encoder_type": "Encoder4Editing", "start_from_latent_avg": True,
                         "checkpoint_path": None, "lpips_lambda": 0.8},
                "latent_avg": latent_avg, "global_step": 200000, "optimizer": adam_state(enc), "best_val_loss": None},
               folder / "style_encoder_decoder.pt")
    torch.save({"att_mapper": att, "mapper_optim": adam_state(att), "args": argparse.Namespace(**vars(run), Tstep=4),
                "iter": 200000, "best_path": "", "best_fid": 1000}, folder / "code_diffuser.pt")
    torch.save({"g": g, "d": {f"module.{k}": v for k, v in d.items()}, "g_ema": g_ema, "g_optim": adam_state(g),
                "d_optim": adam_state(d), "args": run, "ada_aug_p": 0.0, "iter": 500000},
               folder / "restoration_net.pt")
    return {"encoder": enc, "decoder": dec, "att_mapper": att, "g_ema": g_ema, "d": d, "latent_avg": latent_avg}


def from_files(folder: Path) -> VSPBFR:
    return VSPBFR.from_official(folder / "style_encoder_decoder.pt", folder / "code_diffuser.pt",
                                folder / "restoration_net.pt", preset="tiny", with_discriminator=True)


def test_released_files_load_strictly_and_restore_a_real_face(tmp_path: Path) -> None:
    from honestface.data.samples import astronaut
    from honestface.pipelines import VSPBFRPipeline

    written = write_released_files(tmp_path)
    model = from_files(tmp_path)

    def equal(state: dict, want: dict) -> bool:
        return state.keys() == want.keys() and all(torch.equal(state[k], v) for k, v in want.items())

    enc = model.style_encoder.state_dict()
    assert torch.equal(enc.pop("latent_avg"), written["latent_avg"]) and equal(enc, written["encoder"])
    assert equal(model.stylegan.state_dict(), written["decoder"])
    assert equal(model.code_diffuser.state_dict(), written["att_mapper"])
    assert equal(model.restoration.state_dict(), {k: v for k, v in written["g_ema"].items()
                                                  if not k.startswith("noises.")})
    assert equal(model.discriminator.state_dict(), convert_official_discriminator_state_dict(written["d"]))
    fresh = build_vspbfr("tiny", with_discriminator=True).state_dict()  # our blur kernels are the released ones
    assert all(torch.equal(fresh[k], v) for k, v in model.state_dict().items() if k.endswith(".kernel"))
    # a real face (the astronaut's, aligned by hand) through the pipeline: seeded, finite, input-sized
    face = astronaut()[30:190, 150:310]
    pipe = VSPBFRPipeline(model)
    assert (pipe.resolution, pipe.resize, pipe.resolution_source) == (32, "lanczos", "model")
    out = pipe(face, seed=3).images[0]
    assert out.shape == face.shape and out.dtype == face.dtype and out.std() > 0
    assert (pipe(face, seed=3).images[0] == out).all()
    folder = model.save_pretrained(tmp_path / "model")
    assert (VSPBFRPipeline(VSPBFR.from_pretrained(folder))(face, seed=3).images[0] == out).all()


def test_training_continues_from_the_released_files(tmp_path: Path, sample_identities: Path) -> None:
    """from_official(...).save_pretrained(dir), then the restoration stage with model.pretrained=dir."""
    from honestface.config import load_config
    from honestface.training.tasks import build_task
    from honestface.training.trainer import Trainer

    written = write_released_files(tmp_path)
    folder = from_files(tmp_path).save_pretrained(tmp_path / "released")
    cfg = load_config(REPO / "configs" / "tiny" / "vspbfr_restoration.yaml",
                      [f"data.train_dir={sample_identities}", f"train.output_dir={tmp_path / 'run'}",
                       "train.report_to=none", f"model.pretrained={folder}", "train.max_steps=1",
                       "train.save_every=1000", "train.num_val_images=0"])
    task = build_task(cfg.train.stage, cfg)
    start = task.module.model
    d = convert_official_discriminator_state_dict(written["d"])
    assert all(torch.equal(start.discriminator.state_dict()[k], v) for k, v in d.items())  # D starts from 'd'
    assert Trainer(cfg, task).train() == 0
    done = VSPBFR.from_pretrained(tmp_path / "run" / "final")
    assert all(torch.equal(done.code_diffuser.state_dict()[k], v) for k, v in written["att_mapper"].items())
    trained = done.restoration.state_dict()
    assert any(not torch.equal(trained[k], v) for k, v in written["g_ema"].items() if k in trained)
