"""DeiT-T and Swin-T in the registry: the attention that LSQ can reach (against
nn.MultiheadAttention and against PyTorch's learnable fake-quantize as oracles), every linear
layer quantized (no weight bypasses its quantizer), the first/last policy on patch embedding and
head, and VVTQ's bin regularizer against a plain per-bin reference."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from qgen_sweep.trial.config import TrialConfig
from qgen_sweep.trial.lsq import (
    LSQWeight,
    gradient_scale,
    lsq_layers,
    qrange,
    to_lsq,
    weight_layers,
)
from qgen_sweep.trial.models import build_model
from qgen_sweep.trial.models.vit import Attention
from qgen_sweep.trial.vvtq import bin_regularizer, layer_term

SMALL = {"deit_t": 24, "swin_t": 12}  # widths that keep the CPU tests small


def config(arch: str, bits: int, **extra) -> TrialConfig:
    return TrialConfig("cifar10", bits, "sgd", 0.01, 0.0, arch=arch, base_width=SMALL[arch],
                       **extra)


def test_attention_computes_what_multihead_attention_does():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(24, 3, batch_first=True).eval()
    with torch.no_grad():
        mha.in_proj_bias.normal_()
        mha.out_proj.bias.normal_()
    ours = Attention.from_mha(mha).eval()
    x = torch.randn(2, 5, 24, dtype=torch.float64)
    expected, _ = mha.double()(x, x, x, need_weights=False)
    got, weights = ours.double()(x, x, x, need_weights=False)
    assert weights is None
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_quantized_attention_matches_learnable_fake_quantize(bits):
    """The LSQ in_proj / out_proj against an attention computed with torch's learnable
    fake-quantized weights: forward bit for bit; weight and step-size gradients where no
    weight sits in the range-edge band the two rules treat differently (4 and 8 bits here)."""
    torch.manual_seed(bits)
    model = build_model(config("deit_t", bits, first_last="same"), 3, 10, 32)
    attention = model.encoder.layers[0].self_attention
    assert isinstance(attention.in_proj, LSQWeight) and isinstance(attention.out_proj, LSQWeight)
    x = torch.randn(2, 5, 24)
    upstream = torch.randn(2, 5, 24)
    (attention(x)[0] * upstream).sum().backward()

    qn, qp = qrange(bits)
    params, leaves = {}, {}
    for name in ("in_proj", "out_proj"):
        layer = getattr(attention, name)
        w = layer.weight.detach().clone().requires_grad_()
        s = layer.step_size.detach().reshape(1).clone().requires_grad_()
        g = gradient_scale(w.numel(), qp)
        params[f"{name}.weight"] = torch._fake_quantize_learnable_per_tensor_affine(
            w, s, torch.zeros(1), qn, qp, g)
        params[f"{name}.bias"] = layer.bias.detach()
        leaves[name] = (w, s, layer)
    reference = Attention(24, 3)
    out, _ = torch.func.functional_call(reference, params, (x,))
    assert torch.equal(out, attention(x)[0])
    (out * upstream).sum().backward()
    if bits == 2:
        return  # many weights lie beyond Qp: the half-step band makes the rules differ there
    for w, s, layer in leaves.values():
        assert ((w / s).abs() < qp).all()  # no weight near the range edges
        torch.testing.assert_close(layer.weight.grad, w.grad, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(layer.step_size.grad.reshape(1), s.grad, rtol=1e-4,
                                   atol=1e-7)


def _dequantized_copy(model: nn.Module) -> nn.Module:
    """A float copy of `model` whose weights are the quantized values q * s."""
    plain = copy.deepcopy(model)
    for module in plain.modules():
        if isinstance(module, LSQWeight):
            with torch.no_grad():
                module.weight.copy_(module.quantized_weight())
            module.__class__ = module.__class__.__mro__[2]  # LSQLinear -> LSQWeight -> nn.Linear
            del module.step_size
    return plain


@pytest.mark.parametrize("arch", ["deit_t", "swin_t"])
def test_every_linear_layer_is_quantized_and_used(arch):
    """At 2 bits every conv / linear is an LSQ layer, and the model computes exactly what a float
    model with the dequantized weights computes: no weight reaches a kernel unquantized."""
    torch.manual_seed(1)
    model = build_model(config(arch, 2), 3, 10, 32).eval()
    layers = weight_layers(model)
    quantized = dict(lsq_layers(model))
    assert len(quantized) == len(layers)
    names = list(quantized)
    bits = [layer.bits for layer in quantized.values()]
    # first/last policy: patch embedding and head at 8 bits, every block layer at 2
    assert bits[0] == bits[-1] == 8 and set(bits[1:-1]) == {2}
    assert names[0] in ("conv_proj", "features.0.0") and names[-1] in ("heads.head", "head")
    if arch == "deit_t":
        assert sum(n.endswith("self_attention.in_proj") for n in names) == 12
    else:
        assert sum(n.endswith("attn.qkv") for n in names) == 12
    plain = _dequantized_copy(model).eval()
    assert not list(lsq_layers(plain))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain(x), rtol=1e-5, atol=1e-6)
        # and the float weights would give something else: the quantizer is in the path
        float_model = copy.deepcopy(plain)
        for (_, q), f in zip(lsq_layers(model), weight_layers(float_model), strict=True):
            f.weight.copy_(q.weight)
        assert not torch.allclose(model(x), float_model(x), atol=1e-3)


def _reference_term(weight, step, bits):
    qn, qp = qrange(bits)
    clipped = weight.clamp(qn * step, qp * step)
    codes = (weight / step).clamp(qn, qp).round()
    total = ((clipped - codes * step) ** 2).mean()
    for code in range(qn, qp + 1):
        members = clipped[codes == code]
        if members.numel() > 1:
            total = total + members.var()
    return total


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_bin_regularizer_matches_per_bin_reference(bits):
    torch.manual_seed(bits)
    weight = (torch.randn(64, 48) * 0.05).double()
    step = torch.tensor(0.02, dtype=torch.float64)
    w1, w2 = weight.clone().requires_grad_(), weight.clone().requires_grad_()
    ours = layer_term(w1.float().double(), step, bits)  # fp32 inside, as in training
    ref = _reference_term(w2, step, bits)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-4, atol=1e-9)
    ours.backward()
    ref.backward()
    torch.testing.assert_close(w1.grad, w2.grad, rtol=1e-3, atol=1e-7)


def test_bin_regularizer_pulls_weights_to_bin_centres_and_spares_step_sizes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 10))
    model[0] = to_lsq(model[0], 2)
    optimizer = torch.optim.Adam([model[0].weight], lr=2e-3)
    start = float(bin_regularizer(model).detach())
    for _ in range(50):
        optimizer.zero_grad()
        bin_regularizer(model).backward()
        optimizer.step()
    assert float(bin_regularizer(model).detach()) < 0.5 * start
    assert model[0].step_size.grad is None  # the step size gets no gradient from it
    assert float(bin_regularizer(build_model(config("deit_t", 32), 3, 10, 32))) == 0.0


def _digits_deit(bits: int, epochs: int = 3):
    from qgen_sweep.trial.config import TrialRuntime
    from qgen_sweep.trial.train import run_trial

    config = TrialConfig("digits", bits, "adam", 1e-3, 0.0, arch="deit_t", base_width=24,
                         epochs=epochs, batch_size=64, milestones=(epochs,), first_last="same")
    return run_trial(config, TrialRuntime(device="cpu", threads=2))


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_quantized_deit_takes_steps_with_positive_step_sizes(bits):
    """A few optimizer steps of a DeiT-T-shaped model (12 blocks) on tiny images: the loss is
    finite, every step size moves and stays positive after the clamp."""
    from qgen_sweep.trial.lsq import clamp_step_sizes

    torch.manual_seed(bits)
    model = build_model(config("deit_t", bits), 3, 4, 16)
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 4, (8,))
    before = {n: float(q.step_size) for n, q in lsq_layers(model)}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(3):
        loss = nn.functional.cross_entropy(model(x), y)
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        clamp_step_sizes(model)
    after = {n: float(q.step_size) for n, q in lsq_layers(model)}
    assert min(after.values()) > 0
    assert sum(after[n] != before[n] for n in after) > len(after) // 2


@pytest.mark.slow  # 4 trials of a 12-block transformer: minutes on 2 loaded cores
def test_quantized_deit_trains_at_every_precision_with_positive_step_sizes():
    """A DeiT-T-shaped model (12 blocks, 3 heads, patch 4 on digits' 8 px) trains a few epochs
    at 2 / 4 / 8 bits; every step size stays positive and the loss goes down. Int2 ends with a
    higher training loss than FP32 (the paper's pattern; seeds equal)."""
    results = {bits: _digits_deit(bits) for bits in (2, 4, 8, 32)}
    for bits, result in results.items():
        assert result.status == "done"
        losses = [m.train_loss for m in result.history]
        assert losses[-1] < losses[0], (bits, losses)
        if bits != 32:
            assert result.step_sizes and min(result.step_sizes.values()) > 0
            assert all(m.step_size_min > 0 for m in result.history)
    assert results[2].train_loss > results[32].train_loss
