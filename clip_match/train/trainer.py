"""The training loop: contrastive fine-tuning of a cn_clip ``CLIP`` on one process or under torchrun.

One optimiser step sees ``batch x processes x accum_freq`` pairs as one contrastive batch.
Epochs have a fixed number of steps (``pairs // global batch``; the remainder is dropped), so a
data position is just the step number, and a resumed run reproduces the uninterrupted one.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import random
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from ..errors import ClipMatchError
from ..fsutil import atomic_file, ensure_dir, exclusive_lock
from ..model import create_model, load_config, save_slim_checkpoint
from ..model.checkpoint import checkpoint_weights, cn_clip_state, load_weights
from ..retrieval_metrics import retrieval_metrics
from . import checkpoint, distributed
from .config import TrainConfig, parse
from .data import ImageDataset, KnownPairs, PairDataset, ResumableSampler, ValidationSet, collate_pairs, encode_texts
from .distributed import DistEnv
from .loss import batch_accuracy, clip_loss, contrastive_logits, match_loss, same_label_mask
from .metrics import MetricsLog

log = logging.getLogger("clip_match.train")
MAX_LOGIT_SCALE = math.log(100)
TRAINER_TAG = "clip_match.train"
RUN_LOCK = ".trainer.lock"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m clip_match.train [flags]``: train, print errors as one line, return the exit status."""
    try:
        train(parse(sys.argv[1:] if argv is None else argv))
    except ClipMatchError as error:
        print(f"clip_match.train: error: {error}", file=sys.stderr)
        return 2
    return 0


def train(config: TrainConfig) -> Path:
    """Run training; returns the run directory (``LOGS/NAME``)."""
    env = distributed.setup(config.device)
    try:
        with _log_to(logging.StreamHandler(sys.stderr), env), _one_trainer(config, env):
            trainer = Trainer(config, env)  # checks the data, model and resume state; writes nothing more
            if not env.is_main:
                return trainer.fit()
            with _log_to(logging.FileHandler(trainer.run_dir / "out.log", encoding="utf-8"), env):
                return trainer.fit()
    finally:
        distributed.cleanup(env)


def _one_trainer(config: TrainConfig, env: DistEnv) -> contextlib.AbstractContextManager:
    """Rank 0 holds the run directory's lock for the run's life: a second trainer started on the same
    LOGS/NAME stops at once instead of writing checkpoints and metrics over this one's."""
    if not env.is_main:
        return contextlib.nullcontext()
    return exclusive_lock(ensure_dir(config.run_dir) / RUN_LOCK, "trainer")


@contextlib.contextmanager
def _log_to(handler: logging.Handler, env: DistEnv) -> Iterator[None]:
    """Readable log lines (INFO on rank 0, warnings from the others) to ``handler`` while training."""
    handler.setFormatter(logging.Formatter("%(asctime)s | %(levelname)s | %(message)s", "%Y-%m-%d %H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO if env.is_main else logging.WARNING)
    log.propagate = False
    try:
        yield
    finally:
        log.removeHandler(handler)
        handler.close()


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    def __init__(self, config: TrainConfig, env: DistEnv):
        self.config, self.env = config, env
        self.run_dir = Path(config.run_dir)
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self.model_config = load_config(config.model, context_length=config.context_length)
        self.batch_size = config.per_process_batch(env.world_size)
        self.global_batch = self.batch_size * env.world_size
        self.autocast_dtype = self._autocast_dtype()

        self.train_set = PairDataset(config.train_data, self.model_config.image_resolution,
                                     self.model_config.context_length, config.augment, config.seed,
                                     self.model_config.framing)
        self.known_pairs = KnownPairs.read(self.train_set.reader) if config.label_aware else None
        self.val_set = ValidationSet.read(config.val_data) if config.val_data else None
        self.steps_per_epoch = self._steps_per_epoch(len(self.train_set))
        self.total_steps = config.max_steps or self.steps_per_epoch * config.max_epochs
        self.epochs = math.ceil(self.total_steps / self.steps_per_epoch)

        resume = self._resume_path()
        _seed_everything(config.seed)  # same initial weights on every rank and for every world size
        saved = checkpoint.load(resume) if resume else None
        model = create_model(self.model_config)
        if saved is not None:
            load_weights(model, checkpoint_weights(saved, resume), f"{resume} (model {self.model_config.name})")
        self.model = self._prepare(model)
        self.optimizer = self._optimizer()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        use_scaler = self.autocast_dtype == torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        self.step = 0
        _seed_everything(config.seed + env.rank)  # dropout etc. differ between ranks
        if saved is not None:
            self._restore(resume, saved)
        self.loader = self._train_loader()
        self.metrics = MetricsLog(self.run_dir)
        self.last_saved: Path | None = resume  # the last good weights, for the message if training fails
        self.latest_step = self.step  # epoch_latest.pt already holds this step (when resumed)
        self.validated_step = -1  # step of the last validation (by step interval and epoch end at once: one)

    # ----- set-up -------------------------------------------------------------------------

    def _autocast_dtype(self) -> torch.dtype | None:
        precision, device = self.config.precision, self.env.device
        if precision == "fp32":
            return None
        if precision == "bf16":  # on CPU too: the demo config steps 1.9x faster on an AVX512-BF16 CPU
            return torch.bfloat16
        if device.type != "cuda":
            log.info("precision %s applies on GPU only; training in fp32 on %s", precision, device)
            return None
        return torch.float16

    def _steps_per_epoch(self, pairs: int) -> int:
        """Optimiser steps in one pass over ``pairs``: the last one smaller unless --drop-last (the
        sampler pads each process's share to the same count, as cn_clip pads the dataset)."""
        config = self.config
        per_step = self.batch_size * config.accum_freq
        per_process = math.ceil(pairs / self.env.world_size)
        steps = per_process // per_step if config.drop_last else math.ceil(per_process / per_step)
        if steps == 0:
            raise ClipMatchError(
                f"{config.train_data}: {pairs} training pairs are fewer than one step's batch of "
                f"{per_step * self.env.world_size} (batch {self.batch_size} x {self.env.world_size} processes x "
                f"accum {config.accum_freq}) and --drop-last drops it" if pairs else
                f"{config.train_data}: no training pairs")
        return steps

    def _resume_path(self) -> Path | None:
        """The run's own latest checkpoint when there is one (re-running a command goes on where it
        stopped, whatever --resume and --reset-* say: they are about the run's start), unless
        --restart; else --resume (where a new run starts from)."""
        latest = self.checkpoint_dir / "epoch_latest.pt"
        self.own_run = latest.is_file() and not self.config.restart
        if self.own_run:
            ignored = [flag for flag, given in (("--resume " + str(self.config.resume), self.config.resume),
                                                ("--reset-data-offset", self.config.reset_data_offset),
                                                ("--reset-optimizer", self.config.reset_optimizer)) if given]
            log.info("=> %s exists: going on with this run exactly%s (--restart or a new --name starts over)", latest,
                     f"; {', '.join(ignored)} applied to its start only" if ignored else "")
            return latest
        if latest.is_file():
            log.info("=> --restart: %s is left behind; starting over from %s", latest, self.config.resume or "scratch")
        return Path(self.config.resume) if self.config.resume else None

    def _prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        config = self.config
        if config.freeze_vision:
            model.visual.requires_grad_(False)
        if config.freeze_text:
            model.bert.requires_grad_(False)
            model.text_projection.requires_grad_(False)
        if config.grad_checkpointing:
            model.set_grad_checkpointing()
            # cn_clip checkpoints without choosing use_reentrant, also in the no-grad accumulation pass:
            # harmless (gradients checked equal), but it would warn on every step
            warnings.filterwarnings("ignore", message="torch.utils.checkpoint: the use_reentrant parameter")
            warnings.filterwarnings("ignore", message="None of the inputs have requires_grad=True")
        if config.use_bn_sync and self.env.distributed:
            if self.env.device.type == "cuda":
                model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            else:
                log.warning("--use-bn-sync needs GPUs; BatchNorm statistics stay per process on CPU")
        model.to(self.env.device)
        self.ddp = model
        if self.env.distributed:
            device_ids = [self.env.device] if self.env.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(model, device_ids=device_ids)
            if config.grad_checkpointing:
                self.ddp._set_static_graph()
        return model

    def _optimizer(self) -> torch.optim.Optimizer:
        """AdamW; no weight decay on biases, norm weights and the logit scale (all < 2-D)."""
        trainable = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        if not trainable:
            raise ClipMatchError("--freeze-vision and --freeze-text leave nothing to train")
        decay = [p for n, p in trainable if p.ndim >= 2 and "logit_scale" not in n]
        no_decay = [p for n, p in trainable if p.ndim < 2 or "logit_scale" in n]
        config = self.config
        return torch.optim.AdamW([{"params": no_decay, "weight_decay": 0.0},
                                  {"params": decay, "weight_decay": config.wd}],
                                 lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps)

    def _lr_factor(self, step: int) -> float:
        """cn_clip's schedule: linear warm-up to the peak, then cosine to zero (or constant)."""
        warmup = self.config.warmup
        if step < warmup:
            return (step + 1) / warmup
        if self.config.skip_scheduler:
            return 1.0
        progress = (step - warmup) / max(self.total_steps - warmup, 1)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    def _train_loader(self) -> DataLoader:
        self.sampler = ResumableSampler(self.train_set, self.env.world_size, self.env.rank, self.config.seed)
        return DataLoader(self.train_set, batch_size=self.batch_size, sampler=self.sampler,
                          drop_last=self.config.drop_last, num_workers=self.config.loader_workers,
                          collate_fn=collate_pairs,
                          pin_memory=self.env.device.type == "cuda",
                          generator=torch.Generator().manual_seed(self.config.seed))

    def _restore(self, path: Path, state: dict) -> None:
        """Weights are loaded already; restore the rest where the checkpoint ``state`` is this trainer's."""
        reset_optimizer = self.config.reset_optimizer and not self.own_run
        reset_data_offset = self.config.reset_data_offset and not self.own_run
        if state.get("trainer") != TRAINER_TAG:
            log.info("=> %s: weights loaded (no trainer state: fresh optimiser, step 0)", path)
            return
        if not reset_optimizer:
            try:
                self.optimizer.load_state_dict(state["optimizer"])
            except ValueError as error:  # e.g. other parameter groups after --freeze-text/--freeze-vision changed
                raise ClipMatchError(f"{path}: its optimiser state does not fit this run ({error}); pass "
                                     "--reset-optimizer to keep the weights with a fresh optimiser") from None
            if not reset_data_offset:  # (a reset step restarts the schedule: warm-up, then the cosine)
                self.scheduler.load_state_dict(state["scheduler"])
            if self.scaler is not None and state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
        if not reset_data_offset:
            self.step = int(state["step"])
            if state["steps_per_epoch"] != self.steps_per_epoch:
                log.warning("%s: saved with %d steps per epoch, now %d (data or batch changed); "
                            "continuing from step %d", path, state["steps_per_epoch"], self.steps_per_epoch, self.step)
            rng = state["rng"]
            if len(rng) == self.env.world_size:
                checkpoint.set_rng_state(rng[self.env.rank])
            else:
                log.warning("%s: saved by %d processes, now %d; random states not restored",
                            path, len(rng), self.env.world_size)
        log.info("=> resumed from %s at step %d (epoch %d)", path, self.step, self.step // self.steps_per_epoch + 1)

    # ----- the loop -----------------------------------------------------------------------

    def fit(self) -> Path:
        config, env = self.config, self.env
        if env.is_main:
            ensure_dir(self.checkpoint_dir)
            with atomic_file(self.run_dir / "params.json", "w", encoding="utf-8") as handle:
                json.dump({**config.to_dict(), "world_size": env.world_size, "model_config": self.model_config.to_dict()},
                          handle, indent=2, ensure_ascii=False)
            self.metrics.truncate_after(self.step)
        log.info("model %s | %d training pairs | batch %d x %d processes x accum %d | %d steps/epoch, "
                 "%d steps (%d epochs) | %s | device %s", self.model_config.name, len(self.train_set),
                 self.batch_size, env.world_size, config.accum_freq, self.steps_per_epoch, self.total_steps,
                 self.epochs, ("label-aware loss" if config.label_aware else "plain InfoNCE")
                 + (f" + {config.match_loss:g} x match loss" if config.match_loss else ""), env.device)
        if self.step >= self.total_steps:
            log.info("nothing to do: already at step %d of %d", self.step, self.total_steps)
            if not (self.checkpoint_dir / "slim.pt").is_file():  # stopped between epoch_latest.pt and slim.pt
                self._save_slim()
            return self.run_dir
        progress = tqdm(total=self.total_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True,
                        disable=True if not env.is_main else None)
        try:
            while self.step < self.total_steps:
                self._run_epoch(self.step // self.steps_per_epoch, progress)
        finally:
            progress.close()
        self._save_latest()
        self._save_slim()
        distributed.barrier(self.env)  # no rank tears the process group down while another still writes
        return self.run_dir

    def _save_slim(self) -> None:
        """The final weights alone, for `clip-match export` (rank 0 writes them)."""
        if self.env.is_main:
            slim = save_slim_checkpoint(self.model, self.checkpoint_dir / "slim.pt", self.model_config,
                                        epoch=self.epochs, step=self.step)
            log.info("training done: %d steps; weights for `clip-match export`: %s", self.step, slim)

    def _run_epoch(self, epoch: int, progress: tqdm) -> None:
        config = self.config
        done_in_epoch = self.step % self.steps_per_epoch
        self.sampler.set_position(epoch, done_in_epoch * config.accum_freq * self.batch_size)
        self.train_set.epoch = epoch
        self._train_mode()
        batches = iter(self.loader)
        started, samples = time.perf_counter(), 0
        for _ in range(done_in_epoch, self.steps_per_epoch):
            if self.step >= self.total_steps:
                break
            micro_batches = list(itertools.islice(batches, config.accum_freq))  # (the last step may have fewer)
            loss, accuracy, lr = self._optimise(micro_batches)
            self.step += 1
            samples += sum(len(batch[0]) for batch in micro_batches) * self.env.world_size
            progress.update()
            progress.set_postfix(epoch=epoch + 1, loss=f"{loss:.4f}")
            if self.step % config.log_interval == 0:
                self._log_train(epoch, loss, accuracy, lr, samples / (time.perf_counter() - started))
            if config.valid_step_interval and self.step % config.valid_step_interval == 0:
                self._validate(epoch)
            if config.save_step_frequency > 0 and self.step % config.save_step_frequency == 0:
                self._save(self.checkpoint_dir / f"epoch_{epoch + 1}_{self.step}.pt")  # (cn_clip's name)
                self._prune_step_checkpoints()
                self._save_latest()
        del batches
        finished_epoch = self.step % self.steps_per_epoch == 0
        if not finished_epoch:  # stopped by --max-steps inside the epoch: validate the final weights
            if config.valid_epoch_interval:
                self._validate(epoch)
            return
        finished = epoch + 1
        if config.valid_epoch_interval and finished % config.valid_epoch_interval == 0:
            self._validate(epoch)
        if config.save_epoch_frequency > 0 and (finished % config.save_epoch_frequency == 0 or finished == self.epochs):
            self._save(self.checkpoint_dir / f"epoch{finished}.pt")  # (cn_clip's name)
            self._save_latest()

    def _train_mode(self) -> None:
        """Train mode, except frozen image-tower BatchNorm statistics."""
        self.model.train()
        if self.config.freeze_vision:
            for module in self.model.visual.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.env.device.type, dtype=self.autocast_dtype)

    def _forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Local features -> global ones (gradients kept), plus the logit scale."""
        device = self.env.device
        with self._autocast():
            image_features, text_features, scale = self.ddp(images.to(device, non_blocking=True),
                                                            tokens.to(device, non_blocking=True))
        return (distributed.gather_with_grad(image_features.float(), self.env),
                distributed.gather_with_grad(text_features.float(), self.env), scale.float())

    def _optimise(self, micro_batches: list) -> tuple[float, dict[str, float] | None, float]:
        """One optimiser step over ``accum_freq`` micro-batches (fewer at an epoch's end) forming one
        contrastive batch; returns the loss, the in-batch accuracy if asked, and the step's learning rate.

        With several micro-batches, features of all of them are first computed without
        gradients; each micro-batch is then recomputed with gradients and its slot swapped into
        the cached set, so the summed gradients equal those of the whole batch at once
        (open_clip's accum-freq; BatchNorm statistics are updated twice per micro-batch).
        """
        env = self.env
        same_label = None
        if self.known_pairs is not None:
            image_ids, text_ids, keys = (torch.cat([distributed.gather(b[column].to(env.device), env)
                                                    for b in micro_batches]) for column in (2, 3, 4))
            same_label = same_label_mask(text_ids, keys) | self.known_pairs.mask(image_ids, text_ids)
            # (NCCL gathers CUDA tensors only)
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.optimizer.param_groups[0]["lr"]  # this step's (the scheduler moves it on after the step)
        cached: list[tuple[torch.Tensor, torch.Tensor]] = []
        if len(micro_batches) > 1:
            with torch.no_grad():
                cached = [self._forward(b[0], b[1])[:2] for b in micro_batches]
        for index, (images, tokens, *_) in enumerate(micro_batches):
            last = index == len(micro_batches) - 1
            sync = contextlib.nullcontext() if last or not env.distributed else self.ddp.no_sync()
            with sync:
                image_features, text_features, scale = self._forward(images, tokens)
                if not last:  # every pass sees the whole loss: the synced (last) one carries the scale's gradient
                    scale = scale.detach()
                if cached:
                    image_features = torch.cat([f[0] for f in cached[:index]] + [image_features]
                                               + [f[0] for f in cached[index + 1:]])
                    text_features = torch.cat([f[1] for f in cached[:index]] + [text_features]
                                              + [f[1] for f in cached[index + 1:]])
                logits = contrastive_logits(image_features, text_features, scale, same_label)
                loss = clip_loss(logits)
                if self.config.match_loss:
                    matches = same_label if same_label is not None else \
                        torch.eye(len(logits), dtype=torch.bool, device=logits.device)
                    loss = loss + self.config.match_loss * match_loss(image_features, text_features, matches)
                self._check_finite(loss)
                (self.scaler.scale(loss) if self.scaler else loss).backward()
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        accuracy = batch_accuracy(logits.detach()) if self.config.report_training_batch_acc else None
        return loss.item(), accuracy, lr

    def _check_finite(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            kept = f"the last good checkpoint is {self.last_saved}" if self.last_saved else "no checkpoint was written yet"
            raise ClipMatchError(
                f"training loss became {loss.item()} at step {self.step + 1} (epoch "
                f"{self.step // self.steps_per_epoch + 1}); stopped, {kept}. Try a lower --lr, "
                "a longer --warmup or --precision fp32")

    def _log_train(self, epoch: int, loss: float, accuracy: dict[str, float] | None, lr: float, rate: float) -> None:
        record = {"kind": "train", "step": self.step, "epoch": epoch + 1, "loss": loss,
                  "lr": lr, "logit_scale": self.model.logit_scale.exp().item(),
                  "samples_per_s": rate, **(accuracy or {})}
        extra = "".join(f" | {k} {v * 100:.1f}%" for k, v in (accuracy or {}).items())
        log.info("step %d/%d | epoch %d | loss %.4f%s | lr %.2e | logit scale %.1f | %.1f samples/s",
                 self.step, self.total_steps, epoch + 1, loss, extra, record["lr"], record["logit_scale"], rate)
        if self.env.is_main:
            self.metrics.append(record)

    # ----- validation ---------------------------------------------------------------------

    @torch.no_grad()
    def _validate(self, epoch: int) -> dict[str, float] | None:
        """Validation loss and retrieval recall over the whole split (work shared by the ranks)."""
        if self.val_set is None or self.validated_step == self.step:
            return None
        self.validated_step = self.step
        val = self.val_set
        self.model.eval()
        image_features = self._encode_sharded(len(val.image_ids), self._encode_images)
        text_features = self._encode_sharded(len(val.texts), self._encode_texts)
        self._train_mode()
        loss = self._validation_loss(image_features, text_features)
        metrics = retrieval_metrics(image_features.numpy(), text_features.numpy(), val.pairs)
        record = {"kind": "val", "step": self.step, "epoch": epoch + 1, "val_loss": loss, **metrics}
        log.info("validation at step %d (epoch %d) | loss %.4f | i2t R@1/5/10 %.1f/%.1f/%.1f | "
                 "t2i R@1/5/10 %.1f/%.1f/%.1f | mean recall %.1f", self.step, epoch + 1, loss,
                 metrics["i2t_r1"], metrics["i2t_r5"], metrics["i2t_r10"],
                 metrics["t2i_r1"], metrics["t2i_r5"], metrics["t2i_r10"], metrics["mean_recall"])
        if self.env.is_main:
            self.metrics.append(record)
            self.metrics.plot()
        return record

    def _encode_sharded(self, count: int, encode) -> torch.Tensor:
        """Each rank encodes every world_size-th item (padded to equal shares); all get all features."""
        world = self.env.world_size
        order = [i % count for i in range(math.ceil(count / world) * world)]
        mine = order[self.env.rank::world]
        features = distributed.gather(encode(mine), self.env).cpu()
        placed = torch.empty(count, features.shape[1])
        placed[torch.tensor([i for r in range(world) for i in order[r::world]])] = features
        return placed

    def _encode_images(self, rows: list[int]) -> torch.Tensor:
        dataset = Subset(ImageDataset(self.val_set.split_dir, self.val_set.image_ids,
                                      self.model_config.image_resolution, self.model_config.framing), rows)
        loader = DataLoader(dataset, batch_size=self.config.valid_batch_size,
                            num_workers=self.config.valid_num_workers, generator=torch.Generator())
        parts = []
        for pixels in loader:
            with self._autocast():
                parts.append(self.model.encode_image(pixels.to(self.env.device)).float())
        return torch.nn.functional.normalize(torch.cat(parts), dim=-1)

    def _encode_texts(self, rows: list[int]) -> torch.Tensor:
        parts, size = [], self.config.valid_batch_size
        for start in range(0, len(rows), size):
            texts = [self.val_set.texts[i] for i in rows[start:start + size]]
            tokens = encode_texts(texts, self.model_config.context_length)
            with self._autocast():
                parts.append(self.model.encode_text(tokens.to(self.env.device)).float())
        return torch.nn.functional.normalize(torch.cat(parts), dim=-1)

    def _validation_loss(self, image_features: torch.Tensor, text_features: torch.Tensor) -> float:
        """In-batch loss over the pairs in a fixed shuffled order, in batches of --valid-batch-size."""
        val, size = self.val_set, self.config.valid_batch_size
        if len(val.pairs) < size:
            log.warning("%s: %d validation pairs, fewer than --valid-batch-size %d; the loss uses one batch of %d",
                        val.split_dir, len(val.pairs), size, len(val.pairs))
        pairs = torch.tensor(val.pairs)[torch.from_numpy(np.random.default_rng(0).permutation(len(val.pairs)))]
        keys = torch.from_numpy(val.text_keys())
        known = KnownPairs(*zip(*val.pairs)) if self.config.label_aware else None  # rows stand in for ids
        scale = self.model.logit_scale.exp().float().cpu()
        total = 0.0
        for start in range(0, len(pairs), size):
            images, texts = pairs[start:start + size, 0], pairs[start:start + size, 1]
            same_label = same_label_mask(texts, keys[texts]) | known.mask(images, texts) if known else None
            logits = contrastive_logits(image_features[images], text_features[texts], scale, same_label)
            total += clip_loss(logits).item() * len(images)
        return total / len(pairs)

    # ----- checkpoints --------------------------------------------------------------------

    def _save_latest(self) -> None:
        if self.latest_step != self.step:
            self._save(self.checkpoint_dir / "epoch_latest.pt")
            self.latest_step = self.step

    def _prune_step_checkpoints(self) -> None:
        """Delete all but the newest ``--keep-step-checkpoints`` epoch_E_STEP.pt files: a long run that
        saves every few hundred steps would otherwise fill the disk."""
        keep = self.config.keep_step_checkpoints
        if keep == 0 or not self.env.is_main:
            return
        saved = [(int(m[1]), path) for path in self.checkpoint_dir.glob("epoch_*_*.pt")
                 if (m := re.fullmatch(r"epoch_\d+_(\d+)\.pt", path.name))]
        for _, path in sorted(saved)[:-keep]:
            path.unlink(missing_ok=True)

    def _save(self, path: Path) -> None:
        """Write the full training state (rank 0), after checking that the weights are finite."""
        rng = distributed.gather_objects(checkpoint.rng_state(), self.env)
        if not self.env.is_main:
            return
        if not checkpoint.all_finite(self.model):
            raise ClipMatchError(f"weights are not finite at step {self.step}; not writing {path}, "
                                 f"the last good checkpoint is {self.last_saved}")
        started = time.perf_counter()
        checkpoint.save(path, {
            "trainer": TRAINER_TAG,
            "epoch": self.step // self.steps_per_epoch + (1 if self.step % self.steps_per_epoch else 0),
            "step": self.step,
            "name": self.config.name,
            "model_config": self.model_config.to_dict(),
            "state_dict": cn_clip_state(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "rng": rng,
            "steps_per_epoch": self.steps_per_epoch,
            "train_config": self.config.to_dict(),
        })
        self.last_saved = path
        log.info("saved %s (step %d, %.1fs)", path, self.step, time.perf_counter() - started)
