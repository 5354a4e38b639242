"""The plain network a trial computes, with every BatchNorm folded into the conv before it.

science.md, measures pipeline step 1: a quantized model is replaced by ordinary convs holding its
dequantized weights (q * s), and every BN in eval mode is folded into the preceding conv:
    W' = W * gamma / sqrt(var + eps)   (per output channel)
    b' = (b - mean) * gamma / sqrt(var + eps) + beta
so the measures perturb the weights that actually act on the data. The result is a Sequential of
nn.Conv2d and the parameter-free layers (ReLU, pooling, flatten) of the original.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


def effective_weight(conv: nn.Conv2d) -> Tensor:
    """The weight the conv's forward convolves with: q * s for an LSQ conv, else the weight."""
    quantized = getattr(conv, "quantized_weight", None)
    weight = quantized() if callable(quantized) else conv.weight
    return weight.detach().float()


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> nn.Conv2d:
    """A plain nn.Conv2d computing bn(conv(x)) in eval mode (conv(x) when `bn` is None)."""
    weight = effective_weight(conv)
    out_channels = weight.shape[0]
    bias = conv.bias.detach().float() if conv.bias is not None else weight.new_zeros(out_channels)
    if bn is not None:
        if not bn.track_running_stats or bn.running_var is None:
            raise ValueError("cannot fold a BatchNorm without running statistics into a conv")
        gamma = bn.weight.detach().float() if bn.affine else weight.new_ones(out_channels)
        beta = bn.bias.detach().float() if bn.affine else weight.new_zeros(out_channels)
        scale = gamma / torch.sqrt(bn.running_var.float() + bn.eps)  # (out,)
        weight = weight * scale.view(-1, 1, 1, 1)
        bias = (bias - bn.running_mean.float()) * scale + beta
    plain = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
        device=weight.device,
        dtype=torch.float32,
    )
    with torch.no_grad():
        plain.weight.copy_(weight)
        plain.bias.copy_(bias)
    return plain


def fold_sequential(layers: nn.Sequential) -> nn.Sequential:
    """Fold every conv -> BatchNorm2d pair of `layers`; other layers are copied unchanged.

    A BatchNorm2d that does not directly follow a conv cannot be folded and is an error, as is a
    layer with parameters that is neither a conv nor a BN (the measures would miss its weights).
    """
    modules = list(layers)
    out: list[nn.Module] = []
    index = 0
    while index < len(modules):
        module = modules[index]
        if isinstance(module, nn.Conv2d):
            following = modules[index + 1] if index + 1 < len(modules) else None
            bn = following if isinstance(following, nn.BatchNorm2d) else None
            out.append(fold_conv_bn(module, bn))
            index += 2 if bn is not None else 1
            continue
        if isinstance(module, nn.BatchNorm2d):
            raise ValueError(f"layer {index} is a BatchNorm2d without a conv before it")
        if any(True for _ in module.parameters()):
            kind = type(module).__name__
            raise ValueError(f"layer {index} ({kind}) has parameters; only convs and BNs may")
        out.append(copy.deepcopy(module))
        index += 1
    return nn.Sequential(*out).eval()


def plain_network(model: nn.Module) -> nn.Sequential:
    """The folded plain network of a NiN-like model (its `layers` Sequential), in eval mode."""
    layers = getattr(model, "layers", model)
    if not isinstance(layers, nn.Sequential):
        raise TypeError(f"expected a model with a `layers` Sequential, got {type(model).__name__}")
    return fold_sequential(layers)


def conv_weight_vector(net: nn.Module) -> Tensor:
    """All conv weights of `net` as one flat fp32 vector (no biases): the measures' w."""
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    return torch.cat([c.weight.detach().float().reshape(-1) for c in convs])
