"""LSQ weight quantization (Esser et al., "Learned Step Size Quantization", ICLR 2020).

One learned fp32 step size `s` per layer. For b bits the signed integer range is
Qn = -2^(b-1), Qp = 2^(b-1) - 1. Forward: v = w / s, clamp to [Qn, Qp], round, multiply by s
(clamp first, then round: this order defines the gradient at the range edges, science.md).
Backward (LSQ paper eq. 3): straight-through for the rounding only, so dw = 1 strictly inside the
range and 0 outside; ds = (round(v) - v) inside, Qn or Qp outside, times g = 1 / sqrt(N * Qp).
The quantizer math always runs in fp32, also under bf16 autocast (bf16 rounding of w / s flips
about 1% of 8-bit codes).

Any model is quantized by `quantize_layers`: every nn.Conv2d (depthwise and grouped included)
and nn.Linear becomes its LSQ version in place (same parameters, one step size added), under the
first/last-layer policy. FP32 trials (bits 32) keep the plain layers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

QUANTIZED_BITS = (2, 4, 8)
FIRST_LAST_BITS = 8  # LSQ paper: first and last layers at 8 bits (first_last="int8")
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
    """LSQ initialisation s0 = 2 * mean(|w|) / sqrt(Qp), as a 0-dim fp32 tensor (at least
    MIN_STEP_SIZE: an all-zero layer, e.g. a zero-initialised head, would divide by zero)."""
    s0 = 2.0 * weight.detach().float().abs().mean() / math.sqrt(qp)
    return s0.clamp_min(MIN_STEP_SIZE).reshape(())


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


class LSQWeight:
    """What every LSQ layer adds to its float layer: `bits`, a 0-dim fp32 `step_size` parameter
    initialised from the layer's weights, and `quantized_weight()` (q * s) for forward."""

    weight: nn.Parameter
    bits: int
    step_size: nn.Parameter

    def _init_lsq(self, bits: int) -> None:
        qrange(bits)  # validates bits
        self.bits = bits
        device = self.weight.device
        self.step_size = nn.Parameter(torch.zeros((), dtype=torch.float32, device=device))
        self.init_step_size()

    @property
    def qp(self) -> int:
        return qrange(self.bits)[1]

    def init_step_size(self) -> None:
        """Set s = 2 * mean(|w|) / sqrt(Qp) from the current weights (LSQ initialisation)."""
        with torch.no_grad():
            self.step_size.copy_(initial_step_size(self.weight, self.qp))

    def quantized_weight(self) -> Tensor:
        """The fake-quantized weight q * s (fp32) that forward computes with."""
        return lsq_quantize(self.weight, self.step_size, self.bits)


class LSQConv2d(LSQWeight, nn.Conv2d):
    """nn.Conv2d (any groups, so depthwise too) whose weight is LSQ fake-quantized in every
    forward."""

    def __init__(self, *args, bits: int, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self._init_lsq(bits)

    def forward(self, x: Tensor) -> Tensor:
        # Under autocast the convolution itself may run in bf16; q and s were computed in fp32.
        return self._conv_forward(x, self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bits={self.bits}"


class LSQLinear(LSQWeight, nn.Linear):
    """nn.Linear whose weight is LSQ fake-quantized in every forward."""

    def __init__(self, *args, bits: int, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self._init_lsq(bits)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bits={self.bits}"


_LSQ_OF = {nn.Conv2d: LSQConv2d, nn.Linear: LSQLinear}


def effective_weight(layer: nn.Module) -> Tensor:
    """The weight `layer` computes with: q * s for an LSQ layer, else its float weight. Modules
    that hand a sub-layer's weight to a functional op instead of calling the sub-layer (Swin's
    window attention) read it through this, so LSQ wrapping reaches them too."""
    return layer.quantized_weight() if isinstance(layer, LSQWeight) else layer.weight


def weight_layers(model: nn.Module) -> list[nn.Module]:
    """Every conv and linear layer of `model` (float or LSQ), in module order."""
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def layer_bits(bits: int, first_last: str, index: int, count: int) -> int:
    """Bits of weight layer `index` of `count` under the first/last-layer policy ("int8": the
    first and the last at FIRST_LAST_BITS, as in the LSQ paper; "same": all at `bits`)."""
    if bits == 32 or first_last == "same":
        return bits
    return FIRST_LAST_BITS if index in (0, count - 1) else bits


def to_lsq(layer: nn.Module, bits: int) -> LSQWeight:
    """Turn a float nn.Conv2d / nn.Linear into its LSQ class in place: the same parameter
    objects (so no random numbers are drawn and state_dict keys keep their names) plus a step
    size initialised from its weights."""
    cls = _LSQ_OF.get(type(layer))
    if cls is None:
        raise TypeError(f"LSQ wraps nn.Conv2d and nn.Linear, not {type(layer).__name__}")
    layer.__class__ = cls
    layer._init_lsq(bits)
    return layer


def quantize_layers(model: nn.Module, bits: int, first_last: str) -> nn.Module:
    """Wrap every conv and linear layer of `model` in LSQ (in place) under the first/last
    policy; `bits` 32 leaves the model as it is. "First" and "last" are in module order (the
    stem and the classifier of every registered arch). Returns `model`."""
    layers = weight_layers(model)
    for index, layer in enumerate(layers):
        b = layer_bits(bits, first_last, index, len(layers))
        if b != 32:
            to_lsq(layer, b)
    return model


def lsq_layers(model: nn.Module) -> Iterator[tuple[str, LSQWeight]]:
    """(name, layer) for every LSQ layer (conv or linear) of `model`, in module order."""
    for name, module in model.named_modules():
        if isinstance(module, LSQWeight):
            yield name, module


def clamp_step_sizes(model: nn.Module) -> None:
    """Keep every step size >= MIN_STEP_SIZE; call after each optimizer step."""
    with torch.no_grad():
        for _, layer in lsq_layers(model):
            layer.step_size.clamp_(min=MIN_STEP_SIZE)


def step_sizes(model: nn.Module) -> dict[str, float]:
    """Learned step size of every LSQ layer by module name (one host sync per layer)."""
    return {name: float(layer.step_size.detach()) for name, layer in lsq_layers(model)}
