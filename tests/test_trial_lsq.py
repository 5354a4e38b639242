"""LSQ quantizer: hand-computed example, PyTorch's learnable fake-quantize as oracle (for the
quantizer and for every layer wrapper: conv, depthwise conv, linear), gradient scale, initial
step size, positivity, fp32 under autocast."""

from __future__ import annotations

import math

import pytest
import torch

from qgen_sweep.trial.lsq import (
    MIN_STEP_SIZE,
    LSQConv2d,
    LSQLinear,
    clamp_step_sizes,
    gradient_scale,
    lsq_quantize,
    qrange,
    to_lsq,
)


def test_qrange_is_the_signed_integer_range() -> None:
    assert qrange(2) == (-2, 1)
    assert qrange(4) == (-8, 7)
    assert qrange(8) == (-128, 127)
    with pytest.raises(ValueError, match="bits"):
        qrange(3)


def test_hand_computed_two_bit_example() -> None:
    # 2 bits: Qn = -2, Qp = 1; s = 0.5 -> v = w / s = [-3.2, -0.6, 0.4, 0.8, 1.8].
    weight = torch.tensor([-1.6, -0.3, 0.2, 0.4, 0.9], requires_grad=True)
    step = torch.tensor(0.5, requires_grad=True)
    out = lsq_quantize(weight, step, bits=2)
    # clamp -> [-2, -0.6, 0.4, 0.8, 1], round -> [-2, -1, 0, 1, 1], times s:
    torch.testing.assert_close(out, torch.tensor([-1.0, -0.5, 0.0, 0.5, 0.5]))
    upstream = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    (out * upstream).sum().backward()
    # weight: STE inside the range, 0 outside (first and last are outside).
    torch.testing.assert_close(weight.grad, torch.tensor([0.0, 2.0, 3.0, 4.0, 0.0]))
    # step: Qn, round(v) - v, round(v) - v, round(v) - v, Qp  = -2, -0.4, -0.4, 0.2, 1
    # weighted by upstream: -2 - 0.8 - 1.2 + 0.8 + 5 = 1.8, times g = 1 / sqrt(5 * 1).
    torch.testing.assert_close(step.grad, torch.tensor(1.8 / math.sqrt(5.0)))


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_matches_pytorch_learnable_fake_quantize(bits: int) -> None:
    torch.manual_seed(bits)
    weight = torch.randn(32, 16, 3, 3) * 0.1
    step = torch.tensor(0.02)
    qn, qp = qrange(bits)
    g = gradient_scale(weight.numel(), qp)
    v = weight / step
    # PyTorch decides in/out of range after rounding: the half-step band outside each edge differs.
    band = ((v < qn) & (v > qn - 0.5)) | ((v > qp) & (v < qp + 0.5))
    upstream = torch.randn_like(weight).masked_fill(band, 0.0)  # no gradient flows from the band

    ours_w, ours_s = weight.clone().requires_grad_(), step.clone().requires_grad_()
    ours = lsq_quantize(ours_w, ours_s, bits)
    (ours * upstream).sum().backward()
    ref_w, ref_s = weight.clone().requires_grad_(), step.reshape(1).clone().requires_grad_()
    ref = torch._fake_quantize_learnable_per_tensor_affine(ref_w, ref_s, torch.zeros(1), qn, qp, g)
    (ref * upstream).sum().backward()

    assert torch.equal(ours, ref)  # forward identical, bit for bit
    assert torch.equal(ours_w.grad[~band], ref_w.grad[~band])
    torch.testing.assert_close(ours_s.grad.reshape(1), ref_s.grad, rtol=1e-4, atol=1e-6)
    if bits == 2:
        assert (v.abs() > 2).any()  # the example really exercises the clamped region


def test_step_gradient_scales_with_one_over_sqrt_n() -> None:
    torch.manual_seed(0)
    base = torch.randn(50) * 0.3
    grads = []
    for copies in (1, 16):
        step = torch.tensor(0.1, requires_grad=True)
        lsq_quantize(base.repeat(copies), step, bits=4).sum().backward()
        grads.append(step.grad)
    # The raw sum grows 16x, g = 1 / sqrt(N * Qp) shrinks 4x: net 4x.
    torch.testing.assert_close(grads[1], grads[0] * 4.0, rtol=1e-5, atol=1e-7)
    assert gradient_scale(100, 7) == pytest.approx(1 / math.sqrt(700))


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_initial_step_size(bits: int) -> None:
    torch.manual_seed(1)
    conv = LSQConv2d(8, 16, 3, bits=bits)
    qp = qrange(bits)[1]
    expected = 2 * conv.weight.detach().abs().mean() / math.sqrt(qp)
    assert conv.step_size.shape == ()
    assert conv.step_size.dtype == torch.float32
    torch.testing.assert_close(conv.step_size.detach(), expected)


def test_step_size_stays_positive_after_an_optimizer_step() -> None:
    torch.manual_seed(2)
    conv = LSQConv2d(4, 4, 1, bits=2)
    optimizer = torch.optim.SGD(conv.parameters(), lr=1e4)
    loss = -conv(torch.randn(8, 4, 5, 5)).abs().sum()  # some large gradient
    loss.backward()
    conv.step_size.grad = torch.tensor(1e3)  # a step that would drive s far below zero
    optimizer.step()
    assert conv.step_size.item() < 0
    clamp_step_sizes(conv)
    assert conv.step_size.item() == pytest.approx(MIN_STEP_SIZE)
    assert torch.isfinite(conv(torch.randn(2, 4, 5, 5))).all()


def test_quantized_weight_is_what_forward_uses_and_stays_fp32_under_autocast() -> None:
    torch.manual_seed(3)
    conv = LSQConv2d(3, 6, 3, padding=1, bits=4)
    x = torch.randn(2, 3, 8, 8)
    plain = torch.nn.functional.conv2d(x, conv.quantized_weight(), conv.bias, padding=1)
    torch.testing.assert_close(conv(x), plain)
    codes = conv.quantized_weight() / conv.step_size
    torch.testing.assert_close(codes, codes.round())  # integer codes
    assert codes.min() >= -8 and codes.max() <= 7
    with torch.autocast("cpu", dtype=torch.bfloat16):
        weight = conv.quantized_weight()
        out = conv(x)
    assert weight.dtype == torch.float32
    assert torch.equal(weight, conv.quantized_weight())
    assert out.dtype == torch.bfloat16


def _layer(kind: str) -> torch.nn.Module:
    return {"conv": lambda: torch.nn.Conv2d(6, 8, 3, padding=1),
            "depthwise": lambda: torch.nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=6),
            "linear": lambda: torch.nn.Linear(12, 5)}[kind]()


def _functional(layer: torch.nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, torch.nn.Linear):
        return torch.nn.functional.linear(x, weight, layer.bias)
    return torch.nn.functional.conv2d(x, weight, layer.bias, layer.stride, layer.padding, 1,
                                      layer.groups)


@pytest.mark.parametrize("kind", ["conv", "depthwise", "linear"])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_every_wrapper_matches_the_pytorch_oracle(kind: str, bits: int) -> None:
    torch.manual_seed(bits)
    layer = _layer(kind)
    before = [p.detach().clone() for p in layer.parameters()]
    wrapped = to_lsq(layer, bits)  # the wrapping every model gets (build_model)
    assert isinstance(wrapped, (LSQConv2d, LSQLinear)) and wrapped is layer
    assert all(torch.equal(a, b) for a, b in zip(before, list(layer.parameters())[:2],
                                                 strict=False))  # weights untouched
    qn, qp = qrange(bits)
    with torch.no_grad():  # move weights out of PyTorch's half-step band, where it differs
        s = layer.step_size
        v = layer.weight / s
        band = ((v < qn) & (v > qn - 0.5)) | ((v > qp) & (v < qp + 0.5))
        layer.weight[band] = (v[band].sign() * (qp + 1.0)) * s
    x = torch.randn(4, 12) if kind == "linear" else torch.randn(4, 6, 7, 7)
    ours_x = x.clone().requires_grad_()
    out = layer(ours_x)
    upstream = torch.randn_like(out)
    (out * upstream).sum().backward()

    ref_w = layer.weight.detach().clone().requires_grad_()
    ref_s = layer.step_size.detach().reshape(1).clone().requires_grad_()
    ref_x = x.clone().requires_grad_()
    g = gradient_scale(ref_w.numel(), qp)
    fake = torch._fake_quantize_learnable_per_tensor_affine(ref_w, ref_s, torch.zeros(1), qn, qp,
                                                            g)
    ref = _functional(layer, ref_x, fake)
    (ref * upstream).sum().backward()
    assert torch.equal(layer.quantized_weight(), fake)  # forward bit for bit
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(layer.weight.grad, ref_w.grad)
    torch.testing.assert_close(ours_x.grad, ref_x.grad)
    torch.testing.assert_close(layer.step_size.grad.reshape(1), ref_s.grad, rtol=1e-4, atol=1e-6)


def test_to_lsq_refuses_other_layers() -> None:
    with pytest.raises(TypeError, match="BatchNorm2d"):
        to_lsq(torch.nn.BatchNorm2d(3), 4)
