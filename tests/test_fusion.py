"""Feature Fusion (honestface.models.fusion), tiny preset.

Shapes and a fixed token count; `drop` replaces exactly the dropped samples' identity tokens by the learned null
tokens (and nothing else); None inputs mean null tokens; blind_mode "lq" passes the caller's tokens through;
segments can be switched off; reference-dropout sampling; gradients; bit-exact save/load; input errors.
"""

from __future__ import annotations

import pytest
import torch

from honestface.models.fusion import FUSION_PRESETS, FeatureFusion, drop_references, sample_reference_dropout

B, DIM, NL, NF, NI = 4, 32, 8, 2, 4


@pytest.fixture
def fusion() -> FeatureFusion:
    torch.manual_seed(0)
    return FeatureFusion.from_preset("tiny")


def _inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, n, DIM, generator=g) for n in (NL, NF, NI))


def test_shape_segments_and_final_norm(fusion):
    p_l, p_f, p_i = _inputs()
    p = fusion(p_l, p_f, p_i)
    assert p.shape == (B, NL + NF + NI, DIM) == (B, fusion.num_tokens, DIM)
    # the final LayerNorm (weight 1, bias 0 at init): every token has zero mean and unit variance
    torch.testing.assert_close(p.mean(-1), torch.zeros(B, fusion.num_tokens), rtol=0, atol=1e-5)
    # each segment is its input plus its own segment embedding, in the order p_L, p_F, p_I
    raw = FeatureFusion.from_preset("tiny", final_norm=False)
    with torch.no_grad():
        for name in ("segment_vre", "segment_id", "segment_feature"):
            getattr(raw, name).copy_(getattr(fusion, name))
    q = raw(p_l, p_f, p_i)
    torch.testing.assert_close(q[:, :NL], p_l + fusion.segment_vre)
    torch.testing.assert_close(q[:, NL : NL + NF], p_f + fusion.segment_id)
    torch.testing.assert_close(q[:, NL + NF :], p_i + fusion.segment_feature)
    assert FUSION_PRESETS["sd21"]["num_vre_tokens"] == 77
    assert FeatureFusion.from_preset("sd21").num_tokens == 97


def test_drop_replaces_exactly_the_dropped_samples_identity_tokens(fusion):
    p_l, p_f, p_i = _inputs()
    drop = torch.tensor([False, True, False, True])
    full = fusion(p_l, p_f, p_i)
    dropped = fusion(p_l, p_f, p_i, drop=drop)
    blind = fusion(p_l, None, None)  # no identity input at all: null tokens for every sample
    assert torch.equal(dropped[~drop], full[~drop])  # kept samples untouched
    assert torch.equal(dropped[drop], blind[drop])  # dropped samples = the blind output
    assert torch.equal(dropped[drop][:, :NL], full[drop][:, :NL])  # p_L tokens never change
    assert not torch.allclose(dropped[drop][:, NL:], full[drop][:, NL:])
    raw = FeatureFusion.from_preset("tiny", final_norm=False)
    out = raw(p_l, p_f, p_i, drop=drop)
    assert torch.equal(out[1, NL:], out[3, NL:])  # the same null tokens for every dropped sample
    torch.testing.assert_close(out[1, NL : NL + NF], raw.null_id + raw.segment_id)
    torch.testing.assert_close(out[3, NL + NF :], raw.null_feature + raw.segment_feature)
    # only one of the two given: the other one is null for everyone
    only_f = raw(p_l, p_f, None)
    torch.testing.assert_close(only_f[:, NL + NF :], (raw.null_feature + raw.segment_feature).expand(B, -1, -1))
    torch.testing.assert_close(only_f[:, NL : NL + NF], p_f + raw.segment_id)


def test_blind_mode_lq_passes_tokens_through(fusion):
    p_l, p_f, p_i = _inputs()
    torch.manual_seed(0)
    lq_mode = FeatureFusion.from_preset("tiny", blind_mode="lq")
    assert lq_mode.null_id is None and lq_mode.null_feature is None
    out = lq_mode(p_l, p_f, p_i, drop=torch.ones(B, dtype=torch.bool))
    assert torch.equal(out, lq_mode(p_l, p_f, p_i))  # drop is the caller's business in "lq" mode
    with pytest.raises(ValueError, match="blind_mode 'lq' needs p_F"):
        lq_mode(p_l, None, p_i)
    with pytest.raises(ValueError, match="unknown blind_mode"):
        FeatureFusion.from_preset("tiny", blind_mode="zero")


def test_segments_can_be_switched_off():
    p_l, p_f, _ = _inputs()
    no_i = FeatureFusion.from_preset("tiny", num_feature_tokens=0)
    assert no_i(p_l, p_f).shape == (B, NL + NF, DIM) and no_i(p_l, p_f, None).shape == (B, NL + NF, DIM)
    with pytest.raises(ValueError, match="p_I has 4 tokens but the fusion was built with 0"):
        no_i(p_l, p_f, torch.randn(B, NI, DIM))


def test_sample_reference_dropout_and_drop_references():
    assert not sample_reference_dropout(64, 0.0).any()
    assert sample_reference_dropout(64, 1.0).all()
    a = sample_reference_dropout(10_000, 0.3, torch.Generator().manual_seed(5))
    b = sample_reference_dropout(10_000, 0.3, torch.Generator().manual_seed(5))
    assert a.dtype == torch.bool and a.shape == (10_000,) and torch.equal(a, b)
    assert abs(a.float().mean().item() - 0.3) < 0.02
    with pytest.raises(ValueError, match="1.5"):
        sample_reference_dropout(4, 1.5)
    mask = torch.tensor([[True, False], [True, True], [False, True]])
    out = drop_references(mask, torch.tensor([False, True, False]))
    assert torch.equal(out, torch.tensor([[True, False], [False, False], [False, True]]))
    assert drop_references(mask, None) is mask


def test_gradients_reach_every_parameter(fusion):
    p_l, p_f, p_i = (x.requires_grad_(True) for x in _inputs())
    out = fusion(p_l, p_f, p_i, drop=torch.tensor([True, False, False, True]))
    (out * torch.randn_like(out)).sum().backward()
    for name, param in fusion.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert p_f.grad[[0, 3]].abs().sum() == 0 and p_f.grad[[1, 2]].abs().sum() > 0  # dropped samples: no gradient


def test_save_load_round_trip_is_bit_exact(fusion, tmp_path):
    fusion.save_pretrained(tmp_path / "fusion")
    loaded = FeatureFusion.from_pretrained(tmp_path / "fusion")
    a, b = fusion.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    p_l, p_f, p_i = _inputs()
    drop = torch.tensor([False, True, True, False])
    assert torch.equal(fusion(p_l, p_f, p_i, drop), loaded(p_l, p_f, p_i, drop))


def test_input_errors(fusion):
    p_l, p_f, p_i = _inputs()
    with pytest.raises(ValueError, match="p_L must be"):
        fusion(p_l[:, :5], p_f, p_i)
    with pytest.raises(ValueError, match="p_F must be"):
        fusion(p_l, p_f[:, :1], p_i)
    with pytest.raises(ValueError, match="drop must be"):
        fusion(p_l, p_f, p_i, drop=torch.zeros(B))
    with pytest.raises(ValueError, match="unknown fusion preset"):
        FeatureFusion.from_preset("sd15")
