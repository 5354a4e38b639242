"""Evaluate many perturbed copies of one network at once.

The Monte Carlo samples of a bisection step (and the restarts of a sharpness step) are stacked
along a leading "copy" axis K and run through the network together, so K copies cost one pass
over the data instead of K passes of deep-copied modules (performance.md: per-op overhead, not
arithmetic, limits these small networks). For a plain conv network (conv, BN, ReLU, pooling,
flatten: what fold.py produces) the copies live side by side in the channel axis, (B, K * C, H, W):
the first conv is one conv with K * O output channels over the shared input, every later conv a
grouped conv with K groups, and BN, ReLU and pooling act per channel anyway. Any other module (the
folded GraphModule of a ResNet, MobileNet or VGG) runs the K parameter sets through
torch.func.functional_call, either under vmap (one batched call: grouped convs on a GPU) or one
copy after the other without copying the module; `GENERIC_MODES`, "auto" times one batch both
ways once and keeps the faster (on the CPU vmap's grouped depthwise convs can be slower than a
loop). The data stay resident on the device; batches are slices.

Which parameters are perturbed (`perturb`, the measure setting `bn_affine`): "all" (the
reference code's choice: every parameter of the folded network, so also the biases that carry
each folded BN's shift, and any BN that could not be folded) or "weights" (only the conv and
linear weights, the vector w of the bounds).

`NaiveEvaluator` is the reference implementation's way (one deep copy per sample, one pass each);
it exists as the side-by-side baseline of benchmarks/bench_measures.py and as a test oracle.
"""

from __future__ import annotations

import copy
import time
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


PERTURB = ("all", "weights")
GENERIC_MODES = ("auto", "vmap", "loop")


def perturbed_names(module: nn.Module, perturb: str) -> list[str]:
    """Names of the parameters the noise goes on ("all", or "weights": conv / linear weights)."""
    if perturb not in PERTURB:
        raise ValueError(f"perturb must be one of {PERTURB}, got {perturb!r}")
    if perturb == "all":
        return [n for n, _ in module.named_parameters()]
    weights = {f"{name}.weight" if name else "weight" for name, m in module.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))}
    return [n for n, _ in module.named_parameters() if n in weights]


class BatchedEvaluator:
    """Accuracy and loss of K perturbed copies of `module` over (x, y), K copies per forward.

    `module` is put in eval mode (BN statistics, if any, are read, never updated). `base` holds
    the parameters that are perturbed (see `perturb`), `fixed` the others; a perturbation is a
    dict name -> (K, *shape) tensor added to `base`. Buffers are shared by all copies.
    """

    def __init__(self, module: nn.Module, x: Tensor, y: Tensor, batch_size: int,
                 perturb: str = "all", generic: str = "auto") -> None:
        if generic not in GENERIC_MODES:
            raise ValueError(f"generic must be one of {GENERIC_MODES}, got {generic!r}")
        self.module = module.eval()
        self.x, self.y = x, y
        self.batch_size = batch_size
        names = set(perturbed_names(module, perturb))
        params = {n: p.detach() for n, p in module.named_parameters()}
        self.base: Params = {n: p for n, p in params.items() if n in names}
        self.fixed: Params = {n: p for n, p in params.items() if n not in names}
        self.buffers: Params = {n: b.detach() for n, b in module.named_buffers()}
        self.counter = PassCounter()
        self.mode = "stacked" if supports_stacking(module) else generic

    @property
    def m(self) -> int:
        return int(self.y.shape[0])

    def logits(self, params: Params, xb: Tensor) -> Tensor:
        """(K, B, classes) logits of the K parameter sets in `params` on the batch `xb`."""
        copies = next(iter(params.values())).shape[0]
        if self.mode == "stacked":
            fixed = {n: p.unsqueeze(0).expand(copies, *p.shape) for n, p in self.fixed.items()}
            return stacked_forward(self.module, {**params, **fixed}, self.buffers, xb)
        if self.mode == "auto":
            self.mode = self._faster(params, xb)

        def one(p: Params) -> Tensor:
            return functional_call(self.module, ({**p, **self.fixed}, self.buffers), (xb,))

        if self.mode == "vmap":
            return vmap(one)(params)
        return torch.stack([one({n: t[k] for n, t in params.items()}) for k in range(copies)])

    def _faster(self, params: Params, xb: Tensor) -> str:
        """Time one batch under vmap and as a loop (after a warm-up each); the faster wins."""
        times = {}
        sync = torch.cuda.synchronize if xb.is_cuda else (lambda: None)
        with torch.no_grad():
            for mode in ("vmap", "loop"):
                self.mode = mode
                self.logits(params, xb)  # warm-up: kernel selection, allocations
                sync()
                started = time.perf_counter()
                self.logits(params, xb)
                sync()
                times[mode] = time.perf_counter() - started
        return min(times, key=times.__getitem__)

    def perturbed(self, noise: Params) -> Params:
        """Perturbed parameters plus a stacked perturbation (K, *shape) per name."""
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

    def __init__(self, module: nn.Module, x: Tensor, y: Tensor, batch_size: int,
                 perturb: str = "all") -> None:
        self.module = module.eval()
        self.x, self.y = x, y
        self.batch_size = batch_size
        names = set(perturbed_names(module, perturb))
        self.base: Params = {n: p.detach() for n, p in module.named_parameters() if n in names}
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
                if name in noise:
                    param.add_(noise[name][k])
            correct = 0
            for start in range(0, self.m, self.batch_size):
                logits = clone(self.x[start : start + self.batch_size])
                correct += int((logits.argmax(-1) == self.y[start : start + self.batch_size]).sum())
            out.append(correct / self.m)
            self.counter.examples += self.m
        return torch.tensor(out, dtype=torch.float64)


_PER_CHANNEL = (nn.ReLU, nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.MaxPool2d, nn.Identity)


def supports_stacking(module: nn.Module) -> bool:
    """True for a Sequential that stacked_forward can run: ungrouped convs, eval-mode BNs,
    per-channel parameter-free layers, and at most a final Flatten."""
    if not isinstance(module, nn.Sequential):
        return False
    layers = list(module)
    for index, layer in enumerate(layers):
        if isinstance(layer, nn.Conv2d):
            ok = layer.groups == 1 and layer.padding_mode == "zeros"
        elif isinstance(layer, nn.BatchNorm2d):
            ok = layer.track_running_stats and layer.running_mean is not None
        elif isinstance(layer, nn.Flatten):
            ok = index == len(layers) - 1 and layer.start_dim == 1 and layer.end_dim == -1
        else:
            ok = isinstance(layer, _PER_CHANNEL)
        if not ok:
            return False
    return True


def _stacked_conv(layer: nn.Conv2d, x: Tensor, weight: Tensor, bias: Tensor | None,
                  copies: int, shared_input: bool) -> Tensor:
    """Conv of K weight sets: (K, O, C, kh, kw) -> one conv (shared input) or K groups."""
    if not shared_input and _pointwise(layer):
        return _stacked_pointwise(x, weight, bias, copies)
    flat_weight = weight.reshape(copies * weight.shape[1], *weight.shape[2:])
    flat_bias = None if bias is None else bias.reshape(-1)
    groups = 1 if shared_input else copies
    return F.conv2d(x, flat_weight, flat_bias, layer.stride, layer.padding, layer.dilation, groups)


def _pointwise(layer: nn.Conv2d) -> bool:
    return layer.kernel_size == (1, 1) and layer.stride == (1, 1) and layer.padding in (0, (0, 0))


def _stacked_pointwise(x: Tensor, weight: Tensor, bias: Tensor | None, copies: int) -> Tensor:
    """K 1x1 convs as one batched contraction over (B, K, C, H*W): on CPU about twice as fast
    as the equivalent grouped conv in microbenchmarks (NiN has two 1x1 convs per block)."""
    batch, _, height, width = x.shape
    out = torch.einsum("koc,bkcp->bkop", weight.flatten(2), x.view(batch, copies, -1,
                                                                    height * width))
    if bias is not None:
        out = out + bias.view(1, copies, -1, 1)
    return out.reshape(batch, -1, height, width)


def _stacked_bn(layer: nn.BatchNorm2d, x: Tensor, params: Params, buffers: Params,
                prefix: str, copies: int) -> Tensor:
    """Eval-mode BN of K copies: running statistics repeated, affine parameters per copy."""
    weight = params.get(f"{prefix}.weight")
    bias = params.get(f"{prefix}.bias")
    return F.batch_norm(
        x,
        buffers[f"{prefix}.running_mean"].repeat(copies),
        buffers[f"{prefix}.running_var"].repeat(copies),
        None if weight is None else weight.reshape(-1),
        None if bias is None else bias.reshape(-1),
        training=False,
        eps=layer.eps,
    )


def stacked_forward(module: nn.Sequential, params: Params, buffers: Params, x: Tensor) -> Tensor:
    """(K, B, out) outputs of K parameter sets of `module` (see supports_stacking) on x (B, ...).

    The copies sit side by side in the channel axis: (B, K * C, H, W), copy-major.
    """
    copies = next(iter(params.values())).shape[0]
    shared = True  # x is the same for every copy until the first conv
    for index, layer in enumerate(module):
        prefix = str(index)
        if isinstance(layer, nn.Conv2d):
            bias = params.get(f"{prefix}.bias")
            x = _stacked_conv(layer, x, params[f"{prefix}.weight"], bias, copies, shared)
            shared = False
        elif isinstance(layer, nn.BatchNorm2d):
            if shared:
                x = x.repeat(1, copies, 1, 1)
                shared = False
            x = _stacked_bn(layer, x, params, buffers, prefix, copies)
        else:
            x = layer(x)
    if shared:
        x = x.repeat(1, copies, *([1] * (x.dim() - 2)))
    batch = x.shape[0]
    return x.reshape(batch, copies, -1).transpose(0, 1)  # (K, B, out)
