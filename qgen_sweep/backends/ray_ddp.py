"""Data-parallel trials on Ray Train (imports ray; only backends/ray*.py do).

With `resources.gpus_per_trial = N` every Tune trial of the sweep (backends/ray.py) is a light
driver that starts a Ray Train `TorchTrainer` of N workers, one GPU each (NCCL), or on a cluster
without GPUs N CPU workers (gloo). Ray Train sets up the process group; each worker runs the
same per-trial work as a single-process trial: rank 0 `runner.run_one` (attempts log, epoch and
final rows, fault injection), the others `runner.run_follower` (train, write nothing). The trial
engine sees the process group and trains data-parallel (trial/parallel.py), checkpointing to the
trial's own folder in the store after every epoch.

Retries stay Tune's (FailureConfig of the sweep): the trainer itself has max_failures = 0, so a
lost worker fails this attempt, Tune starts the next, and its workers continue from the last
epoch checkpoint in the store, exactly as a single-process trial's retry or a later `resume`.
Ray Train's own run folders go under `<store>/ray/ddp/` (one per attempt, never read back).
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray.train
from ray.train.torch import TorchConfig, TorchTrainer

from qgen_sweep.backends import RunContext
from qgen_sweep.errors import UsageError

DRIVER_CPU = 0.01  # the Tune trial only waits for its trainer; Ray refuses a 0-CPU trial


@dataclass(frozen=True)
class Parallel:
    """How every trial of the sweep runs data-parallel."""

    workers: int  # resources.gpus_per_trial
    use_gpu: bool  # False on a cluster without GPUs: CPU workers with gloo
    cpu: float  # CPUs per worker (resources.cpu)


def plan_parallel(gpus_per_trial: int, cpu: float, cluster: dict[str, float],
                  note) -> Parallel:
    """The workers of one trial on this cluster; UsageError (exit 2, before anything trains)
    when one trial alone needs more than the cluster has."""
    gpus, cpus = cluster.get("GPU", 0), cluster.get("CPU", 0)
    if gpus and gpus_per_trial > gpus:
        raise UsageError(f"resources.gpus_per_trial = {gpus_per_trial} is more than the Ray "
                         f"cluster's {gpus:g} GPUs, so no trial could start; lower it or add "
                         f"nodes (qgen-sweep slurm --nodes / --gpus-per-node)")
    if gpus_per_trial * cpu + DRIVER_CPU > cpus:
        raise UsageError(f"resources.gpus_per_trial = {gpus_per_trial} workers x resources.cpu "
                         f"= {cpu:g} need {gpus_per_trial * cpu:g} CPUs, more than the Ray "
                         f"cluster's {cpus:g}; lower resources.cpu or gpus_per_trial")
    if not gpus:
        note(f"warning: the Ray cluster has no GPUs; each trial runs as {gpus_per_trial} "
             f"data-parallel CPU workers (gloo)")
    return Parallel(gpus_per_trial, bool(gpus), cpu)


def run_parallel(task: dict[str, Any], ctx: RunContext, parallel: Parallel) -> dict[str, Any]:
    """One attempt of a data-parallel trial (runs in the Tune trial); returns run_one's summary
    read back from the store."""
    from qgen_sweep.store import ResultsStore

    resources = {"CPU": parallel.cpu, **({"GPU": 1} if parallel.use_gpu else {})}
    trainer = TorchTrainer(
        _worker, train_loop_config={"task": task, "ctx": ctx},
        scaling_config=ray.train.ScalingConfig(num_workers=parallel.workers,
                                               use_gpu=parallel.use_gpu,
                                               resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if parallel.use_gpu else "gloo"),
        run_config=ray.train.RunConfig(
            name=f"{task['trial_id']}-{uuid.uuid4().hex[:8]}",
            storage_path=str(Path(ctx.store_root) / "ray" / "ddp"),
            failure_config=ray.train.FailureConfig(max_failures=0)),
    )
    trainer.fit()  # raises when a worker failed: Tune records it and retries the trial
    final = ResultsStore(ctx.store_root).final_row(task["trial_id"], int(task["bits"]),
                                                   columns=["status", "attempts", "seconds"])
    if final is None:
        raise RuntimeError(f"data-parallel trial {task['trial_id']} ended without a final row")
    return {"trial_id": task["trial_id"], "status": final["status"],
            "attempts": final["attempts"], "seconds": final["seconds"], "skipped": False,
            "workers": parallel.workers}


def _worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: its rank's part of the trial, on the device Ray gave it."""
    from qgen_sweep.backends.runner import run_follower, run_one

    task, ctx = config["task"], config["ctx"]
    device = str(ray.train.torch.get_device())
    ctx = dataclasses.replace(ctx, runtime={**ctx.runtime, "device": device})
    if ray.train.get_context().get_world_rank() == 0:
        run_one(task, ctx)
    else:
        run_follower(task, ctx)
