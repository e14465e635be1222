"""Seconds per HonestFace training step (generator + discriminator phases) and peak memory, as JSON.

    python benchmarks/train_step.py [--steps 5] [--warmup 2] [--device auto|cpu|cuda] [--sd21] [--min-free-gb 20]

- "tiny": the tiny preset (configs/tiny/honestface.yaml: 64 px, batch 2, K=2 references) on faces made from the
  bundled photos (`build_sample_identities`, 64 px) in a temporary folder; `--warmup` steps, then `--steps` timed
  steps, median reported.
- "sd21" (opt in with --sd21): the paper-scale architecture (configs/honestface_sd21.yaml: SD 2.1 UNet with LoRA
  rank 16, SD VAE, OSDFace-size VRE, CLIP ViT-H/14, iResNet-50, latent discriminator) with RANDOM weights
  (`HonestFace.from_preset("sd21", pretrained=False)`, untrained loss networks), 512 px, batch 1, K=1; on CPU one
  timed step and no warm-up (about 5 minutes on 2 cores and a 19.3 GB peak RSS, measured); skipped when less than
  --min-free-gb (default 20) of memory is available.

A step is the real trainer's step (`Trainer._train_step`: degradation on the device, generator phase, discriminator
phase, backward, optimiser steps; without logging and checkpoints); loading the batch is timed apart ("data_s").
Peak memory: on CUDA `torch.cuda.max_memory_allocated` during the timed steps; on CPU the peak resident set size
during the timed steps (Linux VmHWM, reset before them) and over the whole process ("process_peak_rss_gb").
Each preset runs in its own child process, so the peaks are its own and a run that runs out of memory is reported
as an error instead of taking the benchmark down. Numbers on a shared machine vary: the list of all step times is
printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # works without `pip install -e .`

PRESETS = {
    "tiny": {"config": "configs/tiny/honestface.yaml", "size": 64, "views": 3, "overrides": []},
    "sd21": {"config": "configs/honestface_sd21.yaml", "size": 512, "views": 2,
             "overrides": ["model.params.pretrained=false", "data.resolution=512", "data.batch_size=1",
                           "data.num_references=1"]},
}


def _free_memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20  # kB
    except OSError:
        pass
    return None


def _reset_peak(device) -> bool:
    """Start a new peak-memory window; False when the platform cannot (then the process peak is all there is)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM (peak RSS) of this process
        return True
    except OSError:
        return False


def _window_peak_gb(device) -> float | None:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20  # kB
    except OSError:
        pass
    return None


def _process_peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_preset(name: str, steps: int, warmup: int, device: str, precision: str | None) -> dict:
    """Build the trainer for preset `name` and time its steps (runs in the child process)."""
    if device == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "1"  # read by accelerate when the trainer creates its Accelerator
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: torch sees no CUDA device")
    from honestface.config import load_config
    from honestface.data.sample_dataset import build_sample_identities
    from honestface.training.tasks import build_task
    from honestface.training.trainer import Trainer

    spec = PRESETS[name]
    on_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    with tempfile.TemporaryDirectory(prefix=f"honestface-bench-{name}-") as tmp:
        start = time.perf_counter()
        build_sample_identities(Path(tmp) / "faces", size=spec["size"], views=spec["views"])
        data_build_s = time.perf_counter() - start
        overrides = [f"data.train_dir={Path(tmp) / 'faces'}", f"train.output_dir={Path(tmp) / 'run'}",
                     "train.report_to=none", "train.num_val_images=0", "train.ema_decay=0", "loss.networks=random",
                     "data.num_workers=0", f"train.max_steps={warmup + steps}",
                     f"train.mixed_precision='{precision or ('bf16' if on_cuda else 'no')}'", *spec["overrides"]]
        cfg = load_config(ROOT / spec["config"], overrides)
        start = time.perf_counter()
        trainer = Trainer(cfg, build_task(cfg.train.stage, cfg))
        setup_s = time.perf_counter() - start
        dev = trainer.accelerator.device
        batches = trainer._batches()
        step_s, data_s, phases = [], [], []
        for i in range(warmup + steps):
            if i == warmup:
                peak_before = _process_peak_gb()  # read first: resetting VmHWM also resets ru_maxrss
                windowed = _reset_peak(dev)
            t0 = time.perf_counter()
            micro = [next(batches) for _ in range(cfg.train.gradient_accumulation_steps)]
            t1 = time.perf_counter()
            phases = trainer.task.phases(trainer.step)
            logs = trainer._train_step(micro)
            _sync(dev)
            t2 = time.perf_counter()
            if logs is None:
                raise RuntimeError(f"step {trainer.step} was skipped (non-finite loss)")
            trainer.step += 1
            if i >= warmup:
                data_s.append(t1 - t0)
                step_s.append(t2 - t1)
        peak = _window_peak_gb(dev) if windowed else None
        process_peak = max(peak_before, _process_peak_gb(), (peak or 0.0) if dev.type == "cpu" else 0.0)
        module = trainer.accelerator.unwrap_model(trainer.module)
        trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
        median = statistics.median(step_s)
        images = cfg.data.batch_size * cfg.train.gradient_accumulation_steps
        return {
            "device": str(dev), "mixed_precision": cfg.train.mixed_precision,
            "gradient_checkpointing": cfg.train.gradient_checkpointing, "resolution": cfg.data.resolution,
            "batch_size": cfg.data.batch_size, "num_references": cfg.data.num_references, "phases": phases,
            "trainable_params": trainable, "total_params": sum(p.numel() for p in module.parameters()),
            "warmup_steps": warmup, "timed_steps": steps,
            "step_s_median": round(median, 4), "step_s_all": [round(s, 4) for s in step_s],
            "images_per_s": round(images / median, 3), "data_s_median": round(statistics.median(data_s), 4),
            "setup_s": round(setup_s, 2), "data_build_s": round(data_build_s, 2),
            "peak_memory_gb": None if peak is None else round(peak, 3),
            "peak_memory_kind": "cuda_max_memory_allocated" if dev.type == "cuda" else "rss_during_steps",
            "process_peak_rss_gb": round(process_peak, 3),
        }


def _child(name: str, args: argparse.Namespace, steps: int, warmup: int) -> dict:
    """Run one preset in a fresh interpreter; its JSON result, or {"error": ...} when it failed."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--steps", str(steps),
           "--warmup", str(warmup), "--device", args.device]
    if args.precision:
        cmd += ["--precision", args.precision]
    proc = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, text=True)  # stderr (progress) passes through
    if proc.returncode != 0:
        why = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
        if proc.returncode in (-9, 137):
            why += " (most likely out of memory)"
        return {"error": f"{name} benchmark failed: {why}; see its traceback above"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps of the tiny preset (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (tiny; default 2)")
    parser.add_argument("--sd21", action="store_true", help="also time the SD 2.1-scale model (random weights)")
    parser.add_argument("--sd21-steps", type=int, default=1, help="timed sd21 steps (default 1; no warm-up on CPU)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--precision", choices=["no", "fp16", "bf16"], default=None,
                        help="train.mixed_precision (default: bf16 on CUDA, no on CPU)")
    parser.add_argument("--min-free-gb", type=float, default=20.0,
                        help="skip sd21 on CPU when less memory than this is available (default 20: its step "
                             "peaked at 19.3 GB)")
    parser.add_argument("--worker", choices=list(PRESETS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0 or args.sd21_steps < 1:
        parser.error("--steps and --sd21-steps must be >= 1, --warmup >= 0")
    if args.worker:  # child: one preset, one JSON line on stdout
        print(json.dumps(run_preset(args.worker, args.steps, args.warmup, args.device, args.precision)))
        return

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    results: dict[str, object] = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                              "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                                              "gpu": torch.cuda.get_device_name(0) if cuda else None}}
    results["tiny"] = _child("tiny", args, args.steps, args.warmup)
    if args.sd21:
        free = _free_memory_gb()
        if not cuda and free is not None and free < args.min_free_gb:
            results["sd21"] = {"skipped": f"only {free:.1f} GB of memory available (< --min-free-gb "
                                          f"{args.min_free_gb:g}); the CPU sd21 step peaked at 19.3 GB RSS"}
        else:
            results["sd21"] = _child("sd21", args, args.sd21_steps, 1 if cuda else 0)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
