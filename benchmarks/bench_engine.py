"""Trial-engine throughput on the CPU, ratios measured side by side in one run.

1. Pipeline: our unfused engine (whole dataset as one tensor, batches by index, run_trial) vs a
   plain PyTorch baseline (torchvision's CIFAR10 dataset class with per-sample PIL transforms +
   DataLoader + the same eager NiN and optimizer), same model and batch size, images per second
   per model. Two model sizes: a tiny one where data handling dominates, and a wider one.
2. Fused bundles: run_bundle with K in {1, 4, 8, 16} members vs the same K configs trained one
   after the other by run_trial; aggregate training images per second.
3. Grouped vs separate convolutions per conv shape (what the fused engine's "auto" measures).

Data: synthetic CIFAR-10 files in torchvision's on-disk format (this machine has no internet);
throughput does not depend on pixel values. Times are training time only (TrialResult.seconds,
the epochs' wall time), the same definition for both sides of every ratio.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from qgen_sweep.trial.bundle import run_bundle
from qgen_sweep.trial.config import TrialConfig, TrialRuntime
from qgen_sweep.trial.fused import FusedNiN, time_conv_impls
from qgen_sweep.trial.models import build_model
from qgen_sweep.trial.train import _make_optimizer, run_trial

THREADS = 2  # the CI / dev machine has 2 cores; both sides get the same


def _load() -> str:
    """The machine's load when a figure was taken (other jobs skew absolute numbers)."""
    return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


def _write_cifar10(root: Path, n_train: int, n_test: int) -> tuple[np.ndarray, list[int]]:
    """Synthetic CIFAR-10 in torchvision's python-pickle layout; returns the training split."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    per_file = n_train // 5
    images, labels = [], []
    for name, n in [(f"data_batch_{i}", per_file) for i in range(1, 6)] + [("test_batch", n_test)]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        targets = [int(v) for v in rng.integers(0, 10, size=n)]
        with open(folder / name, "wb") as handle:
            pickle.dump({b"data": data, b"labels": targets}, handle)
        if name != "test_batch":
            images.append(data)
            labels += targets
    return np.concatenate(images).reshape(-1, 3, 32, 32), labels


def _torchvision_loader(images: np.ndarray, labels: list[int], batch: int, augment: bool):
    """torchvision.datasets.CIFAR10 (its own __getitem__: PIL image + transforms per sample)."""
    import torchvision
    from torchvision import transforms

    mean = tuple((images / 255.0).mean(axis=(0, 2, 3)))
    std = tuple((images / 255.0).std(axis=(0, 2, 3)))
    steps = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] if augment \
        else []
    dataset = torchvision.datasets.CIFAR10.__new__(torchvision.datasets.CIFAR10)
    dataset.data = images.transpose(0, 2, 3, 1).copy()  # (N, H, W, C) uint8, torchvision's layout
    dataset.targets = labels
    dataset.transform = transforms.Compose(steps + [transforms.ToTensor(),
                                                    transforms.Normalize(mean, std)])
    dataset.target_transform = None
    return torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=0,
                                       drop_last=True)


def _baseline_epochs(config: TrialConfig, loader) -> tuple[float, int]:  # noqa: ANN001
    """The plain eager loop for config.epochs epochs; (seconds, images) of the last epoch (the
    first one pays one-off allocation and kernel-selection costs, on both sides)."""
    torch.manual_seed(config.seed)
    model = build_model(config, 3, 10)
    optimizer = _make_optimizer(config, model)
    for _ in range(config.epochs):
        start, seen = time.perf_counter(), 0
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(y)
    return time.perf_counter() - start, seen


def _ours_epochs(config: TrialConfig, runtime: TrialRuntime, n_train: int) -> tuple[float, int]:
    result = run_trial(config, runtime)
    steps = n_train // config.batch_size
    return result.history[-1].seconds, steps * config.batch_size


PIPELINE_CASES = [  # (label, depth, base_width, augment, channels_last for ours)
    ("tiny NiN (depth 1, 4 ch), crop-flip: data-bound", 1, 4, True, False),
    ("tiny NiN (depth 1, 4 ch), no augmentation", 1, 4, False, False),
    ("small NiN (depth 2, 16 ch), crop-flip", 2, 16, True, False),
    ("small NiN (depth 2, 16 ch), crop-flip, ours channels_last", 2, 16, True, True),
]


def pipeline_figures(root: Path, n_train: int, repeats: int) -> list[dict]:
    images, labels = _write_cifar10(root, n_train, 256)
    figures = []
    for label, depth, base_width, augment, channels_last in PIPELINE_CASES:
        runtime = TrialRuntime(device="cpu", data_dir=str(root), eval_test_every=0,
                               threads=THREADS, channels_last=channels_last)
        config = TrialConfig("cifar10", 32, "sgd", 0.05, 1e-4, depth=depth, width=1,
                             base_width=base_width, epochs=2, batch_size=128,
                             augment="crop-flip" if augment else "none")
        loader = _torchvision_loader(images, labels, config.batch_size, augment)
        ours, base = [], []
        for _ in range(repeats):  # interleaved, best of n: the machine is shared and noisy
            s, n = _ours_epochs(config, runtime, n_train)
            ours.append(n / s)
            s, n = _baseline_epochs(config, loader)
            base.append(n / s)
        figures.append({
            "name": f"pipeline: {label}", "value": max(ours), "unit": "images/s per model",
            "baseline": max(base), "ratio": max(ours) / max(base),
            "notes": "ours = tensor-resident data + run_trial; baseline = torchvision CIFAR10 "
                     "dataset + per-sample PIL transforms + DataLoader(num_workers=0) + eager "
                     f"NCHW loop; batch 128, second epoch, best of {repeats}, {THREADS} threads; "
                     f"{_load()}",
        })
    return figures


def _member_configs(k: int, base: TrialConfig) -> list[TrialConfig]:
    """k distinct grid points of one architecture (mixed bits, optimizers, lrs, decays)."""
    lrs = {"sgd": (0.1, 0.05, 0.01), "adam": (1e-3, 5e-4, 1e-4), "rmsprop": (1e-3, 5e-4, 1e-4)}
    grid = [(b, o, i, wd) for i, wd, o, b in itertools.product(
        range(3), (0.0, 1e-4, 2e-4), ("sgd", "adam", "rmsprop"), (2, 4, 8, 32))]
    return [dataclasses.replace(base, bits=b, optimizer=o, lr=lrs[o][i], weight_decay=wd)
            for b, o, i, wd in grid[:k]]


def fused_figures(root: Path, n_train: int, sizes: tuple[int, ...],
                  repeats: int) -> list[dict]:
    _write_cifar10(root, n_train, 256)
    runtime = TrialRuntime(device="cpu", data_dir=str(root), eval_test_every=0, threads=THREADS,
                           channels_last=True)
    base = TrialConfig("cifar10", 32, "sgd", 0.05, 0.0, depth=2, width=1, base_width=8,
                       epochs=2, batch_size=128)
    images = (n_train // base.batch_size) * base.batch_size  # one epoch
    figures = []
    for k in sizes:
        configs = _member_configs(k, base)
        fused_s, sequential_s = [], []
        for _ in range(repeats):  # interleaved, fastest of n: the machine is shared and noisy
            fused_s.append(run_bundle(configs, runtime, conv_impl="auto")[0].history[-1].seconds)
            sequential_s.append(sum(run_trial(c, runtime).history[-1].seconds for c in configs))
        fused, sequential = min(fused_s), min(sequential_s)
        figures.append({
            "name": f"fused K={k} vs {k} sequential trials", "value": k * images / fused,
            "unit": "images/s (all models)", "baseline": k * images / sequential,
            "ratio": sequential / fused,
            "notes": "NiN depth 2, 8 channels, batch 128, 32x32, channels_last, members mixed "
                     "over bits {2,4,8,32} x {sgd,adam,rmsprop} x lr x wd; second epoch's "
                     f"training time, fastest of {repeats}; conv impl auto; {THREADS} threads; "
                     f"{_load()}",
        })
    return figures


def conv_figures(shapes: list[tuple[str, int, int, int]], ks: tuple[int, ...]) -> list[dict]:
    """Grouped conv vs K separate convs per (layer, channels, spatial size, batch)."""
    figures = []
    for (label, channels, size, batch), k in itertools.product(shapes, ks):
        cfg = TrialConfig("cifar10", 32, "sgd", 0.1, 0.0, depth=1, width=1, base_width=channels)
        spec = FusedNiN([build_model(cfg, 3, 10)]).convs[1]  # a 1x1 conv channels -> channels
        if label.startswith("3x3"):
            spec = dataclasses.replace(spec, kernel=3, stride=2, padding=1)
        times = time_conv_impls(k, spec, batch, size, torch.device("cpu"), reps=5,
                                channels_last=True)
        figures.append({
            "name": f"conv {label} {channels}ch {size}x{size} batch {batch} K={k}",
            "value": times["grouped"], "unit": "s per forward+backward (grouped)",
            "baseline": times["split"], "ratio": times["split"] / times["grouped"],
            "notes": "channels_last, fastest of 5; ratio > 1: one grouped conv is faster than "
                     f"K separate convs here; {_load()}",
        })
    return figures


def run(quick: bool) -> list[dict]:
    """All figures of this benchmark (see the module docstring)."""
    torch.set_num_threads(THREADS)
    with tempfile.TemporaryDirectory() as tmp:
        figures = pipeline_figures(Path(tmp) / "pipeline", 1280 if quick else 2560,
                                   repeats=1 if quick else 2)
        figures += fused_figures(Path(tmp) / "fused", 512 if quick else 1024,
                                 (1, 4, 8) if quick else (1, 4, 8, 16), 1 if quick else 2)
    shapes = [("1x1", 8, 8, 128), ("1x1", 16, 16, 128), ("3x3/2", 16, 16, 128),
              ("1x1", 250, 8, 32), ("1x1", 250, 16, 32)]
    figures += conv_figures(shapes[:2] if quick else shapes, (4, 8) if quick else (4, 8, 16))
    return figures
