"""The example `accelerate launch --config_file` files in configs/accelerate/: each parses as an accelerate cluster
config, names on line 1 the command that launches it (with a run config that validates), has consistent fields,
and makes `accelerate launch` pick the launcher it promises (one process, or the multi-process one)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import ComputeEnvironment, DistributedType

from honestface.config import load_config

REPO = Path(__file__).resolve().parents[1]
FOLDER = REPO / "configs" / "accelerate"
FILES = sorted(FOLDER.glob("*.yaml"))
COMMAND = re.compile(r"^# (ACCELERATE_USE_CPU=1 )?accelerate launch --config_file (\S+) scripts/train\.py "
                     r"--config (configs/\S+\.yaml)$")
MULTI_PROCESS = {DistributedType.MULTI_GPU, DistributedType.FSDP, DistributedType.DEEPSPEED}


def command_of(path: Path) -> re.Match:
    first = path.read_text().splitlines()[0]
    match = COMMAND.match(first)
    assert match, f"line 1 of {path.name} is not the launch command: {first!r}"
    return match


def launcher_args(path: Path):
    """What `accelerate launch --config_file <path> scripts/train.py ...` resolves the file to."""
    args = launch_command_parser().parse_args(["--config_file", str(path), "scripts/train.py", "--config", "x.yaml"])
    return _validate_launch_command(args)[0]


def test_the_examples_exist():
    # FSDP / DeepSpeed files are not shipped: the trainer's two-optimiser tasks do not support them yet.
    assert {p.name for p in FILES} >= {"single_gpu.yaml", "multi_gpu.yaml", "multi_node.yaml", "cpu_ddp.yaml"}


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_line_one_is_a_working_command(path: Path):
    match = command_of(path)
    assert match.group(2) == f"configs/accelerate/{path.name}"
    run_config = load_config(REPO / match.group(3))  # the named run config exists and validates
    # honestface's trainer hands train.mixed_precision to accelerate, which wins over the file: keep them equal
    assert load_config_from_file(str(path)).mixed_precision == run_config.train.mixed_precision


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_fields_are_consistent(path: Path):
    cfg = load_config_from_file(str(path))
    assert isinstance(cfg, ClusterConfig) and cfg.compute_environment == ComputeEnvironment.LOCAL_MACHINE
    assert cfg.num_machines >= 1 and 0 <= cfg.machine_rank < cfg.num_machines
    assert cfg.num_processes >= cfg.num_machines and cfg.num_processes % cfg.num_machines == 0
    if cfg.distributed_type == DistributedType.NO:
        assert cfg.num_processes == 1 and cfg.num_machines == 1
    else:
        assert cfg.distributed_type in MULTI_PROCESS and cfg.num_processes >= 2
    if cfg.num_machines > 1:
        assert cfg.main_process_ip and isinstance(cfg.main_process_port, int)
        assert "machine_rank" in path.read_text().split("compute_environment")[0], "document machine_rank"
    if cfg.distributed_type == DistributedType.FSDP:
        assert cfg.fsdp_config.get("fsdp_version") in (1, 2)
    if cfg.distributed_type == DistributedType.DEEPSPEED:
        stage = cfg.deepspeed_config.get("zero_stage")
        assert stage in (0, 1, 2, 3) and f"zero{stage}" in path.name
    assert not cfg.use_cpu, "use_cpu in a file does not start CPU processes; ACCELERATE_USE_CPU=1 does (cpu_ddp.yaml)"


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_launcher_resolution(path: Path):
    cfg = load_config_from_file(str(path))
    args = launcher_args(path)
    assert args.num_processes == cfg.num_processes and args.num_machines == cfg.num_machines
    multi = args.multi_gpu or args.use_fsdp or args.use_deepspeed
    assert multi == (cfg.num_processes > 1), "a multi-process file must reach the multi-process launcher"
    known = vars(launch_command_parser().parse_args(["scripts/train.py"]))
    nested = {**cfg.fsdp_config, **cfg.deepspeed_config}
    unknown = sorted(k for k in nested if k not in known)  # accelerate would ignore a misspelt key silently
    assert not unknown, f"{path.name}: not `accelerate launch` options: {unknown}"


def test_cpu_ddp_starts_two_real_processes():
    """The only file-based CPU launch that gives 2 DDP processes: the multi-process launcher + ACCELERATE_USE_CPU=1
    (tests/test_training_ddp.py runs it)."""
    path = FOLDER / "cpu_ddp.yaml"
    assert command_of(path).group(1) == "ACCELERATE_USE_CPU=1 "
    cfg = load_config_from_file(str(path))
    assert cfg.distributed_type == DistributedType.MULTI_GPU and cfg.num_processes == 2
    args = launcher_args(path)
    assert args.multi_gpu and not args.cpu
