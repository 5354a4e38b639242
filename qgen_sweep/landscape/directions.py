"""Random filter-normalized directions (Li et al. 2018, section 4).

A direction d has one tensor per parameter of the model. For each weight with at least two axes
(a conv's (O, C, kh, kw), a linear layer's (O, F)) every filter (slice along the output axis) is
drawn from N(0, 1) and rescaled to the norm of the model's filter at the same place:
    d_i <- d_i / ||d_i|| * ||theta_i||
so a step of length 1 along d moves each filter by its own norm, whatever the layer's scale (the
scale invariance that makes unnormalized directions misleading for ReLU/BN networks).

Parameters with fewer than two axes get a zero direction, as the reference code's `--xignore
biasbn` (the setting of the paper's plots): biases and BN scales and shifts are not moved, nor are
the LSQ step sizes of a quantized model (ignore = "biasbn"). With ignore = "bn" the biases move
along d = theta (the reference code's choice for 1-D parameters it keeps) and only normalisation
layers and quantizer parameters stay at zero.

For a quantized model the directions live in its latent fp32 weights (the parameters the QAT
optimizer trains), normalized against their filters; the model's forward re-quantizes every
perturbed weight with its learned step size (docs/science.md says why).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from qgen_sweep.landscape.settings import tensor_seed

Params = dict[str, Tensor]
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm,
          nn.modules.instancenorm._InstanceNorm)
EPS = 1e-10  # guards an all-zero random filter (probability ~0)


def parameter_roles(model: nn.Module) -> dict[str, str]:
    """Role of each named parameter: "filter" (a weight with >= 2 axes), "bias" (the bias of a
    layer with filters), "norm" (a normalisation layer's), "other" (e.g. LSQ step sizes)."""
    roles = {}
    for prefix, module in model.named_modules():
        for local, param in module.named_parameters(recurse=False):
            name = f"{prefix}.{local}" if prefix else local
            if isinstance(module, _NORMS):
                roles[name] = "norm"
            elif param.dim() >= 2:
                roles[name] = "filter"
            elif local == "bias":
                roles[name] = "bias"
            else:
                roles[name] = "other"
    return roles


def filter_normalize(direction: Tensor, weight: Tensor) -> Tensor:
    """`direction` with every filter (slice along axis 0) rescaled to the norm of the same
    filter of `weight`."""
    d = direction.reshape(direction.shape[0], -1)
    w = weight.detach().reshape(weight.shape[0], -1)
    scale = w.norm(dim=1, keepdim=True) / (d.norm(dim=1, keepdim=True) + EPS)
    return (d * scale).reshape(direction.shape)


def random_direction(
    model: nn.Module, base_seed: int, index: int, ignore: str = "biasbn"
) -> Params:
    """Direction number `index` (0 or 1) for `model`: one tensor per named parameter, on the
    parameter's device and dtype. Drawn on the CPU with one generator per tensor
    (settings.tensor_seed), so it is the same on every device and for every precision."""
    roles = parameter_roles(model)
    out: Params = {}
    for name, param in model.named_parameters():
        role = roles[name]
        if role == "filter":
            generator = torch.Generator().manual_seed(tensor_seed(base_seed, index, name))
            raw = torch.randn(param.shape, generator=generator, dtype=torch.float32)
            out[name] = filter_normalize(raw.to(param.device, param.dtype), param)
        elif role == "bias" and ignore == "bn":
            out[name] = param.detach().clone()
        else:
            out[name] = torch.zeros_like(param.detach())
    return out
