"""GPU throughput of the trial engine for the paper's grid; run it on one CUDA GPU.

    python benchmarks/gpu.py [--out results.json] [--budget 420] [--compile-mode default]
    python benchmarks/gpu.py --smoke --device cpu   # tiny sizes: checks the script itself runs

Self-contained: writes a synthetic CIFAR-10 (torchvision's file layout, random pixels; speed does
not depend on pixel values) to a temporary folder and trains through the real engine
(`run_trial` unfused, `run_bundle` fused) with the NiN of depth 3, width 10 (250 channels), batch
128, at bits 2 and 32. Each case trains 2 short epochs of STEPS steps; the second epoch's time is
scaled to a full CIFAR epoch (50,000 // 128 = 390 steps), so compilation and warm-up are not
counted. Prints seconds per epoch (unfused; fused K in {1, 8, 27}; eager and compiled), peak GPU
memory, grouped-vs-separate conv timings per shape, and the GPU-hours the full 972-trial x
300-epoch grid would take at the best measured per-model rate. Stops starting new cases when the
time budget (seconds, default 420) is spent, so the whole run stays under 8 minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from qgen_sweep.trial.bundle import run_bundle  # noqa: E402
from qgen_sweep.trial.config import TrialConfig, TrialRuntime  # noqa: E402
from qgen_sweep.trial.fused import FusedNiN, time_conv_impls  # noqa: E402
from qgen_sweep.trial.models import build_model  # noqa: E402
from qgen_sweep.trial.train import run_trial  # noqa: E402

STEPS = 40  # steps per measured epoch
WIDTH, BASE_WIDTH, KS = 10, 25, (1, 8, 27)  # the paper's depth-3 width-10 NiN; --smoke shrinks
FULL_EPOCH_STEPS = 50_000 // 128  # CIFAR-10 training split at batch 128, ragged batch dropped
GRID_TRIALS, GRID_EPOCHS = 972, 300  # cifar10-grid (science.md)
LRS = {"sgd": (0.1, 0.05, 0.01), "adam": (1e-3, 5e-4, 1e-4), "rmsprop": (1e-3, 5e-4, 1e-4)}


def write_cifar10(root: Path, n_train: int, n_test: int = 1000) -> None:
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    files = [(f"data_batch_{i}", n_train // 5) for i in range(1, 6)] + [("test_batch", n_test)]
    for name, n in files:
        batch = {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, size=n)]}
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle)


def members(bits: int, k: int) -> list[TrialConfig]:
    """k grid points of depth 3 width 10 at `bits` (optimizers x lrs x weight decays)."""
    base = TrialConfig("cifar10", bits, "sgd", 0.1, 0.0, depth=3, width=WIDTH,
                       base_width=BASE_WIDTH, epochs=2, batch_size=128)
    grid = [(o, lr, wd) for wd in (0.0, 1e-4, 2e-4) for o in LRS for lr in LRS[o]]
    return [dataclasses.replace(base, optimizer=o, lr=lr, weight_decay=wd)
            for o, lr, wd in grid[:k]]


def measure(case: dict, root: Path, device: str) -> dict:
    """Train one case (2 epochs) and return seconds per full epoch and peak memory."""
    runtime = TrialRuntime(device=device, data_dir=str(root), eval_test_every=0,
                           compile=case["compile"], channels_last=True)
    configs = members(case["bits"], case["k"])
    configs = [dataclasses.replace(c, amp=case["amp"]) for c in configs]
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    if case["engine"] == "unfused":
        result = run_trial(configs[0], runtime)
    else:
        result = run_bundle(configs, runtime, conv_impl="auto")[0]
    epoch_s = result.history[-1].seconds * FULL_EPOCH_STEPS / STEPS
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    return {**case, "seconds_per_epoch": epoch_s,
            "seconds_per_epoch_per_model": epoch_s / case["k"], "peak_memory_gib": peak,
            "wall_s": time.perf_counter() - started, "status": result.status}


def cases(compile_mode: str) -> list[dict]:
    """Most informative first (the budget may cut the tail): eager, bf16, then compiled."""
    big = max(KS)
    case = lambda engine, k, bits, mode, amp="none": {  # noqa: E731
        "engine": engine, "k": k, "bits": bits, "compile": mode, "amp": amp}
    out = [case("unfused", 1, b, None) for b in (2, 32)]
    out += [case("fused", k, b, None) for k in sorted(KS, reverse=True) for b in (2, 32)]
    out += [case("fused", big, b, None, "bf16") for b in (2, 32)]
    for k in sorted(KS, reverse=True):
        for b in (2, 32):
            if k == big:
                out.append(case("unfused", 1, b, compile_mode))
            out.append(case("fused", k, b, compile_mode))
    return out


def conv_choices(device: torch.device, limit: int | None = None) -> list[dict]:
    """Grouped vs separate convs for the fused NiN's conv shapes (250 channels)."""
    cfg = TrialConfig("cifar10", 32, "sgd", 0.1, 0.0, depth=3, width=WIDTH, base_width=BASE_WIDTH)
    specs = FusedNiN([build_model(cfg, 3, 10)]).convs
    rows = []
    for k in KS[1:]:
        size = 32
        for spec in specs:
            size_in = size
            size = (size + 2 * spec.padding - spec.kernel) // spec.stride + 1
            if spec.shared_input or (limit is not None and len(rows) >= limit):
                continue
            t = time_conv_impls(k, spec, 128, size_in, device, reps=5, channels_last=True)
            rows.append({"k": k, "conv": spec.name, "kernel": spec.kernel, "in_size": size_in,
                         "grouped_ms": 1e3 * t["grouped"], "split_ms": 1e3 * t["split"]})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds for all cases")
    parser.add_argument("--compile-mode", default="default", help="torch.compile mode")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu with --smoke")
    parser.add_argument("--smoke", action="store_true", help="tiny model and K: a script check")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: no CUDA device; this benchmark measures GPU throughput", file=sys.stderr)
        return 2
    if args.smoke:
        global STEPS, WIDTH, BASE_WIDTH, KS
        STEPS, WIDTH, BASE_WIDTH, KS = 2, 1, 4, (1, 2, 3)
    torch.backends.cudnn.benchmark = True
    device = torch.device(args.device)
    start = time.perf_counter()
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    report = {"device": name, "torch": torch.__version__, "smoke": args.smoke,
              "steps_per_measured_epoch": STEPS, "cases": [], "skipped": []}
    print(f"device: {report['device']}  torch {torch.__version__}", flush=True)
    report["conv_choices"] = conv_choices(device, 1 if args.smoke else None)
    for row in report["conv_choices"]:
        print(f"  conv K={row['k']:2d} {row['conv']:10s} {row['kernel']}x{row['kernel']} "
              f"@{row['in_size']:2d}: grouped {row['grouped_ms']:.2f} ms, "
              f"separate {row['split_ms']:.2f} ms", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        write_cifar10(Path(tmp), STEPS * 128)
        for case in cases(args.compile_mode):
            if time.perf_counter() - start > args.budget:
                report["skipped"].append(case)
                continue
            try:
                row = measure(case, Path(tmp), args.device)
            except Exception as error:  # report and go on: one failing mode must not hide the rest
                row = {**case, "error": f"{type(error).__name__}: {error}"[:300]}
            report["cases"].append(row)
            print_row(row)
    summarise(report)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"total {time.perf_counter() - start:.0f} s", flush=True)
    return 0


def print_row(row: dict) -> None:
    label = (f"{row['engine']:7s} K={row['k']:2d} bits={row['bits']:2d} "
             f"{'compiled' if row['compile'] else 'eager':8s} amp={row['amp']}")
    if "error" in row:
        print(f"  {label}: FAILED {row['error']}", flush=True)
        return
    print(f"  {label}: {row['seconds_per_epoch']:7.2f} s/epoch, "
          f"{row['seconds_per_epoch_per_model']:6.2f} s/epoch/model, "
          f"peak {row['peak_memory_gib']:.1f} GiB", flush=True)


def summarise(report: dict) -> None:
    ok = [r for r in report["cases"] if "error" not in r]
    if not ok:
        return
    for amp in ("none", "bf16"):
        rows = [r for r in ok if r["amp"] == amp]
        if not rows:
            continue
        by_bits = {}
        for bits in (2, 32):
            best = [r["seconds_per_epoch_per_model"] for r in rows if r["bits"] == bits]
            if best:
                by_bits[bits] = min(best)
        mean = sum(by_bits.values()) / len(by_bits)
        hours = GRID_TRIALS * GRID_EPOCHS * mean / 3600
        report[f"grid_gpu_hours_amp_{amp}"] = hours
        print(f"extrapolated cifar10-grid ({GRID_TRIALS} trials x {GRID_EPOCHS} epochs, "
              f"depth-3 width-10 rate, amp={amp}): {hours:.1f} GPU-hours "
              f"(best per-model s/epoch {by_bits})", flush=True)
    unfused = [r for r in ok
               if r["engine"] == "unfused" and r["amp"] == "none" and not r["compile"]]
    if unfused:
        hours = GRID_TRIALS * GRID_EPOCHS * (
            sum(r["seconds_per_epoch"] for r in unfused) / len(unfused)) / 3600
        report["grid_gpu_hours_unfused_eager"] = hours
        print(f"  for comparison, unfused eager one model at a time: {hours:.1f} GPU-hours")


if __name__ == "__main__":
    sys.exit(main())
