"""One trial's landscape: the surface on the random directions and the two interpolation lines,
evaluated in stacks of grid points, written as rows of landscape/bits=B/<id>.parquet.

`compute_trial(store, trial, settings)` is the unit of work of `qgen-sweep landscape` (a Ray task,
or in-process). It computes the curves the trial's file lacks for these settings, then rewrites
the file atomically with the old rows plus the new ones: a kill loses only the trial in flight.

Every point is evaluated like the trial's own final training metrics: eval mode, BN running
statistics, the full un-augmented training split, mean cross-entropy in nats.
"""

from __future__ import annotations

import json
import time
from typing import Any

import torch
from torch import Tensor, nn

from qgen_sweep.landscape import ledger
from qgen_sweep.landscape.directions import random_direction
from qgen_sweep.landscape.schema import FOLDER
from qgen_sweep.landscape.settings import (
    LandscapeSettings,
    direction_seed,
    fp32_twin_config,
    interpolation_offsets,
    surface_coordinate,
    surface_offsets,
)
from qgen_sweep.landscape.stacked import State, StateChunk, evaluator_for, float_state
from qgen_sweep.provenance import host, now, versions_json
from qgen_sweep.store import ResultsStore

MIN_QUANTIZER_PARAM = 1e-8  # the engine's floor for LSQ step sizes (trial/lsq.py MIN_STEP_SIZE)


def _broadcast(values: Tensor, like: Tensor) -> Tensor:
    """(K,) -> (K, 1, ..., 1) against a (K, *shape) tensor."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def surface_chunk(base: State, directions: list[State], coords: Tensor) -> StateChunk:
    """Stacked states theta + sum_k coords[:, k] d_k of the points start..stop-1. Names without a
    direction (BN running statistics) are shared by every point."""

    def chunk(start: int, stop: int) -> State:
        part = coords[start:stop].to(next(iter(base.values())).device)
        copies = stop - start
        out = {}
        for name, tensor in base.items():
            stacked = tensor.unsqueeze(0).expand(copies, *tensor.shape)
            for axis, direction in enumerate(directions):
                if name in direction:
                    step = direction[name].unsqueeze(0)
                    stacked = stacked + _broadcast(part[:, axis].to(tensor.dtype), step) * step
            out[name] = stacked
        return out

    return chunk


def positive_names(model: nn.Module) -> set[str]:
    """State entries that must stay positive along a line: BN running variances and the
    quantizer parameters (LSQ step sizes) of quantized layers (a convex combination of positive
    values is positive; the clamp guards rounding and lines given by hand)."""
    names = set()
    for prefix, module in model.named_modules():
        dot = f"{prefix}." if prefix else ""
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_var is not None:
            names.add(f"{dot}running_var")
        if callable(getattr(module, "quantized_weight", None)):
            names |= {f"{dot}{n}" for n, _ in module.named_parameters(recurse=False)
                      if n not in ("weight", "bias")}
    return names


def line_chunk(start_state: State, end_state: State, ts: Tensor, positive: set[str]) -> StateChunk:
    """Stacked states (1 - t) start + t end of the points start..stop-1; entries in `positive`
    are clamped at MIN_QUANTIZER_PARAM (a variance or step size cannot cross zero)."""

    def chunk(start: int, stop: int) -> State:
        out = {}
        for name, first in start_state.items():
            delta = (end_state[name] - first).unsqueeze(0)
            t = _broadcast(ts[start:stop].to(first.device, first.dtype), delta)
            value = first.unsqueeze(0) + t * delta
            out[name] = value.clamp_min(MIN_QUANTIZER_PARAM) if name in positive else value
        return out

    return chunk


def dequantized_state(quantized: nn.Module, fp32: nn.Module) -> State:
    """The quantized model's state under the FP32 twin's names: latent weights of quantized
    layers replaced by the dequantized weights q * s they compute with (so the FP32 architecture
    with this state computes exactly what the quantized model computes)."""
    state = float_state(quantized)
    with torch.no_grad():
        for prefix, module in quantized.named_modules():
            if callable(getattr(module, "quantized_weight", None)):
                state[f"{prefix}.weight" if prefix else "weight"] = module.quantized_weight()
    target = float_state(fp32)
    wrong = [n for n, t in target.items() if n not in state or state[n].shape != t.shape]
    if wrong:
        raise ValueError(f"the FP32 twin's parameters do not match the quantized model's "
                         f"(first: {wrong[0]}); cannot interpolate between them")
    return {n: state[n].to(target[n].dtype) for n in target}


class _Context:
    """What every curve of one trial needs: the model, the data, the evaluator settings."""

    def __init__(self, store: ResultsStore, trial: dict[str, Any],
                 settings: LandscapeSettings) -> None:
        from qgen_sweep.trial.config import TrialConfig, TrialRuntime
        from qgen_sweep.trial.data import load_dataset, resolve_device
        from qgen_sweep.trial.train import load_model

        self.store, self.trial, self.settings = store, trial, settings
        self.config = TrialConfig.from_dict(json.loads(trial["config_json"]))
        self.device = resolve_device(settings.device)
        self.checkpoints = store.checkpoint_dir(trial["trial_id"])
        self.load_model = load_model
        self.model, _ = load_model(self.checkpoints, self.config, "best", str(self.device))
        runtime = TrialRuntime(device=str(self.device), data_dir=settings.data_dir)
        data = load_dataset(self.config.dataset, runtime)
        self.x, self.y = data.train_x, data.train_y
        self.twin_config = TrialConfig.from_dict(fp32_twin_config(self.config.to_dict()))

    def evaluator(self, model: nn.Module):
        s = self.settings
        return evaluator_for(model, self.x, self.y, s.eval_batch_size, s.points)


def _surface(ctx: _Context) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    s = ctx.settings
    seed = direction_seed(ctx.twin_config.trial_id, s.seed)
    directions = [random_direction(ctx.model, seed, k, s.ignore) for k in range(s.dims)]
    offsets = surface_offsets(s)
    coords = torch.tensor([[surface_coordinate(s, i), surface_coordinate(s, j)][: s.dims]
                           for i, j in offsets], dtype=torch.float64)
    evaluator = ctx.evaluator(ctx.model)
    losses, accs = evaluator.evaluate(surface_chunk(float_state(ctx.model), directions, coords),
                                      len(offsets))
    rows = [{"i": i, "j": j, "a": surface_coordinate(s, i), "b": surface_coordinate(s, j),
             "loss": float(loss), "accuracy": float(acc)}
            for (i, j), loss, acc in zip(offsets, losses, accs, strict=True)]
    return rows, {"direction_seed": seed, "evaluator": evaluator.name,
                  "points_per_pass": evaluator.points}


def _line(ctx: _Context, model: nn.Module, start: State, end: State):
    n, offsets = interpolation_offsets(ctx.settings)
    ts = torch.tensor([k / n for k in offsets], dtype=torch.float64)
    evaluator = ctx.evaluator(model)
    losses, accs = evaluator.evaluate(line_chunk(start, end, ts, positive_names(model)),
                                      len(offsets))
    rows = [{"i": k, "j": 0, "a": k / n, "b": 0.0, "loss": float(loss), "accuracy": float(acc)}
            for k, loss, acc in zip(offsets, losses, accs, strict=True)]
    return rows, {"evaluator": evaluator.name, "points_per_pass": evaluator.points}


def _init_line(ctx: _Context):
    init, _ = ctx.load_model(ctx.checkpoints, ctx.config, "init", str(ctx.device))
    return _line(ctx, ctx.model, float_state(init), float_state(ctx.model))


def _twin_line(ctx: _Context):
    twin_dir = ctx.store.checkpoint_dir(ctx.twin_config.trial_id)
    fp32, _ = ctx.load_model(twin_dir, ctx.twin_config, "best", str(ctx.device))
    return _line(ctx, fp32, float_state(fp32), dequantized_state(ctx.model, fp32))


CURVE_FUNCTIONS = {"surface": _surface, "init": _init_line, "twin": _twin_line}


def curve_rows(ctx: _Context, kind: str) -> list[dict[str, Any]]:
    """Every row of one curve of the trial, with its settings and provenance columns."""
    s, trial = ctx.settings, ctx.trial
    started = time.perf_counter()
    points, extra = CURVE_FUNCTIONS[kind](ctx)
    seconds = time.perf_counter() - started
    common = {
        "trial_id": trial["trial_id"], "sweep": trial.get("sweep"),
        "dataset": ctx.config.dataset, "bits": ctx.config.bits, "landscape_id": s.key(),
        "kind": kind, "dims": s.dims, "grid": s.grid, "span": float(s.span), "seed": s.seed,
        "ignore": s.ignore, "examples": len(ctx.y),
        "twin_id": None if ctx.config.bits == 32 else ctx.twin_config.trial_id,
        "seconds": seconds, "device": str(ctx.device), "host": host(),
        "versions_json": versions_json(), "computed_at": now(), **extra,
    }
    return [{**common, **point} for point in points]


def compute_trial(store: ResultsStore, trial: dict[str, Any], settings: dict[str, Any]) -> None:
    """Compute the curves the trial's landscape file lacks and rewrite it atomically (the work
    function of `qgen-sweep landscape`; raises on failure, the job runner records it)."""
    s = LandscapeSettings.from_dict(settings)
    if s.threads:
        torch.set_num_threads(s.threads)
    todo = ledger.missing_curves(store, trial, s)
    if not todo:
        return
    ctx = _Context(store, trial, s)
    rows = [row for kind in todo for row in curve_rows(ctx, kind)]
    trial_id, bits = trial["trial_id"], int(trial["bits"])
    store.write_rows(FOLDER, trial_id, bits, [*store.rows(FOLDER, trial_id, bits), *rows])


def run_job(results_dir: str, trial: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """One trial's landscape (the job of ledger.LANDSCAPE); never raises for a trial's own
    failure, which becomes a row under landscape_failures/. Returns {"trial_id", "bits",
    "status": "computed" | "failed", "seconds", "message"}."""
    from qgen_sweep.posthoc.job import run_guarded

    return run_guarded(ledger.LANDSCAPE, results_dir, trial,
                       lambda store, row: compute_trial(store, row, settings))
