"""Corruptions generated on the fly: batched tensor ops on the device with CIFAR-C's parameters.

    images = corrupt(x, "motion_blur", severity=3, generator=g)   # (B, C, H, W) in [0, 1]

`corrupt` takes clean images in [0, 1] (C = 1 or 3) and returns the corrupted images as 8-bit
levels / 255, truncated as the released CIFAR-C files were (numpy's uint8 cast of the
corruption's [0, 255] output). Every op runs on whole batches on x's device; the random draws
come from `generator` (on the same device), so a seed gives the same corrupted set to every
model. The numbers per severity are in qgen_sweep.robustness.params.CIFAR.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from qgen_sweep.robustness.ops import blur, digital, jpeg, noise, weather
from qgen_sweep.robustness.params import CIFAR, NOT_GENERATED

Op = Callable[[Tensor, object, torch.Generator], Tensor]

OPS: dict[str, Op] = {
    "gaussian_noise": noise.gaussian_noise,
    "shot_noise": noise.shot_noise,
    "impulse_noise": noise.impulse_noise,
    "speckle_noise": noise.speckle_noise,
    "defocus_blur": blur.defocus_blur,
    "glass_blur": blur.glass_blur,
    "motion_blur": blur.motion_blur,
    "zoom_blur": blur.zoom_blur,
    "gaussian_blur": blur.gaussian_blur,
    "snow": weather.snow,
    "frost": weather.frost,
    "fog": weather.fog,
    "brightness": digital.brightness,
    "contrast": digital.contrast,
    "saturate": digital.saturate,
    "elastic_transform": digital.elastic_transform,
    "pixelate": digital.pixelate,
    "jpeg_compression": jpeg.jpeg_compression,
}


def quantize(values: Tensor) -> Tensor:
    """[0, 255] floats -> uint8 levels (truncated, as numpy's uint8 cast) / 255, float32."""
    return (torch.floor(values.clamp(0, 255)) / 255).float()


def corrupt(x: Tensor, name: str, severity: int, generator: torch.Generator) -> Tensor:
    """`name` at `severity` (1..5) applied to x (B, C, H, W) in [0, 1]."""
    if name in NOT_GENERATED:
        raise ValueError(f"{name} cannot be generated: {NOT_GENERATED[name]}")
    if name not in OPS:
        raise ValueError(f"unknown corruption {name!r}; known: {', '.join(OPS)}")
    if severity not in (1, 2, 3, 4, 5):
        raise ValueError(f"severity must be 1 to 5, but got {severity}")
    params = CIFAR[name][severity - 1]
    return quantize(OPS[name](x.double(), params, generator))
