"""LSQ weight quantization (Esser et al., "Learned Step Size Quantization", ICLR 2020).

One learned fp32 step size `s` per layer. For b bits the signed integer range is
Qn = -2^(b-1), Qp = 2^(b-1) - 1. Forward: v = w / s, clamp to [Qn, Qp], round, multiply by s
(clamp first, then round: this order defines the gradient at the range edges, science.md).
Backward (LSQ paper eq. 3): straight-through for the rounding only, so dw = 1 strictly inside the
range and 0 outside; ds = (round(v) - v) inside, Qn or Qp outside, times g = 1 / sqrt(N * Qp).
The quantizer math always runs in fp32, also under bf16 autocast (bf16 rounding of w / s flips
about 1% of 8-bit codes).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor, nn

QUANTIZED_BITS = (2, 4, 8)
MIN_STEP_SIZE = 1e-8  # floor after each optimizer step: a zero or negative step size is undefined


def qrange(bits: int) -> tuple[int, int]:
    """Signed integer range (Qn, Qp) for `bits` bits, e.g. 2 -> (-2, 1), 8 -> (-128, 127)."""
    if bits not in QUANTIZED_BITS:
        raise ValueError(f"LSQ bits must be one of {QUANTIZED_BITS}, but got {bits!r}")
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def gradient_scale(num_weights: int, qp: int) -> float:
    """LSQ step-size gradient scale g = 1 / sqrt(N * Qp) (LSQ paper section 2.2)."""
    return 1.0 / math.sqrt(num_weights * qp)


def initial_step_size(weight: Tensor, qp: int) -> Tensor:
    """LSQ initialisation s0 = 2 * mean(|w|) / sqrt(Qp), as a 0-dim fp32 tensor."""
    return (2.0 * weight.detach().float().abs().mean() / math.sqrt(qp)).reshape(())


class LSQQuantize(torch.autograd.Function):
    """Fake quantizer q * s with LSQ's straight-through and step-size gradients (fp32)."""

    @staticmethod
    def forward(ctx, weight: Tensor, step_size: Tensor, grad_scale: float, qn: int, qp: int):  # noqa: ANN001
        # v = w * (1 / s) rather than w / s: the same as PyTorch's fake-quantize kernels, so the
        # forward matches torch._fake_quantize_learnable_per_tensor_affine bit for bit.
        v = weight * step_size.reciprocal()
        q = v.clamp(qn, qp).round()
        ctx.save_for_backward(v, q)
        ctx.grad_scale, ctx.qn, ctx.qp = grad_scale, qn, qp
        return q * step_size

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # noqa: ANN001
        v, q = ctx.saved_tensors
        below, above = v < ctx.qn, v > ctx.qp
        inside = ~(below | above)
        grad_weight = grad_out * inside.to(grad_out.dtype)
        # Outside the range q is already Qn or Qp, so "q - v inside, Qn/Qp outside" is one where().
        ds_dq = torch.where(inside, q - v, q)
        grad_step = (grad_out * ds_dq).sum() * ctx.grad_scale
        return grad_weight, grad_step.reshape(()), None, None, None


def lsq_quantize(weight: Tensor, step_size: Tensor, bits: int) -> Tensor:
    """Fake-quantize `weight` with step size `step_size` at `bits` bits (fp32 math, LSQ grads)."""
    qn, qp = qrange(bits)
    device_type = weight.device.type
    dtype = torch.promote_types(weight.dtype, torch.float32)  # fp32, or fp64 in fp64 tests
    with torch.autocast(device_type=device_type, enabled=False):
        return LSQQuantize.apply(
            weight.to(dtype), step_size.to(dtype), gradient_scale(weight.numel(), qp), qn, qp
        )


class LSQConv2d(nn.Conv2d):
    """nn.Conv2d whose weight is LSQ fake-quantized in every forward.

    `step_size` is a 0-dim fp32 parameter initialised from the layer's initial weights.
    """

    def __init__(self, *args, bits: int, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        qrange(bits)  # validates bits
        self.bits = bits
        self.step_size = nn.Parameter(torch.zeros((), dtype=torch.float32))
        self.init_step_size()

    @property
    def qp(self) -> int:
        return qrange(self.bits)[1]

    def init_step_size(self) -> None:
        """Set s = 2 * mean(|w|) / sqrt(Qp) from the current weights (LSQ initialisation)."""
        with torch.no_grad():
            self.step_size.copy_(initial_step_size(self.weight, self.qp))

    def quantized_weight(self) -> Tensor:
        """The fake-quantized weight q * s (fp32) that forward convolves with."""
        return lsq_quantize(self.weight, self.step_size, self.bits)

    def forward(self, x: Tensor) -> Tensor:
        # Under autocast the convolution itself may run in bf16; q and s were computed in fp32.
        return self._conv_forward(x, self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bits={self.bits}"


def lsq_layers(model: nn.Module) -> Iterator[tuple[str, LSQConv2d]]:
    """(name, layer) for every LSQ layer of `model`, in module order."""
    for name, module in model.named_modules():
        if isinstance(module, LSQConv2d):
            yield name, module


def clamp_step_sizes(model: nn.Module) -> None:
    """Keep every step size >= MIN_STEP_SIZE; call after each optimizer step."""
    with torch.no_grad():
        for _, layer in lsq_layers(model):
            layer.step_size.clamp_(min=MIN_STEP_SIZE)


def step_sizes(model: nn.Module) -> dict[str, float]:
    """Learned step size of every LSQ layer by module name (one host sync per layer)."""
    return {name: float(layer.step_size.detach()) for name, layer in lsq_layers(model)}
