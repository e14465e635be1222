"""Multi-process training probe, launched by tests/test_training_ddp.py (not a test module itself).

    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no \
        --dynamo_backend no tests/ddp_probe.py --config configs/tiny/honestface.yaml key=value ...

Runs the real `Trainer` on the task named by `train.stage`, with the task's `prepare_batch` wrapped to record the
dataset indices each step sees on this process. Every process then writes `<train.output_dir>/probe_rank<k>.json`:
the distributed set-up it ran under, the indices per step, and a checksum (float64 sum of squares and sha256 of
the raw bytes) of every trainable parameter of the unwrapped module, before and after training. With
`--resume-check K` it instead compares a straight run with one stopped by Ctrl-C on rank 0 in step K and resumed
(see `resume_check`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # works without `pip install -e .`


def parameter_checksums(module: Any) -> dict[str, dict[str, Any]]:
    """name -> {"sumsq": float64 sum of squares, "sha256": hash of the tensor's bytes} of the trainable params."""
    import torch

    out = {}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        t = p.detach().to("cpu", copy=True).contiguous()
        out[name] = {"sumsq": float(t.double().square().sum()),
                     "sha256": hashlib.sha256(t.view(torch.uint8).numpy().tobytes()).hexdigest()}
    return out


def main(argv: list[str] | None = None) -> int:
    import torch

    from honestface.config import load_config
    from honestface.training.tasks import build_task
    from honestface.training.trainer import Trainer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--resume-check", type=int, default=0, metavar="K",
                        help="instead: straight run vs. run stopped by a SIGINT to rank 0 in step K, then resumed")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    if args.resume_check:
        return resume_check(args.config, args.overrides, args.resume_check)
    cfg = load_config(args.config, args.overrides)
    task = build_task(cfg.train.stage, cfg)

    seen: list[dict[str, Any]] = []
    prepare = task.prepare_batch

    def recording_prepare_batch(batch: dict[str, Any], step: int) -> dict[str, Any]:
        index = batch["index"]
        seen.append({"step": int(step), "indices": [int(i) for i in (index.tolist() if torch.is_tensor(index)
                                                                      else index)]})
        return prepare(batch, step)

    task.prepare_batch = recording_prepare_batch  # instance attribute: the trainer calls task.prepare_batch(...)

    trainer = Trainer(cfg, task)
    acc = trainer.accelerator
    names = {id(p): n for n, p in acc.unwrap_model(trainer.module).named_parameters()}
    groups = {g: sorted(names[id(p)] for p in params) for g, params in task.param_groups().items()}
    backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else None
    report: dict[str, Any] = {
        "process_index": acc.process_index, "num_processes": acc.num_processes,
        "distributed_type": str(acc.distributed_type), "backend": backend,
        "wrapper": type(trainer.module).__name__, "device": str(acc.device),
        "groups": groups, "initial": parameter_checksums(acc.unwrap_model(trainer.module)),
    }
    code = trainer.train()
    report.update(return_code=code, steps=trainer.step, seen=seen,
                  final=parameter_checksums(acc.unwrap_model(trainer.module)))
    out = Path(cfg.train.output_dir) / f"probe_rank{report['process_index']}.json"
    out.write_text(json.dumps(report, indent=1))
    return code


def resume_check(config: str, overrides: list[str], stop_in: int) -> int:
    """Three runs in this launch: straight to `train.max_steps` in <output_dir>/straight; the same in
    <output_dir>/resumed with a SIGINT sent to rank 0 alone inside step `stop_in` (every rank must stop after that
    step and save); then `resume=latest` there to the end. Writes <output_dir>/resume_rank<k>.json."""
    import os
    import signal

    from honestface.config import load_config
    from honestface.training.tasks import build_task
    from honestface.training.trainer import Trainer

    out = Path(load_config(config, overrides).train.output_dir)

    def trainer(name: str, *extra: str) -> Trainer:
        cfg = load_config(config, [*overrides, f"train.output_dir={out / name}", *extra])
        t = Trainer(cfg, build_task(cfg.train.stage, cfg))
        # end_training would destroy the process group, which the next run of this launch still needs (a fresh
        # init of a destroyed group hangs now and then); it goes when the process exits
        t.accelerator.state.destroy_process_group = lambda group=None: None
        return t

    straight = trainer("straight")
    report: dict[str, Any] = {"straight_code": straight.train()}
    report["straight"] = parameter_checksums(straight.accelerator.unwrap_model(straight.module))
    first = trainer("resumed")
    rank = first.accelerator.process_index
    prepare = first.task.prepare_batch

    def interrupting_prepare_batch(batch: dict[str, Any], step: int) -> dict[str, Any]:
        if rank == 0 and step == stop_in - 1:
            os.kill(os.getpid(), signal.SIGINT)
        return prepare(batch, step)

    first.task.prepare_batch = interrupting_prepare_batch
    report.update(interrupted_code=first.train(), interrupted_step=first.step)
    resumed = trainer("resumed", "train.resume=latest")
    report["resumed_from"] = resumed.step
    report["resumed_code"] = resumed.train()
    report["resumed"] = parameter_checksums(resumed.accelerator.unwrap_model(resumed.module))
    (out / f"resume_rank{rank}.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
