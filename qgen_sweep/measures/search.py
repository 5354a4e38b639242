"""The searches for the noise scales sigma, sigma' (PAC-Bayes) and alpha, alpha' (sharpness).

science.md "Generalization measures", following the public reference code (Dziugaite et al. 2020,
after Jiang et al. 2019): bisection of the scale on [lo, hi] = [0, 2] for 15 iterations, stopping
early once the training-accuracy drop |acc0 - acc(scale)| is within `tolerance` (0.01) of
`target_drop` (0.1). The scale returned is the last midpoint tried, as in the reference.

- sigma: Gaussian noise on every parameter of the (folded) network; acc(scale) is the mean
  accuracy of `mc_samples` (10) perturbed copies.
- sigma': the same with a per-element scale proportional to |w_i| plus eps (1e-3).
- alpha: worst accuracy over `restarts` projected gradient ascents in the box |u_i| <= alpha, each
  starting from uniform noise in half the box and taking `ascent_steps` (20) steps of `ascent_lr`
  (1e-4, SGD, the paper's appendix B.2) on the training loss, clamped back into the box after
  every step, model in eval mode.
- alpha': the same in the box |u_i| <= alpha' |w_i| + eps.

Noise convention (PAC-Bayes only; the sharpness box is the same in both): `reference` uses
sigma^2 as the standard deviation and sigma'^2 w_i^2 + eps^2 for the magnitude-aware one, as the
reference code does; `jiang` uses sigma and sqrt(sigma'^2 w_i^2 + eps^2) (Jiang et al.'s text).

What is perturbed (`bn_affine`): after folding, what is left of each BN is its per-channel shift
inside the folded bias (its scale is inside the weight). `perturb` (default, as the reference
code, which perturbs the BN parameters) puts noise on every parameter of the folded network,
biases included; `fixed` only on the conv and linear weights.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from qgen_sweep.measures.perturb import BatchedEvaluator, NaiveEvaluator, Params

NOISE_CONVENTIONS = ("reference", "jiang")
BN_AFFINE = {"perturb": "all", "fixed": "weights"}  # setting -> BatchedEvaluator(perturb=...)
# Distinct generator streams per search, so recomputing one search alone gives the same value.
SEARCH_STREAMS = {"pacbayes": 0, "pacbayes_mag": 1, "sharpness": 2, "sharpness_mag": 3}
_STREAM_STRIDE = 1_000_003  # a prime: seeds of different trials and streams never coincide


@dataclass(frozen=True)
class SearchSettings:
    """Bisection and Monte Carlo settings (science.md defaults)."""

    lo: float = 0.0
    hi: float = 2.0
    iterations: int = 15
    target_drop: float = 0.1  # training-accuracy drop the scale is tuned to (fraction)
    tolerance: float = 0.01
    mc_samples: int = 10  # Gaussian samples per bisection step
    # Sharpness restarts per bisection step: 10 makes 4 searches x 15 steps x 10 = 600 training-set
    # evaluations per model, the paper's "~600" figure (science.md "Cost").
    restarts: int = 10
    ascent_steps: int = 20  # the paper's appendix B.2: 20 ascent iterations
    ascent_lr: float = 1e-4  # the paper's appendix B.2: SGD at 0.0001
    # Examples per ascent step (one minibatch per step): the paper's training batch size (B.3).
    # The paper's ~600 training-set evaluations per model leave little room for the ascent, so
    # its steps are minibatches, not passes; 128 keeps them cheap even on small sets (digits).
    ascent_batch_size: int = 128
    magnitude_eps: float = 1e-3
    noise: str = "reference"
    bn_affine: str = "perturb"  # a key of BN_AFFINE (see the module docstring)
    seed: int = 0
    mc_chunk: int = 10  # perturbed copies per forward pass (memory vs speed)


@dataclass(frozen=True)
class SearchResult:
    """Outcome of one bisection: the scale, the drop measured there, steps taken."""

    value: float
    drop: float
    iterations: int
    converged: bool


Observer = Callable[[Params, Params], None]


def bisect(
    drop_at: Callable[[float], float],
    lo: float,
    hi: float,
    iterations: int,
    target: float,
    tolerance: float,
) -> SearchResult:
    """Bisection on the scale: a drop above `target` means too much noise (move `hi` down)."""
    scale, drop = (lo + hi) / 2, float("nan")
    for step in range(1, iterations + 1):
        scale = (lo + hi) / 2
        drop = drop_at(scale)
        if abs(drop - target) < tolerance:
            return SearchResult(scale, drop, step, True)
        if drop > target:
            hi = scale
        else:
            lo = scale
    return SearchResult(scale, drop, iterations, False)


def stream_generator(seed: int, stream: str, device: torch.device) -> torch.Generator:
    """A generator seeded for one (trial seed, search) pair."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed + SEARCH_STREAMS[stream] * _STREAM_STRIDE)
    return generator


def chunks(total: int, size: int) -> Iterator[int]:
    """Sizes of consecutive chunks of `total` items, `size` at most each."""
    done = 0
    while done < total:
        yield min(size, total - done)
        done += size


def noise_std(weight: Tensor, scale: float, magnitude_eps: float | None, noise: str) -> Tensor:
    """Per-element standard deviation of the Gaussian noise (see the module docstring)."""
    if noise not in NOISE_CONVENTIONS:
        raise ValueError(f"noise must be one of {NOISE_CONVENTIONS}, got {noise!r}")
    if magnitude_eps is None:
        std = scale**2 if noise == "reference" else scale
        return torch.full_like(weight, std)
    var_like = scale**2 * weight.abs() ** 2 + magnitude_eps**2
    return var_like if noise == "reference" else var_like.sqrt()


def gaussian_noise(
    base: Params, stds: Params, copies: int, generator: torch.Generator
) -> Params:
    """`copies` stacked Gaussian perturbations, drawn copy by copy (chunking never changes them)."""
    draws: dict[str, list[Tensor]] = {n: [] for n in base}
    for _ in range(copies):
        for name, weight in base.items():
            sample = torch.randn(
                weight.shape, generator=generator, device=weight.device, dtype=weight.dtype
            )
            draws[name].append(sample * stds[name])
    return {n: torch.stack(v) for n, v in draws.items()}


def pacbayes_search(
    evaluator: BatchedEvaluator | NaiveEvaluator,
    acc0: float,
    settings: SearchSettings,
    magnitude: bool,
) -> SearchResult:
    """Bisection for sigma (or sigma' when `magnitude`): mean MC accuracy drops by target_drop."""
    stream = "pacbayes_mag" if magnitude else "pacbayes"
    generator = stream_generator(settings.seed, stream, evaluator.y.device)
    eps = settings.magnitude_eps if magnitude else None

    def drop_at(scale: float) -> float:
        stds = {n: noise_std(w, scale, eps, settings.noise) for n, w in evaluator.base.items()}
        accs = [
            evaluator.accuracies(gaussian_noise(evaluator.base, stds, k, generator))
            for k in chunks(settings.mc_samples, settings.mc_chunk)
        ]
        return abs(acc0 - float(torch.cat(accs).mean()))

    return bisect(
        drop_at, settings.lo, settings.hi, settings.iterations, settings.target_drop,
        settings.tolerance,
    )


def sharpness_box(base: Params, scale: float, magnitude_eps: float | None) -> Params:
    """Half-widths of the box: alpha everywhere, or alpha' |w_i| + eps when magnitude-aware."""
    if magnitude_eps is None:
        return {n: torch.full_like(w, scale) for n, w in base.items()}
    return {n: scale * w.abs() + magnitude_eps for n, w in base.items()}


def _uniform_start(box: Params, copies: int, generator: torch.Generator) -> Params:
    """Uniform noise in half the box, drawn copy by copy (chunking never changes it)."""
    draws: dict[str, list[Tensor]] = {n: [] for n in box}
    for _ in range(copies):
        for name, half in box.items():
            unit = torch.rand(half.shape, generator=generator, device=half.device, dtype=half.dtype)
            draws[name].append((unit * 2 - 1) * half / 2)
    return {n: torch.stack(v) for n, v in draws.items()}


def ascent(
    evaluator: BatchedEvaluator,
    start: Params,
    box: Params,
    batches: list[Tensor],
    lr: float,
    observer: Observer | None = None,
) -> Params:
    """Projected gradient ascent on the training loss, one batch per step, inside the box."""
    u = start
    for index in batches:
        leaves = {n: t.detach().requires_grad_(True) for n, t in u.items()}
        loss = evaluator.losses(leaves, evaluator.x[index], evaluator.y[index]).sum()
        grads = torch.autograd.grad(loss, list(leaves.values()))
        with torch.no_grad():
            u = {
                n: torch.maximum(torch.minimum(t + lr * g, box[n]), -box[n])
                for (n, t), g in zip(leaves.items(), grads, strict=True)
            }
        if observer is not None:
            observer(u, box)
    return u


def ascent_batches(m: int, settings: SearchSettings, generator: torch.Generator) -> list[Tensor]:
    """Index batches of the ascent steps: consecutive slices of one seeded permutation."""
    device = generator.device
    order = torch.randperm(m, generator=generator, device=device)
    size = min(settings.ascent_batch_size, m)
    starts = [(step * size) % m for step in range(settings.ascent_steps)]
    return [order.roll(-start)[:size] for start in starts]


def sharpness_search(
    evaluator: BatchedEvaluator,
    acc0: float,
    settings: SearchSettings,
    magnitude: bool,
    observer: Observer | None = None,
) -> SearchResult:
    """Bisection for alpha (alpha' when `magnitude`): the worst restart drops by target_drop.

    `observer(u, box)` is called after every ascent step (tests check the box there).
    """
    stream = "sharpness_mag" if magnitude else "sharpness"
    generator = stream_generator(settings.seed, stream, evaluator.y.device)
    batches = ascent_batches(evaluator.m, settings, generator)
    eps = settings.magnitude_eps if magnitude else None
    evaluator.module.eval()  # the ascent must not update BN statistics

    def drop_at(scale: float) -> float:
        box = sharpness_box(evaluator.base, scale, eps)
        worst = 1.0
        for copies in chunks(settings.restarts, settings.mc_chunk):
            start = _uniform_start(box, copies, generator)
            u = ascent(evaluator, start, box, batches, settings.ascent_lr, observer)
            worst = min(worst, float(evaluator.accuracies(u).min()))
        return abs(acc0 - worst)

    return bisect(
        drop_at, settings.lo, settings.hi, settings.iterations, settings.target_drop,
        settings.tolerance,
    )
