"""Noise corruptions: Gaussian, shot (Poisson), impulse (salt and pepper), speckle.

Each takes x (B, C, H, W) float64 in [0, 1] and returns pixel values in [0, 255], independent
per pixel and channel like the reference's numpy draws.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _normal(x: Tensor, generator: torch.Generator) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def gaussian_noise(x: Tensor, std: float, generator: torch.Generator) -> Tensor:
    """x + N(0, std^2)."""
    return (x + std * _normal(x, generator)).clamp(0, 1) * 255


def shot_noise(x: Tensor, photons: float, generator: torch.Generator) -> Tensor:
    """Poisson(x * photons) / photons: photon counting noise, stronger for fewer photons."""
    return (torch.poisson(x * photons, generator=generator) / photons).clamp(0, 1) * 255


def impulse_noise(x: Tensor, amount: float, generator: torch.Generator) -> Tensor:
    """scikit-image's random_noise(mode="s&p", amount): each value becomes 0 or 1 (equally
    likely) with probability `amount`."""
    flip = torch.rand(x.shape, generator=generator, device=x.device) < amount
    salt = torch.rand(x.shape, generator=generator, device=x.device) < 0.5
    out = torch.where(flip & salt, torch.ones_like(x), x)
    out = torch.where(flip & ~salt, torch.zeros_like(x), out)
    return out.clamp(0, 1) * 255


def speckle_noise(x: Tensor, std: float, generator: torch.Generator) -> Tensor:
    """x + x * N(0, std^2): multiplicative noise."""
    return (x + x * std * _normal(x, generator)).clamp(0, 1) * 255
