"""Stacked evaluation of perturbed copies equals evaluating each copy on its own."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from qgen_sweep.measures.fold import plain_network, weight_vector
from qgen_sweep.measures.perturb import BatchedEvaluator, stacked_forward, supports_stacking
from qgen_sweep.trial.config import TrialConfig
from qgen_sweep.trial.models import build_model

torch.set_num_threads(2)


def _copies_one_by_one(module: nn.Module, params: dict, x: torch.Tensor) -> torch.Tensor:
    copies = next(iter(params.values())).shape[0]
    outs = []
    for k in range(copies):
        state = {**dict(module.named_buffers()), **{n: p[k] for n, p in params.items()}}
        outs.append(torch.func.functional_call(module, state, (x,)))
    return torch.stack(outs)


def _random_params(module: nn.Module, copies: int, g: torch.Generator) -> dict:
    return {n: p.detach() + 0.1 * torch.randn(copies, *p.shape, generator=g)
            for n, p in module.named_parameters()}


def test_stacked_forward_of_a_folded_nin_matches_each_copy() -> None:
    config = TrialConfig("digits", 4, "sgd", 0.1, 0.0, depth=2, width=2, base_width=3)
    torch.manual_seed(0)
    net = plain_network(build_model(config, 1, 10).eval())
    assert supports_stacking(net)
    g = torch.Generator().manual_seed(0)
    params = _random_params(net, 4, g)
    x = torch.randn(5, 1, 8, 8, generator=g)
    got = stacked_forward(net, params, {}, x)
    torch.testing.assert_close(got, _copies_one_by_one(net, params, x), rtol=1e-5, atol=1e-5)


def test_stacked_forward_with_batchnorm_in_eval_mode() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(1)).eval()
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
    g = torch.Generator().manual_seed(1)
    params = _random_params(net, 3, g)
    x = torch.randn(4, 2, 6, 6, generator=g)
    buffers = dict(net.named_buffers())
    got = stacked_forward(net, params, buffers, x)
    torch.testing.assert_close(got, _copies_one_by_one(net, params, x), rtol=1e-5, atol=1e-5)


def test_other_modules_fall_back_to_vmap() -> None:
    net = nn.Sequential(nn.Flatten(1), nn.Linear(4, 3))
    assert not supports_stacking(net)
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(10, 4, generator=g), torch.randint(0, 3, (10,), generator=g)
    evaluator = BatchedEvaluator(net, x, y, batch_size=4)
    noise = {n: 0.5 * torch.randn(3, *p.shape, generator=g) for n, p in net.named_parameters()}
    params = evaluator.perturbed(noise)
    expected = _copies_one_by_one(net, params, x).argmax(-1).eq(y).double().mean(-1)
    torch.testing.assert_close(evaluator.accuracies(noise), expected)


@pytest.mark.parametrize("mode", ["vmap", "auto"])  # auto times vmap and the loop, keeps one
def test_a_folded_backbone_evaluates_its_copies_exactly(mode: str) -> None:
    config = TrialConfig("digits", 4, "sgd", 0.1, 0.0, arch="resnet18", base_width=2)
    torch.manual_seed(0)
    net = plain_network(build_model(config, 1, 10).eval())
    assert not supports_stacking(net)
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(12, 1, 8, 8, generator=g), torch.randint(0, 10, (12,), generator=g)
    evaluator = BatchedEvaluator(net, x, y, batch_size=5, generic=mode)
    noise = {n: 0.05 * torch.randn(3, *p.shape, generator=g) for n, p in evaluator.base.items()}
    params = evaluator.perturbed(noise)
    want = _copies_one_by_one(net, params, x)
    torch.testing.assert_close(evaluator.logits(params, x), want, rtol=1e-4, atol=1e-4)
    assert evaluator.mode in ("vmap", "loop")  # auto settled on the faster one
    expected = want.argmax(-1).eq(y).double().mean(-1)
    torch.testing.assert_close(evaluator.accuracies(noise), expected)
    losses = evaluator.losses({n: t.requires_grad_() for n, t in noise.items()}, x, y)
    losses.sum().backward()  # the sharpness ascent differentiates through the copies


def test_fixed_bn_affine_perturbs_only_the_weights() -> None:
    config = TrialConfig("digits", 32, "sgd", 0.1, 0.0, arch="vgg19", base_width=2)
    torch.manual_seed(0)
    net = plain_network(build_model(config, 1, 10).eval())
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    everything = BatchedEvaluator(net, x, y, batch_size=6, perturb="all")
    weights = BatchedEvaluator(net, x, y, batch_size=6, perturb="weights")
    assert set(weights.base) == {n for n in everything.base if n.endswith("weight")}
    assert set(weights.fixed) == {n for n in everything.base if n.endswith("bias")}
    assert weight_vector(net).numel() == sum(p.numel() for p in weights.base.values())
    zero = {n: torch.zeros(2, *p.shape) for n, p in weights.base.items()}
    torch.testing.assert_close(weights.logits(weights.perturbed(zero), x)[0], net(x))
