"""The PositionIC training loop on accelerate: stages, accumulation to the global batch, clipping,
EMA, checkpoints, evaluation by the benchmark, logging, Ctrl-C and SIGTERM.

Run it as `picbench train CONFIG` (one process), `accelerate launch $(which picbench) train CONFIG`
or `torchrun --nproc-per-node N $(which picbench) train CONFIG`; accelerate picks DDP, FSDP or
DeepSpeed from its launch config (`reference_impl/configs/train/accelerate/`). Per optimizer step each of the W
processes runs `global_batch / (W * micro_batch)` micro-batches; process r takes micro-batches
`s * global_batch/micro_batch + r * A + a` of the stage's fixed order, with gradients synced on
the last, so W processes see the batches and the mean gradient one process sees. Every collective
(loss averaging, the stop flag, state extraction for saving) is reached by every rank, and saving
is a step every rank takes (UNO's trainer hangs when only rank 0 reaches a barrier: UNO#52, #71).

One trainer per output folder (a lock, `picbench.locks`: a second one is refused at once, naming
the first). Ctrl-C or SIGTERM stops at the end of the step under way, with a checkpoint of it
(`picbench.interrupts`). A loss or gradient that is not finite stops training before the
optimizer takes it, with a checkpoint of the last finite step. A resume refuses a changed pair
set or config (naming what changed) unless told to go on.

Learning rate per stage: linear warmup over `optim.warmup_steps`, then cosine to 0 at the stage's
last step (UNO's trainer defaults to constant after warmup; the paper says cosine with warmup).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from picbench.atomic import atomic_write
from picbench.checkpoints import weights_root
from picbench.errors import PicbenchError
from picbench.interrupts import StopRequest, stop_requests
from picbench.locks import FolderLock, FolderLockedError
from picbench.reference_impl.lora import (
    add_trainable_lora,
    lora_state_dict,
    random_uno_lora,
    to_uno_layout,
)
from picbench.reference_impl.pipeline_weights import PipelineWeights, WeightsSettings
from picbench.reference_impl.training import checkpoint as ckpt
from picbench.reference_impl.training.config import Config
from picbench.reference_impl.training.data import MicroBatchOrder, PairEntry, PairSource
from picbench.reference_impl.training.objective import (
    EncodedPair,
    encode_pair,
    flow_matching_loss,
    prepare_inputs,
)
from picbench.trainlog import TRAIN_LOG, read_training_log

LOG_FILE = TRAIN_LOG
ADAPTER = "positionic"


class TrainingInterrupted(PicbenchError):
    """Ctrl-C or SIGTERM: a checkpoint was saved; `--resume` continues from it."""

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class TrainingDiverged(PicbenchError):
    """The loss or gradient norm of a step was not finite; the last finite state was saved."""


@dataclass(frozen=True)
class TrainResult:
    out: Path
    global_step: int
    lora: Path
    uno_lora: Path
    skipped: dict[str, str]
    already_finished: bool = False  # `--resume` of a training that had run every step: nothing was trained


def learning_rate(base: float, step: int, steps: int, warmup: int) -> float:
    """Linear warmup to `base`, then cosine to 0 at step `steps` (the step about to be taken)."""
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def config_tables(config: Config) -> dict[str, str]:
    """A hash per table that must not change across a resume (all but output and evaluation)."""
    return {
        k: hashlib.sha256(json.dumps(v, sort_keys=True, default=str).encode()).hexdigest()[:16]
        for k, v in asdict(config).items()
        if k not in ("source", "checkpoint", "eval")
    }


def config_hash(config: Config) -> str:
    """What must not change across a resume: everything but the output and evaluation settings."""
    payload = {k: v for k, v in asdict(config).items() if k not in ("source", "checkpoint", "eval")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def micro_batch_seed(seed: int, stage: str, m: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{stage}/{m}".encode()).digest()[:8], "little") >> 1


class Trainer:
    """Builds everything from the config (pairs checked first), then :meth:`run`."""

    def __init__(
        self,
        config: Config,
        *,
        resume: bool = False,
        allow_change: bool = False,
        progress: bool = True,
        on_step: Callable[[dict], None] | None = None,
    ) -> None:
        from accelerate import Accelerator

        self.config, self.resume, self.allow_change, self.show_progress, self.on_step = config, resume, allow_change, progress, on_step
        self.out = config.resolve(config.checkpoint.out)
        cuda = torch.cuda.is_available()
        if config.model.attention_backend == "flex" and not cuda:
            raise PicbenchError(
                f"{config.source}: model.attention_backend = 'flex' trains only on CUDA (its compiled backward needs Triton); "
                "use 'auto' or 'sdpa_lowrank' on this machine"
            )
        precision = config.train.mixed_precision if cuda else "no"
        trackers = list(config.train.trackers)
        self.accelerator = Accelerator(cpu=not cuda, mixed_precision=precision, log_with=trackers or None, project_dir=str(self.out))
        self._check_writable()
        self._lock = self._take_lock()
        try:
            self._build(trackers, precision)
        except BaseException:
            self._release()
            raise

    def _build(self, trackers: list[str], precision: str) -> None:
        from accelerate.utils import set_seed

        config, acc = self.config, self.accelerator
        config.check_world(acc.num_processes)
        self.accumulation = config.accumulation(acc.num_processes)
        self.source = PairSource(config)  # every pair and image header checked before any model is built
        self._check_out()
        set_seed(config.train.seed)
        self.pipe = self._pipeline(torch.bfloat16 if precision == "bf16" else torch.float32)
        self.params = add_trainable_lora(self.pipe.transformer, rank=config.model.rank, init=self._init_lora(), adapter_name=ADAPTER)
        if config.model.gradient_checkpointing:
            self.pipe.transformer.enable_gradient_checkpointing()
        self.pipe.transformer.train()
        o = config.optim
        self.optimizer = torch.optim.AdamW(self.params, lr=config.stages[0].lr, betas=o.betas, weight_decay=o.weight_decay, eps=o.eps)
        self.model, self.optimizer = acc.prepare(self.pipe.transformer, self.optimizer)
        self.ema = [p.detach().clone() for p in self.params] if config.train.ema_decay else None
        self.state = ckpt.TrainState(
            config_hash=config_hash(config), config_tables=config_tables(config), pairs_hash=self.source.pairs_hash
        )
        if self.resume:
            self._restore()
        self.validator = None
        if config.eval.every and acc.is_main_process:
            from picbench.reference_impl.training.evaluation import Validator

            self.validator = Validator(config, acc.device)
        if trackers:
            acc.init_trackers("positionic", config={"config": str(config.source)})
        self._stop = StopRequest()
        self._latents: dict[str, EncodedPair] = {}

    # -- building -----------------------------------------------------------------------------

    def _take_lock(self) -> FolderLock | None:
        """The main process locks `checkpoint.out` before anything else; every rank learns whether it got it."""
        from accelerate.utils import gather_object

        acc, lock, error = self.accelerator, None, None
        if acc.is_main_process:
            lock = FolderLock(self.out, verb="picbench train", remedy="Wait for that trainer to finish, or choose another checkpoint.out")
            try:
                lock.acquire()
            except PicbenchError as exc:
                lock, error = None, exc
        reasons = [str(error or "")] if acc.num_processes == 1 else gather_object([str(error or "")])
        refused = next((r for r in reasons if r), "")
        if refused:
            if lock is not None:
                lock.release()
            raise error or FolderLockedError(refused)
        return lock

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _check_writable(self) -> None:
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            probe = self.out / f".write-test-{self.accelerator.process_index}"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise PicbenchError(f"checkpoint.out {self.out} is not writable: {exc.strerror or exc}") from None

    def _check_out(self) -> None:
        if not self.resume and ckpt.latest_checkpoint(self.out) is not None:
            raise PicbenchError(f"{self.out} already holds checkpoints: pass --resume to continue, or choose another checkpoint.out")

    @property
    def _weights_dir(self) -> Path | None:
        """The weights folder (DIR/<hub id>): the config's, else $PICBENCH_WEIGHTS_DIR."""
        wd = self.config.weights_dir
        return weights_root(self.config.resolve(wd) if wd else None)

    @property
    def _weights(self) -> PipelineWeights:
        """Where the base and the initial LoRA come from (`reference_impl/pipeline_weights.py`, shared with `picbench run`)."""
        settings = WeightsSettings("model.init_lora", "weights_dir = DIR (in the config)")
        return PipelineWeights("positionic (picbench train)", self._weights_dir, self.config.smoke, settings, self.config.resolve)

    def _pipeline(self, dtype: torch.dtype) -> Any:
        from picbench.reference_impl.pipeline import PositionICPipeline

        base = self.config.model.base
        if self.config.smoke:
            from picbench.tiny.flux import tiny_components

            pipe = PositionICPipeline(**tiny_components(seed=self.config.train.seed)).to(dtype=dtype)
        else:
            pipe = self._weights.load_base(base, lambda path: PositionICPipeline.from_pretrained(path, dtype=dtype))
        pipe.set_progress_bar_config(disable=True)
        pipe.to(self.accelerator.device)
        pipe.vae.to(torch.float32)  # UNO encodes in float32 (train.py:364-365 @ d305981)
        for module in (pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
            module.requires_grad_(False).eval()
        return pipe

    def _init_lora(self) -> Any:
        """The LoRA training starts from: a file, a random one in UNO's layout (a tiny run without UNO's file), or None."""
        lora = self._weights.lora(self.config.model.init_lora)
        if lora.random_uno:
            return random_uno_lora(self.pipe.transformer, rank=self.config.model.rank, seed=self.config.train.seed)
        return lora.file

    # -- resume -------------------------------------------------------------------------------

    def _restore(self) -> None:
        folder = ckpt.latest_checkpoint(self.out)
        if folder is None:
            raise PicbenchError(f"--resume: no checkpoint under {self.out / 'checkpoints'} (start without --resume)")
        state = ckpt.read_state(folder)
        changes = self._changes(state)
        if changes and not self.allow_change:
            raise PicbenchError(
                f"--resume: {folder} was written with {'; '.join(changes)}. Resume with the same pair set and config, start a new "
                "checkpoint.out, or pass --allow-data-change to continue anyway"
            )
        if changes and self.accelerator.is_main_process:
            self.accelerator.print(
                f"warning: --allow-data-change: continuing from {folder} although it was written with {'; '.join(changes)}"
            )
        self._load_params(ckpt.read_lora(folder), self.params, folder)
        if self.ema is not None:
            self._load_params(ckpt.read_lora(folder, ema=True), self.ema, folder)
        if self.accelerator.distributed_type.value in ("FSDP", "DEEPSPEED"):
            self.accelerator.load_state(str(folder / "engine"))
        else:
            try:
                self.optimizer.load_state_dict(ckpt.read_optimizer(folder))
            except (ValueError, KeyError, TypeError) as exc:
                raise ckpt.CheckpointError(f"{folder / ckpt.OPTIMIZER_FILE} does not fit this model's optimizer: {exc}") from None
        ckpt.load_rng(folder, self.accelerator.process_index)
        state.config_hash, state.config_tables, state.pairs_hash = self.state.config_hash, self.state.config_tables, self.state.pairs_hash
        self.state = state
        self._truncate_log(state.global_step)

    def _changes(self, saved: ckpt.TrainState) -> list[str]:
        """What differs between the checkpoint's pair set and config and this run's, in words."""
        changes = []
        if saved.pairs_hash and saved.pairs_hash != self.state.pairs_hash:
            changes.append(f"another pair set ({self.source.file} hashed {saved.pairs_hash} then, {self.state.pairs_hash} now)")
        if saved.config_hash != self.state.config_hash:
            tables = [t for t, h in self.state.config_tables.items() if saved.config_tables.get(t) != h] if saved.config_tables else []
            changes.append(f"another config ({', '.join(tables) or 'model/data/train/optim/stages'} changed)")
        return changes

    def _param_names(self) -> list[str]:
        """diffusers names of `self.params`, in order (a tied lora_A by its first module, to_q)."""
        names, seen = [], set()
        for name, param in self.accelerator.unwrap_model(self.model).named_parameters(remove_duplicate=False):
            if id(param) in {id(p) for p in self.params} and id(param) not in seen:
                seen.add(id(param))
                names.append("transformer." + name.replace(f".{ADAPTER}", ""))
        return names

    def _load_params(self, state: dict[str, torch.Tensor], into: list[torch.Tensor], folder: Path) -> None:
        for name, param in zip(self._param_names(), into):
            if name not in state:
                raise ckpt.CheckpointError(f"--resume: the LoRA in {folder} lacks {name!r}")
            if state[name].shape != param.shape:
                raise ckpt.CheckpointError(
                    f"--resume: {name!r} in {folder} has shape {tuple(state[name].shape)}, this model's {tuple(param.shape)}"
                )
            with torch.no_grad():
                param.copy_(state[name])

    def _truncate_log(self, global_step: int) -> None:
        """Drop log lines past the checkpoint (written by the run that was killed). A torn last
        line (a kill during the append) is dropped and reported; a damaged line before it is an
        error naming the file and line."""
        log = self.out / LOG_FILE
        if not self.accelerator.is_main_process or not log.is_file():
            return
        records, torn = read_training_log(log)
        if torn:
            self.accelerator.print(f"warning: {log}: dropped a torn last line ({torn!r:.80}), what a kill during the append leaves")
        with atomic_write(log) as f:
            f.write("".join(json.dumps(r, default=float) + "\n" for r in records if r.get("step", 0) <= global_step))

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> TrainResult:
        acc, cfg = self.accelerator, self.config
        total = sum(s.steps for s in cfg.stages)
        progress = self._progress(total) if self.show_progress and acc.is_local_main_process else contextlib.nullcontext()
        try:
            if self.finished:  # resumed after the last step: nothing to train, and no bar showing "loss nan"
                return replace(self._export(), already_finished=True)
            with stop_requests() as self._stop, progress as bar:
                fields = {"loss": float("nan"), "mem": "", "rate": 0.0}
                task = bar.add_task("training", total=total, completed=self.state.global_step, **fields) if bar else None
                while self.state.stage < len(cfg.stages):
                    stage = cfg.stages[self.state.stage]
                    order = MicroBatchOrder(self.source.by_stage[stage.name], cfg.train.micro_batch, cfg.train.seed, stage.name)
                    while self.state.step < stage.steps:
                        record = self._step(stage, order)
                        if bar is not None:
                            bar.update(task, advance=1, loss=record["loss"], mem=_memory(), rate=1 / record["seconds"])
                        self._after_step(record, stage)
                    self.state.stage, self.state.step = self.state.stage + 1, 0
            self._save()
            return self._export()
        except _NonFinite as exc:
            self._save()
            raise TrainingDiverged(
                f"{exc} at step {self.state.global_step + 1} (stage {exc.stage!r}, lr {exc.lr:.3g}): training stopped before the "
                f"optimizer took it; the last finite state, step {self.state.global_step}, is saved in {self.out / 'checkpoints'}. "
                "Lower the learning rate (and start anew, or --resume --allow-data-change)"
            ) from None
        finally:
            self._release()
            acc.end_training()

    @property
    def finished(self) -> bool:
        """Every stage has run all its steps (a resumed training that had already ended)."""
        return self.state.stage >= len(self.config.stages)

    @property
    def smoke(self) -> bool:
        """Random-weight models (`models = "tiny"`): its losses and scores mean nothing."""
        return self.config.smoke

    def _step(self, stage: Any, order: MicroBatchOrder) -> dict[str, Any]:
        acc, cfg = self.accelerator, self.config
        started = time.perf_counter()
        lr = learning_rate(stage.lr, self.state.step, stage.steps, cfg.optim.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        per_step = cfg.train.global_batch // cfg.train.micro_batch
        total_loss = torch.zeros((), device=acc.device)
        for a in range(self.accumulation):
            m = self.state.step * per_step + acc.process_index * self.accumulation + a
            batch = self._load(order[m])
            sync = contextlib.nullcontext() if a == self.accumulation - 1 else acc.no_sync(self.model)
            with sync, acc.autocast():
                if batch:
                    inputs = prepare_inputs(
                        self.pipe,
                        batch,
                        torch.Generator().manual_seed(micro_batch_seed(cfg.train.seed, stage.name, m)),
                        caption_dropout=cfg.data.caption_dropout,
                        guidance=cfg.train.guidance,
                        vaa=cfg.model.vaa_settings,
                        logit_normal=cfg.train.timesteps == "logit_normal",
                    )
                    loss = flow_matching_loss(self.model, inputs)
                else:  # every pair of this micro-batch was unreadable: a zero gradient keeps the ranks in step
                    loss = sum(p.sum() for p in self.params) * 0.0
                acc.backward(loss / self.accumulation)
            total_loss += loss.detach() / self.accumulation
        grad_norm = acc.clip_grad_norm_(self.params, cfg.train.max_grad_norm)
        mean_loss = acc.reduce(total_loss, reduction="mean").item()
        if not (math.isfinite(mean_loss) and math.isfinite(float(grad_norm))):
            self.optimizer.zero_grad(set_to_none=True)
            raise _NonFinite(f"loss {mean_loss} / gradient norm {float(grad_norm)} is not finite", stage.name, lr)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            with torch.no_grad():
                for shadow, p in zip(self.ema, self.params):
                    shadow.lerp_(p.detach(), 1 - cfg.train.ema_decay)
        self.state.step += 1
        self.state.global_step += 1
        return {
            "step": self.state.global_step,
            "stage": stage.name,
            "loss": mean_loss,
            "lr": lr,
            "grad_norm": float(grad_norm),
            "seconds": time.perf_counter() - started,
            "skipped": len(self.state.skipped),
            "world": acc.num_processes,
            "smoke": self.smoke,
        }

    def _load(self, entries: list[PairEntry]) -> list[EncodedPair]:
        """Decode and encode a micro-batch; a pair whose images fail now is skipped, counted and named."""
        encoded = []
        for entry in entries:
            if entry.sample.id in self._latents:
                encoded.append(self._latents[entry.sample.id])
                continue
            try:
                pair = encode_pair(self.pipe, self.source.load(entry))
            except (OSError, ValueError, PicbenchError) as exc:
                if entry.sample.id not in self.state.skipped:
                    self.state.skipped[entry.sample.id] = f"{type(exc).__name__}: {exc}"
                    if self.accelerator.is_main_process:
                        self.accelerator.print(f"skipped pair {entry.sample.id}: {exc}")
                continue
            if self.config.data.cache_latents:
                self._latents[entry.sample.id] = pair
            encoded.append(pair)
        return encoded

    def _after_step(self, record: dict[str, Any], stage: Any) -> None:
        acc, cfg = self.accelerator, self.config
        step = self.state.global_step
        if cfg.eval.every and step % cfg.eval.every == 0:
            if self.validator is not None:
                try:
                    record["eval"] = self.validator(self.pipe, step, self.out)
                except OSError as exc:  # an evaluation image that cannot be written: the same words as a checkpoint's
                    raise self._disk_error(Path(exc.filename) if exc.filename else self.out / "eval", exc) from None
            acc.wait_for_everyone()
        if acc.is_main_process:
            try:
                with open(self.out / LOG_FILE, "a", encoding="utf-8") as log:
                    log.write(json.dumps(record, default=float) + "\n")
            except OSError as exc:
                raise self._disk_error(self.out / LOG_FILE, exc) from None
        acc.log({k: v for k, v in _flat(record).items() if isinstance(v, (int, float))}, step=step)
        if self.on_step is not None:
            self.on_step(record)
        stop = torch.tensor(float(bool(self._stop)), device=acc.device)
        stop = acc.reduce(stop, reduction="sum").item() > 0
        if stop or step % cfg.checkpoint.every == 0:
            self._save()
        if stop:
            how = f"stopped by {self._stop.signal.name}" if self._stop.signal is not None else "stopped (another rank was signalled)"
            raise TrainingInterrupted(
                f"{how} at step {step}: checkpoint saved in {self.out / 'checkpoints'}; continue with --resume",
                self._stop.exit_code or 130,
            )

    def _disk_error(self, path: Path, exc: OSError) -> PicbenchError:
        kept = ckpt.latest_checkpoint(self.out)
        return PicbenchError(
            f"cannot write {path}: {exc.strerror or exc}. "
            + (f"The checkpoint {kept} is whole; free space and continue with --resume" if kept else "No checkpoint was written yet")
        )

    # -- saving -------------------------------------------------------------------------------

    def _lora(self, ema: bool = False) -> dict[str, torch.Tensor]:
        """The LoRA (or its EMA) in diffusers names. Every rank calls it."""
        transformer = self.accelerator.unwrap_model(self.model)
        if not ema:
            return lora_state_dict(transformer, ADAPTER)
        live = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, shadow in zip(self.params, self.ema):
                p.copy_(shadow)
            state = lora_state_dict(transformer, ADAPTER)
            for p, saved in zip(self.params, live):
                p.copy_(saved)
        return state

    def _save(self) -> None:
        """Every rank takes part; only the main process writes the shared files and renames. A
        write that fails (full disk, file-size limit) leaves the previous checkpoint as it was."""
        final = ckpt.checkpoint_dir(self.out, self.state.global_step)
        tmp = final.parent / f".{final.name}.tmp"
        try:
            self._write_checkpoint(tmp, final)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise self._disk_error(Path(exc.filename) if exc.filename else final, exc) from None

    def _write_checkpoint(self, tmp: Path, final: Path) -> None:
        acc = self.accelerator
        if acc.is_main_process:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        from accelerate.utils import gather_object

        for skipped in gather_object([self.state.skipped]):  # each rank met its own pairs
            self.state.skipped.update(skipped)
        lora = self._lora()
        ema = self._lora(ema=True) if self.ema is not None else None
        engine = acc.distributed_type.value in ("FSDP", "DEEPSPEED")
        if engine:
            acc.save_state(str(tmp / "engine"))
        ckpt.save_rng(tmp, acc.process_index)
        if acc.is_main_process:
            transformer = acc.unwrap_model(self.model)
            ckpt.write_checkpoint(
                tmp,
                lora=lora,
                uno=to_uno_layout(lora, transformer),
                ema=ema,
                optimizer=None if engine else self.optimizer.state_dict(),
                state=self.state,
            )
        acc.wait_for_everyone()
        if acc.is_main_process:
            ckpt.publish(tmp, final, self.config.checkpoint.keep)
        acc.wait_for_everyone()

    def _export(self) -> TrainResult:
        """The final LoRA in both layouts under OUT/lora/."""
        final = ckpt.checkpoint_dir(self.out, self.state.global_step)
        folder = self.out / "lora"
        if self.accelerator.is_main_process:
            for name in (ckpt.LORA_FILE, ckpt.UNO_LAYOUT_FILE, f"ema_{ckpt.LORA_FILE}"):
                if (final / name).is_file():
                    try:
                        with atomic_write(folder / name, "wb") as f:
                            f.write((final / name).read_bytes())
                    except OSError as exc:
                        raise self._disk_error(folder / name, exc) from None
        self.accelerator.wait_for_everyone()
        return TrainResult(
            self.out, self.state.global_step, folder / ckpt.LORA_FILE, folder / ckpt.UNO_LAYOUT_FILE, dict(self.state.skipped)
        )

    # -- feel ---------------------------------------------------------------------------------

    @staticmethod
    def _progress(total: int) -> Any:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        return Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:.2f} steps/s"),
            TimeRemainingColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn("{task.fields[mem]}"),
        )


class _NonFinite(Exception):
    """Raised inside a step whose loss or gradient is not finite (before the optimizer steps)."""

    def __init__(self, what: str, stage: str, lr: float) -> None:
        super().__init__(what)
        self.stage, self.lr = stage, lr


def _flat(record: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in record.items() if k != "eval"}
    out.update({f"eval/{k}": v for k, v in (record.get("eval") or {}).items()})
    return out


def _memory() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
    import resource

    return f"rss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB"
