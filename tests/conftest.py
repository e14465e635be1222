"""Shared test setup.

pyiqa's wheel installs a top-level `tests` package into site-packages. Our tests are collected with
`--import-mode=importlib` (pyproject) and `tests/` has no __init__.py, so nothing here is ever imported as
`tests.*`; the check below fails loudly if that guard is ever undone.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    if (REPO_ROOT / "tests" / "__init__.py").exists():
        raise pytest.UsageError("tests/__init__.py would let pyiqa's site-packages `tests` shadow ours; remove it")
    if "importlib" not in str(config.getoption("importmode")):
        raise pytest.UsageError("run pytest with --import-mode=importlib (set in pyproject.toml)")


@pytest.fixture
def weights_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty $HONESTFACE_HOME, so no test ever sees weights from the user's real cache."""
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


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads; on a shared 2-core CPU OpenMP oversubscription costs 3-20x
    (measured). Modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
