"""Visual Representation Embedder (honestface.models.vre) and its VQGAN blocks, on tiny random models (CPU)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from honestface.checkpoints import load_checkpoint
from honestface.models.vqgan import Decoder, Encoder, VectorQuantizer
from honestface.models.vre import (
    VRE_PRESETS,
    VisualRepresentationEmbedder,
    select_unique_codes,
)
from honestface.weights import MissingWeightError

TINY = VRE_PRESETS["tiny"]


@pytest.fixture
def model() -> VisualRepresentationEmbedder:
    torch.manual_seed(0)
    return VisualRepresentationEmbedder.from_preset("tiny").eval()


def _lq(batch: int = 3, size: int = 64, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=g) * 2 - 1


def reference_selection(z: torch.Tensor, codebook: torch.Tensor, num_tokens: int) -> tuple[list, list]:
    """Straightforward per-sample loops in float64: the spec of the token selection."""
    all_idx, all_valid = [], []
    cb = codebook.double()
    for sample in z.double():
        cells = sample.flatten(1).t()  # (N, D)
        best = []
        for n, cell in enumerate(cells):
            d = [float(((cell - code) ** 2).sum()) for code in cb]
            k = min(range(len(d)), key=lambda i: (d[i], i))
            best.append((d[k], n, k))
        chosen: list[int] = []
        for _, _, k in sorted(best, key=lambda t: (t[0], t[1])):
            if k not in chosen:
                chosen.append(k)
            if len(chosen) == num_tokens:
                break
        pad = num_tokens - len(chosen)
        all_idx.append(chosen + [-1] * pad)
        all_valid.append([True] * len(chosen) + [False] * pad)
    return all_idx, all_valid


def _crafted_grid(codebook: torch.Tensor, assign: torch.Tensor, seed: int) -> torch.Tensor:
    """Cells = assigned code + noise of clearly distinct sizes, so nearest codes and the sort order are unambiguous."""
    g = torch.Generator().manual_seed(seed)
    b, n = assign.shape
    d = codebook.shape[1]
    noise = torch.randn(b, n, d, generator=g)
    noise = noise / noise.norm(dim=-1, keepdim=True)
    scale = (torch.randperm(b * n, generator=g).reshape(b, n).float() + 1) * 1e-3
    cells = codebook[assign] + noise * scale[..., None]  # (B, N, D)
    side = int(n**0.5)
    return cells.transpose(1, 2).reshape(b, d, side, side)


def test_shapes_at_every_boundary(model: VisualRepresentationEmbedder) -> None:
    lq = _lq()
    x = model.preprocess(lq)
    assert x.shape == (3, 3, 64, 64) and torch.equal(x, lq)  # "unit": the encoder sees the [-1, 1] image
    h = model.encoder(x)
    assert h.shape == (3, TINY["z_channels"], 16, 16)  # 2 downsamplings
    z = model.encode(lq)
    assert z.shape == (3, TINY["codebook_dim"], 16, 16)
    indices, valid, vectors = model.select_codes(z)
    assert indices.shape == valid.shape == (3, TINY["num_tokens"])
    assert indices.dtype == torch.long and valid.dtype == torch.bool
    assert vectors.shape == (3, TINY["num_tokens"], TINY["codebook_dim"])
    out = model.embed(lq)
    p_l = model(lq)
    assert p_l.shape == (3, TINY["num_tokens"], TINY["out_dim"])
    assert torch.isfinite(p_l).all() and torch.isfinite(z).all()
    assert torch.equal(out.prompt_embeds, p_l)
    assert torch.equal(out.codes, model.codebook[out.indices])  # all valid here: 256 cells, 64 codes, 8 tokens
    # rows of one sample are distinct codes; each token is the projection of its own code
    for row in out.indices:
        assert len(set(row.tolist())) == TINY["num_tokens"]
    assert torch.allclose(model.projection(out.codes[:, :1]), p_l[:, :1])


def test_selection_matches_bruteforce_reference() -> None:
    torch.manual_seed(3)
    codebook = torch.rand(64, 32) * 2 - 1
    assign = torch.randint(0, 64, (3, 16))  # 16 cells (4x4) over 64 codes: repeats within a sample are likely
    z = _crafted_grid(codebook, assign, seed=4)
    indices, valid = select_unique_codes(z, codebook, num_tokens=8)
    ref_idx, ref_valid = reference_selection(z, codebook, 8)
    assert indices.tolist() == ref_idx and valid.tolist() == ref_valid
    # and on unstructured random features (nearest codes and order decided by the same rules)
    z = torch.randn(3, 32, 4, 4)
    indices, valid = select_unique_codes(z, codebook, num_tokens=8)
    ref_idx, ref_valid = reference_selection(z, codebook, 8)
    assert indices.tolist() == ref_idx and valid.tolist() == ref_valid
    # batching does not mix samples: each sample alone gives its own row
    for b in range(3):
        alone, _ = select_unique_codes(z[b : b + 1], codebook, num_tokens=8)
        assert torch.equal(alone[0], indices[b])


def test_fewer_unique_codes_are_zero_padded(model: VisualRepresentationEmbedder) -> None:
    codebook = model.codebook.detach()
    assign = torch.tensor([[5, 9, 5, 5, 9, 17, 2, 2, 9, 5, 17, 40, 5, 5, 9, 2]] * 2)  # 5 distinct codes
    assign[1] = 33  # second sample: a single code everywhere
    z = _crafted_grid(codebook, assign, seed=5)
    indices, valid, vectors = model.select_codes(z)
    ref_idx, ref_valid = reference_selection(z, codebook, 8)
    assert indices.tolist() == ref_idx and valid.tolist() == ref_valid
    assert valid.sum(1).tolist() == [5, 1]
    assert sorted(indices[0, :5].tolist()) == [2, 5, 9, 17, 40] and (indices[0, 5:] == -1).all()
    assert indices[1, 0] == 33 and (indices[1, 1:] == -1).all()
    assert (vectors[~valid] == 0).all()
    assert torch.equal(vectors[valid], codebook[indices[valid]])


def test_bf16_autocast_keeps_fp32_selection(model: VisualRepresentationEmbedder) -> None:
    z = model.encode(_lq()).detach()  # fp32 features
    want = model.select_codes(z)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = model.select_codes(z)[0]
        p_l = model(_lq())
    assert got.dtype == torch.long and torch.equal(got, want)
    assert torch.isfinite(p_l.float()).all() and p_l.shape == (3, TINY["num_tokens"], TINY["out_dim"])
    # bf16 features: distances are still taken in float32 of those values
    zb = z.bfloat16()
    assert torch.equal(select_unique_codes(zb, model.codebook, 8)[0],
                       select_unique_codes(zb.float(), model.codebook.float(), 8)[0])


def test_gradients_only_reach_projection_after_freeze(model: VisualRepresentationEmbedder) -> None:
    model.freeze_backbone()
    model.train()
    model(_lq()).square().mean().backward()
    for name, p in model.named_parameters():
        if name.startswith("projection."):
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"projection.conv{i}.{w}" for i in (1, 2) for w in ("weight", "bias")}


def test_save_load_roundtrip_is_bit_identical(model: VisualRepresentationEmbedder, tmp_path: Path) -> None:
    model.save_pretrained(tmp_path / "vre")
    assert (tmp_path / "vre" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = VisualRepresentationEmbedder.from_pretrained(tmp_path / "vre").eval()
    plain = lambda cfg: {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items() if not k.startswith("_")}
    assert plain(loaded.config) == plain(model.config)
    lq = _lq()
    assert torch.equal(loaded(lq), model(lq))


def test_input_transform_osdface_maps_unit_range_to_minus3_1() -> None:
    torch.manual_seed(0)
    unit = VisualRepresentationEmbedder.from_preset("tiny")
    torch.manual_seed(0)
    osd = VisualRepresentationEmbedder.from_preset("tiny", input_transform="osdface")
    lq = _lq()
    x = osd.preprocess(lq)
    assert torch.allclose(x, 2 * lq - 1) and x.min() >= -3 and x.max() <= 1
    assert torch.allclose(osd.encode(lq), unit.encode(2 * lq - 1))
    assert not torch.allclose(osd.encode(lq), unit.encode(lq))
    with pytest.raises(ValueError, match="input_transform"):
        VisualRepresentationEmbedder.from_preset("tiny", input_transform="imagenet")


def test_input_size_resizes_before_encoding() -> None:
    """With input_size set, any LQ size is resized (bilinear, no corner alignment) to it before the encoder: the
    same codes and tokens as encoding the resized face with resizing off."""
    import torch.nn.functional as F

    m = VisualRepresentationEmbedder.from_preset("tiny", input_size=64).eval()
    plain = VisualRepresentationEmbedder.from_preset("tiny").eval()
    plain.load_state_dict(m.state_dict())
    for size in (96, 48):
        lq = _lq(batch=2, size=size)
        resized = F.interpolate(lq, size=(64, 64), mode="bilinear", align_corners=False)  # (2, 3, 64, 64)
        z = m.encode(lq)
        assert z.shape[-2:] == (16, 16)
        torch.testing.assert_close(z, plain.encode(resized), rtol=0, atol=0)
        torch.testing.assert_close(m(lq), plain(resized), rtol=0, atol=0)
        assert m(lq).shape == (2, TINY["num_tokens"], TINY["out_dim"])
    assert not torch.equal(m.encode(_lq(size=96)), plain.encode(_lq(size=96)[..., :64, :64]))  # not a crop


def _lightning_checkpoint(model: VisualRepresentationEmbedder, path: Path, **extra: torch.Tensor) -> dict:
    """A DAEFR/OSDFace-style association checkpoint holding random weights in the model's layout."""
    g = torch.Generator().manual_seed(7)
    want = {}
    sd: dict[str, torch.Tensor] = {"logit_scale": torch.zeros(())}
    for key, value in model.state_dict().items():
        if key.startswith("projection."):
            continue
        want[key] = torch.randn(value.shape, generator=g)
        sd["vqvae_LQ." + key] = want[key]
        if ".attn" in key and ".norm1." in key:  # DAEFR's unused cross-attention norm
            sd["vqvae_LQ." + key.replace(".norm1.", ".norm2.")] = torch.randn(value.shape, generator=g)
    sd["vqvae_LQ.decoder.conv_in.weight"] = torch.randn(4, 4)
    sd["vqvae_LQ.post_quant_conv.weight"] = torch.randn(4, 4)
    sd["vqvae.encoder.conv_in.weight"] = torch.randn(4, 4)
    sd.update(extra)
    torch.save({"state_dict": sd, "epoch": 3, "global_step": 100, "pytorch-lightning_version": "1.0.8"}, path)
    return want


def test_from_osdface_loads_lightning_layout(model: VisualRepresentationEmbedder, tmp_path: Path) -> None:
    ckpt = tmp_path / "associate_2.ckpt"
    want = _lightning_checkpoint(model, ckpt)
    proj = {"conv1.weight": torch.randn(16, 32, 1), "conv1.bias": torch.randn(16),
            "conv2.weight": torch.randn(32, 16, 1), "conv2.bias": torch.randn(32)}
    torch.save(proj, tmp_path / "embedding_change_weights.pth")
    loaded = VisualRepresentationEmbedder.from_osdface(ckpt, tmp_path, **TINY)
    state = loaded.state_dict()
    assert all(torch.equal(state[k], v) for k, v in want.items())
    assert all(torch.equal(state["projection." + k], v) for k, v in proj.items())
    assert loaded.config.input_transform == "osdface" and loaded.config.input_size == 512
    assert not any(p.requires_grad for n, p in loaded.named_parameters() if not n.startswith("projection."))
    # without projection weights, the projection keeps its fresh initialisation
    fresh = VisualRepresentationEmbedder.from_osdface(ckpt, None, **{**TINY, "input_size": None})
    assert fresh.config.input_size is None and torch.equal(fresh.state_dict()["quant_conv.weight"],
                                                            want["quant_conv.weight"])


def _fake_lightning_class(monkeypatch: pytest.MonkeyPatch) -> type:
    """A class pickled under Lightning's name (pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint), as
    old Lightning checkpoints pickle their callback class; Lightning itself is not installed."""
    import sys
    import types

    name = "pytorch_lightning.callbacks.model_checkpoint"
    module = types.ModuleType(name)
    cls = type("ModelCheckpoint", (), {"__module__": name, "__init__": lambda self: setattr(self, "path", "last")})
    module.ModelCheckpoint = cls
    for parent in ("pytorch_lightning", "pytorch_lightning.callbacks"):
        monkeypatch.setitem(sys.modules, parent, types.ModuleType(parent))
    monkeypatch.setitem(sys.modules, name, module)
    return cls


def test_from_osdface_survives_pickled_lightning_objects(model: VisualRepresentationEmbedder, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = tmp_path / "plain.ckpt"
    want = _lightning_checkpoint(model, ckpt)
    obj = torch.load(ckpt, weights_only=True)
    fake = _fake_lightning_class(monkeypatch)
    obj["callbacks"] = {fake: {"best_model_score": torch.tensor(0.5)}}
    obj["hyper_parameters"] = fake()
    torch.save(obj, ckpt)
    monkeypatch.undo()  # the class cannot be imported when the file is read
    with pytest.raises(pickle.UnpicklingError):
        torch.load(ckpt, weights_only=True)
    loaded = load_checkpoint(ckpt)  # inert placeholders instead of importing the classes
    assert torch.equal(loaded["state_dict"]["vqvae_LQ.quant_conv.weight"], want["quant_conv.weight"])
    vre = VisualRepresentationEmbedder.from_osdface(ckpt, **TINY)
    assert torch.equal(vre.codebook, want["quantize.embedding.weight"])


def test_from_osdface_wrong_keys_give_clear_errors(model: VisualRepresentationEmbedder, tmp_path: Path) -> None:
    ckpt = tmp_path / "a.ckpt"
    _lightning_checkpoint(model, ckpt, **{"vqvae_LQ.encoder.extra.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"1 unexpected.*encoder\.extra\.weight"):
        VisualRepresentationEmbedder.from_osdface(ckpt, **TINY)
    obj = torch.load(ckpt, weights_only=True)
    del obj["state_dict"]["vqvae_LQ.encoder.extra.weight"], obj["state_dict"]["vqvae_LQ.encoder.conv_in.bias"]
    torch.save(obj, ckpt)
    with pytest.raises(ValueError, match=r"1 missing.*encoder\.conv_in\.bias"):
        VisualRepresentationEmbedder.from_osdface(ckpt, **TINY)
    _lightning_checkpoint(model, ckpt)
    with pytest.raises(ValueError, match=r"shape mismatch.*quantize\.embedding\.weight"):
        VisualRepresentationEmbedder.from_osdface(ckpt, **{**TINY, "codebook_size": 32})
    torch.save({"state_dict": {"model.weight": torch.zeros(1)}}, ckpt)
    with pytest.raises(ValueError, match="vqvae_LQ"):
        VisualRepresentationEmbedder.from_osdface(ckpt, **TINY)
    _lightning_checkpoint(model, ckpt)
    torch.save({"0.weight": torch.zeros(16, 32, 1)}, tmp_path / "proj.pth")
    with pytest.raises(ValueError, match="projection_key_map"):
        VisualRepresentationEmbedder.from_osdface(ckpt, tmp_path / "proj.pth", **TINY)


def test_from_osdface_missing_files(weights_home: Path, tmp_path: Path) -> None:
    with pytest.raises(MissingWeightError, match="osdface_vre"):
        VisualRepresentationEmbedder.from_osdface(None, **TINY)
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        VisualRepresentationEmbedder.from_osdface(tmp_path / "nope.ckpt", **TINY)


def test_projection_key_map(model: VisualRepresentationEmbedder) -> None:
    state = {"0.weight": torch.randn(16, 32, 1), "0.bias": torch.randn(16),
             "2.weight": torch.randn(32, 16, 1), "2.bias": torch.randn(32)}
    mapping = {"0.weight": "conv1.weight", "0.bias": "conv1.bias", "2.weight": "conv2.weight", "2.bias": "conv2.bias"}
    model.load_projection_state_dict(state, mapping)
    assert torch.equal(model.projection.conv2.weight, state["2.weight"])


def test_presets_and_config_errors() -> None:
    full = VisualRepresentationEmbedder.from_preset("osdface")
    assert dict(full.config)["channel_multipliers"] in ((1, 2, 2, 2, 4, 8), [1, 2, 2, 2, 4, 8])
    assert tuple(full.codebook.shape) == (1024, 512) and full.codebook.abs().max() <= 1 / 1024
    assert tuple(full.projection.conv1.weight.shape) == (256, 512, 1)
    # 5 downsamplings, attention only at the 16x16 level and in the middle block
    assert len(full.encoder.down) == 6 and [len(lv.attn) for lv in full.encoder.down] == [0, 0, 0, 0, 0, 2]
    with pytest.raises(ValueError, match="unknown VRE preset"):
        VisualRepresentationEmbedder.from_preset("huge")
    with pytest.raises(ValueError, match="norm_groups=12"):
        VisualRepresentationEmbedder.from_preset("tiny", norm_groups=12)
    with pytest.raises(ValueError, match=r"lq must be \(B, 3, H, W\)"):
        VisualRepresentationEmbedder.from_preset("tiny")(torch.zeros(1, 1, 64, 64))


def test_vqgan_blocks_decoder_and_quantizer() -> None:
    torch.manual_seed(0)
    kw = {"base_channels": 16, "channel_multipliers": (1, 2), "num_res_blocks": 1, "attn_resolutions": (16,),
          "resolution": 32, "z_channels": 8, "norm_groups": 4}
    enc, dec = Encoder(3, **kw), Decoder(3, **kw)
    x = torch.randn(2, 3, 32, 32)
    h = enc(x)
    assert h.shape == (2, 8, 16, 16) and dec(h).shape == (2, 3, 32, 32)
    assert "up.1.upsample.conv.weight" in dec.state_dict() and "up.1.attn.1.q.weight" in dec.state_dict()
    vq = VectorQuantizer(16, 8)
    z = torch.randn(2, 8, 4, 4, requires_grad=True)
    z_q, loss, idx = vq(z)
    assert idx.shape == (2, 4, 4) and torch.allclose(z_q, vq.embedding.weight[idx].permute(0, 3, 1, 2), atol=1e-6)
    (z_q.sum() + loss).backward()
    assert z.grad is not None and vq.embedding.weight.grad is not None
