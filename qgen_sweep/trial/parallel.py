"""Data-parallel training of one trial over several processes (torch.distributed; the Ray backend
starts the processes and the process group: backends/ray_ddp.py).

A data-parallel trial computes what the single-process trial with the same global batch
computes, within float tolerance, so that the number of GPUs is a resource (never part of the
trial id):
- every rank draws the same batch order and augmentation numbers and takes its contiguous slice
  of each global batch (the batch must divide by the world size);
- gradients are averaged over ranks (DistributedDataParallel), which for equal slices is the
  gradient of the global-batch mean loss;
- batch norm statistics are the global batch's: torch's SyncBatchNorm on CUDA, `GlobalBatchNorm`
  (a differentiable all-reduce of the per-channel sums) on the CPU, where SyncBatchNorm does not
  run;
- the epoch sums (loss, hits) and evaluation sums are all-reduced once per pass;
- only rank 0 writes checkpoints and store rows; the others wait at a barrier, so after an epoch
  every rank continues from the same files.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class World:
    """This process's place in the trial: rank r of `size` (1 = an ordinary trial)."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1


def current_world() -> World:
    """The torch.distributed group this process belongs to (World() outside one)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return World(dist.get_rank(), dist.get_world_size())
    return World()


class GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch over all ranks
    (torch.distributed.nn's all-reduce carries the gradient back through the sums). Same
    parameters, buffers and state_dict as nn.BatchNorm2d; eval mode is plain batch norm."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return super().forward(x)
        c = x.shape[1]
        count = torch.full((1,), x.numel() // c, dtype=x.dtype, device=x.device)
        local = torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), count])
        total = _differentiable_sum(local)
        n = total[2 * c]
        mean = total[:c] / n
        var = (total[c:2 * c] / n - mean * mean).clamp_min(0)
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1)), alpha=m)
        shape = (1, c, 1, 1)
        out = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return out * self.weight.view(shape) + self.bias.view(shape)


def _differentiable_sum(x: Tensor) -> Tensor:
    """all_reduce(SUM) whose backward sums the gradients over the ranks."""
    import warnings

    from torch.distributed.nn.functional import all_reduce

    with warnings.catch_warnings():  # deprecated for a private API; the public one still works
        warnings.simplefilter("ignore", FutureWarning)
        return all_reduce(x)


def global_batch_norm(model: nn.Module, device: torch.device) -> nn.Module:
    """Batch norm over the global batch: SyncBatchNorm on CUDA, GlobalBatchNorm elsewhere
    (in place, parameters and buffers kept)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = GlobalBatchNorm
    return model


def plain_batch_norm(model: nn.Module) -> nn.Module:
    """Undo global_batch_norm on the CPU (GlobalBatchNorm -> BatchNorm2d), for saved models."""
    for module in model.modules():
        if type(module) is GlobalBatchNorm:
            module.__class__ = nn.BatchNorm2d
    return model


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The module the training steps call: DistributedDataParallel over `model`."""
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def all_sum(*values: Tensor) -> list[Tensor]:
    """Each tensor summed over every rank (one collective for all of them)."""
    flat = torch.cat([v.reshape(-1).to(torch.float64) for v in values])
    dist.all_reduce(flat)
    out, start = [], 0
    for v in values:
        out.append(flat[start:start + v.numel()].reshape(v.shape).to(v.dtype))
        start += v.numel()
    return out


def barrier(world: World) -> None:
    if world.parallel:
        dist.barrier()


def shard_rows(x: Tensor, world: World) -> Tensor:
    """This rank's contiguous slice of a global batch (rows)."""
    if not world.parallel:
        return x
    part = len(x) // world.size
    return x[world.rank * part:(world.rank + 1) * part]


def cross_entropy_sum(logits: Tensor, target: Tensor) -> Tensor:
    return F.cross_entropy(logits, target, reduction="sum").double()
