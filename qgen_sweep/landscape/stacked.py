"""Many parameter sets of one model in one forward pass, for any conv/linear/BN architecture.

A landscape is hundreds to thousands of evaluations of the same network at different weights over
the whole training split. Evaluated one model copy per point on a GPU, the small networks of the
study are limited by per-kernel launch overhead, not arithmetic (performance.md). `StackedModel`
runs K parameter sets ("copies") at once by laying them side by side in the channel axis,
copy-major: activations are (B, K * C, H, W). Then
    - a conv with K weight sets is one grouped conv, or K dense ones (below),
    - a linear layer is one batched contraction over (B, K, F),
    - eval-mode BN is per channel anyway (running statistics and affine parameters per copy),
    - ReLU, pooling, dropout in eval mode, flatten and residual additions need no change.
This is the stacked-channel trick of qgen_sweep.measures.perturb, generalized from a plain
Sequential to any module tree: the model's own forward code runs on a deep copy whose parameter
layers are swapped for stacked ones, so ResNets (residual adds, downsample branches), VGG
(flatten + linear head) and MobileNets (depthwise convs) work as well as NiN.

Convolutions: on a GPU one grouped conv (groups x K) runs all copies; on the CPU one dense conv
per copy over its channel slice, which measured faster there than the grouped kernel.

Quantized layers (anything with a `quantized_weight()` method, e.g. LSQConv2d) re-quantize every
copy's latent weight with that copy's step size through the layer's own quantizer (called with
torch.func.functional_call on the stacked weight; the quantizer is elementwise).

Forward code that mixes channels outside these layers (a concatenation along channels, a
channel shuffle, a reshape with a hard-coded channel count) would mix copies. `StackedModel`
therefore checks itself against one-copy-at-a-time evaluation on a few examples when built, and
`evaluator_for` falls back to `LoopEvaluator` (one model copy per point, the baseline of
benchmarks/bench_landscape.py) when the check or the swap fails. The registry's transformers
(DeiT-T, Swin-T) take that path: attention reshapes heads out of the channel axis and LayerNorm
normalises over it; every conv net of the registry stacks (tests check each one).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

State = dict[str, Tensor]  # parameter / floating buffer name -> tensor ((K, *shape) when stacked)
StateChunk = Callable[[int, int], State]  # (start, stop) -> stacked state of those points


class UnsupportedModel(Exception):
    """The model has a layer the stacked forward cannot run (the caller falls back to a loop)."""


def float_state(model: nn.Module) -> State:
    """The model's parameters and floating-point buffers (BN running statistics), detached."""
    state = {n: p.detach() for n, p in model.named_parameters()}
    state.update({n: b.detach() for n, b in model.named_buffers() if b.is_floating_point()})
    return state


def repeat_state(state: State, copies: int) -> State:
    """`state` as K identical copies (views, no memory)."""
    return {n: t.unsqueeze(0).expand(copies, *t.shape) for n, t in state.items()}


@dataclass
class _Holder:
    """The stacked state of the forward in progress, shared by every swapped layer."""

    state: State | None = None
    copies: int = 0
    grouped: bool = True  # convs as one grouped conv (GPU) or one dense conv per copy (CPU)

    def local(self, prefix: str, names: list[str]) -> State:
        assert self.state is not None
        return {n: self.state[f"{prefix}.{n}" if prefix else n] for n in names}


class _QuantizedWeight(nn.Module):
    """Calls a quantized layer's own quantized_weight() (under functional_call)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self) -> Tensor:
        return self.layer.quantized_weight()


class _StackedLayer(nn.Module):
    """Base of the swapped layers: the original layer (for its hyperparameters) and the holder."""

    def __init__(self, layer: nn.Module, prefix: str, holder: _Holder) -> None:
        super().__init__()
        # Stored outside _modules so the copy's parameters do not show up as this layer's.
        object.__setattr__(self, "layer", layer)
        self.prefix, self.holder = prefix, holder
        self.names = [n for n, _ in layer.named_parameters(recurse=False)]
        self.names += [n for n, b in layer.named_buffers(recurse=False) if b.is_floating_point()]

    def stacked_weight(self) -> tuple[Tensor, Tensor | None]:
        """(K, *weight.shape) weights as the layer computes with them, and (K, O) biases."""
        local = self.holder.local(self.prefix, self.names)
        weight, bias = local["weight"], local.get("bias")
        if callable(getattr(self.layer, "quantized_weight", None)):
            weight = self._quantize(local)
        return weight, bias

    def _quantize(self, local: State) -> Tensor:
        weight = local["weight"]
        params = {}
        for name, value in local.items():
            if name == "bias":
                continue
            # A per-tensor quantizer parameter (K,) broadcasts against (K, O, C, ...) as
            # (K, 1, 1, ...): right-align its own shape behind the copy axis.
            extra = weight.dim() - value.dim()
            params[f"layer.{name}"] = value.reshape(value.shape[0], *([1] * extra),
                                                    *value.shape[1:])
        return functional_call(_QuantizedWeight(self.layer), params, ())


class _StackedConv(_StackedLayer):
    def forward(self, x: Tensor) -> Tensor:  # (B, K * C, H, W) -> (B, K * O, H', W')
        layer, copies = self.layer, self.holder.copies
        weight, bias = self.stacked_weight()
        flat_weight = weight.reshape(copies * weight.shape[1], *weight.shape[2:])
        flat_bias = None if bias is None else bias.reshape(-1)
        padding = layer.padding
        if layer.padding_mode != "zeros":
            x = F.pad(x, layer._reversed_padding_repeated_twice, mode=layer.padding_mode)
            padding = 0
        if self.holder.grouped:
            return F.conv2d(x, flat_weight, flat_bias, layer.stride, padding, layer.dilation,
                            layer.groups * copies)
        # One dense conv per copy over its channel slice (on the CPU, K dense convs ran faster
        # than one grouped conv with K groups in every shape measured for this study's nets).
        outs = []
        per_in = x.shape[1] // copies
        for k in range(copies):
            outs.append(F.conv2d(x[:, k * per_in:(k + 1) * per_in], weight[k],
                                 None if bias is None else bias[k], layer.stride, padding,
                                 layer.dilation, layer.groups))
        return torch.cat(outs, 1)


class _StackedLinear(_StackedLayer):
    def forward(self, x: Tensor) -> Tensor:  # (..., K * F) -> (..., K * O)
        copies = self.holder.copies
        weight, bias = self.stacked_weight()  # (K, O, F), (K, O)
        grouped = x.reshape(*x.shape[:-1], copies, weight.shape[2])
        out = torch.einsum("...kf,kof->...ko", grouped, weight)
        if bias is not None:
            out = out + bias
        return out.reshape(*x.shape[:-1], copies * weight.shape[1])


class _StackedBatchNorm(_StackedLayer):
    def forward(self, x: Tensor) -> Tensor:  # (B, K * C, ...) in eval mode
        local = self.holder.local(self.prefix, self.names)
        weight, bias = local.get("weight"), local.get("bias")
        return F.batch_norm(
            x, local["running_mean"].reshape(-1), local["running_var"].reshape(-1),
            None if weight is None else weight.reshape(-1),
            None if bias is None else bias.reshape(-1),
            training=False, momentum=0.0, eps=self.layer.eps,
        )


def _stacked_layer(module: nn.Module, prefix: str, holder: _Holder) -> nn.Module | None:
    """The stacked replacement of a leaf module (None: keep it as it is)."""
    if isinstance(module, nn.Conv2d):
        return _StackedConv(module, prefix, holder)
    if isinstance(module, nn.Linear):
        return _StackedLinear(module, prefix, holder)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        if module.running_mean is None:
            raise UnsupportedModel(f"{prefix}: BatchNorm without running statistics")
        return _StackedBatchNorm(module, prefix, holder)
    own = list(module.parameters(recurse=False))
    own += [b for b in module.buffers(recurse=False) if b.is_floating_point()]
    if own:
        raise UnsupportedModel(f"{prefix}: {type(module).__name__} has parameters the stacked "
                               "forward does not know")
    return None


_LAYERS = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)


def _swap_layers(module: nn.Module, holder: _Holder, prefix: str = "") -> None:
    """Replace every parameter layer below `module` (in place) by its stacked version."""
    for name, child in list(module.named_children()):
        full = f"{prefix}.{name}" if prefix else name
        if isinstance(child, _LAYERS) or next(child.children(), None) is None:
            replacement = _stacked_layer(child, full, holder)
            if replacement is not None:
                module._modules[name] = replacement
            continue
        if list(child.parameters(recurse=False)):
            raise UnsupportedModel(f"{full}: a container with parameters of its own")
        _swap_layers(child, holder, full)


class StackedModel:
    """Forward K parameter sets of `model` at once (eval mode): __call__(state, x) -> (K, B, out)
    where every tensor of `state` is (K, *shape) for each name of float_state(model)."""

    def __init__(self, model: nn.Module) -> None:
        if not list(model.children()):
            raise UnsupportedModel("the model is a single layer; nothing to stack around")
        self.model = model.eval()
        if list(model.parameters(recurse=False)):
            raise UnsupportedModel("the model has parameters of its own, outside its layers")
        device = next(model.parameters()).device
        self.holder = _Holder(grouped=device.type != "cpu")
        self.net = copy.deepcopy(model).eval()
        _swap_layers(self.net, self.holder)

    @torch.no_grad()
    def __call__(self, state: State, x: Tensor) -> Tensor:
        copies = next(iter(state.values())).shape[0]
        self.holder.state, self.holder.copies = state, copies
        try:
            out = self.net(x.repeat(1, copies, *([1] * (x.dim() - 2))))
        finally:
            self.holder.state = None
        batch = x.shape[0]
        return out.reshape(batch, copies, -1).transpose(0, 1)  # (K, B, out)


def one_copy_logits(model: nn.Module, state: State, x: Tensor) -> Tensor:
    """(K, B, out) by running the model once per copy (functional_call, no stacking)."""
    buffers = {n: b for n, b in model.named_buffers() if not b.is_floating_point()}
    with torch.no_grad():
        outs = [functional_call(model.eval(), ({n: t[k] for n, t in state.items()}, buffers),
                                (x,)) for k in range(next(iter(state.values())).shape[0])]
    return torch.stack(outs)


def self_check(stacked: StackedModel, x: Tensor, tolerance: float = 1e-4) -> bool:
    """True when the stacked forward of 3 distinct parameter sets equals one-copy-at-a-time
    evaluation on `x` (a few examples): a forward that mixes copies would differ."""
    base = float_state(stacked.model)
    generator = torch.Generator().manual_seed(0)
    state = {}
    for name, tensor in base.items():
        noise = torch.randn((3, *tensor.shape), generator=generator).to(tensor)
        scale = torch.tensor([0.0, 0.05, 0.1], device=tensor.device, dtype=tensor.dtype)
        state[name] = tensor.unsqueeze(0) * (1 + scale.view(-1, *([1] * tensor.dim())) * noise)
    expected = one_copy_logits(stacked.model, state, x)
    got = stacked(state, x)
    return bool(torch.allclose(got, expected, rtol=tolerance, atol=tolerance))


class _Evaluator:
    """Training loss and accuracy of many parameter sets of one model over all of (x, y)."""

    name = "?"

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor, batch_size: int,
                 points: int) -> None:
        self.model = model.eval()
        self.x, self.y = x, y
        self.batch_size, self.points = batch_size, points

    def logits(self, state: State, xb: Tensor) -> Tensor:  # (K, B, classes)
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, chunk: StateChunk, count: int) -> tuple[Tensor, Tensor]:
        """(losses, accuracies) of `count` points, float64 on the CPU: mean cross-entropy
        (nats) and accuracy (fraction) over the full (x, y); `chunk(start, stop)` builds the
        stacked state of points start..stop-1, `points` of them per forward."""
        losses, accuracies = [], []
        for start in range(0, count, self.points):
            state = chunk(start, min(start + self.points, count))
            loss, acc = self._one_chunk(state)
            losses.append(loss)
            accuracies.append(acc)
        return torch.cat(losses), torch.cat(accuracies)

    def _one_chunk(self, state: State) -> tuple[Tensor, Tensor]:
        copies = next(iter(state.values())).shape[0]
        loss_sum = torch.zeros(copies, dtype=torch.float64, device=self.y.device)
        correct = torch.zeros(copies, dtype=torch.int64, device=self.y.device)
        for start in range(0, len(self.y), self.batch_size):
            xb, yb = self.x[start:start + self.batch_size], self.y[start:start + self.batch_size]
            logits = self.logits(state, xb).float()  # (K, B, classes)
            k, b, classes = logits.shape
            per_example = F.cross_entropy(logits.reshape(k * b, classes), yb.repeat(k),
                                          reduction="none").view(k, b)
            loss_sum += per_example.double().sum(1)
            correct += (logits.argmax(-1) == yb.unsqueeze(0)).sum(1)
        m = len(self.y)
        return (loss_sum / m).cpu(), (correct.double() / m).cpu()


class StackedEvaluator(_Evaluator):
    """`points` parameter sets per forward pass through StackedModel."""

    name = "stacked"

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor, batch_size: int, points: int,
                 stacked: StackedModel | None = None) -> None:
        super().__init__(model, x, y, batch_size, points)
        self.stacked = stacked or StackedModel(model)

    def logits(self, state: State, xb: Tensor) -> Tensor:
        return self.stacked(state, xb)


class LoopEvaluator(_Evaluator):
    """One model copy per point: a deep copy of the model loaded with the point's weights, one
    pass over the data each (the plain way; the fallback and the benchmark's baseline)."""

    name = "loop"

    def _one_chunk(self, state: State) -> tuple[Tensor, Tensor]:
        losses, accuracies = [], []
        for k in range(next(iter(state.values())).shape[0]):
            clone = copy.deepcopy(self.model)
            clone.load_state_dict({n: t[k] for n, t in state.items()}, strict=False)
            self._clone = clone
            loss, acc = super()._one_chunk({n: t[k:k + 1] for n, t in state.items()})
            losses.append(loss)
            accuracies.append(acc)
        return torch.cat(losses), torch.cat(accuracies)

    def logits(self, state: State, xb: Tensor) -> Tensor:
        return self._clone(xb).unsqueeze(0)  # (1, B, classes): the point's own copy


def evaluator_for(model: nn.Module, x: Tensor, y: Tensor, batch_size: int,
                  points: int) -> _Evaluator:
    """A StackedEvaluator when the model stacks and passes the self-check, else a LoopEvaluator
    (same numbers, one point at a time)."""
    try:
        stacked = StackedModel(model)
        ok = self_check(stacked, x[: min(4, len(x))])
    except (UnsupportedModel, RuntimeError):
        ok = False
    if not ok:
        return LoopEvaluator(model, x, y, batch_size, 1)
    return StackedEvaluator(model, x, y, batch_size, points, stacked)
