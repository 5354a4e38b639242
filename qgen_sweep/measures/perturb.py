"""Evaluate many perturbed copies of one network at once.

The Monte Carlo samples of a bisection step (and the restarts of a sharpness step) are stacked
along a leading "copy" axis and run through the network with torch.func.functional_call under
vmap: convs with a batched weight become one wide or grouped convolution, so K copies cost one
pass over the data instead of K passes of deep-copied modules (performance.md: per-op overhead,
not arithmetic, limits these small networks). The data stay resident on the device; batches are
slices, never per-sample Python.

`NaiveEvaluator` is the reference implementation's way (one deep copy per sample, one pass each);
it exists as the side-by-side baseline of benchmarks/bench_measures.py and as a test oracle.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

Params = dict[str, Tensor]


@dataclass
class PassCounter:
    """Examples forwarded per copy, to report cost in training-set passes (examples / m)."""

    examples: int = 0

    def passes(self, m: int) -> float:
        return self.examples / m


class BatchedEvaluator:
    """Accuracy and loss of K perturbed copies of `module` over (x, y), K copies per forward.

    `module` is put in eval mode (BN statistics, if any, are read, never updated). Parameters are
    the module's named parameters; a perturbation is a dict name -> (K, *shape) tensor added to
    them. Buffers are shared by all copies.
    """

    def __init__(self, module: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> None:
        self.module = module.eval()
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.base: Params = {n: p.detach() for n, p in module.named_parameters()}
        self.buffers: Params = {n: b.detach() for n, b in module.named_buffers()}
        self.counter = PassCounter()

    @property
    def m(self) -> int:
        return int(self.y.shape[0])

    def logits(self, params: Params, xb: Tensor) -> Tensor:
        """(K, B, classes) logits of the K parameter sets in `params` on the batch `xb`."""

        def one(p: Params) -> Tensor:
            return functional_call(self.module, (p, self.buffers), (xb,))

        return vmap(one)(params)

    def perturbed(self, noise: Params) -> Params:
        """Base parameters plus a stacked perturbation (K, *shape) per name."""
        return {n: self.base[n].unsqueeze(0) + noise[n] for n in self.base}

    @torch.no_grad()
    def accuracies(self, noise: Params) -> Tensor:
        """(K,) training accuracy of each perturbed copy, over all of (x, y)."""
        params = self.perturbed(noise)
        copies = next(iter(noise.values())).shape[0]
        correct = torch.zeros(copies, dtype=torch.long, device=self.y.device)
        for start in range(0, self.m, self.batch_size):
            xb = self.x[start : start + self.batch_size]
            yb = self.y[start : start + self.batch_size]
            logits = self.logits(params, xb)  # (K, B, classes)
            correct += (logits.argmax(-1) == yb.unsqueeze(0)).sum(-1)
        self.counter.examples += self.m * copies
        return correct.double() / self.m

    def losses(self, noise: Params, xb: Tensor, yb: Tensor) -> Tensor:
        """(K,) mean cross-entropy of each copy on one batch (differentiable in `noise`)."""
        logits = self.logits(self.perturbed(noise), xb)  # (K, B, classes)
        copies, batch, classes = logits.shape
        per_example = F.cross_entropy(
            logits.reshape(copies * batch, classes), yb.repeat(copies), reduction="none"
        )
        self.counter.examples += batch * copies
        return per_example.view(copies, batch).mean(-1)

    @torch.no_grad()
    def clean_accuracy(self) -> float:
        """Accuracy of the unperturbed network (acc0)."""
        zero = {n: torch.zeros_like(p).unsqueeze(0) for n, p in self.base.items()}
        return float(self.accuracies(zero)[0])


class NaiveEvaluator:
    """Baseline: one deep copy of the module per perturbed sample, one data pass each."""

    def __init__(self, module: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> None:
        self.module = module.eval()
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.base: Params = {n: p.detach() for n, p in module.named_parameters()}
        self.counter = PassCounter()

    @property
    def m(self) -> int:
        return int(self.y.shape[0])

    @torch.no_grad()
    def accuracies(self, noise: Params) -> Tensor:
        copies = next(iter(noise.values())).shape[0]
        out = []
        for k in range(copies):
            clone = copy.deepcopy(self.module)
            for name, param in clone.named_parameters():
                param.add_(noise[name][k])
            correct = 0
            for start in range(0, self.m, self.batch_size):
                logits = clone(self.x[start : start + self.batch_size])
                correct += int((logits.argmax(-1) == self.y[start : start + self.batch_size]).sum())
            out.append(correct / self.m)
            self.counter.examples += self.m
        return torch.tensor(out, dtype=torch.float64)


NoiseFn = Callable[[int], Params]
