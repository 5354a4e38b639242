"""Cost of the generalization measures: batched Monte Carlo samples vs one deep copy
at a time, and training-set passes and seconds per measured smoke model.

Side by side, same model (a trained smoke NiN: digits, Int2, depth 2, 16 channels), same data,
same seeds, same eval batch size: the PAC-Bayes sigma search with the K = 10 Monte Carlo copies
of each bisection step stacked in one forward pass (qgen_sweep.measures.perturb.BatchedEvaluator)
against the reference code's way (a deep copy per sample, one pass each: NaiveEvaluator). Runs
alternate (ours, naive, ours, ...) and the best of each is kept, because the machine is shared.
`ratio` = naive seconds / ours (higher is better).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from qgen_sweep.measures.fold import plain_network
from qgen_sweep.measures.perturb import BatchedEvaluator, NaiveEvaluator
from qgen_sweep.measures.run import MeasureSettings, measure_networks
from qgen_sweep.measures.search import SearchSettings, pacbayes_search
from qgen_sweep.trial.config import TrialConfig, TrialRuntime
from qgen_sweep.trial.data import load_dataset
from qgen_sweep.trial.train import load_model, run_trial

# The smoke sweep's Int2 SGD model at width 8 (sweeps/smoke.toml).
SMOKE = TrialConfig("digits", 2, "sgd", 0.05, 1e-4, depth=2, width=8, base_width=2, epochs=3,
                    batch_size=64, milestones=(2,))
EVAL_BATCH = 1024


def _trained(folder: Path) -> tuple[torch.nn.Sequential, torch.nn.Sequential]:
    runtime = TrialRuntime(device="cpu", threads=torch.get_num_threads())
    run_trial(SMOKE, runtime, checkpoint_dir=folder)
    best, _ = load_model(folder, SMOKE, "best")
    init, _ = load_model(folder, SMOKE, "init")
    return plain_network(best), plain_network(init)


def _timed_search(evaluator, acc0: float, settings: SearchSettings) -> tuple[float, Any]:
    start = time.perf_counter()
    result = pacbayes_search(evaluator, acc0, settings, magnitude=False)
    return time.perf_counter() - start, result


def _side_by_side(net, x, y, settings: SearchSettings, repeats: int) -> dict[str, Any]:
    acc0 = BatchedEvaluator(net, x, y, EVAL_BATCH).clean_accuracy()
    ours, naive = [], []
    for _ in range(repeats):
        ours.append(_timed_search(BatchedEvaluator(net, x, y, EVAL_BATCH), acc0, settings))
        naive.append(_timed_search(NaiveEvaluator(net, x, y, EVAL_BATCH), acc0, settings))
    return {"ours": min(t for t, _ in ours), "naive": min(t for t, _ in naive),
            "ours_result": ours[0][1], "naive_result": naive[0][1]}


def run(quick: bool) -> list[dict]:
    """Figures: sigma search ours vs naive; seconds and passes of a full default measurement."""
    torch.set_num_threads(2)
    data = load_dataset("digits", TrialRuntime(device="cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        trained, init = _trained(Path(tmp))
    search = SearchSettings(iterations=4 if quick else 15)
    side = _side_by_side(trained, data.train_x, data.train_y, search, 1 if quick else 3)
    same = side["ours_result"].value == side["naive_result"].value
    figures = [{
        "name": "pacbayes_sigma_search_seconds", "value": side["ours"], "unit": "s",
        "baseline": side["naive"], "ratio": side["naive"] / side["ours"],
        "notes": f"smoke Int2 NiN on digits (m={len(data.train_y)}), {search.mc_samples} MC "
                 f"samples x <= {search.iterations} bisection steps, eval batch {EVAL_BATCH}; "
                 f"baseline = deep copy per sample; same sigma found: {same} "
                 f"({side['ours_result'].value:.6f} vs {side['naive_result'].value:.6f})",
    }]
    settings = MeasureSettings(search=SearchSettings() if not quick else
                               SearchSettings(iterations=4, restarts=3), device="cpu")
    start = time.perf_counter()
    row = measure_networks(trained, init, data.train_x, data.train_y, settings)
    seconds = time.perf_counter() - start
    label = "default settings (science.md)" if not quick else "quick settings"
    figures += [
        {"name": "measure_seconds_per_model", "value": seconds, "unit": "s", "baseline": None,
         "ratio": None, "notes": f"all four searches, {label}, one smoke model, CPU"},
        {"name": "train_passes_per_model", "value": row["train_passes"], "unit": "passes",
         "baseline": 600.0, "ratio": None,
         "notes": "examples forwarded / m over all copies (ascent batches included); baseline = "
                  "the paper's ~600 training-set evaluations per model (lower = early stops)"},
    ]
    return figures
