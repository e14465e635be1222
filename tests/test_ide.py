"""Identity Embedder (honestface.models.ide, face_identity_encoder, facial_feature_extractor), tiny random models.

- frozen backbones: shapes, unit norm, the fixed FFHQ -> ArcFace warp equals OpenCV's alignment of the template
  points, gradients reach the input image but no backbone weight, train() keeps them in eval mode, checkpoint /
  folder loading (incl. an IP-Adapter-style CLIPVisionModelWithProjection folder), reference batching helpers.
- trainable heads: shapes; no NaN for K = 0, None, all-masked and mixed masks; a fully masked row equals K = 0;
  invariance to reference order and to masked-out junk references; gradients reach every trainable parameter of
  the IDE heads and the fusion, none of the frozen backbones; bit-exact save/load; presets and input errors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from honestface.face.alignment import align_face, template
from honestface.face.iresnet import IResNet
from honestface.models.face_identity_encoder import FaceIdentityEncoder, IdentityBackbone
from honestface.models.facial_feature_extractor import FacialFeatureExtractor, ImageTokenBackbone
from honestface.models.fusion import FeatureFusion
from honestface.models.ide import IDE_PRESETS, TINY_CLIP_VISION_CONFIG
from honestface.weights import MissingWeightError

ID_DIM, TOKEN_DIM, T = 16, 32, 17  # tiny presets; tiny CLIP: (32 / 8)^2 + 1 tokens


@pytest.fixture
def fie() -> FaceIdentityEncoder:
    torch.manual_seed(0)
    return FaceIdentityEncoder.from_preset("tiny").eval()


@pytest.fixture
def ffe() -> FacialFeatureExtractor:
    torch.manual_seed(1)
    return FacialFeatureExtractor.from_preset("tiny").eval()


def _refs(b: int = 3, k: int = 4, seed: int = 2):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(b, k, ID_DIM, generator=g)
    tok = torch.randn(b, k, T, TOKEN_DIM, generator=g)
    lq_emb = torch.randn(b, ID_DIM, generator=g)
    lq_tok = torch.randn(b, T, TOKEN_DIM, generator=g)
    mask = torch.tensor([[True, True, False, True], [False, False, False, False], [True, False, False, False]])
    return emb, tok, lq_emb, lq_tok, mask[:b, :k]


# ----------------------------------------------------------------------------------------------- frozen backbones
def test_identity_backbone_embeds_unit_norm_and_is_frozen():
    torch.manual_seed(0)
    bb = IdentityBackbone.tiny(ID_DIM)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    e = bb(x)
    assert e.shape == (2, ID_DIM)
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(2))
    assert not any(p.requires_grad for p in bb.parameters())
    bb.train()  # a composite model calling .train() must not switch BatchNorm to batch statistics
    assert not bb.net.training
    torch.testing.assert_close(bb(x), e)


def test_identity_backbone_warp_matches_opencv_alignment_of_the_template():
    torch.manual_seed(0)
    bb = IdentityBackbone.tiny(ID_DIM)
    img = np.random.default_rng(0).random((96, 96, 3)).astype(np.float32) * 2 - 1
    ref, _ = align_face(img, template("ffhq", 96), template="arcface", size=112, border="constant", border_value=-1)
    crop = bb.crop(torch.from_numpy(img).permute(2, 0, 1)[None])
    assert crop.shape == (1, 3, 112, 112)
    np.testing.assert_allclose(crop[0].permute(1, 2, 0).numpy(), ref, atol=1e-4)


def test_identity_backbone_is_differentiable_wrt_image_only():
    torch.manual_seed(0)
    bb = IdentityBackbone.tiny(ID_DIM)
    x = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_(True)
    target = torch.nn.functional.normalize(torch.randn(2, ID_DIM), dim=-1)
    (1 - (bb(x) * target).sum(-1)).mean().backward()  # an identity loss
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in bb.parameters())


def test_identity_backbone_from_checkpoint_and_registry(tmp_path, weights_home):
    torch.manual_seed(0)
    net = IResNet.from_preset("ir18", widths=(8, 16, 16, 32), num_features=ID_DIM).eval()  # narrow IR-18
    ckpt = tmp_path / "backbone.pth"
    torch.save(net.state_dict(), ckpt)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    expected = IdentityBackbone(net)(x)
    torch.testing.assert_close(IdentityBackbone.from_checkpoint(ckpt)(x), expected)
    torch.testing.assert_close(IdentityBackbone.from_weights("arcface_torch_r50", path=ckpt)(x), expected)
    with pytest.raises(MissingWeightError, match="arcface_torch_r50"):
        IdentityBackbone.from_weights("arcface_torch_r50")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        IdentityBackbone.from_checkpoint(tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="square"):
        IdentityBackbone(net)(torch.zeros(1, 3, 64, 48))


def test_identity_backbone_embed_references_runs_only_real_ones():
    torch.manual_seed(0)
    bb = IdentityBackbone.tiny(ID_DIM)
    refs = torch.rand(2, 3, 3, 64, 64) * 2 - 1
    mask = torch.tensor([[True, False, True], [False, False, False]])
    out = bb.embed_references(refs, mask)
    assert out.shape == (2, 3, ID_DIM)
    assert torch.equal(out[~mask], torch.zeros(4, ID_DIM))
    torch.testing.assert_close(out[0, 2], bb(refs[0, 2:3])[0])


def test_image_token_backbone_tiny_shapes_layers_and_preprocessing():
    torch.manual_seed(0)
    tb = ImageTokenBackbone.from_config(TINY_CLIP_VISION_CONFIG)
    assert tb.num_tokens == T and tb.hidden_size == TOKEN_DIM
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    tokens = tb(x)
    assert tokens.shape == (3, (32 // 8) ** 2 + 1, 32) and not tokens.requires_grad
    assert not any(p.requires_grad for p in tb.parameters())
    # the default is the penultimate hidden state (IP-Adapter-plus), distinct from the last one
    pixels = tb.preprocess(x)
    assert pixels.shape == (3, 3, 32, 32)
    states = tb.model(pixel_values=pixels, output_hidden_states=True).hidden_states
    torch.testing.assert_close(tokens, states[-2])
    last = ImageTokenBackbone(tb.model, layer=-1)(x)
    torch.testing.assert_close(last, states[-1])
    assert not torch.allclose(last, tokens)
    # a mid-grey image normalises to (0.5 - mean) / std; non-square input is centre-cropped
    grey = tb.preprocess(torch.zeros(1, 3, 40, 56))
    assert grey.shape == (1, 3, 32, 32)
    torch.testing.assert_close(grey[0, :, 5, 5], (0.5 - tb.mean.flatten()) / tb.std.flatten())
    with pytest.raises(ValueError, match="layer 5"):
        ImageTokenBackbone(tb.model, layer=5)


def test_image_token_backbone_loads_an_ip_adapter_style_folder(tmp_path, weights_home):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    full = CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY_CLIP_VISION_CONFIG, projection_dim=8)).eval()
    full.save_pretrained(tmp_path / "image_encoder")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    tb = ImageTokenBackbone.from_weights(path=tmp_path / "image_encoder")
    pixels = tb.preprocess(x)
    with torch.no_grad():
        expected = full(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
    torch.testing.assert_close(tb(x), expected)
    refs = torch.rand(2, 2, 3, 32, 32) * 2 - 1
    mask = torch.tensor([[True, False], [False, True]])
    enc = tb.encode_references(refs, mask)
    assert enc.shape == (2, 2, T, TOKEN_DIM) and torch.equal(enc[~mask], torch.zeros(2, T, TOKEN_DIM))
    torch.testing.assert_close(enc[1, 1], tb(refs[1, 1:2])[0])
    with pytest.raises(MissingWeightError, match="clip_vit_h14_vision"):
        ImageTokenBackbone.from_weights()
    with pytest.raises(FileNotFoundError, match="missing_folder"):
        ImageTokenBackbone.from_pretrained(tmp_path / "missing_folder")


# ----------------------------------------------------------------------------------------------- trainable heads
def test_heads_shapes_and_no_nan_for_every_reference_situation(fie, ffe):
    emb, tok, lq_emb, lq_tok, mask = _refs()
    b = emb.shape[0]
    cases = {
        "mixed": (emb, tok, mask),
        "all_valid": (emb, tok, None),
        "k0": (emb[:, :0], tok[:, :0], torch.zeros(b, 0, dtype=torch.bool)),
        "none": (None, None, None),
        "all_masked": (emb, tok, torch.zeros_like(mask)),
    }
    outs = {}
    for name, (e, t, m) in cases.items():
        p_f = fie(e, m, lq_emb)
        p_i = ffe(lq_tok, t, m)
        assert p_f.shape == (b, 2, 32) and p_i.shape == (b, 4, 32), name
        assert torch.isfinite(p_f).all() and torch.isfinite(p_i).all(), name
        outs[name] = (p_f, p_i)
    # no reference at all == K = 0 == everything masked; row 1 of "mixed" is fully masked too
    for name in ("k0", "all_masked"):
        torch.testing.assert_close(outs[name][0], outs["none"][0], rtol=0, atol=1e-6)
        torch.testing.assert_close(outs[name][1], outs["none"][1], rtol=0, atol=1e-6)
    torch.testing.assert_close(outs["mixed"][0][1], outs["none"][0][1], rtol=0, atol=1e-6)
    torch.testing.assert_close(outs["mixed"][1][1], outs["none"][1][1], rtol=0, atol=1e-6)
    assert not torch.allclose(outs["mixed"][0][0], outs["none"][0][0])  # references do change the output
    assert not torch.allclose(outs["mixed"][1][0], outs["none"][1][0])
    # the LQ embedding enters p_F (query and fallback); use_lq=False ignores it
    assert not torch.allclose(fie(None, None, lq_emb), fie(None, None, torch.zeros_like(lq_emb)))
    torch.manual_seed(0)
    blind = FaceIdentityEncoder.from_preset("tiny", use_lq=False)
    torch.testing.assert_close(blind(emb, mask, lq_emb), blind(emb, mask))


def test_heads_are_invariant_to_reference_order_and_padding(fie, ffe):
    emb, tok, lq_emb, lq_tok, mask = _refs()
    p_f, p_i = fie(emb, mask, lq_emb), ffe(lq_tok, tok, mask)
    perm = torch.tensor([3, 0, 2, 1])
    torch.testing.assert_close(fie(emb[:, perm], mask[:, perm], lq_emb), p_f, rtol=0, atol=1e-5)
    torch.testing.assert_close(ffe(lq_tok, tok[:, perm], mask[:, perm]), p_i, rtol=0, atol=1e-5)
    junk_emb = torch.cat([emb, 100 * torch.randn(3, 2, ID_DIM)], 1)
    junk_tok = torch.cat([tok, 100 * torch.randn(3, 2, T, TOKEN_DIM)], 1)
    junk_mask = torch.cat([mask, torch.zeros(3, 2, dtype=torch.bool)], 1)
    torch.testing.assert_close(fie(junk_emb, junk_mask, lq_emb), p_f, rtol=0, atol=1e-5)
    torch.testing.assert_close(ffe(lq_tok, junk_tok, junk_mask), p_i, rtol=0, atol=1e-5)


def test_gradients_reach_every_trainable_parameter_and_no_backbone():
    torch.manual_seed(0)
    id_bb = IdentityBackbone.tiny(ID_DIM)
    tok_bb = ImageTokenBackbone.from_config(TINY_CLIP_VISION_CONFIG)
    fie, ffe = FaceIdentityEncoder.from_preset("tiny"), FacialFeatureExtractor.from_preset("tiny")
    fusion = FeatureFusion.from_preset("tiny")
    lq = torch.rand(3, 3, 64, 64) * 2 - 1
    refs = torch.rand(3, 3, 3, 64, 64) * 2 - 1
    mask = torch.tensor([[True, True, True], [True, False, True], [False, False, False]])
    p_f = fie(id_bb.embed_references(refs, mask), mask, id_bb(lq))
    p_i = ffe(tok_bb(lq), tok_bb.encode_references(refs, mask), mask)
    p_l = torch.randn(3, 8, 32)
    p = fusion(p_l, p_f, p_i, drop=torch.tensor([False, True, False]))
    assert p.shape == (3, 8 + 2 + 4, 32)
    (p * torch.randn_like(p)).sum().backward()
    for module in (fie, ffe, fusion):
        for name, param in module.named_parameters():
            assert param.grad is not None and torch.isfinite(param.grad).all(), name
            assert param.grad.abs().sum() > 0, name
    for backbone in (id_bb, tok_bb):
        assert all(not q.requires_grad and q.grad is None for q in backbone.parameters())


@pytest.mark.parametrize("cls", [FaceIdentityEncoder, FacialFeatureExtractor])
def test_save_load_round_trip_is_bit_exact(cls, tmp_path):
    torch.manual_seed(3)
    model = cls.from_preset("tiny", num_heads=4).eval()
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = cls.from_pretrained(tmp_path / "m").eval()
    assert loaded.config.num_heads == 4
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    emb, tok, lq_emb, lq_tok, mask = _refs()
    args = (emb, mask, lq_emb) if cls is FaceIdentityEncoder else (lq_tok, tok, mask)
    assert torch.equal(model(*args), loaded(*args))


def test_presets_and_input_errors(fie, ffe):
    assert IDE_PRESETS["sd21"]["face_identity_encoder"]["out_dim"] == 1024
    sd_f = FaceIdentityEncoder.from_preset("sd21")
    assert sd_f(torch.randn(1, 2, 512), None, torch.randn(1, 512)).shape == (1, 4, 1024)
    sd_i = FacialFeatureExtractor.from_preset("sd21", depth=1)
    assert sd_i(torch.randn(1, 257, 1280), torch.randn(1, 2, 257, 1280)).shape == (1, 16, 1024)
    assert FaceIdentityEncoder.from_preset("tiny", id_dim=128).config.id_dim == 128  # dlib descriptors
    with pytest.raises(ValueError, match="unknown IDE preset 'sdxl'"):
        FaceIdentityEncoder.from_preset("sdxl")
    with pytest.raises(ValueError, match="not divisible"):
        FacialFeatureExtractor(token_dim=8, out_dim=30, num_heads=4)
    emb, tok, lq_emb, lq_tok, mask = _refs()
    with pytest.raises(ValueError, match="bool"):
        fie(emb, mask.float(), lq_emb)
    with pytest.raises(ValueError, match="ref_mask must have shape"):
        ffe(lq_tok, tok, mask[:, :2])
    with pytest.raises(ValueError, match="ref_embeddings must be"):
        fie(emb[..., :8], mask)
    with pytest.raises(ValueError, match="lq_tokens must be"):
        ffe(lq_tok[..., :8])
    with pytest.raises(ValueError, match="batch size"):
        fie(None, None, None)
