"""The trainer: accelerate set-up, optimisers, the loop, logging, checkpoints, resume and guards.

Phases of a run (torchtune-style): `setup` (accelerator, task, optimisers, schedulers, data, EMA, resume) →
`train` (for each step: one or more phases of the task — e.g. generator then discriminator — each with its own
optimiser; logging; validation images; checkpoints) → `finish` (final checkpoint and export).

Everything device-, precision- and distribution-related goes through accelerate (DDP on many processes / nodes,
bf16/fp16 autocast and loss scaling; FSDP/DeepSpeed through accelerate config files). Our choices:
- Determinism: the data order of epoch e is a permutation seeded by (train.seed, e); every random draw of a step
  (degradation, reference dropout, VAE posterior samples, discriminator timesteps) is seeded by (train.seed, step),
  so a resumed run continues exactly as an uninterrupted one.
- Gradient accumulation is explicit: a step takes `gradient_accumulation_steps` micro-batches per phase.
- A non-finite loss on any process skips that step on every process (the backward still runs, so DDP stays in
  step); `train.max_bad_steps` in a row stop the run with an error, keeping the last good checkpoint.
- Ctrl-C finishes the current step, saves a checkpoint and exits cleanly (return code 130; interrupt.py).
- One output folder holds one run (run ids, `train.overwrite`, atomic export swap: run_folder.py); a resume
  continues the recorded learning-rate schedule or stops with an error (schedule.py).
- Checkpoints hold only tensors and JSON (model, optimisers, schedulers, RNG states via accelerate with
  weights-only loading; EMA via safetensors; trainer state as JSON): loading one never runs code.
"""

from __future__ import annotations

import json
import logging
import math
import resource
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Sampler

from honestface.training import checkpoint as ckpt
from honestface.training import run_folder
from honestface.training.interrupt import DeferredInterrupt
from honestface.training.schedule import build_scheduler, schedule_record
from honestface.training.task import TrainingTask
from honestface.training.trackers import check_report_to, log_image_grid

EMA_FILE = "ema.safetensors"
TRAINABLE_FILE = "trainable.safetensors"

log = logging.getLogger(__name__)  # a child of the `honestface` logger


def _say(acc: Accelerator, level: int, msg: str, *args: Any) -> None:
    """Log on the main process only (what `acc.print` did, through the library logger)."""
    if acc.is_main_process:
        log.log(level, msg, *args)


class EpochSampler(Sampler[int]):
    """A permutation of the dataset per epoch, seeded by (seed, epoch): the same on every process."""

    def __init__(self, length: int, seed: int) -> None:
        self.length, self.seed, self.epoch = length, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.length, generator=g).tolist())

    def __len__(self) -> int:
        return self.length


class BadLossError(RuntimeError):
    """Too many consecutive non-finite losses."""


class Trainer:
    def __init__(self, cfg: DictConfig, task: TrainingTask) -> None:
        self.cfg, self.task = cfg, task
        t = cfg.train
        self.output_dir = Path(t.output_dir)
        log_with = check_report_to(t.report_to)
        self.accelerator = Accelerator(
            mixed_precision=t.mixed_precision,
            log_with=log_with,
            project_config=ProjectConfiguration(project_dir=str(self.output_dir), logging_dir=str(self.output_dir / "logs")),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
        self.step = 0  # optimisation steps done
        self.epoch = 0
        self.batch_in_epoch = 0  # batches of the current epoch already consumed
        self.bad_steps = 0
        self._position, self._updated, self._last_saved = (0, 0), False, 0  # see train(): Ctrl-C handling
        self._setup()

    # ------------------------------------------------------------------------------------------------- setup
    def _setup(self) -> None:
        acc, cfg = self.accelerator, self.cfg
        self.schedule = schedule_record(cfg.optim.scheduler, cfg.optim.warmup_steps, cfg.train.max_steps)
        resume = ckpt.resolve_resume(cfg.train.resume, self.output_dir, run_folder.read_run_id(self.output_dir))
        self.run_id, self.aside = run_folder.claim(acc, cfg, resume, self.schedule)
        groups = self.task.param_groups()
        lrs = self.task.learning_rates()
        self.optimizers = {
            name: torch.optim.AdamW(params, lr=lrs[name], betas=tuple(cfg.optim.betas),
                                    weight_decay=cfg.optim.weight_decay)
            for name, params in groups.items()
        }
        self.schedulers = {name: build_scheduler(cfg.optim.scheduler, opt, cfg.optim.warmup_steps,
                                                 cfg.train.max_steps, acc.num_processes)
                           for name, opt in self.optimizers.items()}
        dataset = self.task.train_dataset()
        self.sampler = EpochSampler(len(dataset), cfg.train.seed)
        # The loader's own generator: starting an epoch (or a resumed, skipping one) draws the workers' base seed
        # from it instead of from torch's global RNG, so a resumed run's global RNG (dropout, ...) stays the same
        # as the uninterrupted run's.
        loader = DataLoader(dataset, batch_size=cfg.data.batch_size, sampler=self.sampler, drop_last=True,
                            num_workers=cfg.data.num_workers, collate_fn=self.task.collate(),
                            persistent_workers=False, generator=torch.Generator().manual_seed(cfg.train.seed))
        if len(loader) == 0:
            raise ValueError(f"data.batch_size={cfg.data.batch_size} is larger than the training set "
                             f"({len(dataset)} samples); lower it or add data")
        self.dataset = dataset
        names = list(self.optimizers)
        prepared = acc.prepare(self.task.module, *self.optimizers.values(), *self.schedulers.values(), loader)
        self.module = prepared[0]
        self.optimizers = dict(zip(names, prepared[1:1 + len(names)]))
        self.schedulers = dict(zip(names, prepared[1 + len(names):1 + 2 * len(names)]))
        self.loader = prepared[-1]
        self.ema = None
        if cfg.train.ema_decay > 0:
            from diffusers.training_utils import EMAModel

            self.ema = EMAModel(groups[names[0]], decay=cfg.train.ema_decay)
            self.ema.to(acc.device)
        self.val_batch = self._validation_batch()
        acc.register_save_state_pre_hook(self._save_trainable)
        acc.register_load_state_pre_hook(self._load_trainable)
        if acc.is_main_process and cfg.train.report_to != "none":
            acc.init_trackers("honestface")
        if resume is not None:
            self._load(resume)

    def _validation_batch(self) -> dict[str, Any] | None:
        n = self.cfg.train.num_val_images
        data = self.task.val_dataset() or self.dataset
        if n == 0 or len(data) == 0:
            return None
        samples = [data[i] for i in range(min(n, len(data)))]
        collate = self.task.collate() or torch.utils.data.default_collate
        return collate(samples)

    # -------------------------------------------------------------------------------------------------- loop
    def _batches(self) -> Iterator[dict[str, Any]]:
        """Endless batches, epoch after epoch, starting where a resumed run left off."""
        while True:
            self.loader.set_epoch(self.epoch)  # the prepared loader passes it to our sampler (on every rank)
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(self.epoch)
            loader = self.loader
            if self.batch_in_epoch:
                loader = self.accelerator.skip_first_batches(self.loader, self.batch_in_epoch)
            for batch in loader:
                self.batch_in_epoch += 1
                yield batch
            self.epoch += 1
            self.batch_in_epoch = 0

    def train(self) -> int:
        acc, t = self.accelerator, self.cfg.train
        from tqdm.auto import tqdm

        bar = tqdm(total=t.max_steps, initial=self.step, disable=not acc.is_local_main_process, desc="train",
                   dynamic_ncols=True)
        batches = self._batches()
        stop = DeferredInterrupt()
        try:
            with stop:
                self._train_loop(batches, bar, stop)
        except KeyboardInterrupt:
            if self._updated:  # a second Ctrl-C inside a step that already changed weights: not resumable
                _say(acc, logging.WARNING, "interrupted inside step %d; the last complete checkpoint is in %s",
                     self.step + 1, ckpt.checkpoint_root(self.output_dir))
            else:
                self.epoch, self.batch_in_epoch = self._position  # the broken step's batches are drawn again
                if self.step > self._last_saved:
                    self.save()
                _say(acc, logging.WARNING, "interrupted at step %d; checkpoint saved in %s", self.step,
                     ckpt.checkpoint_root(self.output_dir))
            acc.end_training()
            return 130
        finally:
            bar.close()
        if self.step > self._last_saved:
            self.save()
        if self.val_batch is not None:
            self._log_images()
        self.export()
        acc.end_training()
        return 0

    def _train_loop(self, batches: Iterator[dict[str, Any]], bar: Any, stop: DeferredInterrupt) -> None:
        acc, t = self.accelerator, self.cfg.train
        self._last_saved = self.step
        while self.step < t.max_steps:
            self._position, self._updated = (self.epoch, self.batch_in_epoch), False
            if stop.stop_now(acc):
                raise KeyboardInterrupt
            start = time.perf_counter()
            micro = [next(batches) for _ in range(t.gradient_accumulation_steps)]
            logs = self._train_step(micro)
            self.step += 1
            self._position, self._updated = (self.epoch, self.batch_in_epoch), False  # a finished step
            bar.update(1)
            if logs is not None:
                seconds = time.perf_counter() - start
                images = t.gradient_accumulation_steps * self.cfg.data.batch_size * acc.num_processes
                logs.update({"perf/images_per_s": images / seconds, "perf/step_s": seconds,
                             "perf/peak_memory_gb": _peak_memory_gb(acc.device)})
                if self.step % t.log_every == 0 or self.step == 1:
                    acc.log(logs, step=self.step)
                    bar.set_postfix({k.split("/")[-1]: f"{v:.4g}" for k, v in logs.items() if k.startswith("loss/")})
            if self.val_batch is not None and self.step % t.eval_every == 0:
                self._log_images()
            if self.step % t.save_every == 0:
                self.save()
                self._last_saved = self.step

    def _train_step(self, micro: list[dict[str, Any]]) -> dict[str, float] | None:
        """All phases of one step; returns the logs, or None when the step was skipped for a non-finite loss."""
        acc = self.accelerator
        batches = [self.task.prepare_batch(b, self.step) for b in micro]
        logs: dict[str, float] = {}
        finite = True
        for phase in self.task.phases(self.step):
            opt = self.optimizers[phase]
            opt.zero_grad(set_to_none=True)
            phase_finite = torch.ones((), device=acc.device)
            for i, batch in enumerate(batches):
                sync = i == len(batches) - 1
                with nullcontext() if sync else acc.no_sync(self.module):
                    loss, phase_logs, carry = self.module(batch, phase)
                    acc.backward(loss / len(batches))  # always: DDP expects every forward to be followed by one
                phase_finite = phase_finite * torch.isfinite(loss.detach()).float()
                batches[i] = {**batch, **carry}
                for k, v in phase_logs.items():
                    logs[k] = logs.get(k, 0.0) + float(v) / len(batches)
            phase_finite = acc.reduce(phase_finite, reduction="sum") >= acc.num_processes  # every process finite
            if not bool(phase_finite):
                finite = False
                bad = sorted(k for k, v in logs.items() if not math.isfinite(v))
                where = ", ".join(bad) or ("loss" if acc.num_processes == 1 else "another process")
                _say(acc, logging.WARNING, "non-finite %s loss at step %d (%s)", phase, self.step, where)
                opt.zero_grad(set_to_none=True)
                break
            params = [p for g in opt.param_groups for p in g["params"]]
            if self.cfg.optim.grad_clip > 0:
                logs[f"grad_norm/{phase}"] = float(acc.clip_grad_norm_(params, self.cfg.optim.grad_clip))
            self._updated = True
            opt.step()
            self.schedulers[phase].step()
            opt.zero_grad(set_to_none=True)
            logs[f"lr/{phase}"] = self.schedulers[phase].get_last_lr()[0]
        if not finite:
            self.bad_steps += 1
            _say(acc, logging.WARNING, "step %d skipped (%d in a row; limit train.max_bad_steps=%d)", self.step,
                 self.bad_steps, self.cfg.train.max_bad_steps)
            if self.bad_steps > self.cfg.train.max_bad_steps:
                raise BadLossError(f"{self.bad_steps} non-finite losses in a row at step {self.step}; stopping. The "
                                   f"last good checkpoint is in {ckpt.checkpoint_root(self.output_dir)}")
            return None
        self.bad_steps = 0
        if self.ema is not None:
            self.ema.step(self.task.param_groups()[next(iter(self.optimizers))])
        return logs

    # ------------------------------------------------------------------------------------------- validation
    @torch.no_grad()
    def _log_images(self) -> None:
        acc = self.accelerator
        if not acc.is_main_process or self.cfg.train.report_to == "none":
            return
        from torchvision.utils import make_grid

        module = acc.unwrap_model(self.module)
        batch = _to_device(self.val_batch, acc.device)
        batch = self.task.prepare_batch(batch, step=0)  # fixed draws: the same LQ at every validation
        with self._ema_weights(), acc.autocast():
            was_training = module.training
            module.eval()
            images = self.task.images(module, batch)
            module.train(was_training)
        if not images:
            return
        columns = [((v.float().clamp(-1, 1) + 1) / 2).cpu() for v in images.values()]  # each (B, 3, H, W)
        rows = torch.stack(columns, dim=1).flatten(0, 1)  # (B * n_columns, 3, H, W)
        grid = make_grid(rows, nrow=len(columns), padding=2)
        log_image_grid(acc.trackers, "validation/" + "|".join(images), grid, self.step)

    @contextmanager
    def _ema_weights(self) -> Iterator[None]:
        """Context: the EMA weights swapped in (validation, export), the training weights restored after."""
        if self.ema is None:
            yield
            return
        params = self.task.param_groups()[next(iter(self.optimizers))]
        self.ema.store(params)
        self.ema.copy_to(params)
        try:
            yield
        finally:
            self.ema.restore(params)

    # ------------------------------------------------------------------------------------------- checkpoints
    def state(self) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "bad_steps": self.bad_steps, "num_processes": self.accelerator.num_processes,
                "run_id": self.run_id, "schedule": self.schedule}

    def save(self) -> Path | None:
        """Atomic checkpoint of everything needed to continue exactly; keeps the last `train.keep_last`."""
        acc = self.accelerator
        tmp = ckpt.temporary_dir(self.output_dir, self.step, create=acc.is_main_process)
        acc.wait_for_everyone()
        acc.save_state(str(tmp), safe_serialization=True)
        acc.wait_for_everyone()  # every process has written its files (RNG states) before the folder is renamed
        final = None
        if acc.is_main_process:
            if self.ema is not None:
                from safetensors.torch import save_file

                save_file({f"shadow.{i}": p.detach().contiguous().cpu() for i, p in enumerate(self.ema.shadow_params)},
                          str(tmp / EMA_FILE), metadata={"optimization_step": str(self.ema.optimization_step)})
            ckpt.write_state(tmp, self.state())
            final = ckpt.commit(tmp, self.step, self.cfg.train.keep_last, self.run_id)
            run_folder.drop_aside(self.aside)  # an overwritten run goes once this run has a checkpoint
            self.aside = None
        acc.wait_for_everyone()
        return final

    def _save_trainable(self, models: list, weights: list, output_dir: str) -> None:
        """accelerate hook: checkpoint only the trainable tensors (frozen SD/VGG/ArcFace weights are not copied
        into every checkpoint), as safetensors."""
        from safetensors.torch import save_file

        if weights and self.accelerator.is_main_process:  # `weights` is filled on every process; one writes
            module = self.accelerator.unwrap_model(models[0])
            state = {n: p.detach().contiguous().cpu() for n, p in module.named_parameters() if p.requires_grad}
            save_file(state, str(Path(output_dir) / TRAINABLE_FILE))
        weights.clear()  # accelerate saves no full model copy

    def _load_trainable(self, models: list, input_dir: str) -> None:
        """accelerate hook: the counterpart of `_save_trainable` (strict on the trainable names)."""
        from honestface.checkpoints import check_state_dict, load_state_dict

        if not models:  # FSDP / DeepSpeed load their own model states
            return
        module = self.accelerator.unwrap_model(models.pop(0))
        path = Path(input_dir) / TRAINABLE_FILE
        state = load_state_dict(path, strip_prefix=None)
        own = {n: p for n, p in module.named_parameters() if p.requires_grad}
        check_state_dict(own, state, str(path), "this run's trainable parameters (same config?)")
        with torch.no_grad():
            for name, value in state.items():
                own[name].copy_(value)

    def _load(self, directory: Path) -> None:
        acc = self.accelerator
        state = ckpt.read_state(directory)  # process count and schedule were checked by run_folder.claim
        ckpt.check_random_states(directory, acc.process_index)  # accelerate would only log a bad one
        acc.load_state(str(directory))
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.batch_in_epoch, self.bad_steps = int(state["batch_in_epoch"]), int(state["bad_steps"])
        if self.ema is not None and (directory / EMA_FILE).is_file():
            from safetensors import safe_open

            with safe_open(str(directory / EMA_FILE), framework="pt", device=str(acc.device)) as f:
                for i, p in enumerate(self.ema.shadow_params):
                    p.copy_(f.get_tensor(f"shadow.{i}"))
                self.ema.optimization_step = int(f.metadata()["optimization_step"])
        _say(acc, logging.INFO, "resumed from %s at step %d", directory, self.step)

    def export(self) -> Path | None:
        """The final model (EMA weights when enabled) in `<output_dir>/final`: written into a temporary sibling and
        swapped in by renames (run_folder.swap_in), so a complete `final/` exists at every moment once one did."""
        acc = self.accelerator
        acc.wait_for_everyone()
        if not acc.is_main_process:
            return None
        tmp = self.output_dir / ".tmp-final"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            with self._ema_weights():
                self.task.export(acc.unwrap_model(self.module), tmp)
            (tmp / "training.json").write_text(json.dumps({"step": self.step, "stage": self.cfg.train.stage}))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # the old final/ was never touched
            raise
        final = run_folder.swap_in(tmp, self.output_dir)
        _say(acc, logging.INFO, "exported %s", final)
        return final


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list):
        return [_to_device(v, device) for v in batch]
    return batch


def _peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB

