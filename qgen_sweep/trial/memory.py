"""Will a trial fit its device? Counted before anything is allocated.

The model is built on PyTorch's meta device (shapes only, no storage) and run once on a meta
batch, so counting costs milliseconds even for a model that would need hundreds of GB. The
estimate is a floor of what training needs on the device: per parameter its value, its gradient
and two optimizer-state tensors (Adam's moments; SGD's momentum is one), per activation value
its saved output and its gradient. A trial whose floor exceeds the device's memory cannot train
and is refused with one line (exit 2) instead of failing inside the allocator.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from qgen_sweep.errors import UsageError
from qgen_sweep.trial.config import TrialConfig, TrialRuntime

TENSORS_PER_PARAMETER = 4  # value, gradient, two optimizer states
TENSORS_PER_ACTIVATION = 2  # saved output, its gradient
_BYTES = {"float32": 4, "float64": 8}


@dataclass(frozen=True)
class Footprint:
    """Parameter and activation counts of one training step of one model."""

    parameters: int
    activations: int  # values of every layer output for one training batch

    def bytes(self, element_bytes: int) -> int:
        return element_bytes * (TENSORS_PER_PARAMETER * self.parameters
                                + TENSORS_PER_ACTIVATION * self.activations)


def footprint(config: TrialConfig) -> Footprint:
    """Count `config`'s parameters and training activations on the meta device."""
    from qgen_sweep.trial.models import build_float_model

    # The float network: LSQ adds one step size per layer and changes no activation shape.
    with torch.device("meta"):
        model = build_float_model(config, config.in_channels, config.num_classes,
                                  config.image_size, pretrained=False)
        batch = torch.empty(config.batch_size, config.in_channels, config.image_size,
                            config.image_size)
    outputs = [0]

    def count(module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor) and not getattr(module, "inplace", False):
            outputs[0] += output.numel()

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            model.train()(batch)
    finally:
        for hook in hooks:
            hook.remove()
    return Footprint(sum(p.numel() for p in model.parameters()), outputs[0])


def device_memory(device: torch.device) -> int:
    """Bytes of memory of `device` (a GPU's total, else the machine's physical memory)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(configs: Sequence[TrialConfig], device: torch.device,
               runtime: TrialRuntime) -> None:
    """Raise UsageError when the trials (one, or a fused bundle's members together) need more
    memory than `device` has; names the sizes and the way out."""
    element = _BYTES.get(runtime.dtype, 4)
    prints = [footprint(c) for c in configs]
    need = sum(p.bytes(element) for p in prints)
    have = device_memory(device)
    if need <= have:
        return
    config = configs[0]
    params = sum(p.parameters for p in prints)
    acts = sum(p.activations for p in prints)
    who = f"trial {config.trial_id}" if len(configs) == 1 else f"a bundle of {len(configs)}"
    raise UsageError(
        f"{who} ({config.arch}, base_width {config.base_width} x width {config.width}) needs at "
        f"least {need / 2**30:,.0f} GiB on {device} ({params / 1e6:,.1f}M parameters, "
        f"{acts / 1e6:,.1f}M activation values at batch {config.batch_size}) but it has "
        f"{have / 2**30:,.0f} GiB; lower base_width, width or batch_size")
