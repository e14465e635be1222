"""Shared test setup.

pyiqa's wheel installs a top-level `tests` package into site-packages. Our tests are collected with
`--import-mode=importlib` (pyproject) and `tests/` has no __init__.py, so nothing here is ever imported as
`tests.*`; the check below fails loudly if that guard is ever undone.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist runs one worker per core (scripts/test.sh): each worker and the processes it starts keep to one
    # thread, so the workers never oversubscribe the cores (OpenMP oversubscription costs 3-20x, measured).
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    if (REPO_ROOT / "tests" / "__init__.py").exists():
        raise pytest.UsageError("tests/__init__.py would let pyiqa's site-packages `tests` shadow ours; remove it")
    if "importlib" not in str(config.getoption("importmode")):
        raise pytest.UsageError("run pytest with --import-mode=importlib (set in pyproject.toml)")


@pytest.fixture(scope="session", autouse=True)
def hermetic_weights_home(tmp_path_factory: pytest.TempPathFactory):
    """Every test runs with $HONESTFACE_HOME set to an empty session folder (subprocesses inherit it), so no result
    depends on the weights in the user's real cache and nothing a test converts or downloads lands there. A test
    that fills the folder asks for `weights_home` (its own empty one) instead."""
    home = tmp_path_factory.mktemp("honestface_home_session")
    before = os.environ.get("HONESTFACE_HOME")
    os.environ["HONESTFACE_HOME"] = str(home)
    yield home
    if before is None:
        os.environ.pop("HONESTFACE_HOME", None)
    else:
        os.environ["HONESTFACE_HOME"] = before


@pytest.fixture
def weights_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty $HONESTFACE_HOME of this test alone (to put weight files in)."""
    home = tmp_path / "honestface_home"
    home.mkdir()
    monkeypatch.setenv("HONESTFACE_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def sample_identities(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Identity folders (8 people x 3 images, 64 px, landmark sidecars) made from the bundled photos."""
    from honestface.data.sample_dataset import build_sample_identities

    root = tmp_path_factory.mktemp("identities")
    build_sample_identities(root, size=64, views=3)
    return root


@pytest.fixture(scope="session")
def tiny_honestface_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny HonestFace folder (no discriminator; random weights seeded 0, the global RNG left as it was).
    Shared by every module that loads a model folder: tests read it, never write into it."""
    from honestface.models import HonestFace

    out = tmp_path_factory.mktemp("tiny_honestface")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        HonestFace.from_preset("tiny", with_discriminator=False).save_pretrained(out)
    return out


def _randomize_lora(model: torch.nn.Module, seed: int = 1, scale: float = 0.01) -> None:
    """Set the LoRA B matrices (zero at initialisation, so a fresh adapter changes nothing) of a OneStepGenerator,
    or of a HonestFace's generator, to seeded N(0, scale^2) values, so tests see the adapter act."""
    generator = getattr(model, "generator", model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in generator.lora_named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale)


@pytest.fixture(scope="session")
def randomize_lora():
    """`randomize_lora(model, seed=1, scale=0.01)`: see `_randomize_lora`."""
    return _randomize_lora


@pytest.fixture(scope="session")
def mtcnn_detector():
    """facenet-pytorch MTCNN at the library's default settings (bundled weights, offline)."""
    from honestface.face.detection import build_detector

    return build_detector("mtcnn")


@pytest.fixture(scope="session")
def dlib_detector():
    """dlib's HOG detector at the library's default settings (bundled with dlib)."""
    from honestface.face.detection import build_detector

    return build_detector("dlib")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads; on a shared 2-core CPU OpenMP oversubscription costs 3-20x
    (measured). Modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tiny_clip_archive(path: Path) -> None:
    """A small OpenAI-CLIP-layout model (ModifiedResNet 1-1-1-1, width 8; text width 64, 1 layer) with random
    weights, traced and saved as a TorchScript archive like OpenAI's RN50.pt."""
    from pyiqa.archs import clip_model

    torch.manual_seed(3)
    clip = clip_model.CLIP(64, 224, (1, 1, 1, 1), 8, None, 77, 49408, 64, 1, 1).eval()
    text = torch.zeros(2, 77, dtype=torch.long)
    text[:, 0], text[:, 1] = 49406, 49407
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace is deprecated
        torch.jit.trace(clip, (torch.rand(1, 3, 224, 224), text), check_trace=False).save(str(path))


@pytest.fixture(scope="session")
def iqa_weights(tmp_path_factory) -> dict[str, str]:
    """Random weight files in the registry formats of the IQA networks (LPIPS/DISTS backbones, DISTS, MUSIQ, MANIQA,
    NIQE parameters, FID Inception, CLIP RN50): {registry key: path}. Shared by the pyiqa and protocol tests."""
    import scipy.io
    import timm
    import torchvision

    from honestface.metrics.iqa_networks import patched

    d = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    files = {"vgg16_imagenet": d / "vgg16.pth", "alexnet_imagenet": d / "alexnet.pth", "dists_pyiqa": d / "dists.pth",
             "musiq_koniq": d / "musiq.pth", "maniqa_koniq": d / "maniqa.pt", "niqe_params": d / "niqe.mat",
             "fid_inception": d / "inception.pth", "clip_rn50_openai": d / "RN50.pt"}
    torch.save(torchvision.models.vgg16().state_dict(), files["vgg16_imagenet"])
    torch.save(torchvision.models.alexnet().state_dict(), files["alexnet_imagenet"])
    n = 1475
    torch.save({"alpha": torch.rand(1, n, 1, 1) * 0.1, "beta": torch.rand(1, n, 1, 1) * 0.1}, files["dists_pyiqa"])
    from pyiqa.archs.inception import FIDInceptionA  # noqa: F401  (pyiqa's archs registered)
    from pyiqa.archs.maniqa_arch import MANIQA
    from pyiqa.archs.musiq_arch import MUSIQ

    torch.save(MUSIQ(pretrained=False).state_dict(), files["musiq_koniq"])
    create = timm.create_model
    with patched(timm, "create_model", lambda *a, **k: create(*a, **{**k, "pretrained": False})):
        torch.save(MANIQA(pretrained=False, scale=0.8).state_dict(), files["maniqa_koniq"])
    rng = np.random.default_rng(0)
    a = rng.normal(size=(36, 200))
    scipy.io.savemat(files["niqe_params"], {"mu_prisparam": rng.normal(1, 0.5, size=(1, 36)),
                                            "cov_prisparam": a @ a.T / 200})
    from honestface.metrics.fid import fid_inception_architecture

    net = fid_inception_architecture()
    for m in net.modules():  # He init keeps the pool3 features O(1) through the 94 random layers
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    torch.save(net.state_dict(), files["fid_inception"])
    _tiny_clip_archive(files["clip_rn50_openai"])
    return {k: str(v) for k, v in files.items()}
