"""Data-parallel trials (trial/parallel.py) on a tiny ImageFolder tree of real JPEGs: two gloo
processes compute what one process with the same global batch computes (batch norm over the
global batch, averaged gradients, all-reduced sums), and only rank 0 writes checkpoints. Two
workers through Ray Train under `qgen-sweep launch`, killed mid-way and resumed, are in
tests/test_launch_parallel.py (slow)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch

from qgen_sweep.trial.config import TrialConfig, TrialRuntime
from qgen_sweep.trial.train import run_trial
from tests.imagenet_helpers import make_imagenet

CONFIG = dict(dataset="imagenet", bits=4, optimizer="sgd", lr=0.05, weight_decay=1e-4,
              arch="resnet18", base_width=4, resolution=32, epochs=2, batch_size=8,
              milestones=(1,), augment="crop-flip")


def runtime(data_dir: Path) -> TrialRuntime:
    return TrialRuntime(device="cpu", data_dir=str(data_dir), dtype="float64", data_workers=0,
                        eval_batch_size=16, threads=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, data_dir: str, ckpt: str, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = run_trial(TrialConfig(**CONFIG), runtime(Path(data_dir)), Path(ckpt))
        losses = [m.train_loss for m in result.history]
        Path(out, f"rank{rank}.json").write_text(json.dumps(
            {"losses": losses, **{k: v for k, v in result.metrics().items()
                                  if isinstance(v, float) and k != "seconds"}}))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_imagenet(root, classes=3, train_per_class=8, val_per_class=2)
    return root


def test_global_batch_norm_is_batch_norm_in_one_process(tmp_path):
    """In a one-process group the global batch is the local one: output, gradients and running
    statistics are nn.BatchNorm2d's."""
    import torch.distributed as dist
    from torch import nn

    from qgen_sweep.trial.parallel import GlobalBatchNorm, plain_batch_norm

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0,
                            world_size=1)
    try:
        torch.manual_seed(0)
        reference = nn.BatchNorm2d(5).double()
        ours = GlobalBatchNorm(5).double()
        ours.load_state_dict(reference.state_dict())
        x1 = torch.randn(4, 5, 3, 3, dtype=torch.float64, requires_grad=True)
        x2 = x1.detach().clone().requires_grad_()
        upstream = torch.randn(4, 5, 3, 3, dtype=torch.float64)
        (reference(x1) * upstream).sum().backward()
        (ours(x2) * upstream).sum().backward()
        torch.testing.assert_close(x2.grad, x1.grad)
        torch.testing.assert_close(ours.weight.grad, reference.weight.grad)
        for key, value in reference.state_dict().items():
            torch.testing.assert_close(ours.state_dict()[key], value)
        assert type(plain_batch_norm(nn.Sequential(ours))[0]) is nn.BatchNorm2d
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes: ~80 s on 2 loaded cores
def test_two_gloo_workers_compute_what_one_process_computes(data_dir, tmp_path):
    single = run_trial(TrialConfig(**CONFIG), runtime(data_dir), tmp_path / "one")
    out = tmp_path / "out"
    out.mkdir()
    torch.multiprocessing.spawn(_rank, args=(2, _free_port(), str(data_dir),
                                             str(tmp_path / "two"), str(out)), nprocs=2)
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]  # every rank ends with the same model and metrics
    two = ranks[0]
    expected = [m.train_loss for m in single.history]
    torch.testing.assert_close(two["losses"], expected, rtol=1e-9, atol=1e-12)
    for name in ("train_loss", "test_loss", "train_acc", "test_acc", "l2_norm"):
        torch.testing.assert_close(two[name], getattr(single, name), rtol=1e-9, atol=1e-12)
    # rank 0 alone wrote the checkpoints, which the single process writes too
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["best.pt", "init.pt",
                                                                    "last.pt"]
