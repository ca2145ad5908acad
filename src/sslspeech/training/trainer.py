"""The training loop: one loop for HuBERT, DinoSR and SpidR.

    while step < max_steps:
        train_step(next accumulation micro-batches)    # forward, backward, clip, AdamW, schedule
        objective.after_step(step)                     # EMA teacher update (DinoSR/SpidR)
        maybe_freeze / maybe_log / maybe_save / maybe_validate / maybe_stop

Everything around it (model, objective, optimizer, data, checkpoints, resume) is built in
`Trainer.__init__` from a `TrainConfig`; launchers (local processes, torchrun, SLURM) only call
`train(config)`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import random
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from sslspeech.data.audio import SAMPLE_RATE
from sslspeech.errors import CheckpointError, ConfigError, SSLSpeechError
from sslspeech.interop import LoadedCheckpoint
from sslspeech.models.pretrained import Pretrained
from sslspeech.models.registry import model_class
from sslspeech.training import checkpoint as ckpt
from sslspeech.training.config import TrainConfig, config_changes, resolve_config, save_config
from sslspeech.training.data import Split, build_split, to_device
from sslspeech.training.distributed import (
    DistributedEnvironment,
    any_rank,
    cpu_group,
    destroy_process_group,
    init_process_group,
    resolve_environment,
)
from sslspeech.training.flops import count_step_flops, peak_tflops, utilization
from sslspeech.training.init import check_architecture, init_model
from sslspeech.training.metrics import Meter, MetricsLog, memory_gb, truncate_metrics
from sslspeech.training.objectives import Loss, build_objective
from sslspeech.training.optim import build_optimizer, build_scaler, build_scheduler, clip_gradients
from sslspeech.training.parallelize import autocast, no_sync, parallelize
from sslspeech.training.profiler import StepProfiler
from sslspeech.utils.runlock import hold_lock

log = logging.getLogger(__name__)

OnCheckpoint = Callable[[Path, int], None]
TRAIN_LOCK_FILE = ".train.lock"


class DivergedError(SSLSpeechError):
    """The loss or gradient norm stayed non-finite, or the parameters are: the run stopped."""


@dataclass
class TrainState:
    """Where the run is: optimizer steps done, epoch, batches of the epoch consumed here."""

    step: int = 0
    epoch: int = 0
    position: int = 0


class StopFlag:
    """Set by SIGUSR1 / SIGTERM (preemption, time limit): the loop saves and returns."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """Whether a stop signal arrived."""
        return self.signum is not None

    def request(self, signum: int, frame: FrameType | None = None) -> None:
        """Signal handler: remember the signal, finish the current step."""
        del frame
        if self.signum is None:
            log.warning(
                "received %s: saving a checkpoint after this step", signal.Signals(signum).name
            )
        self.signum = signum

    def install(self, signals: Sequence[int] = (signal.SIGUSR1, signal.SIGTERM)) -> StopFlag:
        """Handle `signals` (keeping the previous handlers in `previous`); returns self."""
        for signum in signals:
            self.previous[signum] = signal.signal(signum, self.request)
        return self

    def restore(self) -> None:
        """Put the previous handlers back."""
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous.clear()


def build_model(config: TrainConfig, resumed: ckpt.TrainingCheckpoint | None = None) -> Pretrained:
    """A fresh model of `config.model`, or a continued run's from `run.init_from` (and
    `run.init_labels_from`); when `resumed`, the model its checkpoint will fill (the sources of
    a continued run are not read again)."""
    cls = model_class(config.model.type)
    if resumed is not None and config.run.init_from:
        check_architecture(config.model.options, resumed.model.config, config.run.init_from)
        return cls(config.model_config(resumed.model.config))
    if resumed is not None:
        return cls(config.model_config())
    if config.run.init_from or config.run.init_labels_from:
        model, report = init_model(config)
        log.info("%s", report.table())
        return model
    return cls(config.model_config())


def state_checksum(model: nn.Module) -> float:
    """Sum of every floating-point parameter and buffer (equal on every rank of a healthy run)."""
    sums = [t.detach().double().sum() for t in model.state_dict().values() if t.is_floating_point()]
    return float(torch.stack(sums).sum()) if sums else 0.0


def seed_everything(seed: int) -> None:
    """Python, numpy and torch global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Model, objective, optimizer, data and checkpoints of one run, and the loop over them."""

    def __init__(
        self,
        config: TrainConfig,
        env: DistributedEnvironment,
        *,
        stop: StopFlag | None = None,
        on_checkpoint: OnCheckpoint | None = None,
        apply_config_changes: bool = False,
    ) -> None:
        self.config, self.env = config, env
        self.apply_config_changes = apply_config_changes
        self.nonfinite_steps = 0
        self.workdir = Path(config.run.workdir)
        self.stop = stop or StopFlag()
        self.on_checkpoint = on_checkpoint
        seed_everything(config.run.seed + env.rank)
        self.checkpoints = ckpt.CheckpointDir(
            self.workdir / "checkpoints",
            save_every=config.checkpoint.save_every,
            keep_last=config.checkpoint.keep_last,
            keep_every=config.checkpoint.keep_every,
        )
        self.writer = ckpt.BackgroundWriter()
        resume_path = self.checkpoints.latest()
        resumed = ckpt.TrainingCheckpoint.load(resume_path) if resume_path is not None else None
        if resume_path is not None and resumed is not None:
            self.check_resumable(resume_path, resumed)
        self.model = build_model(config, resumed).to(env.device).train()
        self.objective = build_objective(config.model.type, self.model)
        self.optimizer = build_optimizer(self.model, config.optim, env.device)
        self.scheduler = build_scheduler(self.optimizer, config.schedule, config.run.max_steps)
        self.scaler = build_scaler(config.optim.dtype, env.device)
        self.train_data = build_split(config, self.model, env, config.data.manifest, train=True)
        if config.run.validation == "job" and on_checkpoint is None and env.is_main:
            log.warning(
                "run.validation = 'job' needs the SLURM launcher (--slurm); validate the "
                "checkpoints with `sslspeech validate` afterwards"
            )
        inline = config.run.validation == "inline" or (
            config.run.validation == "auto" and on_checkpoint is None
        )
        self.val_data: dict[str, Split] = {
            name: build_split(config, self.model, env, manifest, train=False)
            for name, manifest in (config.validation_sets() if inline else {}).items()
        }
        self.cpu_group = cpu_group()
        self.state = TrainState()
        self.saved_step = -1
        if resume_path is not None and resumed is not None:
            self.resume(resume_path, resumed)
        self.objective.resume(self.model, self.state.step)
        self.compiled = False
        self.module = self.parallelize()
        if env.is_main:
            save_config(config, self.workdir / "config.toml")
            truncate_metrics(self.workdir / "metrics.jsonl", self.state.step)
        self.metrics = MetricsLog(
            self.workdir / "metrics.jsonl",
            enabled=env.is_main,
            wandb_project=config.logging.wandb_project,
            wandb_mode=config.logging.wandb_mode,
            tensorboard_dir=self.workdir / "tensorboard" if config.logging.tensorboard else None,
            config=config.to_dict(),
            run_name=self.workdir.name,
        )
        self.flops_per_audio_second = self.measure_flops() if config.logging.mfu else None
        self.peak_tflops = peak_tflops(env.device, config.optim.dtype, config.optim.peak_tflops)
        self.meter = Meter()
        self.window_start = time.perf_counter()
        self.window_steps = 0
        self.last_record: dict[str, Any] = {}

    # ------------------------------------------------------------------ the loop

    def fit(self) -> dict[str, Any]:
        """Train until `run.max_steps` or a stop signal; returns a summary."""
        max_steps = self.config.run.max_steps
        batches = self.batches()
        bar = self.progress_bar()
        profiler = StepProfiler(self.config.run.profile_steps, self.workdir, self.env)
        while self.state.step < max_steps:
            profiler.before_step(self.state.step)
            micro_batches = [next(batches) for _ in range(self.config.optim.accumulation)]
            self.train_step(micro_batches)
            self.meter.add(self.objective.after_step(self.model, self.state.step))
            profiler.after_step(self.state.step)
            self.maybe_freeze()
            self.maybe_log(bar)
            saved = self.maybe_save()
            self.maybe_validate(saved)
            if self.stop_requested(saved):
                if not saved:
                    self.save()
                profiler.close()
                return self.summary("preempted")
        profiler.close()
        if self.saved_step != self.state.step:
            self.save()
        return self.summary("completed")

    def stop_requested(self, saved: bool) -> bool:
        """Whether any rank got a stop signal: asked every `distributed.stop_check_every` steps
        and at checkpoint steps (one small all-reduce, not one per step)."""
        if self.cpu_group is None:
            return self.stop.requested
        every = self.config.distributed.stop_check_every
        if not saved and self.state.step % every:
            return False
        return any_rank(self.stop.requested, self.cpu_group)

    def train_step(self, micro_batches: list[dict[str, Any]]) -> None:
        """Forward/backward each micro-batch, then one clipped, scheduled AdamW step."""
        losses: list[Loss] = []
        audio = 0.0
        for index, batch in enumerate(micro_batches):
            audio += float(batch["lengths"].sum()) / SAMPLE_RATE
            batch = to_device(batch, self.env.device)
            with no_sync(self.module, skip=index < len(micro_batches) - 1):
                with autocast(self.env.device, self.config.optim.dtype):
                    loss = self.objective(self.module, batch)
                self.scaler.scale(loss.total).backward()
            losses.append(loss)
            self.meter.add(loss.stats)
        # fairseq's normalization: gradients of summed losses / frames over every rank.
        frames = torch.tensor([float(sum(loss.count for loss in losses))], dtype=torch.float64)
        if self.cpu_group is not None:
            dist.all_reduce(frames, group=self.cpu_group)
        self.scaler.unscale_(self.optimizer)
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, self.env.world_size / max(float(frames), 1.0))
        grad_norm = clip_gradients(self.model.parameters(), self.config.optim.clip_norm)
        lr = self.optimizer.param_groups[0]["lr"]
        if self.should_update(losses, grad_norm):
            self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.state.step += 1
        self.window_steps += 1
        total = torch.stack([loss.total.detach().float() for loss in losses]).sum()
        count = float(sum(loss.count for loss in losses))
        self.meter.add({"loss_sum": total, "loss_count": count, "grad_norm": grad_norm})
        self.meter.add({"lr": lr, "audio_seconds": audio})

    def should_update(self, losses: list[Loss], grad_norm: torch.Tensor) -> bool:
        """False when this step's loss or gradient norm is not finite on some rank (the update
        is skipped); more than `optim.max_nonfinite_steps` such steps in a row stop the run.
        Under float16 the gradient scaler skips overflowing updates itself: only a non-finite
        loss counts, and the scaler still steps."""
        values = [loss.total.detach().float().sum() for loss in losses]
        if not self.scaler.is_enabled():
            values.append(grad_norm.detach().float().to(values[0].device))
        finite = not any_rank(not bool(torch.isfinite(torch.stack(values)).all()), self.cpu_group)
        if finite:
            self.nonfinite_steps = 0
            return True
        self.nonfinite_steps += 1
        limit = self.config.optim.max_nonfinite_steps
        if self.nonfinite_steps > limit:
            raise DivergedError(
                f"step {self.state.step + 1}: the loss or gradient norm was not finite for "
                f"{self.nonfinite_steps} steps in a row (optim.max_nonfinite_steps = {limit}); "
                f"the run stopped without saving. {self.last_good_checkpoint()} Lower optim.lr "
                f"(now {self.config.optim.lr}) or check the data, then rerun with --restart."
            )
        log.warning(
            "step %d: non-finite loss or gradient norm, update skipped (%d in a row)",
            self.state.step + 1,
            self.nonfinite_steps,
        )
        return self.scaler.is_enabled()

    def refuse_nonfinite_state(self) -> None:
        """A model with a non-finite parameter or buffer is never saved (nor becomes last.pt)."""
        if not math.isfinite(state_checksum(self.model)):
            raise DivergedError(
                f"step {self.state.step}: the model's parameters are not finite; not saving a "
                f"checkpoint. {self.last_good_checkpoint()} Lower optim.lr (now "
                f"{self.config.optim.lr}) or check the data, then rerun with --restart."
            )

    def last_good_checkpoint(self) -> str:
        latest = self.checkpoints.latest()
        return f"The last checkpoint is {latest}." if latest else "No checkpoint was saved."

    def maybe_log(self, bar: Any) -> None:
        """Every `logging.log_every` steps: one metrics line (all ranks reduce, rank 0 writes)."""
        step = self.state.step
        if bar is not None:
            bar.update(1)
        if step % self.config.logging.log_every and step != self.config.run.max_steps:
            return
        values = self.meter.pop()
        elapsed = max(time.perf_counter() - self.window_start, 1e-9)
        audio = values.pop("audio_seconds", 0.0) * self.env.world_size * self.window_steps
        record = {
            "split": "train",
            "step": step,
            "epoch": self.state.epoch,
            **values,
            "steps_per_second": self.window_steps / elapsed,
            "audio_seconds_per_second": audio / elapsed,
            "memory_gb": memory_gb(self.env.device),
        }
        if self.flops_per_audio_second is not None:
            per_gpu = audio / elapsed / self.env.world_size
            record.update(utilization(self.flops_per_audio_second, per_gpu, self.peak_tflops))
        self.metrics.write(record)
        self.last_record = record
        if bar is not None:
            bar.set_postfix(
                loss=f"{record.get('loss', float('nan')):.3f}", lr=f"{record['lr']:.2e}"
            )
        self.window_start, self.window_steps = time.perf_counter(), 0

    def maybe_save(self) -> bool:
        """Every `checkpoint.save_every` steps; returns whether a checkpoint was written."""
        if not self.checkpoints.due(self.state.step):
            return False
        self.save()
        return True

    def maybe_validate(self, saved: bool) -> None:
        """Every `run.validate_every` steps (inline validation): each validation set logged
        under its name; best.pt follows the metric on the first set."""
        every = self.config.run.validate_every
        if not self.val_data or every <= 0 or self.state.step % every:
            return
        from sslspeech.training.validation import evaluate

        metric = self.config.checkpoint.best_metric
        for number, (name, split) in enumerate(self.val_data.items()):
            values = evaluate(
                self.model, self.objective, split, self.env.device, self.config.optim.dtype
            )
            record = {
                "split": name,
                "step": self.state.step,
                **values,
                f"{name}_loss": values["loss"],
            }
            self.metrics.write(record)
            if number == 0 and self.env.is_main and saved and metric in values:
                self.writer.wait()  # best.pt links to the file being written
                self.checkpoints.update_best(self.state.step, metric, values[metric])

    def maybe_freeze(self) -> None:
        """At the objective's freeze step part of the model stopped training: re-wrap for DDP,
        which must not wait for their gradients."""
        if self.state.step == self.objective.freeze_step and self.env.is_distributed:
            self.module = self.parallelize()

    # ------------------------------------------------------------------ pieces

    def batches(self) -> Iterator[dict[str, Any]]:
        """Training batches forever from the resumed position: one loader (its workers and
        prefetching live across epochs); `state` follows the batches training consumed."""
        self.train_data.set_epoch(self.state.epoch)
        per_epoch = len(self.train_data.sampler)
        for batch in self.train_data.loader(endless=True):
            if self.state.position == per_epoch:
                self.state.epoch += 1
                self.state.position = 0
            self.state.position += 1
            yield batch

    def parallelize(self) -> nn.Module:
        """The model as the loop calls it (compiled once, DDP-wrapped when distributed)."""
        find_unused = self.config.distributed.find_unused_parameters
        if find_unused is None:
            find_unused = float(getattr(self.model.config, "layer_drop", 0.0)) > 0
        compile_now = self.config.run.compile and not self.compiled
        self.compiled = self.compiled or compile_now
        return parallelize(
            self.model, self.env, compile=compile_now, find_unused_parameters=find_unused
        )

    def measure_flops(self) -> float:
        """FLOPs per audio-second of one training step (forward + backward), counted on one
        utterance of the training crop length (at most 4 s, to keep the count quick)."""
        num_samples = min(self.config.data.max_sample_size, 4 * SAMPLE_RATE)
        batch = to_device(self.train_data.probe_batch(num_samples), self.env.device)

        def step(model: nn.Module) -> torch.Tensor:
            with autocast(self.env.device, self.config.optim.dtype):
                return self.objective(model, batch).total

        flops = count_step_flops(self.model, step)
        log.info("%.3g GFLOP per audio-second (forward + backward)", flops / num_samples * 16e-6)
        return flops * SAMPLE_RATE / num_samples

    def progress_bar(self) -> Any:
        if not (self.env.is_main and self.config.logging.progress and sys.stderr.isatty()):
            return None
        try:
            from tqdm import tqdm
        except ImportError:
            return None
        return tqdm(
            total=self.config.run.max_steps,
            initial=self.state.step,
            unit="step",
            dynamic_ncols=True,
        )

    def summary(self, status: str) -> dict[str, Any]:
        self.writer.wait()
        latest = self.checkpoints.latest()
        return {
            "status": status,
            "step": self.state.step,
            "checkpoint": str(latest) if latest else None,
            "loss": self.last_record.get("loss"),
        }

    def close(self) -> None:
        try:
            self.writer.wait()
        finally:
            self.metrics.close()

    # ------------------------------------------------------------------ checkpoints

    def save(self) -> Path | None:
        """Write `step_N.pt` (rank 0) with every rank's sampler position and RNG states."""
        self.refuse_nonfinite_state()
        rank_state = {
            "rank": self.env.rank,
            "sampler": self.train_data.sampler.state_dict(
                epoch=self.state.epoch, position=self.state.position
            ),
            "rng": ckpt.capture_rng(),
            "checksum": state_checksum(self.model),
        }
        ranks = [rank_state]
        if self.cpu_group is not None:
            gathered: list[Any] = [None] * self.env.world_size if self.env.is_main else []
            dist.gather_object(
                rank_state, gathered if self.env.is_main else None, dst=0, group=self.cpu_group
            )
            ranks = gathered
            if self.env.is_main and len({r["checksum"] for r in ranks}) > 1:
                log.error(
                    "step %d: the model (parameters or buffers) differs across ranks: %s",
                    self.state.step,
                    [r["checksum"] for r in ranks],
                )
        self.saved_step = self.state.step
        if not self.env.is_main:
            return None
        checkpoint = ckpt.TrainingCheckpoint(
            model=LoadedCheckpoint(
                self.config.model.type,
                self.model.config.to_dict(),
                self.model.state_dict(),
                "training",
            ),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict(),
            step=self.state.step,
            epoch=self.state.epoch,
            world_size=self.env.world_size,
            ranks=ranks,
            config=self.config.to_dict(),
        )
        if not self.config.checkpoint.background:
            return self.write_checkpoint(checkpoint)
        copy = ckpt.snapshot(checkpoint)
        self.writer.submit(functools.partial(self.write_checkpoint, copy))
        return self.checkpoints.path(checkpoint.step)

    def write_checkpoint(self, checkpoint: ckpt.TrainingCheckpoint) -> Path:
        """`step_N.pt`, `last.pt`, pruning, then `on_checkpoint` (e.g. a validation job)."""
        path = self.checkpoints.save(checkpoint)
        if self.on_checkpoint is not None:
            self.on_checkpoint(path, checkpoint.step)
        return path

    def resume(self, path: Path, saved: ckpt.TrainingCheckpoint) -> None:
        """Continue exactly from `saved`, the run's newest checkpoint (read from `path`)."""
        self.model.load_state_dict(saved.model.state_dict)
        try:
            self.optimizer.load_state_dict(saved.optimizer)
        except ValueError as error:  # parameter groups of another layout
            raise ConfigError(
                f"{path}: its optimizer state does not fit this config's parameter groups "
                f"({error}); optim.decay_norms_and_biases (which splits them) cannot change "
                "on resume: keep the checkpoint's value, start over with --restart, or start a "
                f"new run from its weights with run.init_from={path}"
            ) from None
        self.scheduler.load_state_dict(saved.scheduler)
        self.scaler.load_state_dict(saved.scaler)
        if self.apply_config_changes:
            self.apply_optimizer_config()
        self.state = TrainState(step=saved.step, epoch=saved.epoch)
        self.saved_step = self.state.step
        if saved.world_size == self.env.world_size:
            mine = saved.ranks[self.env.rank]
            self.train_data.sampler.load_state_dict(mine["sampler"])
            self.state.position = int(mine["sampler"]["position"])
            ckpt.restore_rng(mine["rng"])
        else:
            log.warning(
                "%s was saved by %d processes, this run has %d: data restarts at epoch %d and "
                "random generators are reseeded (the run continues, not bit-exactly)",
                path,
                saved.world_size,
                self.env.world_size,
                self.state.epoch + 1,
            )
            self.state.epoch += 1
            seed_everything(self.config.run.seed + self.env.rank + self.state.step)
        log.info("resumed from %s (step %d, epoch %d)", path, self.state.step, self.state.epoch)

    def check_resumable(self, path: Path, saved: ckpt.TrainingCheckpoint) -> None:
        """Before anything is built from it: refuse a checkpoint of another model type, and one
        trained with other hyper-parameters (a diff and the ways out) unless
        `apply_config_changes`; what may change is `RESUMABLE_CHANGES`."""
        if saved.model.model_type != self.config.model.type:
            raise CheckpointError(
                f"{path} holds a {saved.model.model_type} run but the config trains "
                f"{self.config.model.type}; use another run.workdir or --restart"
            )
        if self.apply_config_changes:
            return
        try:
            changes = config_changes(resolve_config(saved.config, source=str(path)), self.config)
        except ConfigError as error:
            changes = [f"(the checkpoint's config no longer resolves: {error})"]
        if changes:
            raise ConfigError(
                f"{path} was trained with another config; changed:\n  "
                + "\n  ".join(changes)
                + "\nresume with the checkpoint's values (undo these changes), start over with "
                "--restart, or continue from this checkpoint with the new values (a new learning "
                "rate schedule from its step) with --apply-config-changes"
            )

    def apply_optimizer_config(self) -> None:
        """After loading a checkpoint: the optimizer takes the config's hyper-parameters and the
        schedule its peak rate (the loaded state keeps the old ones), from the loaded step."""
        optim = self.config.optim
        for group in self.optimizer.param_groups:
            group.update(betas=optim.betas, eps=optim.eps, initial_lr=optim.lr)
            group["weight_decay"] = 0.0 if group.get("name") == "no_decay" else optim.weight_decay
        self.scheduler.base_lrs = [optim.lr] * len(self.optimizer.param_groups)
        step = self.scheduler.last_epoch
        for group, scale in zip(
            self.optimizer.param_groups, self.scheduler.lr_lambdas, strict=True
        ):
            group["lr"] = optim.lr * scale(step)


def workdir_lock(workdir: str | Path) -> contextlib.AbstractContextManager[None]:
    """One training at a time in `workdir` (the lock says which process holds it)."""
    return hold_lock(
        Path(workdir) / TRAIN_LOCK_FILE,
        what="training",
        advice="wait for it to finish, stop that process, or use another run.workdir",
    )


def clear_run(workdir: str | Path) -> None:
    """Remove what a run wrote in `workdir` (checkpoints, metrics, config): `--restart`."""
    workdir = Path(workdir)
    for name in ("checkpoints", "tensorboard"):
        shutil.rmtree(workdir / name, ignore_errors=True)
    for name in ("metrics.jsonl", "config.toml"):
        (workdir / name).unlink(missing_ok=True)
    for path in workdir.glob("validation*.jsonl"):  # one file per validation set
        path.unlink()


def train(
    config: TrainConfig,
    *,
    env: DistributedEnvironment | None = None,
    stop: StopFlag | None = None,
    on_checkpoint: OnCheckpoint | None = None,
    apply_config_changes: bool = False,
) -> dict[str, Any]:
    """Run (or resume) the training of `config` in this process: joins the process group when
    launched with several, trains, leaves it. Returns {"status", "step", "checkpoint", "loss"}.
    The main process holds the run directory's lock; `apply_config_changes`: see `Trainer`."""
    env = env or resolve_environment(config.run.device)
    lock = workdir_lock(config.run.workdir) if env.is_main else contextlib.nullcontext()
    with lock:
        return _train(config, env, stop, on_checkpoint, apply_config_changes)


def _train(
    config: TrainConfig,
    env: DistributedEnvironment,
    stop: StopFlag | None,
    on_checkpoint: OnCheckpoint | None,
    apply_config_changes: bool,
) -> dict[str, Any]:
    joined = env.is_distributed and not dist.is_initialized()
    init_process_group(env, config.distributed.backend, config.distributed.timeout_minutes)
    try:
        trainer = Trainer(
            config,
            env,
            stop=stop,
            on_checkpoint=on_checkpoint,
            apply_config_changes=apply_config_changes,
        )
        try:
            return trainer.fit()
        finally:
            trainer.close()
    finally:
        if joined:
            destroy_process_group()
