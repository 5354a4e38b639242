"""Cost of a loss landscape: grid points evaluated in stacks vs one model copy per point.

Side by side, same trained models (the smoke sweep's SGD width-8 NiN on digits at Int4 and at
FP32), same filter-normalized directions, same 21 x 21 grid (441 points, each over the 1,437
training examples), same eval batch: the StackedEvaluator (16 grid points per forward pass,
qgen_sweep.landscape.stacked) against the plain way, a deep copy of the model loaded with each
point's weights and one pass over the data per point (LoopEvaluator). Runs alternate (stacked,
loop, stacked, ...) and the best of each is kept, because the machine is shared. One intra-op
thread, as a landscape Ray task on this 2-core machine runs. `ratio` = loop seconds / stacked
(higher is better); the notes say whether both found the same losses.

On the CPU the arithmetic of these tiny convs is the same either way; the stacked forward saves
the per-point model copies, the per-layer dispatch of K separate forwards and the BN / ReLU /
pooling passes (one over K copies instead of K). The GPU case, where the loop is bound by kernel
launches, is the one the stacking is for; no GPU was measured here.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from qgen_sweep.landscape.directions import random_direction
from qgen_sweep.landscape.settings import LandscapeSettings, surface_coordinate, surface_offsets
from qgen_sweep.landscape.stacked import LoopEvaluator, StackedEvaluator, float_state
from qgen_sweep.landscape.surface import surface_chunk
from qgen_sweep.trial.config import TrialConfig, TrialRuntime
from qgen_sweep.trial.data import load_dataset
from qgen_sweep.trial.train import load_model, run_trial

# The smoke sweep's SGD model at width 8 (sweeps/smoke.toml), at two precisions.
SMOKE = {"dataset": "digits", "optimizer": "sgd", "lr": 0.05, "weight_decay": 1e-4, "depth": 2,
         "width": 8, "base_width": 2, "epochs": 3, "batch_size": 64, "milestones": (2,)}
EVAL_BATCH = 1437  # the whole digits training split in one batch
POINTS = 16  # grid points per stacked forward (the command's default)


def _trained(bits: int, folder: Path) -> torch.nn.Module:
    config = TrialConfig(bits=bits, **SMOKE)
    run_trial(config, TrialRuntime(device="cpu", threads=1), checkpoint_dir=folder)
    model, _ = load_model(folder, config, "best")
    return model


def _grid_chunk(model: torch.nn.Module, grid: int):
    settings = LandscapeSettings(grid=grid)
    offsets = surface_offsets(settings)
    coords = torch.tensor([[surface_coordinate(settings, i), surface_coordinate(settings, j)]
                           for i, j in offsets], dtype=torch.float64)
    directions = [random_direction(model, 1, k) for k in range(2)]
    return surface_chunk(float_state(model), directions, coords), len(offsets)


def _timed(evaluator, chunk, count: int) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    losses, _ = evaluator.evaluate(chunk, count)
    return time.perf_counter() - start, losses


def _side_by_side(model, x, y, grid: int, repeats: int) -> dict[str, Any]:
    chunk, count = _grid_chunk(model, grid)
    stacked = StackedEvaluator(model, x, y, EVAL_BATCH, POINTS)
    loop = LoopEvaluator(model, x, y, EVAL_BATCH, 1)
    ours, naive = [], []
    for _ in range(repeats):
        ours.append(_timed(stacked, chunk, count))
        naive.append(_timed(loop, chunk, count))
    diff = float((ours[0][1] - naive[0][1]).abs().max())
    return {"ours": min(t for t, _ in ours), "naive": min(t for t, _ in naive), "points": count,
            "max_diff": diff, "runs": [round(t, 3) for t, _ in ours + naive]}


def run(quick: bool) -> list[dict]:
    """One figure per precision: a 2D surface's evaluation, stacked vs one copy per point."""
    torch.set_num_threads(1)
    data = load_dataset("digits", TrialRuntime(device="cpu"))
    grid, repeats = (11, 1) if quick else (21, 3)
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        for bits in (4, 32):
            model = _trained(bits, Path(tmp) / str(bits))
            side = _side_by_side(model, data.train_x, data.train_y, grid, repeats)
            label = "FP32" if bits == 32 else f"Int{bits}"
            figures.append({
                "name": f"surface_seconds_{label.lower()}", "value": side["ours"], "unit": "s",
                "baseline": side["naive"], "ratio": side["naive"] / side["ours"],
                "notes": f"smoke {label} NiN (digits, depth 2, 16 channels), {grid} x {grid} = "
                         f"{side['points']} grid points x m={len(data.train_y)} examples, "
                         f"{POINTS} points per stacked forward, eval batch {EVAL_BATCH}, 1 "
                         f"thread; baseline = deep copy per point; max |loss difference| "
                         f"{side['max_diff']:.2e} nats; best of {repeats} interleaved runs "
                         f"(all, stacked then loop: {side['runs']})",
            })
    return figures
