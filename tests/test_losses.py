"""Training losses: reconstruction, perceptual (DISTS / EA-DISTS / LPIPS), identity, adversarial.

Random-init networks at 64 px (no weight file); the registry tests save random torchvision-layout checkpoints.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from honestface.losses import AdversarialLoss, IdentityLoss, PerceptualLoss, ReconstructionLoss
from honestface.losses.perceptual import DISTS, sobel_edges
from honestface.weights import MissingWeightError

S = 64


def _images(seed: int, b: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(b, 3, S // 8, S // 8, generator=g)  # smooth, face-like low frequencies plus fine noise
    img = torch.nn.functional.interpolate(base, size=(S, S), mode="bilinear", align_corners=False)
    return (img + 0.1 * torch.rand(b, 3, S, S, generator=g)).clamp(0, 1) * 2 - 1  # (B, 3, S, S) in [-1, 1]


def _assert_frozen_untouched(module: nn.Module) -> None:
    params = list(module.parameters())
    assert params and all(not p.requires_grad and p.grad is None for p in params)


@pytest.fixture(scope="module")
def ea_dists() -> PerceptualLoss:
    torch.manual_seed(0)
    return PerceptualLoss("ea_dists", random_init=True)


@pytest.fixture(scope="module", params=["lpips_vgg", "lpips_alex"])
def lpips_loss(request: pytest.FixtureRequest) -> PerceptualLoss:
    torch.manual_seed(0)
    return PerceptualLoss(request.param, random_init=True)


# ------------------------------------------------------------------------------------------- reconstruction


def test_reconstruction_pixel_latent_both():
    x, y = _images(0), _images(1)
    z, zy = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    loss, terms = ReconstructionLoss("pixel")(x, x)
    assert loss.item() == 0.0 and set(terms) == {"mse_pixel"}
    x_hat = x.clone().requires_grad_(True)
    loss, _ = ReconstructionLoss("pixel")(x_hat, y)
    loss.backward()
    assert torch.allclose(loss, ((x - y) ** 2).mean()) and x_hat.grad.abs().sum() > 0
    loss, terms = ReconstructionLoss("latent")(None, None, z, zy)
    assert torch.allclose(loss, ((z - zy) ** 2).mean()) and set(terms) == {"mse_latent"}
    loss, terms = ReconstructionLoss("both", pixel_weight=2.0, latent_weight=0.5)(x, y, z, zy)
    assert torch.allclose(loss, 2 * terms["mse_pixel"] + 0.5 * terms["mse_latent"])
    with pytest.raises(ValueError, match="z_hat and z"):
        ReconstructionLoss("both")(x, y)
    with pytest.raises(ValueError, match="same shape"):
        ReconstructionLoss("pixel")(x, y[:1])
    with pytest.raises(ValueError, match="space"):
        ReconstructionLoss("l1")


# ------------------------------------------------------------------------------------------------ perceptual


@torch.no_grad()
def test_dists_zero_at_identity_positive_otherwise(ea_dists: PerceptualLoss):
    x, y = _images(0), _images(1)
    d = ea_dists.net((torch.cat([x, x]) + 1) / 2, (torch.cat([x, y]) + 1) / 2)  # (2B,): identical pairs, then not
    assert d.shape == (4,) and torch.isfinite(d).all()
    assert d[:2].abs().max() < 1e-5 and (d[2:] > 1e-3).all()


def test_ea_dists_differentiable_frozen_and_edge_term(ea_dists: PerceptualLoss):
    x, y = _images(0, b=1), _images(1, b=1)
    with torch.no_grad():
        loss_same, terms_same = ea_dists(x, x)
    assert abs(loss_same.item()) < 1e-5 and set(terms_same) == {"dists", "edge_dists"}
    x_hat = y.clone().requires_grad_(True)
    loss, terms = ea_dists(x_hat, x)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 1e-3
    assert x_hat.grad is not None and torch.isfinite(x_hat.grad).all() and x_hat.grad.abs().sum() > 0
    _assert_frozen_untouched(ea_dists)
    # the edge term is a different quantity from plain DISTS and is what separates EA-DISTS from DISTS
    assert torch.allclose(loss, terms["dists"] + terms["edge_dists"])
    assert not torch.isclose(terms["dists"], terms["edge_dists"], rtol=1e-3)


def test_sobel_edges_values():
    flat = torch.full((1, 3, 16, 16), 0.3)
    e = sobel_edges(flat)
    assert e.shape == (1, 1, 16, 16)
    assert torch.allclose(e[..., 1:-1, 1:-1], torch.full((14, 14), 1e-3), atol=1e-6)  # sqrt(0 + 1e-6)
    assert torch.allclose(sobel_edges(flat + 0.5)[..., 1:-1, 1:-1], e[..., 1:-1, 1:-1])  # a brightness shift: same edges
    step = torch.zeros(1, 3, 16, 16)
    step[..., 8:] = 1.0  # vertical step: |gx| = 1 + 2 + 1 on both columns next to it
    e = sobel_edges(step)[0, 0, 4]
    assert torch.allclose(e[7:9], torch.full((2,), math.sqrt(16 + 1e-6)))
    assert torch.allclose(e[2:6], torch.full((4,), 1e-3), atol=1e-6)


def test_frozen_networks_stay_in_eval(ea_dists: PerceptualLoss, lpips_loss: PerceptualLoss):
    for loss in (ea_dists, lpips_loss):
        loss.train()
        assert not any(m.training for m in loss.net.modules())
    x, y = _images(2, b=1), _images(3, b=1)
    with torch.no_grad():
        a, _ = lpips_loss(x, y)
        b, _ = lpips_loss(x, y)
    assert torch.equal(a, b)  # no dropout in the LPIPS heads during training


def test_lpips_zero_positive_differentiable(lpips_loss: PerceptualLoss):
    x, y = _images(0), _images(1)
    with torch.no_grad():
        same, terms = lpips_loss(x, x)
    assert same.item() == pytest.approx(0.0, abs=1e-6) and set(terms) == {lpips_loss.kind}
    x_hat = y.clone().requires_grad_(True)
    loss, _ = lpips_loss(x_hat, x)
    loss.backward()
    assert loss.item() > 1e-3 and torch.isfinite(x_hat.grad).all() and x_hat.grad.abs().sum() > 0
    _assert_frozen_untouched(lpips_loss)


def test_perceptual_bad_input(ea_dists: PerceptualLoss):
    x = _images(0)
    with pytest.raises(ValueError, match="kind"):
        PerceptualLoss("ssim", random_init=True)
    with pytest.raises(ValueError, match="same shape"):
        ea_dists(x, x[:1])
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        ea_dists(x[:, :1], x[:, :1])
    with pytest.raises(ValueError, match="at least 32x32"):
        ea_dists(x[..., :16, :16], x[..., :16, :16])


def _torchvision_features_checkpoint(arch: str, path, seed: int) -> dict[str, torch.Tensor]:
    import torchvision

    torch.manual_seed(seed)
    net = torchvision.models.vgg16() if arch == "vgg16" else torchvision.models.alexnet()
    state = {k: v for k, v in net.state_dict().items() if k.startswith(("features.", "classifier.6"))}
    torch.save(state, path)  # the real torchvision key layout (the big classifier layers left out to save time)
    return state


@pytest.fixture(scope="module")
def vgg_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pth"
    return path, _torchvision_features_checkpoint("vgg16", path, seed=1)


def test_dists_loads_registry_layout_weights(tmp_path, weights_home, vgg_checkpoint):
    vgg_path, vgg_state = vgg_checkpoint
    alpha, beta = torch.rand(1, 1475, 1, 1), torch.rand(1, 1475, 1, 1)
    torch.save({"alpha": alpha, "beta": beta}, tmp_path / "dists.pth")
    loss = PerceptualLoss("dists", weights=vgg_path, dists_weights=tmp_path / "dists.pth")
    own = loss.net.features.state_dict()
    assert set(own) == {k.removeprefix("features.") for k in vgg_state if k.startswith("features.")}
    assert all(torch.equal(own[k.removeprefix("features.")], v) for k, v in vgg_state.items() if k.startswith("features."))
    assert torch.equal(loss.net.alpha, alpha) and torch.equal(loss.net.beta, beta)
    # the same files found through $HONESTFACE_HOME (registry relative paths)
    (weights_home / "torchvision").mkdir()
    (weights_home / "torchvision" / "vgg16-397923af.pth").symlink_to(vgg_path)
    (weights_home / "pyiqa").mkdir()
    (tmp_path / "dists.pth").rename(weights_home / "pyiqa" / "DISTS_weights-f5e65c96.pth")
    net = DISTS()
    assert torch.equal(net.features[0].weight, vgg_state["features.0.weight"])


def test_lpips_alex_loads_registry_layout_weights(tmp_path, vgg_checkpoint):
    state = _torchvision_features_checkpoint("alexnet", tmp_path / "alexnet.pth", seed=2)
    loss = PerceptualLoss("lpips_alex", weights=tmp_path / "alexnet.pth")
    conv1 = loss.net.lpips.net.slice1[0].weight
    assert torch.equal(conv1, state["features.0.weight"])
    assert torch.equal(loss.net.lpips.net.state_dict()["slice5.10.bias"], state["features.10.bias"])
    # a VGG file given for AlexNet: one clear line naming the file
    with pytest.raises(ValueError, match="vgg16.pth.*(missing|wrong shape)"):
        PerceptualLoss("lpips_alex", weights=vgg_checkpoint[0])


@pytest.mark.parametrize(
    "kind, key", [("ea_dists", "weights.vgg16_imagenet"), ("lpips_vgg", "weights.vgg16_imagenet"),
                  ("lpips_alex", "weights.alexnet_imagenet")]
)
def test_missing_weights_name_the_config_key(weights_home, kind, key):
    with pytest.raises(MissingWeightError, match=key.replace(".", r"\.")):
        PerceptualLoss(kind)


def test_missing_dists_alpha_beta(tmp_path, weights_home, vgg_checkpoint):
    with pytest.raises(MissingWeightError, match=r"weights\.dists_pyiqa"):
        PerceptualLoss("dists", weights=vgg_checkpoint[0])
    torch.save({"alpha": torch.rand(1, 10, 1, 1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="alpha"):
        PerceptualLoss("dists", weights=vgg_checkpoint[0], dists_weights=tmp_path / "bad.pth")


# -------------------------------------------------------------------------------------------------- identity


@pytest.fixture(scope="module")
def id_loss() -> IdentityLoss:
    from honestface.models import IdentityBackbone

    torch.manual_seed(0)
    return IdentityLoss(IdentityBackbone.tiny(id_dim=16))


def test_identity_zero_positive_and_frozen(id_loss: IdentityLoss):
    x, y = _images(0), _images(1)
    same, terms = id_loss(x, x)
    assert same.item() == pytest.approx(0.0, abs=1e-5) and terms["id_cos"].item() == pytest.approx(1.0, abs=1e-5)
    x_hat = y.clone().requires_grad_(True)
    loss, _ = id_loss(x_hat, x)
    loss.backward()
    assert 0 < loss.item() <= 2 and torch.isfinite(x_hat.grad).all() and x_hat.grad.abs().sum() > 0
    _assert_frozen_untouched(id_loss)
    id_loss.train()
    assert not id_loss.backbone.net.training


def test_identity_target_embeddings_and_points5(id_loss: IdentityLoss):
    from honestface.face.alignment import template

    x, y = _images(4), _images(5)
    loss_img, _ = id_loss(y, x)
    with torch.no_grad():
        target = id_loss.embed(x) * 3.0  # any scale: normalised inside
    loss_emb, _ = id_loss(y, target_embeddings=target)
    assert torch.allclose(loss_img, loss_emb, atol=1e-6)
    # per-sample points at the FFHQ template positions give the same crop as the fixed FFHQ -> ArcFace warp
    p5 = torch.as_tensor(template("ffhq", S), dtype=torch.float32).expand(2, 5, 2)
    loss_p5, _ = id_loss(y, x, points5=p5)
    assert torch.allclose(loss_p5, loss_img, atol=1e-5)
    moved = p5 + torch.tensor([6.0, -4.0])
    assert not torch.allclose(id_loss(y, x, points5=moved)[0], loss_img, atol=1e-4)
    with pytest.raises(ValueError, match="target_embeddings"):
        id_loss(y, target_embeddings=torch.zeros(2, 7))
    with pytest.raises(ValueError, match="points5"):
        id_loss(y, x, points5=p5[:, :4])
    with pytest.raises(ValueError, match="target"):
        id_loss(y)


def test_identity_decreases_under_optimisation(id_loss: IdentityLoss):
    target = _images(6)
    x_hat = _images(7).clone().requires_grad_(True)
    opt = torch.optim.Adam([x_hat], lr=0.05)
    history = []
    for _ in range(4):
        loss, _ = id_loss(x_hat, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    final = id_loss(x_hat.detach(), target)[0].item()
    assert history[0] > 0.05 and final < 0.5 * history[0]
    _assert_frozen_untouched(id_loss)


def test_identity_wraps_bare_iresnet_and_missing_weights(weights_home):
    from honestface.face.iresnet import IResNet
    from honestface.models import IdentityBackbone

    loss = IdentityLoss(IResNet(layers=(1, 1, 1, 1), widths=(8, 8, 8, 8), num_features=8))
    assert isinstance(loss.backbone, IdentityBackbone) and loss.id_dim == 8
    with pytest.raises(ValueError, match="num_features"):
        IdentityLoss(nn.Conv2d(3, 3, 1))
    with pytest.raises(MissingWeightError, match=r"weights\.arcface_torch_r50"):
        IdentityLoss.from_weights("arcface_torch_r50")


# ----------------------------------------------------------------------------------------------- adversarial


def test_adversarial_softplus_values():
    adv = AdversarialLoss("softplus")
    zeros = torch.zeros(4)
    g, logs = adv.generator_loss(zeros)
    assert g.item() == pytest.approx(math.log(2)) and logs["logits_fake"].item() == 0.0
    d, logs = adv.discriminator_loss(zeros, zeros)
    assert d.item() == pytest.approx(2 * math.log(2))
    # a confident, correct D: real >> 0, fake << 0 -> D loss ~ 0, G loss large; the reverse for a fooled D
    real, fake = torch.full((4, 1), 20.0), torch.full((4, 1), -20.0)
    assert adv.discriminator_loss(real, fake)[0].item() < 1e-6
    assert adv.generator_loss(fake)[0].item() == pytest.approx(20.0, abs=1e-6)
    assert adv.generator_loss(-fake)[0].item() < 1e-6
    d, logs = adv.discriminator_loss(torch.tensor([1.0, 3.0]), torch.tensor([-2.0, 0.0]))
    assert logs["logits_real"].item() == 2.0 and logs["logits_fake"].item() == -1.0
    expected = (math.log1p(math.exp(-1)) + math.log1p(math.exp(-3))) / 2 + (math.log1p(math.exp(-2)) + math.log(2)) / 2
    assert d.item() == pytest.approx(expected, rel=1e-6)
    fake = torch.tensor([0.5, -1.0], requires_grad=True)
    adv(fake)[0].backward()
    assert (fake.grad < 0).all()  # the generator pushes D(fake) up


def test_adversarial_hinge_values():
    adv = AdversarialLoss("hinge")
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-3.0, 0.0, 0.5])
    d, logs = adv.discriminator_loss(real, fake)
    assert d.item() == pytest.approx((0 + 0.5 + 2.0) / 3 + (0 + 1.0 + 1.5) / 3, abs=1e-6)
    assert logs["d_loss_real"].item() == pytest.approx(2.5 / 3) and logs["d_loss_fake"].item() == pytest.approx(2.5 / 3)
    g, _ = adv.generator_loss(fake)
    assert g.item() == pytest.approx(-(-3.0 + 0.0 + 0.5) / 3, abs=1e-6)
    with pytest.raises(ValueError, match="kind"):
        AdversarialLoss("wgan")


def test_r1_penalty():
    adv = AdversarialLoss(r1_weight=2.0)
    x = torch.randn(3, 4, 8, 8, requires_grad=True)
    const = torch.zeros(3, 1) + 0.0 * x.sum()  # depends on x only with zero weight -> zero gradient
    r1, logs = adv.r1_penalty(const, x)
    assert r1.item() == 0.0 and logs["r1_grad_norm2"].item() == 0.0
    assert adv.r1_penalty(torch.ones(3, 1), x)[0].item() == 0.0  # a D with no graph to its input at all
    # D(x) = sum(w * x): gradient w per sample, R1 = gamma / 2 * ||w||^2, and it is differentiable w.r.t. w
    w = torch.randn(4, 8, 8, requires_grad=True)
    logits = (x * w).flatten(1).sum(1)
    r1, logs = adv.r1_penalty(logits, x)
    assert r1.item() == pytest.approx(w.detach().pow(2).sum().item(), rel=1e-5)
    r1.backward()
    assert torch.allclose(w.grad, 2 * w.detach(), rtol=1e-5)  # create_graph=True: the penalty trains D
    # several inputs, an explicit weight, and weight 0 skipping the gradient
    c = torch.randn(3, 5, requires_grad=True)
    logits = (x * w.detach()).flatten(1).sum(1) + c.sum(1)
    r1, _ = adv.r1_penalty(logits, [x, c], weight=1.0)
    assert r1.item() == pytest.approx(0.5 * (w.detach().pow(2).sum().item() + 5), rel=1e-5)
    assert AdversarialLoss().r1_penalty(logits, x)[0].item() == 0.0
    with pytest.raises(ValueError, match="requires_grad"):
        adv.r1_penalty(logits, torch.randn(3, 4, 8, 8))


# ---------------------------------------------------------------------------------------- identity, real (dlib)


@pytest.fixture(scope="module")
def real_faces() -> dict[str, torch.Tensor]:
    """FFHQ-aligned 128 px crops of three real faces: the astronaut, her mirror image, Grace Hopper; (1, 3, S, S)."""
    from honestface.data.samples import astronaut, grace_hopper
    from honestface.face import build_detector, extract_faces

    detector = build_detector("dlib")

    def crop(image) -> torch.Tensor:
        face = extract_faces(image, detector, size=128, rule="largest")[0].crop  # (128, 128, 3) uint8
        return torch.from_numpy(face.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1

    a = crop(astronaut())
    return {"astronaut": a, "astronaut_flipped": a.flip(-1), "hopper": crop(grace_hopper())}


def test_dlib_identity_loss_is_real(real_faces):
    """The bundled pretrained dlib ResNet as L_ID: the same person is closer than another person, and optimising
    a face toward a target's identity lowers the loss while the network stays frozen."""
    loss = IdentityLoss.build("dlib")
    assert loss.id_dim == 128 and loss.backbone.crop_size == 150
    assert not any(p.requires_grad for p in loss.parameters())
    same, _ = loss(real_faces["astronaut_flipped"], real_faces["astronaut"])
    other, _ = loss(real_faces["hopper"], real_faces["astronaut"])
    assert same.item() < 0.5 * other.item()
    x_hat = real_faces["hopper"].clone().requires_grad_(True)
    opt = torch.optim.Adam([x_hat], lr=0.01)
    for _ in range(5):
        value, _ = loss(x_hat, real_faces["astronaut"])
        opt.zero_grad()
        value.backward()
        opt.step()
    assert loss(x_hat.detach(), real_faces["astronaut"])[0].item() < 0.7 * other.item()
    with pytest.raises(ValueError, match="unknown identity network 'vgg'"):
        IdentityLoss.build("vgg")
