"""Generated corruptions: batched tensor ops on the device vs the reference numpy implementation
one image at a time (scikit-image / SciPy / OpenCV / Pillow / imagecorruptions with CIFAR-C's
parameters, tests/corruption_reference.py), per corruption at severity 3 on 32 x 32 RGB images.

Side by side in one run: ours corrupts a batch of N images in one call (qgen_sweep.robustness.ops
on the GPU when there is one, else the CPU), the reference loops over M images; each side's
figure is seconds per image, the best of `repeats` runs (the machine is shared). `ratio` =
reference seconds per image / ours (higher is better). The last figure is the whole benchmark's
15 corruptions x 5 severities of a 10,000-image test set, from the per-image times.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the numpy references

import corruption_reference as ref  # noqa: E402

from qgen_sweep.robustness.ops import corrupt  # noqa: E402
from qgen_sweep.robustness.params import CIFAR, COMMON, GENERATED  # noqa: E402

SEVERITY = 3
TEST_SET = 10_000  # CIFAR test images, for the whole-benchmark estimate


def _ours(images: torch.Tensor, name: str, repeats: int) -> float:
    best = float("inf")
    for repeat in range(repeats):
        generator = torch.Generator(device=images.device).manual_seed(repeat)
        if images.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        corrupt(images, name, SEVERITY, generator)
        if images.is_cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best / len(images)


def _reference(images: np.ndarray, name: str, repeats: int) -> float:
    params = CIFAR[name][SEVERITY - 1]
    best = float("inf")
    for repeat in range(repeats):
        rng = np.random.default_rng(repeat)
        start = time.perf_counter()
        for image in images:
            ref.corrupt_one(name, image, params, rng)
        best = min(best, time.perf_counter() - start)
    return best / len(images)


def run(quick: bool) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(2)
    batch, per_image, repeats = (200, 10, 1) if quick else (2000, 100, 3)
    tiles = ref.sample_images(48)
    many = np.concatenate([tiles] * (batch // len(tiles) + 1))[:batch]
    images = (torch.from_numpy(many).permute(0, 3, 1, 2).double() / 255).to(device)
    ref.load_imagecorruptions()
    ref.frost_pictures()  # file reads, once, out of the timing
    corrupt(images[:2], "frost", 1, torch.Generator(device=device))  # likewise for ours
    where = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU (2 threads)"
    figures, ours_total, ref_total = [], 0.0, 0.0
    for name in GENERATED:
        ours = _ours(images, name, repeats)
        theirs = _reference(many[:per_image], name, repeats)
        if name in COMMON:
            ours_total, ref_total = ours_total + ours, ref_total + theirs
        figures.append({
            "name": f"{name}_seconds_per_image", "value": ours, "unit": "s", "baseline": theirs,
            "ratio": theirs / ours,
            "notes": f"severity {SEVERITY}, 32x32 RGB; ours: {batch} images in one call on "
                     f"{where}; baseline: the numpy reference, {per_image} images one by one",
        })
    sets = 5 * TEST_SET  # five severities of the test set, per corruption
    figures.append({
        "name": "benchmark_generation_seconds", "value": ours_total * sets, "unit": "s",
        "baseline": ref_total * sets, "ratio": ref_total / ours_total,
        "notes": f"the 15 corruptions x 5 severities x {TEST_SET} images (severity-{SEVERITY} "
                 f"per-image times x 5), ours on {where} vs the numpy reference on one core",
    })
    return figures
