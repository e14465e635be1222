"""Multi-process training: real DDP with 2 CPU processes (gloo) through `accelerate launch`.

`ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 ...` is the launch that gives real CPU DDP
(`accelerate launch --cpu --num_processes 2` silently runs one process; configs/accelerate/cpu_ddp.yaml says
why). The probe (tests/ddp_probe.py) runs the real Trainer on the tiny HonestFace config and records, per rank,
the dataset indices of every step and checksums of the trainable weights: the ranks must have seen different data
and ended with identical weights (gradients were averaged), and the exported model must be those weights. A second
test (marked slow) runs the real CLI, scripts/train.py, under configs/accelerate/cpu_ddp.yaml.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch"]
CPU_DDP_FLAGS = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
                 "--dynamo_backend", "no"]
TINY = "configs/tiny/honestface.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([*LAUNCH, "--main_process_port", str(free_port()), *args], check=False, cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def overrides(data: Path, out: Path, steps: int) -> list[str]:
    return [f"data.train_dir={data}", f"train.output_dir={out}", f"train.max_steps={steps}", "data.batch_size=2",
            "loss.networks=random", "data.num_workers=0", "train.report_to=none", "train.disc_start_step=0"]


def check_ok(run: subprocess.CompletedProcess) -> None:
    assert run.returncode == 0, f"exit code {run.returncode}\n{run.stdout[-3000:]}\n{run.stderr[-6000:]}"


def test_cpu_ddp_ranks_see_different_data_and_end_identical(sample_identities: Path, tmp_path: Path):
    from honestface.models import HonestFace

    out = tmp_path / "run"
    run = launch([*CPU_DDP_FLAGS, "tests/ddp_probe.py", "--config", TINY, *overrides(sample_identities, out, 3)])
    check_ok(run)
    ranks = [json.loads((out / f"probe_rank{k}.json").read_text()) for k in (0, 1)]
    for k, r in enumerate(ranks):
        assert r["process_index"] == k and r["num_processes"] == 2
        assert r["distributed_type"] == "DistributedType.MULTI_CPU" and r["backend"] == "gloo"
        assert r["wrapper"] == "DistributedDataParallel"
        assert r["return_code"] == 0 and r["steps"] == 3
        assert [s["step"] for s in r["seen"]] == [0, 1, 2]
        assert all(len(s["indices"]) == 2 for s in r["seen"])
    for a, b in zip(ranks[0]["seen"], ranks[1]["seen"]):  # each step: disjoint samples on the two ranks
        assert not set(a["indices"]) & set(b["indices"]), (a, b)

    first, second = ranks
    assert first["groups"] == second["groups"] and set(first["groups"]) == {"generator", "discriminator"}
    assert first["initial"] == second["initial"]
    assert first["final"] == second["final"]  # identical weights after 3 steps on different data
    for group, names in first["groups"].items():  # and they did train: both optimisers moved their weights
        moved = [n for n in names if first["initial"][n]["sha256"] != first["final"][n]["sha256"]]
        assert moved, f"no {group} parameter changed"

    model = HonestFace.from_pretrained(out / "final")  # the export is exactly the trained weights
    params = dict(model.named_parameters())
    for name, check in first["final"].items():
        t = params[name.removeprefix("model.")].detach().cpu().contiguous()
        assert hashlib.sha256(t.view(torch.uint8).numpy().tobytes()).hexdigest() == check["sha256"], name
    assert json.loads((out / "final" / "training.json").read_text())["step"] == 3


@pytest.mark.slow  # ~30 s; the launcher resolution of cpu_ddp.yaml is checked fast in test_accelerate_configs.py
def test_train_cli_under_cpu_ddp_config(sample_identities: Path, tmp_path: Path):
    out = tmp_path / "cli"
    run = launch(["--config_file", "configs/accelerate/cpu_ddp.yaml", "scripts/train.py", "--config", TINY,
                  *overrides(sample_identities, out, 2)])
    check_ok(run)
    assert (out / "final" / "honestface_config.json").is_file()
    checkpoint = out / "checkpoints" / "step_2"
    assert json.loads((checkpoint / "trainer_state.json").read_text())["num_processes"] == 2
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= {p.name for p in checkpoint.iterdir()}


def test_cpu_ddp_ctrl_c_on_one_rank_then_resume_equals_a_straight_run(sample_identities: Path, tmp_path: Path):
    """2 processes, cosine schedule with warm-up: a SIGINT to rank 0 alone inside step 3 stops both ranks after
    that step with one checkpoint (no hang); `resume=latest` then ends with the straight run's exact weights."""
    out = tmp_path / "run"
    args = [f"data.train_dir={sample_identities}", f"train.output_dir={out}", "data.batch_size=2",
            "train.report_to=none", "train.num_val_images=0", "train.save_every=1000", "train.max_steps=5",
            "optim.scheduler=cosine", "optim.warmup_steps=2", "train.stage_params.scaling_batches=1"]
    check_ok(launch([*CPU_DDP_FLAGS, "tests/ddp_probe.py", "--config", "configs/tiny/vae.yaml", "--resume-check", "3",
                     *args]))
    ranks = [json.loads((out / f"resume_rank{k}.json").read_text()) for k in (0, 1)]
    for r in ranks:
        assert (r["straight_code"], r["interrupted_code"], r["interrupted_step"]) == (0, 130, 3)
        assert (r["resumed_from"], r["resumed_code"]) == (3, 0)
        assert r["resumed"] == r["straight"]
    assert ranks[0]["resumed"] == ranks[1]["resumed"]
    assert sorted(p.name for p in (out / "resumed" / "checkpoints").iterdir()) == ["step_3", "step_5"]
