"""The models a trial trains: every registered architecture (qgen_sweep/trial/archs.py), built in
floating point by its module here, then LSQ-quantized layer by layer (qgen_sweep/trial/lsq.py).

Models are plain nn.Modules; their quantized layers expose `quantized_weight()`. The init uses
torch's global RNG: seed it first for a reproducible model (the trial engine seeds it with the
trial's seed).
"""

from __future__ import annotations

import importlib
import math

import torch
from torch import nn

from qgen_sweep.errors import UsageError
from qgen_sweep.trial.archs import ARCHS
from qgen_sweep.trial.config import TrialConfig
from qgen_sweep.trial.lsq import LSQWeight, quantize_layers, weight_layers


def build_float_model(config: TrialConfig, in_channels: int, num_classes: int,
                      image_size: int | None = None, pretrained: bool = True) -> nn.Module:
    """The float network of `config.arch` for (in_channels, image_size, image_size) images,
    with the weights of `config.pretrained` when it names some (and `pretrained`: a model about
    to load a checkpoint of its own does not need them)."""
    entry = ARCHS.get(config.arch)
    if entry is None:
        raise UsageError(f"arch must be one of {', '.join(ARCHS)}, but got {config.arch!r}")
    module = importlib.import_module(f"qgen_sweep.trial.models.{entry.module}")
    size = config.image_size if image_size is None else image_size
    model = module.build(config, in_channels, num_classes, size)
    if pretrained and config.pretrained:
        from qgen_sweep.trial.pretrained import load_pretrained

        load_pretrained(model, config, size)
    return model


def build_model(config: TrialConfig, in_channels: int, num_classes: int,
                image_size: int | None = None, pretrained: bool = True) -> nn.Module:
    """The network `config` trains: its arch (from its pretrained weights, if any), LSQ-wrapped
    at config.bits (none at 32) under config.first_last, so step sizes start from the weights
    the training starts from. `image_size` defaults to the config's."""
    model = build_float_model(config, in_channels, num_classes, image_size, pretrained)
    return quantize_layers(model, config.bits, config.first_last)


def conv_layers(model: nn.Module) -> list[nn.Conv2d]:
    """Every conv (nn.Conv2d or LSQConv2d) of `model` in module order."""
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def weight_count(model: nn.Module) -> int:
    """Number of conv and linear weights (omega: no biases, BN parameters or step sizes)."""
    return sum(layer.weight.numel() for layer in weight_layers(model))


def conv_weight_count(model: nn.Module) -> int:
    """Number of conv weights (NiN has no linear layer, so this is its omega)."""
    return sum(conv.weight.numel() for conv in conv_layers(model))


def parameter_count(model: nn.Module) -> int:
    """Learnable parameters without LSQ step sizes (the figure papers quote for a model)."""
    return sum(p.numel() for name, p in model.named_parameters()
               if not name.endswith("step_size"))


def l2_norm(model: nn.Module) -> float:
    """L2 norm of all conv and linear weights as the model computes with them (q * s for LSQ
    layers; no biases, BN parameters or step sizes), paper Table 2."""
    total = torch.zeros((), dtype=torch.float64)
    with torch.no_grad():
        for layer in weight_layers(model):
            weight = layer.quantized_weight() if isinstance(layer, LSQWeight) else layer.weight
            total += weight.detach().double().pow(2).sum().cpu()
    return math.sqrt(float(total))
