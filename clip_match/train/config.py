"""Trainer flags -> `TrainConfig`.

The flag names are those of cn_clip's ``training/params.py`` (what its fine-tune scripts pass),
so an existing script needs only its entry point changed; the new ones are ``--model``,
``--device``, ``--seed``, ``--freeze-text``, ``--augment``, ``--no-label-aware`` and ``--match-loss``.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Sequence

from ..errors import ClipMatchError

AUGMENTS = ("none", "safe", "cnclip")
TRAINING_PRECISIONS = ("amp", "fp16", "bf16", "fp32")

# cn_clip's per-backbone optimiser defaults (``get_default_params``, from the CLIP paper).
_RESNET_ADAM = {"lr": 5.0e-4, "beta1": 0.9, "beta2": 0.999, "eps": 1.0e-8}
_VIT_ADAM = {"lr": 5.0e-4, "beta1": 0.9, "beta2": 0.98, "eps": 1.0e-6}
_VIT_LARGE_ADAM = {"lr": 4.0e-4, "beta1": 0.9, "beta2": 0.98, "eps": 1.0e-6}


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs; `from_args` fills it from the command line."""

    train_data: str
    val_data: str | None = None
    logs: str = "./logs/"
    name: str = "train_clip"
    model: str = "ViT-B-16@RoBERTa-wwm-ext-base-chinese"
    context_length: int | None = None  # None: the model config's
    batch_size: int = 64  # per process
    global_batch_size: int | None = None  # wins over batch_size: split evenly over the processes
    valid_batch_size: int = 64  # per process
    accum_freq: int = 1
    lr: float = 5.0e-4
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1.0e-8
    wd: float = 0.2
    warmup: int = 500
    skip_scheduler: bool = False
    max_epochs: int = 32
    max_steps: int | None = None
    log_interval: int = 10
    report_training_batch_acc: bool = False
    valid_step_interval: int | None = None
    valid_epoch_interval: int | None = 1
    save_epoch_frequency: int = 1
    save_step_frequency: int = -1
    keep_step_checkpoints: int = 0
    resume: str | None = None
    reset_data_offset: bool = False
    reset_optimizer: bool = False
    restart: bool = False
    drop_last: bool = False
    augment: str = "none"
    freeze_vision: bool = False
    freeze_text: bool = False
    grad_checkpointing: bool = False
    use_bn_sync: bool = False
    precision: str = "amp"
    device: str = "auto"
    seed: int = 123
    label_aware: bool = True
    match_loss: float = 0.0  # weight of the pairwise match loss beside InfoNCE (train/loss.py)
    num_workers: int | None = None  # None: min(4, the CPUs this process may use)
    valid_num_workers: int = 1

    def __post_init__(self) -> None:
        positive = {"batch_size": self.batch_size, "valid_batch_size": self.valid_batch_size,
                    "accum_freq": self.accum_freq, "max_epochs": self.max_epochs, "log_interval": self.log_interval}
        for field, value in positive.items():
            if value < 1:
                raise ClipMatchError(f"--{field.replace('_', '-')} must be at least 1, got {value}")
        if self.global_batch_size is not None and self.global_batch_size < 1:
            raise ClipMatchError(f"--global-batch-size must be at least 1, got {self.global_batch_size}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ClipMatchError(f"--max-steps must be at least 1, got {self.max_steps}")
        if min(self.warmup, self.loader_workers, self.valid_num_workers, self.keep_step_checkpoints) < 0:
            raise ClipMatchError("--warmup, --num-workers, --valid-num-workers and --keep-step-checkpoints "
                                 "must not be negative")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ClipMatchError(f"--lr must be a positive number, got {self.lr}")
        for field, value in (("beta1", self.beta1), ("beta2", self.beta2)):
            if not 0 <= value < 1:
                raise ClipMatchError(f"--{field} must be in [0, 1), got {value}")
        if not (math.isfinite(self.eps) and self.eps > 0) or not (math.isfinite(self.wd) and self.wd >= 0):
            raise ClipMatchError(f"--eps must be a positive number and --wd not negative, got {self.eps} and {self.wd}")
        if not (math.isfinite(self.match_loss) and self.match_loss >= 0):
            raise ClipMatchError(f"--match-loss must be a number >= 0, got {self.match_loss}")
        if self.augment not in AUGMENTS:
            raise ClipMatchError(f"--augment must be one of {', '.join(AUGMENTS)}, got {self.augment!r}")
        if self.precision not in TRAINING_PRECISIONS:
            raise ClipMatchError(f"--precision must be one of {', '.join(TRAINING_PRECISIONS)}, got {self.precision!r}")

    @property
    def run_dir(self) -> str:
        return f"{self.logs.rstrip('/')}/{self.name}"

    def per_process_batch(self, world_size: int) -> int:
        """The training batch of one process; refuses a global batch that does not split evenly."""
        if self.global_batch_size is None:
            return self.batch_size
        if self.global_batch_size % world_size:
            raise ClipMatchError(f"--global-batch-size {self.global_batch_size} is not divisible by the "
                                 f"{world_size} processes; use a multiple of {world_size}")
        return self.global_batch_size // world_size

    @property
    def loader_workers(self) -> int:
        """Data-loader workers: as given, else what the machine has (up to 4), so a 2-CPU machine
        is not asked for 4 (torch warns about that)."""
        if self.num_workers is not None:
            return self.num_workers
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return min(4, cpus)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the trainer's flags (cn_clip's names, plus clip_match's own) to ``parser``."""
    data = parser.add_argument_group("data")
    data.add_argument("--train-data", required=True, help="LMDB split directory (holds imgs/ and pairs/)")
    data.add_argument("--val-data", default=None, help="LMDB split directory for validation (default: none)")
    data.add_argument("--num-workers", type=int, default=None,
                      help="data-loader worker processes for training (default: the usable CPUs, at most 4)")
    data.add_argument("--valid-num-workers", type=int, default=1, help="data-loader workers for validation")
    data.add_argument("--augment", choices=AUGMENTS, default=None,
                      help="image augmentation: safe = crop/scale + mild brightness/contrast (no flips, no colour "
                           "inversion); cnclip = cn_clip's (flips, AutoAugment with invert/solarize). Default none, "
                           "or safe with --use-augment")
    data.add_argument("--use-augment", action="store_true", help="cn_clip's flag: augment (as --augment safe)")

    model = parser.add_argument_group("model")
    model.add_argument("--model", default=None,
                       help="model config: a name (tiny, demo, RN50@RBT3-chinese, ...) or a JSON file; "
                            "overrides --vision-model/--text-model")
    model.add_argument("--vision-model", default="ViT-B-16", help="cn_clip vision backbone name (e.g. RN50)")
    model.add_argument("--text-model", default="RoBERTa-wwm-ext-base-chinese",
                       help="cn_clip text backbone name (e.g. RBT3-chinese)")
    model.add_argument("--context-length", type=int, default=None,
                       help="max text tokens incl. [CLS]/[SEP] (default: the model config's, 52 for official ones)")
    model.add_argument("--freeze-vision", action="store_true", help="do not train the image tower (BN stats frozen)")
    model.add_argument("--freeze-text", action="store_true", help="do not train the text tower")
    model.add_argument("--grad-checkpointing", action="store_true", help="recompute activations to save memory")
    model.add_argument("--use-bn-sync", action="store_true", help="synchronise BatchNorm across GPUs")

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--batch-size", type=int, default=64, help="training batch per process")
    optim.add_argument("--global-batch-size", type=int, default=None,
                       help="training batch over all processes (sets --batch-size = this / processes)")
    optim.add_argument("--valid-batch-size", type=int, default=64, help="validation batch per process")
    optim.add_argument("--accum-freq", type=int, default=1,
                       help="micro-batches per optimiser step; the contrastive batch really grows to "
                            "batch-size x processes x accum-freq (features cached, open_clip style)")
    optim.add_argument("--lr", type=float, default=None, help="peak learning rate (default per backbone, as cn_clip)")
    optim.add_argument("--beta1", type=float, default=None, help="AdamW beta1")
    optim.add_argument("--beta2", type=float, default=None, help="AdamW beta2")
    optim.add_argument("--eps", type=float, default=None, help="AdamW epsilon")
    optim.add_argument("--wd", type=float, default=0.2, help="weight decay (not on biases, norms, logit scale)")
    optim.add_argument("--warmup", type=int, default=500, help="linear warm-up steps before cosine decay")
    optim.add_argument("--skip-scheduler", action="store_true", help="constant learning rate")
    optim.add_argument("--max-epochs", type=int, default=32, help="epochs (when --max-steps is not given)")
    optim.add_argument("--max-steps", type=int, default=None, help="optimiser steps; wins over --max-epochs")
    optim.add_argument("--drop-last", action="store_true",
                       help="drop each epoch's last partial batch (default: keep it, smaller, as cn_clip trains it)")
    optim.add_argument("--precision", choices=["amp", "fp16", "bf16", "fp32"], default="amp",
                       help="amp/fp16: fp16 autocast + grad scaler (GPU only; CPU runs fp32); bf16: bf16 autocast, "
                            "GPU or CPU (fast on CPUs with AVX512-BF16 or AMX)")
    optim.add_argument("--no-label-aware", dest="label_aware", action="store_false",
                       help="treat pairs with the same text_id/text as negatives (cn_clip's loss)")
    optim.add_argument("--match-loss", type=float, default=0.0,
                       help="weight of a pairwise match loss added to InfoNCE: every pair of the batch on its side "
                            "of one fixed cosine, which a k-unknown threshold needs (default 0: off)")
    optim.add_argument("--seed", type=int, default=123, help="random seed (model init, data order, augmentation)")
    optim.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")

    run = parser.add_argument_group("logging and checkpoints")
    run.add_argument("--logs", default="./logs/", help="output root; the run writes to LOGS/NAME/")
    run.add_argument("--name", default="train_clip", help="run name (sub-directory of --logs)")
    run.add_argument("--log-interval", type=int, default=10, help="log every N optimiser steps")
    run.add_argument("--report-training-batch-acc", action="store_true", help="log in-batch i2t/t2i accuracy")
    run.add_argument("--valid-step-interval", type=int, default=None, help="validate every N steps")
    run.add_argument("--valid-epoch-interval", type=int, default=1, help="validate every N epochs")
    run.add_argument("--save-epoch-frequency", type=int, default=1, help="write epochN.pt every N epochs")
    run.add_argument("--save-step-frequency", type=int, default=-1,
                     help="write epoch_latest.pt (and epoch_E_STEP.pt) every N steps; -1: never")
    run.add_argument("--keep-step-checkpoints", type=int, default=0,
                     help="keep only the newest N epoch_E_STEP.pt files; 0: keep all (as cn_clip does)")
    run.add_argument("--resume", default=None,
                     help="checkpoint a new run starts from: a trainer checkpoint (full state) or official/slim "
                          "weights; a run with LOGS/NAME/checkpoints/epoch_latest.pt goes on from that instead")
    run.add_argument("--reset-data-offset", action="store_true",
                     help="when starting from --resume: epoch 0, step 0 (and the learning-rate schedule from its "
                          "start); a run going on from its own epoch_latest.pt ignores it")
    run.add_argument("--reset-optimizer", action="store_true",
                     help="when starting from --resume: fresh optimiser/scheduler state (ignored when going on "
                          "from the run's own epoch_latest.pt)")
    run.add_argument("--restart", action="store_true",
                     help="start this run over from --resume (or from scratch) even though LOGS/NAME holds "
                          "epoch_latest.pt; its checkpoints and metrics are overwritten as training goes")


def from_args(args: argparse.Namespace) -> TrainConfig:
    """Map parsed flags onto a `TrainConfig`, filling cn_clip's per-backbone optimiser defaults."""
    model = args.model or f"{args.vision_model}@{args.text_model}"
    adam = _default_adam(model)
    augment = args.augment or ("safe" if args.use_augment else "none")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    values.update(model=model, augment=augment)
    for key in ("lr", "beta1", "beta2", "eps"):
        values.setdefault(key, adam[key])
    return TrainConfig(**values)


def parse(argv: Sequence[str], prog: str = "python -m clip_match.train") -> TrainConfig:
    """Parse a command line; a leading ``--`` (how scripts get flags past torchrun) is dropped."""
    argv = list(argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    parser = argparse.ArgumentParser(prog=prog, description="Fine-tune or train a CN-CLIP model on LMDB data.",
                                     allow_abbrev=False)
    configure(parser)
    return from_args(parser.parse_args(argv))


def _default_adam(model: str) -> dict[str, float]:
    vision = model.split("@", 1)[0]
    if vision.startswith("ViT-L"):
        return _VIT_LARGE_ADAM
    return _VIT_ADAM if vision.startswith("ViT") else _RESNET_ADAM
