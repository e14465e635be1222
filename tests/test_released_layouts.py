"""OSDFace's released checkpoint layouts, written from the released source code (never from our tensors), loaded
strictly through the library's public loaders; and the weights-only loader on the training scripts' non-tensor
entries (VSPBFR's three checkpoints are in test_released_layouts_vspbfr.py).

The key tables below (released module -> state_dict key -> shape) are transcribed from the authors' code:
- OSDFace: jkwang28/OSDFace:lq_embed/vqvae.py (VQVAEencoder, MultiHeadEncoder, ResnetBlock, MultiHeadAttnBlock,
  VectorQuantizer), lq_embed/inference.py (vqvae_encoder loads `vqvae_LQ.*` without `vqvae_LQ.decoder*`;
  TwoLayerConv1x1), infer.py (`embedding_change_weights.pth`; the LoRA's two key styles in `merge_Unet`).
- The association checkpoint `associate_2.ckpt`: LIAGM/DAEFR:DAEFR/models/association_stage.py (DAEFRModel holds
  vqvae, vqvae_LQ, loss, loss_LQ, logit_scale), DAEFR/modules/vqvae/vqvae_arch.py (VQVAEGAN: encoder, decoder,
  quantize, quant_conv, post_quant_conv), DAEFR/modules/losses/lpips.py and discriminator/model.py (a few keys of
  the ignored loss networks), pytorch-lightning 1.0.8 (DAEFR requirements.txt: epoch, global_step, version,
  callbacks keyed by the callback class, optimizer_states, lr_schedulers, state_dict, hyper_parameters).

Sizes: the released full size is checked against our VRE built on the meta device; the files are written at the
tiny VRE's size, which the released constructors accept (ch 32, ch_mult (1, 2, 2), GroupNorm widths of 32 / 64).
"""

from __future__ import annotations

import argparse
import math

import pytest
import torch

from honestface.checkpoints import CheckpointNamespace, load_checkpoint
from honestface.models.vre import VRE_PRESETS, VisualRepresentationEmbedder
from honestface.weights import WeightsError

Table = dict[str, tuple[int, ...]]
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest)


# ------------------------------------------------------------------------------------------ writing a layout
def fill(table: Table, seed: int) -> dict[str, torch.Tensor]:
    """Random tensors of the table's shapes (fan-in scaled weights, small vectors)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in table.items():
        if len(shape) >= 2:
            fan_in = math.prod(shape[2:]) if len(shape) == 5 else math.prod(shape[1:])
            out[key] = torch.randn(shape, generator=g) / math.sqrt(max(1, fan_in))
        else:
            out[key] = torch.randn(shape, generator=g) * 0.1
    return out


def prefixed(prefix: str, table: dict) -> dict:
    return {prefix + k: v for k, v in table.items()}


def same_layout(ours: dict[str, torch.Tensor], table: Table) -> None:
    assert sorted(ours) == sorted(table), (sorted(set(ours) ^ set(table)))[:6]
    bad = [k for k, s in table.items() if tuple(ours[k].shape) != s]
    assert not bad, [(k, tuple(ours[k].shape), table[k]) for k in bad[:4]]


def adam_state(tensors: dict[str, torch.Tensor]) -> dict:
    """What `optim.Adam(...).state_dict()` holds after one step (the released scripts save these)."""
    params = [torch.nn.Parameter(v.float().clone()) for v in tensors.values() if v.is_floating_point()]
    opt = torch.optim.Adam(params, lr=1e-3, betas=(0.0, 0.99))
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    return opt.state_dict()


# ------------------------------------------------------------------------------- OSDFace / DAEFR key tables
def _conv(p: str, cout: int, cin: int, k: int, bias: bool = True) -> Table:
    return {f"{p}.weight": (cout, cin, k, k), **({f"{p}.bias": (cout,)} if bias else {})}


def _norm(p: str, c: int) -> Table:
    return {f"{p}.weight": (c,), f"{p}.bias": (c,)}


def vq_resnet(p: str, cin: int, cout: int) -> Table:  # ResnetBlock, temb_channels=0
    t = {**_norm(f"{p}.norm1", cin), **_conv(f"{p}.conv1", cout, cin, 3), **_norm(f"{p}.norm2", cout),
         **_conv(f"{p}.conv2", cout, cout, 3)}
    return {**t, **_conv(f"{p}.nin_shortcut", cout, cin, 1)} if cin != cout else t


def vq_attn(p: str, c: int) -> Table:  # MultiHeadAttnBlock: norm2 only normalises a cross-attention input
    t = {**_norm(f"{p}.norm1", c), **_norm(f"{p}.norm2", c)}
    for name in ("q", "k", "v", "proj_out"):
        t.update(_conv(f"{p}.{name}", c, c, 1))
    return t


def vq_encoder(ch: int, mult: tuple, nrb: int, attn: tuple, res: int, z: int, in_ch: int = 3) -> Table:
    t, cur, block_in = _conv("conv_in", ch, in_ch, 3), res, ch  # MultiHeadEncoder, double_z=False
    for i, m in enumerate(mult):
        block_in, block_out = ch * ((1,) + tuple(mult))[i], ch * m
        for j in range(nrb):
            t.update(vq_resnet(f"down.{i}.block.{j}", block_in, block_out))
            block_in = block_out
            if cur in attn:
                t.update(vq_attn(f"down.{i}.attn.{j}", block_in))
        if i != len(mult) - 1:
            t.update(_conv(f"down.{i}.downsample.conv", block_in, block_in, 3))
            cur //= 2
    t.update({**vq_resnet("mid.block_1", block_in, block_in), **vq_attn("mid.attn_1", block_in),
              **vq_resnet("mid.block_2", block_in, block_in), **_norm("norm_out", block_in),
              **_conv("conv_out", z, block_in, 3)})
    return t


def vq_decoder(ch: int, mult: tuple, nrb: int, attn: tuple, res: int, z: int, out_ch: int = 3) -> Table:
    block_in, cur = ch * mult[-1], res // 2 ** (len(mult) - 1)  # MultiHeadDecoder
    t = {**_conv("conv_in", block_in, z, 3), **vq_resnet("mid.block_1", block_in, block_in),
         **vq_attn("mid.attn_1", block_in), **vq_resnet("mid.block_2", block_in, block_in)}
    for i in reversed(range(len(mult))):
        for j in range(nrb + 1):
            t.update(vq_resnet(f"up.{i}.block.{j}", block_in, ch * mult[i]))
            block_in = ch * mult[i]
            if cur in attn:
                t.update(vq_attn(f"up.{i}.attn.{j}", block_in))
        if i != 0:
            t.update(_conv(f"up.{i}.upsample.conv", block_in, block_in, 3))
            cur *= 2
    return {**t, **_norm("norm_out", block_in), **_conv("conv_out", out_ch, block_in, 3)}


def osdface_vq_module(ch, mult, nrb, attn, res, z, n_embed, embed_dim) -> Table:
    """OSDFace's `VQVAEencoder` (what `vqvae_encoder` loads from the association checkpoint)."""
    return {**prefixed("encoder.", vq_encoder(ch, mult, nrb, attn, res, z)),
            "quantize.embedding.weight": (n_embed, embed_dim), **_conv("quant_conv", embed_dim, z, 1)}


def vqvaegan(ch, mult, nrb, attn, res, z, n_embed, embed_dim) -> Table:
    """DAEFR's `VQVAEGAN` (each of the association model's `vqvae` / `vqvae_LQ`)."""
    return {**osdface_vq_module(ch, mult, nrb, attn, res, z, n_embed, embed_dim),
            **prefixed("decoder.", vq_decoder(ch, mult, nrb, attn, res, z)), **_conv("post_quant_conv", z, embed_dim, 1)}


OSDFACE_VQ = {"ch": 64, "mult": (1, 2, 2, 2, 4, 8), "nrb": 2, "attn": (16,), "res": 512, "z": 512, "n_embed": 1024,
              "embed_dim": 512}  # infer.py's vqvae_encoder defaults
TINY_VQ = {"ch": 32, "mult": (1, 2, 2), "nrb": 1, "attn": (16,), "res": 64, "z": 64, "n_embed": 64, "embed_dim": 32}
LOSS_KEYS: Table = {  # a few keys of each ignored loss network (LPIPS on VGG16, NLayerDiscriminator)
    "perceptual_loss.scaling_layer.shift": (1, 3, 1, 1), "perceptual_loss.scaling_layer.scale": (1, 3, 1, 1),
    "perceptual_loss.net.slice1.0.weight": (64, 3, 3, 3), "perceptual_loss.lin0.model.1.weight": (1, 64, 1, 1),
    "discriminator.main.0.weight": (64, 3, 4, 4), "discriminator.main.0.bias": (64,)}


def our_vre_keys(vre: VisualRepresentationEmbedder) -> dict[str, torch.Tensor]:
    return {k: v for k, v in vre.state_dict().items() if not k.startswith("projection.")}


def test_osdface_vq_module_matches_our_vre_at_full_size() -> None:
    """The released VQ encoder's keys (minus the attention blocks' unused norm2) are exactly our VRE backbone's."""
    with torch.device("meta"):
        vre = VisualRepresentationEmbedder.from_preset("osdface")
    table = {k: s for k, s in osdface_vq_module(**OSDFACE_VQ).items() if not (".attn" in k and ".norm2." in k)}
    same_layout(our_vre_keys(vre), table)
    assert VRE_PRESETS["osdface"]["num_tokens"] == 77 and vre.config.out_dim == 1024


def lightning_checkpoint(path, seed: int = 0, with_hparams: bool = False) -> dict[str, torch.Tensor]:
    """A pytorch-lightning 1.0.8 association checkpoint at the tiny VQ size -> the `vqvae_LQ.` tensors written."""
    import sys
    import types

    lq = fill(vqvaegan(**TINY_VQ), seed)
    state = {**prefixed("vqvae_LQ.", lq), **prefixed("vqvae.", fill(vqvaegan(**TINY_VQ), seed + 1)),
             **prefixed("loss.", fill(LOSS_KEYS, seed + 2)), **prefixed("loss_LQ.", fill(LOSS_KEYS, seed + 3)),
             "logit_scale": torch.tensor(math.log(1 / 0.07))}
    names = {"pytorch_lightning.callbacks.model_checkpoint": "ModelCheckpoint",
             "pytorch_lightning.utilities.parsing": "AttributeDict"}
    classes, added = {}, [m for m in ("pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.utilities",
                                      *names) if m not in sys.modules]
    for module in added:  # Lightning is not installed: pickle its classes under their names
        sys.modules[module] = types.ModuleType(module)
    for module, cls in names.items():
        classes[cls] = type(cls, (dict,) if cls == "AttributeDict" else (), {"__module__": module})
        setattr(sys.modules[module], cls, classes[cls])
    try:
        ckpt = {"epoch": 3, "global_step": 12000, "pytorch-lightning_version": "1.0.8",
                "callbacks": {classes["ModelCheckpoint"]: {"best_model_score": torch.tensor(0.25),
                                                           "best_model_path": "logs/ckpt/last.ckpt"}},
                "optimizer_states": [adam_state({"w": torch.zeros(3)})], "lr_schedulers": [], "state_dict": state}
        if with_hparams:
            ckpt["hparams_name"] = "kwargs"
            ckpt["hyper_parameters"] = classes["AttributeDict"](image_key="lq", schedule_step=[4000000, 8000000])
        torch.save(ckpt, path)
    finally:
        for module in added:
            del sys.modules[module]
    return lq


@pytest.mark.parametrize("with_hparams", [False, True])
def test_associate_ckpt_in_the_lightning_layout_loads_strictly(tmp_path, with_hparams) -> None:
    ckpt = tmp_path / "associate_2.ckpt"
    lq = lightning_checkpoint(ckpt, with_hparams=with_hparams)
    proj_table = {"conv1.weight": (16, 32, 1), "conv1.bias": (16,), "conv2.weight": (32, 16, 1), "conv2.bias": (32,)}
    proj = fill(proj_table, 9)  # TwoLayerConv1x1(32, 32): hidden = in_channels // 2
    torch.save(proj, tmp_path / "embedding_change_weights.pth")  # infer.py saves / loads a bare state dict
    vre = VisualRepresentationEmbedder.from_osdface(ckpt, tmp_path, **VRE_PRESETS["tiny"])  # proj_hidden 16
    module = osdface_vq_module(**TINY_VQ)  # what the released vqvae_encoder takes from the file
    used = {k: lq[k] for k in module if not (".attn" in k and ".norm2." in k)}
    ours = our_vre_keys(vre)
    assert ours.keys() == used.keys()
    assert all(torch.equal(ours[k], v) for k, v in used.items())
    assert all(torch.equal(vre.projection.state_dict()[k], v) for k, v in proj.items())
    everything = load_checkpoint(ckpt)  # the non-tensor Lightning entries survive as plain data
    assert everything["global_step"] == 12000 and everything["pytorch-lightning_version"] == "1.0.8"
    (callback,) = everything["callbacks"].values()
    assert callback["best_model_path"] == "logs/ckpt/last.ckpt"
    if with_hparams:
        assert everything["hyper_parameters"] == {"image_key": "lq", "schedule_step": [4000000, 8000000]}


def test_a_code_running_payload_is_refused(tmp_path) -> None:
    import os

    class Payload:
        def __reduce__(self):
            return os.system, ("echo pwned > " + str(tmp_path / "pwned"),)

    torch.save({"state_dict": {"w": torch.zeros(2)}, "args": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(WeightsError, match=r"refusing to load.*system"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()
    # a Namespace next to it is fine on its own, and comes back as a plain dict of its attributes
    torch.save({"args": argparse.Namespace(size=512, lr=0.002, path=None)}, tmp_path / "ok.pt")
    args = load_checkpoint(tmp_path / "ok.pt")["args"]
    assert isinstance(args, CheckpointNamespace) and dict(args) == {"size": 512, "lr": 0.002, "path": None}
    assert args.size == 512


# ------------------------------------------------------------------------------------------- OSDFace's LoRA
def lora_table(unet: torch.nn.Module, modules: list[str], rank: int, style: str) -> Table:
    """`pytorch_lora_weights.safetensors` keys: "peft" = `unet.<module>.lora_A/lora_B.weight` (Linear and Conv2d),
    "legacy" = `unet.<module>.lora.down/up.weight` (Linear only: infer.py's merge_Unet skips other shapes)."""
    t: Table = {}
    for name in modules:
        layer = unet.get_submodule(name)
        if isinstance(layer, torch.nn.Conv2d):
            assert style == "peft"
            kh, kw = layer.kernel_size
            t[f"unet.{name}.lora_A.weight"] = (rank, layer.in_channels, kh, kw)
            t[f"unet.{name}.lora_B.weight"] = (layer.out_channels, rank, 1, 1)
        elif style == "peft":
            t[f"unet.{name}.lora_A.weight"] = (rank, layer.in_features)
            t[f"unet.{name}.lora_B.weight"] = (layer.out_features, rank)
        else:
            t[f"unet.{name}.lora.down.weight"] = (rank, layer.in_features)
            t[f"unet.{name}.lora.up.weight"] = (layer.out_features, rank)
    return t


def released_merge(unet_state: dict[str, torch.Tensor], lora: dict[str, torch.Tensor],
                   lora_alpha: float, lora_rank: int) -> dict[str, torch.Tensor]:
    """infer.py `merge_Unet`, written out: W + alpha / rank * B A (conv: through (out, r) x (r, in*kh*kw))."""
    alpha, out = lora_alpha / lora_rank, dict(unet_state)
    for key, value in lora.items():
        if "lora_A" in key:
            a, b = value, lora[key.replace("lora_A", "lora_B")]
            name = key.replace(".lora_A.weight", ".weight").replace("unet.", "")
            w = out[name]
            if w.ndim == 4:
                delta = (b.view(w.shape[0], a.shape[0]) @ a.view(a.shape[0], -1)).view(w.shape)
            else:
                delta = b @ a
            out[name] = w + alpha * delta
        elif "lora.up.weight" in key:
            name = key.replace(".lora.up.weight", ".weight").replace("unet.", "")
            out[name] = out[name] + alpha * (value @ lora[key.replace("lora.up.weight", "lora.down.weight")])
    return out


@pytest.mark.parametrize("style", ["peft", "legacy"])
def test_osdface_lora_in_both_released_key_styles(tmp_path, style) -> None:
    from safetensors.torch import save_file

    from honestface.models.generator import OneStepGenerator
    from honestface.models.presets import TINY_UNET_CONFIG, TINY_VAE_CONFIG

    torch.manual_seed(0)
    gen = OneStepGenerator.from_configs(TINY_UNET_CONFIG, TINY_VAE_CONFIG, lora_rank=0)
    base = {k: v.clone() for k, v in gen.unet.state_dict().items()}
    linear = [n for n, m in gen.unet.named_modules() if isinstance(m, torch.nn.Linear) and n.endswith(
        ("attn1.to_q", "attn2.to_k", "attn1.to_out.0", "ff.net.2", "proj_in"))]
    convs = [n for n, m in gen.unet.named_modules() if n.endswith("resnets.0.conv1")]
    lora = fill(lora_table(gen.unet, linear + (convs if style == "peft" else []), 4, style), 3)
    (tmp_path / "osdface").mkdir()
    save_file(lora, str(tmp_path / "osdface" / "pytorch_lora_weights.safetensors"))
    torch.save(fill({"conv1.weight": (16, 32, 1)}, 0), tmp_path / "osdface" / "embedding_change_weights.pth")
    gen.load_osdface_lora(tmp_path / "osdface")  # released rank 16 / alpha 16; this file: rank 4 -> scale 4
    gen.merge_lora()
    want = released_merge(base, lora, lora_alpha=16, lora_rank=4)
    layers = {n: gen.unet.get_submodule(n) for n in linear + convs}
    merged = {n: (m.get_base_layer() if hasattr(m, "get_base_layer") else m).weight for n, m in layers.items()}
    changed = {n for n in merged if not torch.equal(want[f"{n}.weight"], base[f"{n}.weight"])}
    assert changed == set(linear) | (set(convs) if style == "peft" else set())
    for name, weight in merged.items():
        torch.testing.assert_close(weight, want[f"{name}.weight"], rtol=0, atol=1e-6)
