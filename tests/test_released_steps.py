"""Computations we reproduce from the released OSDFace code, compared with the released steps written out here
(jkwang28/OSDFace, HEAD 0652227): the 77-code selection of `lq_embed/vqvae.py:VectorQuantizer.inference` (and its
zero rows when fewer distinct codes exist) with `lq_embed/inference.py:TwoLayerConv1x1`, the one-step estimate of
`utils/others.py:get_x0_from_noise` at t = 399 in float64 (`infer.py:OSDFace_test.forward`), and the input steps
of `infer.py:main_worker` (to_tensor * 2 - 1, bilinear align_corners=True resize of a square image) and
`lq_embed/inference.py:vqvae_encoder.forward` (bilinear align_corners=False to the VQ size, (x - 0.5) / 0.5).

Also the native settings that carry those numbers (`honestface.models.native`): presets, saving, old folders,
overrides; the VAE's `sample_size` is never the face size.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from honestface.models import HonestFace
from honestface.models.native import NativeSettings, read_native_settings
from honestface.models.vre import VisualRepresentationEmbedder
from honestface.pipelines import HonestFacePipeline

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest)


# ------------------------------------------------------------------------------ the released steps, written out
def released_inference(z: torch.Tensor, embedding: torch.Tensor, n_min: int) -> tuple[list[int], torch.Tensor]:
    """VectorQuantizer.inference for one sample (the released loop is only right at batch size 1)."""
    n_e, e_dim = embedding.shape
    z = z.permute(0, 2, 3, 1).contiguous()
    z_flattened = z.view(1, -1, e_dim)
    d = torch.sum(z_flattened ** 2, dim=2, keepdim=True) + torch.sum(embedding ** 2, dim=1) - 2 * torch.matmul(
        z_flattened, embedding.t())
    d = d.view(1, -1, n_e)
    min_encodings = torch.zeros(1, n_min, n_e)
    seen, selected = set(), []
    min_values, min_indices = torch.min(d, dim=2)
    sorted_indices = torch.zeros(d.shape[1], 2)
    sorted_indices[:, 0] = min_indices.view(-1)
    sorted_indices[:, 1] = min_values.view(-1)
    _, sorted_order = torch.sort(sorted_indices[:, 1], dim=0)
    sorted_indices = sorted_indices[sorted_order]
    count = 0
    for idx in sorted_indices[:, 0]:
        if idx.item() not in seen:
            selected.append(idx.item())
            seen.add(idx.item())
            count += 1
        if count >= n_min:
            break
    indices = torch.tensor(selected, dtype=torch.int64)
    min_encodings[0, :len(selected)].scatter_(1, indices.unsqueeze(1), 1)
    z_q = torch.matmul(min_encodings.view(-1, n_e), embedding).view(1, -1, e_dim)
    return [int(i) for i in selected], z_q


def released_projection(x: torch.Tensor, conv1: torch.nn.Conv1d, conv2: torch.nn.Conv1d) -> torch.Tensor:
    """TwoLayerConv1x1.forward: permute, SiLU(conv1), SiLU(conv2), permute back."""
    x = x.permute(0, 2, 1)
    x = F.silu(F.conv1d(x, conv1.weight, conv1.bias))
    x = F.silu(F.conv1d(x, conv2.weight, conv2.bias))
    return x.permute(0, 2, 1)


@pytest.fixture(scope="module")
def vre() -> VisualRepresentationEmbedder:
    torch.manual_seed(0)  # the released sizes where they matter: 1024 x 512 codebook, 77 tokens, 512 -> 1024
    return VisualRepresentationEmbedder.from_preset("tiny", codebook_size=1024, codebook_dim=512, num_tokens=77,
                                                    proj_hidden=256, out_dim=1024).eval()


def test_77_code_selection_and_projection_equal_the_released_steps(vre) -> None:
    g = torch.Generator().manual_seed(1)
    z = torch.randn(3, 512, 16, 16, generator=g) * 0.05 + vre.codebook.detach()[:256].t().reshape(1, 512, 16, 16)
    with torch.no_grad():
        indices, valid, vectors = vre.select_codes(z)
        p_l = vre.projection(vectors)
        for b in range(3):  # OSDFace runs one face at a time
            selected, z_q = released_inference(z[b:b + 1], vre.codebook, 77)
            assert len(selected) == 77 and indices[b].tolist() == selected and bool(valid[b].all())
            assert torch.equal(vectors[b:b + 1], z_q)
            want = released_projection(z_q, vre.projection.conv1, vre.projection.conv2)
            torch.testing.assert_close(p_l[b:b + 1], want, rtol=1e-6, atol=1e-6)


def test_fewer_distinct_codes_give_the_released_zero_rows(vre) -> None:
    g = torch.Generator().manual_seed(2)
    cells = vre.codebook.detach()[torch.tensor([3, 3, 90, 511, 90, 7, 3, 1000])]  # 5 distinct codes
    grid = cells[torch.randint(0, 8, (256,), generator=g)] + torch.randn(256, 512, generator=g) * 1e-3
    z = grid.t().reshape(1, 512, 16, 16)
    with torch.no_grad():
        indices, valid, vectors = vre.select_codes(z)
        selected, z_q = released_inference(z, vre.codebook, 77)
        assert sorted(selected) == [3, 7, 90, 511, 1000] and indices[0, :5].tolist() == selected
        assert valid[0].tolist() == [True] * 5 + [False] * 72 and (indices[0, 5:] == -1).all()
        assert torch.equal(vectors, z_q) and (z_q[0, 5:] == 0).all()
        # the projection runs on the zero rows too, as the released TwoLayerConv1x1 does
        want = released_projection(z_q, vre.projection.conv1, vre.projection.conv2)
        torch.testing.assert_close(vre.projection(vectors), want, rtol=1e-6, atol=1e-6)


def test_one_step_at_t399_equals_get_x0_from_noise_in_float64() -> None:
    from diffusers import DDIMScheduler

    from honestface.models.generator import OneStepGenerator
    from honestface.models.presets import SD21_SCHEDULER_CONFIG, TINY_UNET_CONFIG, TINY_VAE_CONFIG

    torch.manual_seed(0)
    gen = OneStepGenerator.from_configs(TINY_UNET_CONFIG, TINY_VAE_CONFIG, SD21_SCHEDULER_CONFIG, lora_rank=0)
    assert gen.timestep == 399
    g = torch.Generator().manual_seed(3)
    lq_latent, prompt = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 77, 32, generator=g)
    with torch.no_grad():
        eps, z_hat = gen.denoise(lq_latent, prompt)
        model_pred = gen.unet(lq_latent, 399, encoder_hidden_states=prompt).sample
    alphas_cumprod = DDIMScheduler.from_config(SD21_SCHEDULER_CONFIG).alphas_cumprod  # float32, as infer.py's
    alpha_prod_t = alphas_cumprod.double()[399].reshape(-1, 1, 1, 1)
    x_0 = ((lq_latent.double() - (1 - alpha_prod_t) ** 0.5 * model_pred.double()) / alpha_prod_t ** 0.5).float()
    assert torch.equal(eps, model_pred) and torch.equal(z_hat, x_0)
    assert abs(float(alpha_prod_t) - 0.4261) < 1e-4


# -------------------------------------------------------------------------------------------- input steps
def test_the_vre_input_equals_vqvae_encoder_forward() -> None:
    g = torch.Generator().manual_seed(4)
    for size, img in ((32, torch.rand(2, 3, 48, 48, generator=g) * 2 - 1), (64, torch.rand(1, 3, 64, 64) * 2 - 1)):
        vre = VisualRepresentationEmbedder.from_preset("tiny", input_transform="osdface", input_size=size)
        want = F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False)
        assert torch.equal(vre.preprocess(img), (want - 0.5) / 0.5)


def test_the_pipeline_feeds_the_model_what_infer_py_does() -> None:
    from PIL import Image
    from torchvision.transforms import functional as TF

    from honestface.data.samples import astronaut

    model = HonestFace.from_preset("tiny", use_ide=False, with_discriminator=False, resize="bilinear")
    pipe = HonestFacePipeline(model)
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda _, args: seen.append(args[0].clone()))
    face = np.ascontiguousarray(astronaut()[30:190, 150:310])  # 160 x 160 uint8
    pipe(face)
    lq = TF.to_tensor(Image.fromarray(face)).unsqueeze(0) * 2 - 1  # main_worker, then the square-image resize
    lq = F.interpolate(lq, (64, 64), mode="bilinear", align_corners=True)
    assert torch.equal(seen[0], lq)


# ------------------------------------------------------------------------------------------ native settings
def test_sd21_runs_at_512_whatever_the_vae_sample_size() -> None:
    with torch.device("meta"):  # SD 2.1-base files say sample_size 768; OSDFace works at 512
        model = HonestFace.from_preset("sd21", pretrained=False, use_ide=False, with_discriminator=False,
                                       vae={"sample_size": 768})
    assert model.vae.config.sample_size == 768
    assert model.native_settings == NativeSettings(512, "bilinear", 399)
    pipe = HonestFacePipeline(model)
    assert (pipe.resolution, pipe.resize, pipe.resolution_source) == (512, "bilinear", "model")
    pipe = HonestFacePipeline(model, resolution=768)
    assert (pipe.resolution, pipe.resize, pipe.resolution_source) == (768, "bilinear", "override")
    with pytest.raises(ValueError, match="multiple of 8"):
        HonestFacePipeline(model, resolution=500)


def test_native_settings_are_saved_and_old_folders_fall_back(tmp_path) -> None:
    model = HonestFace.from_preset("tiny", with_discriminator=False, resolution=48, timestep=250)
    assert model.native_settings == NativeSettings(48, "area_cubic", 250)
    folder = model.save_pretrained(tmp_path / "m")
    cfg = json.loads((folder / "honestface_config.json").read_text())
    assert cfg["native"] == {"resolution": 48, "resize": "area_cubic", "timestep": 250}
    assert HonestFace.from_pretrained(folder).native_settings == NativeSettings(48, "area_cubic", 250)
    assert read_native_settings(folder) == NativeSettings(48, "area_cubic", 250)
    del cfg["native"]  # a folder saved before native settings were recorded: the VRE's size, never the VAE's
    (folder / "honestface_config.json").write_text(json.dumps(cfg))
    assert HonestFace.from_pretrained(folder).native_settings == NativeSettings(64, "area_cubic", 250)
    assert read_native_settings(folder) == NativeSettings(64, "area_cubic", 250)
    with pytest.raises(ValueError, match="resize must be one of"):
        HonestFace.from_preset("tiny", with_discriminator=False, resize="nearest")


def test_vspbfr_native_settings_and_older_folders(tmp_path) -> None:
    from honestface.models.vspbfr.vspbfr import VSPBFR, build_vspbfr

    model = build_vspbfr("tiny")
    assert model.native_settings == NativeSettings(32, "lanczos", None)
    folder = model.save_pretrained(tmp_path / "v")
    cfg = json.loads((folder / "vspbfr_config.json").read_text())
    assert cfg["native"] == {"resolution": 32, "resize": "lanczos", "timestep": None}
    del cfg["native"]
    (folder / "vspbfr_config.json").write_text(json.dumps(cfg))
    assert VSPBFR.from_pretrained(folder).native_settings == NativeSettings(32, "lanczos", None)
    assert read_native_settings(folder).resolution == 32
    with pytest.raises(ValueError, match="restoration size 32"):
        VSPBFR.from_config({**cfg, "native": {"resolution": 64}})
