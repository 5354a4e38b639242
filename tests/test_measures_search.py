"""The sigma / alpha searches: known answers, determinism, the sharpness box and eval mode."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest
import torch
from torch import Tensor, nn

from qgen_sweep.measures.perturb import BatchedEvaluator, NaiveEvaluator
from qgen_sweep.measures.search import (
    SearchSettings,
    bisect,
    gaussian_noise,
    noise_std,
    pacbayes_search,
    sharpness_search,
    stream_generator,
)

torch.set_num_threads(2)
PHI_INV = NormalDist().inv_cdf


class Lookup(nn.Module):
    """Example j's logits are row j of `weight`: [a, 0], so class 0 wins by margin a.

    Under independent Gaussian noise of std s0 on the a's and s1 on the zeros, example j stays
    correct with probability Phi(a / sqrt(s0^2 + s1^2)), independently of the others: with
    thousands of examples the accuracy of one noisy copy is that probability to within ~0.5%.
    """

    def __init__(self, n: int, a: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.stack([torch.full((n,), a), torch.zeros(n)], dim=1))

    def forward(self, index: Tensor) -> Tensor:  # (B,) -> (B, 2)
        return self.weight[index]


N = 4000


def _lookup(a: float) -> BatchedEvaluator:
    x = torch.arange(N)
    return BatchedEvaluator(Lookup(N, a), x, torch.zeros(N, dtype=torch.long), batch_size=1000)


def _band(drop_lo: float, drop_hi: float, scale_of_z) -> tuple[float, float]:
    """Scale interval whose exact drop 1 - Phi(z(scale)) lies in [drop_lo, drop_hi]."""
    a, b = scale_of_z(PHI_INV(1 - drop_lo)), scale_of_z(PHI_INV(1 - drop_hi))
    return min(a, b), max(a, b)


# Accept a drop band a little wider than target +- tolerance (0.1 +- 0.01): the mean of 10 noisy
# copies of 4000 examples has a standard deviation of about 0.0015.
DROP_BAND = (0.085, 0.115)


def test_bisect_finds_the_root_of_a_known_monotone_drop() -> None:
    result = bisect(lambda s: s**2 / 4, 0.0, 2.0, iterations=15, target=0.1, tolerance=0.01)
    assert result.converged and abs(result.drop - 0.1) < 0.01
    assert math.sqrt(0.36) <= result.value <= math.sqrt(0.44)
    capped = bisect(lambda s: 0.0, 0.0, 2.0, iterations=15, target=0.1, tolerance=0.01)
    assert not capped.converged and capped.iterations == 15 and capped.value > 1.999


def test_sigma_reference_convention_known_answer() -> None:
    # reference: std = sigma^2 on both logits, so correct w.p. Phi(1 / (sqrt(2) sigma^2)).
    evaluator = _lookup(1.0)
    result = pacbayes_search(evaluator, 1.0, SearchSettings(seed=3), magnitude=False)
    lo, hi = _band(*DROP_BAND, lambda z: math.sqrt(1.0 / (math.sqrt(2) * z)))
    assert result.converged
    assert lo <= result.value <= hi, (result, lo, hi)  # exact answer 0.7428


def test_sigma_jiang_convention_known_answer() -> None:
    evaluator = _lookup(1.0)
    result = pacbayes_search(evaluator, 1.0, SearchSettings(noise="jiang"), magnitude=False)
    lo, hi = _band(*DROP_BAND, lambda z: 1.0 / (math.sqrt(2) * z))
    assert lo <= result.value <= hi, (result, lo, hi)  # exact answer 0.5518


def test_magnitude_aware_sigma_known_answer() -> None:
    # std = sigma'^2 w^2 + eps^2: about sigma'^2 a^2 on the margins and 1e-6 on the zeros, so
    # correct w.p. Phi(1 / (sigma'^2 a)); with a = 0.5 the answer is sqrt(2 / 1.2816) = 1.2492.
    evaluator = _lookup(0.5)
    result = pacbayes_search(evaluator, 1.0, SearchSettings(), magnitude=True)
    lo, hi = _band(*DROP_BAND, lambda z: math.sqrt(1.0 / (0.5 * z)))
    assert lo <= result.value <= hi, (result, lo, hi)


def test_seeded_searches_are_deterministic_and_chunking_does_not_change_them() -> None:
    settings = SearchSettings(seed=7, mc_samples=6, iterations=6, tolerance=1e-6)
    first = pacbayes_search(_lookup(1.0), 1.0, settings, magnitude=False)
    again = pacbayes_search(_lookup(1.0), 1.0, settings, magnitude=False)
    chunked = pacbayes_search(
        _lookup(1.0), 1.0, SearchSettings(seed=7, mc_samples=6, iterations=6, tolerance=1e-6,
                                          mc_chunk=4), magnitude=False
    )
    other_seed = pacbayes_search(
        _lookup(1.0), 1.0, SearchSettings(seed=8, mc_samples=6, iterations=6, tolerance=1e-6),
        magnitude=False,
    )
    assert first == again == chunked
    assert other_seed.drop != first.drop


def _conv_bn_net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 6, 3, stride=2, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 4, 1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(1),
    )
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return net


def test_batched_and_naive_evaluators_agree_on_the_same_noise() -> None:
    net = _conv_bn_net()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 1, 8, 8, generator=g), torch.randint(0, 4, (300,), generator=g)
    batched = BatchedEvaluator(net, x, y, batch_size=128)
    naive = NaiveEvaluator(net, x, y, batch_size=128)
    stds = {n: noise_std(w, 0.3, None, "reference") for n, w in batched.base.items()}
    noise = gaussian_noise(batched.base, stds, 5, stream_generator(0, "pacbayes", x.device))
    torch.testing.assert_close(batched.accuracies(noise), naive.accuracies(noise), atol=1 / 300,
                               rtol=0)
    assert batched.counter.examples == naive.counter.examples == 5 * 300


@pytest.mark.parametrize("magnitude", [False, True])
def test_sharpness_search_stays_in_its_box_and_in_eval_mode(magnitude: bool) -> None:
    net = _conv_bn_net()
    stats = {n: b.clone() for n, b in net.named_buffers()}
    params = {n: p.detach().clone() for n, p in net.named_parameters()}
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(200, 1, 8, 8, generator=g), torch.randint(0, 4, (200,), generator=g)
    evaluator = BatchedEvaluator(net, x, y, batch_size=64)
    acc0 = evaluator.clean_accuracy()
    steps: list[float] = []

    def observe(u: dict[str, Tensor], box: dict[str, Tensor]) -> None:
        # Largest excess of |u_i| over its half-width, after this ascent step.
        steps.append(max(float((t.abs() - box[n]).max()) for n, t in u.items()))

    settings = SearchSettings(iterations=3, restarts=3, ascent_steps=4, ascent_batch_size=64,
                              ascent_lr=5.0, mc_chunk=2)
    result = sharpness_search(evaluator, acc0, settings, magnitude, observer=observe)
    assert 0 < result.value < 2
    # 3 bisection steps at most x restarts in chunks of 2 and 1 x 4 ascent steps.
    assert len(steps) == result.iterations * 2 * 4
    assert max(steps) <= 1e-6  # never outside the box, also with a huge ascent step
    assert not net.training
    for name, buffer in net.named_buffers():
        torch.testing.assert_close(buffer, stats[name], rtol=0, atol=0)  # BN stats unchanged
    for name, param in net.named_parameters():
        torch.testing.assert_close(param.detach(), params[name], rtol=0, atol=0)


def test_gradient_ascent_raises_the_training_loss() -> None:
    from qgen_sweep.measures.search import ascent, sharpness_box

    net = _conv_bn_net()
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(128, 1, 8, 8, generator=g), torch.randint(0, 4, (128,), generator=g)
    evaluator = BatchedEvaluator(net, x, y, batch_size=128)
    box = sharpness_box(evaluator.base, 1.0, None)
    start = {n: torch.zeros_like(b).unsqueeze(0) for n, b in box.items()}
    batches = [torch.arange(128)] * 10
    end = ascent(evaluator, start, box, batches, lr=2.0)
    with torch.no_grad():
        before = float(evaluator.losses(start, x, y)[0])
        after = float(evaluator.losses(end, x, y)[0])
    assert after > before + 0.1
