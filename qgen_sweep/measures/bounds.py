"""Bound formulas of the PAC-Bayes and sharpness measures (science.md, after Jiang et al. 2019
and the reference code of Dziugaite et al. 2020).

Notation: m = training examples, omega = number of conv weights, u = w - w0 (trained minus
initial, both folded), `ref` = u for the *-init measures and w for the *-orig ones. Logs are
natural. Every reported value is normalised as sqrt(x / m), as in the paper's Table 3.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

DELTA = 0.05  # confidence parameter of the magnitude-aware sharpness bound (reference code)
BOUND_CONSTANT = 10.0  # the "+ 10" of every bound (reference code)


def pacbayes(ref_sq_norm: float, sigma: float, m: int) -> float:
    """||ref||^2 / (4 sigma^2) + log(m / sigma) + 10."""
    return ref_sq_norm / (4 * sigma**2) + math.log(m / sigma) + BOUND_CONSTANT


def sharpness(ref_sq_norm: float, alpha: float, m: int, omega: int) -> float:
    """||ref||^2 log(2 omega) / (4 alpha^2) + log(m / alpha) + 10."""
    return ref_sq_norm * math.log(2 * omega) / (4 * alpha**2) + math.log(m / alpha) + BOUND_CONSTANT


def _log_ratio_sum(numerator: float, u: Tensor, scale: float, eps: float) -> float:
    """sum_i log(numerator / (eps^2 + scale^2 u_i^2)), in float64."""
    denominator = eps**2 + scale**2 * u.double() ** 2
    return float(torch.log(numerator / denominator).sum())


def pacbayes_mag(ref_sq_norm: float, u: Tensor, sigma: float, m: int, eps: float) -> float:
    """1/4 sum_i log((eps^2 + (sigma'^2 + 1) ||ref||^2 / omega) / (eps^2 + sigma'^2 u_i^2))
    + log(m / sigma') + 10, with omega = len(u)."""
    omega = u.numel()
    numerator = eps**2 + (sigma**2 + 1) * ref_sq_norm / omega
    return _log_ratio_sum(numerator, u, sigma, eps) / 4 + math.log(m / sigma) + BOUND_CONSTANT


def sharpness_mag(
    ref_sq_norm: float, u: Tensor, alpha: float, m: int, eps: float, delta: float = DELTA
) -> float:
    """1/4 sum_i log((eps^2 + (alpha'^2 + 4 log(2 omega / delta)) ||ref||^2 / omega) /
    (eps^2 + alpha'^2 u_i^2)) + log(m / delta) + 10, with omega = len(u)."""
    omega = u.numel()
    numerator = eps**2 + (alpha**2 + 4 * math.log(2 * omega / delta)) * ref_sq_norm / omega
    return _log_ratio_sum(numerator, u, alpha, eps) / 4 + math.log(m / delta) + BOUND_CONSTANT


def normalise(value: float, m: int) -> float:
    """sqrt(x / m), the paper's Table 3 normalisation (NaN for a negative or missing x)."""
    if value is None or not math.isfinite(value) or value < 0:
        return math.nan
    return math.sqrt(value / m)


def all_bounds(
    w: Tensor, w0: Tensor, m: int, eps: float, delta: float, scales: dict[str, float | None]
) -> dict[str, float | None]:
    """Raw bounds for every measure whose scale is known; `scales` maps sigma, sigma_mag,
    alpha, alpha_mag to a value or None (search not run). Keys: pacbayes_init_raw, ..."""
    u = (w - w0).double()
    omega = u.numel()
    refs = {"init": float(u.pow(2).sum()), "orig": float(w.double().pow(2).sum())}
    out: dict[str, float | None] = {}
    for ref_name, ref_sq in refs.items():
        sigma, sigma_mag = scales.get("sigma"), scales.get("sigma_mag")
        alpha, alpha_mag = scales.get("alpha"), scales.get("alpha_mag")
        out[f"pacbayes_{ref_name}_raw"] = None if sigma is None else pacbayes(ref_sq, sigma, m)
        out[f"pacbayes_mag_{ref_name}_raw"] = (
            None if sigma_mag is None else pacbayes_mag(ref_sq, u, sigma_mag, m, eps)
        )
        out[f"sharpness_{ref_name}_raw"] = (
            None if alpha is None else sharpness(ref_sq, alpha, m, omega)
        )
        out[f"sharpness_mag_{ref_name}_raw"] = (
            None if alpha_mag is None else sharpness_mag(ref_sq, u, alpha_mag, m, eps, delta)
        )
    return out
