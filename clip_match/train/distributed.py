"""Process group set-up from torchrun's environment, and feature gathering across ranks.

Alone (no ``WORLD_SIZE`` > 1) nothing is initialised and every collective is the identity, so
the same trainer code runs on one process, under torchrun on one machine, or on many nodes.
"""
from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ClipMatchError

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> DistEnv:
    """Pick the device and, under torchrun, join the process group (nccl on GPU, gloo on CPU)."""
    if "TORCHELASTIC_RUN_ID" in os.environ:  # started by torchrun / torch.distributed.launch
        die_with_launcher()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ClipMatchError(f"--device {device}: no CUDA GPU is visible to PyTorch")
        torch_device = torch.device("cuda", local_rank) if device == "cuda" else torch.device(device)
        torch.cuda.set_device(torch_device)
    elif device == "cpu":
        torch_device = torch.device("cpu")
    else:
        raise ClipMatchError(f"--device must be auto, cpu or cuda[:N], got {device!r}")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch_device.type == "cuda" else "gloo")
    return DistEnv(rank, world_size, local_rank, torch_device)


def die_with_launcher() -> None:
    """End this worker when the launcher that started it dies (a SIGKILL to torchrun would otherwise
    leave it training on its own, with PPID 1, beside the next run): Linux's parent-death signal,
    elsewhere a thread that watches the parent's pid."""
    launcher = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl")
    except (OSError, AttributeError, TypeError):  # not Linux
        def watch() -> None:
            while os.getppid() == launcher:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, name="clip_match-launcher-watch", daemon=True).start()
    if os.getppid() != launcher or launcher == 1:  # it died before the signal was armed
        os._exit(1)


def cleanup(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sends every rank its slice of the summed gradient.

    Each rank computes the loss over the whole global batch, so the gradient of a rank's
    features is the sum of what every rank's loss says about them; with DDP averaging the
    parameter gradients afterwards, the update equals one process over the global batch.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.batch = dist.get_rank(), tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.batch:(ctx.rank + 1) * ctx.batch]


def gather_with_grad(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Concatenate ``tensor`` from all ranks in rank order, keeping gradients."""
    return _GatherWithGrad.apply(tensor) if env.distributed else tensor


@torch.no_grad()
def gather(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Concatenate ``tensor`` (same shape on every rank) from all ranks in rank order, no gradients."""
    if not env.distributed:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(env.world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def gather_objects(obj: object, env: DistEnv) -> list:
    """Every rank's ``obj`` (picklable), in rank order."""
    if not env.distributed:
        return [obj]
    objects: list = [None] * env.world_size
    dist.all_gather_object(objects, obj)
    return objects


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()
