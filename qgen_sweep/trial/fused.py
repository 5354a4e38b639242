"""Fused NiN bundles: K trials of one architecture trained as one network (HFTA, MLSys 2021).

Only NiN fuses (archs.py `fusable`): its flat conv-BN-ReLU layout maps onto grouped convs
directly. The other archs train unfused; see docs/science.md.

A bundle holds K members that share dataset, depth, width and data order but may differ in bit
width, optimizer type and hyperparameters. The fused network computes exactly what the K unfused
networks compute, in one pass:

- the first conv reads the shared input batch with K x C output channels (one ordinary conv);
- every later conv is grouped per member (groups = K), or K separate convs when that is faster
  on the device for that shape (`choose_conv_impl` measures it, performance.md);
- BN runs over the concatenated channels, so its statistics are exactly per member;
- every member has its own LSQ step size per layer and its own bit width per layer
  (`FusedLSQQuantize`: the LSQ forward and gradients of lsq.py, vectorised over members);
- all member parameters live in one (K, P) tensor `flat`, member-major, so the per-member
  optimizers (`FusedOptimizer`) are a handful of tensor ops per step whatever the layer count.

Members are built by the single-trial engine's own `build_model`, so a fused bundle starts from
exactly the weights K unfused trials start from, and `member_state_dict` gives each member back in
the unfused state_dict format (checkpoints, measures and metrics reuse the unfused code).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qgen_sweep.trial.config import TrialConfig
from qgen_sweep.trial.lsq import MIN_STEP_SIZE, LSQConv2d, gradient_scale, qrange

CONV_IMPLS = ("auto", "grouped", "split")
OPTIMIZER_ORDER = ("sgd", "adam", "rmsprop")  # members are sorted so each type is one row range
# torch.optim defaults, the same the single-trial engine uses (see FusedOptimizer).
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
RMSPROP_ALPHA = 0.99
RMSPROP_EPS = 1e-8


@dataclass(frozen=True)
class ConvSpec:
    """One conv of the member network and where its tensors sit in the fused layout."""

    name: str  # module name in the unfused model, e.g. "layers.0"
    in_ch: int  # per member
    out_ch: int  # per member
    kernel: int
    stride: int
    padding: int
    shared_input: bool  # the first conv reads the shared (B, C_in, H, W) image batch

    @property
    def weight_numel(self) -> int:
        return self.out_ch * self.in_ch * self.kernel * self.kernel


@dataclass(frozen=True)
class BNSpec:
    name: str
    channels: int  # per member
    eps: float
    momentum: float


class FusedLSQQuantize(torch.autograd.Function):
    """LSQ fake quantization of K members' weights at once, rows = members.

    Same forward and gradients as lsq.LSQQuantize per row (v = w * (1 / s), clamp, round; weight
    gradient 1 inside the range, step-size gradient (q - v) inside, Qn/Qp outside, times g).
    Rows with quant = False (FP32 members) pass the weight through with gradient 1 and give
    their (unused) step size gradient 0.
    """

    @staticmethod
    def forward(ctx, w, s, g, qn, qp, quant):  # noqa: ANN001, ANN205
        # w (K, n); s, g, qn, qp (K, 1) floats; quant (K, 1) bool
        v = w * s.reciprocal()
        q = torch.clamp(v, qn, qp).round()
        ctx.save_for_backward(v, q, g, qn, qp, quant)
        return torch.where(quant, q * s, w)

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        v, q, g, qn, qp, quant = ctx.saved_tensors
        inside = ~((v < qn) | (v > qp))
        grad_w = grad * (inside | ~quant).to(grad.dtype)
        # Outside the range q is already Qn or Qp, so "q - v inside, Qn/Qp outside" is one where.
        ds_dq = torch.where(inside, q - v, q)
        grad_s = (grad * ds_dq).sum(dim=1, keepdim=True) * g
        grad_s = torch.where(quant, grad_s, torch.zeros_like(grad_s))
        return grad_w, grad_s, None, None, None, None


def fused_lsq(w: Tensor, s: Tensor, g: Tensor, qn: Tensor, qp: Tensor, quant: Tensor) -> Tensor:
    """Quantize (K, n) member weights; math in at least fp32, also under bf16 autocast."""
    dtype = torch.promote_types(w.dtype, torch.float32)
    with torch.autocast(device_type=w.device.type, enabled=False):
        return FusedLSQQuantize.apply(
            w.to(dtype), s.to(dtype), g.to(dtype), qn.to(dtype), qp.to(dtype), quant
        )


# -- conv implementation choice (grouped vs separate), measured per shape ---------------------

_CONV_CHOICE_CACHE: dict[tuple, str] = {}


def _time_conv(fn, reps: int) -> float:  # noqa: ANN001
    """Fastest of `reps` timed calls after a warm-up (the minimum is the least noisy estimate on
    a shared machine)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    fn()  # warm-up (allocations, kernel selection)
    best = math.inf
    for _ in range(reps):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def time_conv_impls(
    members: int, spec: ConvSpec, batch: int, size: int, device: torch.device,
    dtype: torch.dtype = torch.float32, reps: int = 3, channels_last: bool = False,
) -> dict[str, float]:
    """Seconds per forward + backward of one grouped conv vs `members` separate convs."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(batch, members * spec.in_ch, size, size, device=device, dtype=dtype)
    w = torch.randn(members * spec.out_ch, spec.in_ch, spec.kernel, spec.kernel,
                    device=device, dtype=dtype)
    x = x.contiguous(memory_format=fmt).requires_grad_(True)
    w = w.contiguous(memory_format=fmt).requires_grad_(True)

    def run(impl: str) -> None:
        out = _member_conv(x, w, None, spec, members, impl)
        out.sum().backward()
        w.grad = x.grad = None

    return {impl: _time_conv(lambda i=impl: run(i), reps) for impl in ("grouped", "split")}


def choose_conv_impl(
    members: int, spec: ConvSpec, batch: int, size: int, device: torch.device,
    dtype: torch.dtype = torch.float32, channels_last: bool = False,
) -> str:
    """"grouped" or "split", whichever is faster here for this shape (cached per process)."""
    if members == 1 or spec.shared_input:
        return "grouped"  # one ordinary conv either way
    key = (device.type, members, spec.in_ch, spec.out_ch, spec.kernel, spec.stride, batch, size,
           dtype, channels_last)
    if key not in _CONV_CHOICE_CACHE:
        times = time_conv_impls(members, spec, batch, size, device, dtype,
                                channels_last=channels_last)
        _CONV_CHOICE_CACHE[key] = min(times, key=times.__getitem__)
    return _CONV_CHOICE_CACHE[key]


def _member_conv(x: Tensor, w: Tensor, b: Tensor | None, spec: ConvSpec, members: int,
                 impl: str) -> Tensor:
    """Conv of K members: x (B, K*C_in, H, W) or shared (B, C_in, H, W); w (K*C_out, C_in, k, k)."""
    if spec.shared_input:
        return F.conv2d(x, w, b, spec.stride, spec.padding)
    if impl == "grouped" or members == 1:
        return F.conv2d(x, w, b, spec.stride, spec.padding, groups=members)
    xs, ws = x.chunk(members, dim=1), w.chunk(members, dim=0)
    bs = b.chunk(members) if b is not None else [None] * members
    outs = [F.conv2d(xi, wi, bi, spec.stride, spec.padding)
            for xi, wi, bi in zip(xs, ws, bs, strict=True)]
    return torch.cat(outs, dim=1)


# -- the fused network ------------------------------------------------------------------------


def _layer_specs(model: nn.Module) -> list[ConvSpec | BNSpec | str]:
    """The unfused NiN's `layers` as specs: conv, BN, "relu", ..., "pool"."""
    specs: list[ConvSpec | BNSpec | str] = []
    first = True
    for name, module in model.layers.named_children():
        full = f"layers.{name}"
        if isinstance(module, nn.Conv2d):
            specs.append(ConvSpec(full, module.in_channels, module.out_channels,
                                  module.kernel_size[0], module.stride[0], module.padding[0],
                                  shared_input=first))
            first = False
        elif isinstance(module, nn.BatchNorm2d):
            specs.append(BNSpec(full, module.num_features, module.eps, module.momentum))
        elif isinstance(module, nn.ReLU):
            specs.append("relu")
        elif isinstance(module, nn.AdaptiveAvgPool2d):
            specs.append("pool")
        elif not isinstance(module, nn.Flatten):
            raise TypeError(f"cannot fuse layer {full} of type {type(module).__name__}")
    return specs


def _conv_bits(model: nn.Module) -> list[int]:
    """Bits of every conv in network order (32 = no quantizer)."""
    return [m.bits if isinstance(m, LSQConv2d) else 32 for m in model.layers
            if isinstance(m, nn.Conv2d)]


class FusedNiN(nn.Module):
    """K NiN members as one network. forward: (B, C, H, W) -> logits (B, K, classes)."""

    def __init__(self, members: Sequence[nn.Module], conv_impl: str = "grouped") -> None:
        super().__init__()
        if conv_impl not in ("grouped", "split"):
            raise ValueError(f"conv_impl must be grouped or split, but got {conv_impl!r}")
        self.k = len(members)
        self.specs = _layer_specs(members[0])
        if any(_layer_specs(m) != self.specs for m in members[1:]):
            raise ValueError("all members of a fused bundle must have the same architecture")
        self.convs = [s for s in self.specs if isinstance(s, ConvSpec)]
        self.bns = [s for s in self.specs if isinstance(s, BNSpec)]
        self.conv_impls = [conv_impl] * len(self.convs)
        self.channels_last = False  # convolve with channels_last weights (set by the engine)
        self._build_layout(members[0])
        states = [m.state_dict() for m in members]
        ref = next(iter(members[0].parameters()))
        flat = torch.stack([self._pack(sd) for sd in states]).to(ref.dtype)
        self.flat = nn.Parameter(flat)  # (K, P), member-major
        for bn in self.bns:
            for stat in ("running_mean", "running_var"):
                cat = torch.cat([sd[f"{bn.name}.{stat}"] for sd in states]).to(ref.dtype)
                self.register_buffer(self._buf(bn.name, stat), cat)
            tracked = states[0][f"{bn.name}.num_batches_tracked"].clone()
            self.register_buffer(self._buf(bn.name, "num_batches_tracked"), tracked)
        self._register_quantizers([_conv_bits(m) for m in members])

    # -- layout ---------------------------------------------------------------------------------
    @staticmethod
    def _buf(layer: str, stat: str) -> str:
        return f"{layer.replace('.', '_')}__{stat}"

    def _build_layout(self, member: nn.Module) -> None:
        """Column blocks of `flat`: every conv/BN parameter, then one step size per conv."""
        keys: list[tuple[str, tuple[int, ...]]] = []
        for spec in self.specs:
            if isinstance(spec, ConvSpec):
                w = (spec.out_ch, spec.in_ch, spec.kernel, spec.kernel)
                keys += [(f"{spec.name}.weight", w), (f"{spec.name}.bias", (spec.out_ch,))]
            elif isinstance(spec, BNSpec):
                keys += [(f"{spec.name}.weight", (spec.channels,)),
                         (f"{spec.name}.bias", (spec.channels,))]
        self.param_keys = keys
        self.block_sizes = [math.prod(shape) for _, shape in keys] + [len(self.convs)]
        self.num_main = sum(self.block_sizes[:-1])  # columns before the step sizes
        self._index = {key: i for i, (key, _) in enumerate(keys)}

    def _pack(self, state: dict[str, Tensor]) -> Tensor:
        """One member's unfused state_dict -> its (P,) row (step size 1 where no quantizer)."""
        parts = [state[key].detach().reshape(-1) for key, _ in self.param_keys]
        steps = [state.get(f"{c.name}.step_size", torch.ones(())).reshape(1).to(parts[0].dtype)
                 for c in self.convs]
        return torch.cat(parts + steps)

    def _register_quantizers(self, member_bits: list[list[int]]) -> None:
        """Per conv: (K, 1) tensors of Qn, Qp, gradient scale g and is-quantized."""
        self.member_bits = member_bits  # [member][conv]
        dtype = torch.promote_types(self.flat.dtype, torch.float32)
        for i, spec in enumerate(self.convs):
            qn, qp, g, quant = [], [], [], []
            for bits in (mb[i] for mb in member_bits):
                lo, hi = qrange(bits) if bits != 32 else (-1, 1)
                qn.append(lo)
                qp.append(hi)
                g.append(gradient_scale(spec.weight_numel, hi) if bits != 32 else 0.0)
                quant.append(bits != 32)
            for name, values, kind in (("qn", qn, dtype), ("qp", qp, dtype), ("g", g, dtype),
                                       ("quant", quant, torch.bool)):
                tensor = torch.tensor(values, dtype=kind).reshape(-1, 1)
                self.register_buffer(f"conv{i}_{name}", tensor, persistent=False)
        self.any_quantized = any(b != 32 for mb in member_bits for b in mb)

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, K, classes)
        blocks = torch.split(self.flat, self.block_sizes, dim=1)  # each (K, n)
        steps = blocks[-1]  # (K, num_convs)
        h, conv_i, block_i = x, 0, 0
        for spec in self.specs:
            if isinstance(spec, ConvSpec):
                h = self._conv(h, blocks[block_i], blocks[block_i + 1], steps, conv_i, spec)
                conv_i, block_i = conv_i + 1, block_i + 2
            elif isinstance(spec, BNSpec):
                h = self._bn(h, blocks[block_i], blocks[block_i + 1], spec)
                block_i += 2
            elif spec == "relu":
                h = F.relu(h)
            else:  # "pool": adaptive pooling + flatten, as the unfused NiN (batch of one works)
                h = F.adaptive_avg_pool2d(h, 1).flatten(1)
        return h.view(h.shape[0], self.k, -1)

    def quantized_weights(self, conv_i: int, w: Tensor, steps: Tensor) -> Tensor:
        """(K, n) weights of conv `conv_i` as the members convolve with them."""
        if not self.any_quantized:
            return w
        b = lambda n: getattr(self, f"conv{conv_i}_{n}")  # noqa: E731
        return fused_lsq(w, steps[:, conv_i : conv_i + 1], b("g"), b("qn"), b("qp"), b("quant"))

    def _conv(self, h: Tensor, w: Tensor, bias: Tensor, steps: Tensor, conv_i: int,
              spec: ConvSpec) -> Tensor:
        w = self.quantized_weights(conv_i, w, steps)
        w4 = w.reshape(self.k * spec.out_ch, spec.in_ch, spec.kernel, spec.kernel)
        if self.channels_last:
            w4 = w4.contiguous(memory_format=torch.channels_last)
        if h.dtype != w4.dtype and not torch.is_autocast_enabled(h.device.type):
            w4 = w4.to(h.dtype)
        return _member_conv(h, w4, bias.reshape(-1), spec, self.k, self.conv_impls[conv_i])

    def _bn(self, h: Tensor, weight: Tensor, bias: Tensor, spec: BNSpec) -> Tensor:
        mean = getattr(self, self._buf(spec.name, "running_mean"))
        var = getattr(self, self._buf(spec.name, "running_var"))
        if self.training:
            getattr(self, self._buf(spec.name, "num_batches_tracked")).add_(1)
        return F.batch_norm(h, mean, var, weight.reshape(-1), bias.reshape(-1), self.training,
                            spec.momentum, spec.eps)

    # -- members ---------------------------------------------------------------------------------
    def choose_conv_impls(self, batch: int, image_size: int) -> list[dict]:
        """Measure grouped vs separate convs per conv shape here; keep the faster. Returns the
        per-conv choices (with timings where measured)."""
        choices, size = [], image_size
        for i, spec in enumerate(self.convs):
            impl = choose_conv_impl(self.k, spec, batch, size, self.flat.device, self.flat.dtype,
                                    self.channels_last)
            self.conv_impls[i] = impl
            choices.append({"conv": spec.name, "impl": impl, "size": size})
            size = (size + 2 * spec.padding - spec.kernel) // spec.stride + 1
        return choices

    def member_state_dict(self, k: int, flat: Tensor | None = None,
                          buffers: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Member k's state in the unfused NiN's state_dict format (from `flat`/`buffers` when
        given, e.g. a kept snapshot; else from the live model)."""
        flat = self.flat.detach() if flat is None else flat
        buffers = dict(self.named_buffers()) if buffers is None else buffers
        row = torch.split(flat[k], self.block_sizes)
        state: dict[str, Tensor] = {}
        for (key, shape), block in zip(self.param_keys, row[:-1], strict=True):
            state[key] = block.reshape(shape).clone()
        for i, conv in enumerate(self.convs):
            if self.member_bits[k][i] != 32:
                state[f"{conv.name}.step_size"] = row[-1][i].clone()
        for bn in self.bns:
            c = bn.channels
            for stat in ("running_mean", "running_var"):
                state[f"{bn.name}.{stat}"] = buffers[self._buf(bn.name, stat)][k * c:(k + 1) * c]
                state[f"{bn.name}.{stat}"] = state[f"{bn.name}.{stat}"].clone()
            tracked = buffers[self._buf(bn.name, "num_batches_tracked")]
            state[f"{bn.name}.num_batches_tracked"] = tracked.clone()
        return state

    def snapshot(self) -> dict[str, Tensor]:
        """Detached copies of `flat` and the BN buffers (a kept model, per member rows)."""
        out = {"flat": self.flat.detach().clone()}
        out.update({n: b.clone() for n, b in self.named_buffers() if n in self._bn_buffer_names})
        return out

    @property
    def _bn_buffer_names(self) -> list[str]:
        return [self._buf(bn.name, stat) for bn in self.bns
                for stat in ("running_mean", "running_var", "num_batches_tracked")]

    def update_snapshot(self, snap: dict[str, Tensor], rows: Tensor) -> None:
        """Copy the members where `rows` (K,) bool is set from the live model into `snap`."""
        with torch.no_grad():
            snap["flat"].copy_(torch.where(rows[:, None], self.flat, snap["flat"]))
            for bn in self.bns:
                mask = rows.repeat_interleave(bn.channels)
                for stat in ("running_mean", "running_var"):
                    name = self._buf(bn.name, stat)
                    snap[name].copy_(torch.where(mask, getattr(self, name), snap[name]))
                name = self._buf(bn.name, "num_batches_tracked")
                snap[name].copy_(getattr(self, name))

    def load_snapshot(self, snap: dict[str, Tensor]) -> None:
        with torch.no_grad():
            self.flat.copy_(snap["flat"])
            for name in self._bn_buffer_names:
                getattr(self, name).copy_(snap[name])


# -- per-member optimizers ----------------------------------------------------------------------


class FusedOptimizer:
    """Per-member SGD (momentum) / Adam / RMSProp on FusedNiN.flat with torch.optim's formulas.

    Members must be ordered so each optimizer type is one contiguous row range (run_bundle sorts
    them); each range is updated with a few whole-tensor ops on views, so the cost does not grow
    with the number of layers. Weight decay is L2 added to the gradient (torch.optim's
    weight_decay) on every parameter except the LSQ step sizes, which use lr x
    step_size_lr_scale (science.md). `step(alive)` leaves rows with alive = False untouched
    (parameters and optimizer state): a diverged member is frozen.
    """

    def __init__(self, model: FusedNiN, configs: Sequence[TrialConfig]) -> None:
        self.model = model
        self.groups = _optimizer_ranges([c.optimizer for c in configs])
        flat = model.flat
        col = lambda v: torch.tensor(v, dtype=flat.dtype, device=flat.device).reshape(-1, 1)  # noqa: E731
        self.lr = col([c.lr for c in configs])  # (K, 1), the current scheduled lr
        self.step_lr_scale = col([c.step_size_lr_scale for c in configs])
        self.wd = col([c.weight_decay for c in configs])
        self.momentum = col([c.momentum for c in configs])
        self.gamma = col([c.gamma for c in configs])  # MultiStep factor per member
        # The step count is float64 so Adam's bias corrections match torch.optim's Python floats.
        self.state: dict[str, Tensor] = {
            "step": torch.zeros((), dtype=torch.float64, device=flat.device)
        }
        for opt, a, b in self.groups:
            names = {"sgd": ("buf",), "adam": ("m", "v"), "rmsprop": ("v",)}[opt]
            for name in names:
                self.state[f"{opt}_{name}"] = torch.zeros_like(flat[a:b])

    def scale_lr(self, factor: float | Tensor | None = None) -> None:
        """Multiply the members' learning rates by `factor` (default: each member's gamma, a
        MultiStep milestone); the lr stays a device tensor, so nothing recompiles."""
        self.lr.mul_(self.gamma if factor is None else factor)

    def state_dict(self) -> dict[str, Tensor]:
        return {"lr": self.lr.clone(), **{k: v.clone() for k, v in self.state.items()}}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.lr.copy_(state["lr"])
        for key, value in self.state.items():
            value.copy_(state[key])

    @torch.no_grad()
    def step(self, alive: Tensor) -> None:
        """One update of every alive member (alive: (K,) bool on the device)."""
        flat, grad = self.model.flat, self.model.flat.grad
        self.state["step"].add_(1)
        m = self.model.num_main
        for opt, a, b in self.groups:
            rows = slice(a, b)
            keep = alive[rows, None]
            for cols, lr_scale, decay in ((slice(0, m), None, True),
                                          (slice(m, None), self.step_lr_scale[rows], False)):
                lr = self.lr[rows] if lr_scale is None else self.lr[rows] * lr_scale
                wd = self.wd[rows] if decay else None
                p, g = flat[rows, cols], grad[rows, cols]
                state = {k.split("_", 1)[1]: v[:, cols] for k, v in self.state.items()
                         if k.startswith(opt + "_")}
                _UPDATES[opt](self, p, g, state, lr, wd, self.momentum[rows], keep)
        steps = flat[:, m:]
        steps.copy_(torch.where(alive[:, None], steps.clamp(min=MIN_STEP_SIZE), steps))

    def _sgd(self, p, g, state, lr, wd, momentum, keep) -> None:  # noqa: ANN001
        d = g + wd * p if wd is not None else g
        buf = state["buf"] * momentum + d
        state["buf"].copy_(torch.where(keep, buf, state["buf"]))
        p.copy_(torch.where(keep, p - lr * buf, p))

    def _adam(self, p, g, state, lr, wd, momentum, keep) -> None:  # noqa: ANN001
        beta1, beta2 = ADAM_BETAS
        d = g + wd * p if wd is not None else g
        m = state["m"].lerp(d, 1 - beta1)
        v = state["v"] * beta2 + d * d * (1 - beta2)
        t = self.state["step"]
        step_size = lr / (1 - beta1**t).to(lr.dtype)
        denom = v.sqrt() / (1 - beta2**t).sqrt().to(v.dtype) + ADAM_EPS
        state["m"].copy_(torch.where(keep, m, state["m"]))
        state["v"].copy_(torch.where(keep, v, state["v"]))
        p.copy_(torch.where(keep, p - step_size * m / denom, p))

    def _rmsprop(self, p, g, state, lr, wd, momentum, keep) -> None:  # noqa: ANN001
        d = g + wd * p if wd is not None else g
        v = state["v"] * RMSPROP_ALPHA + d * d * (1 - RMSPROP_ALPHA)
        state["v"].copy_(torch.where(keep, v, state["v"]))
        p.copy_(torch.where(keep, p - lr * d / (v.sqrt() + RMSPROP_EPS), p))


_UPDATES = {"sgd": FusedOptimizer._sgd, "adam": FusedOptimizer._adam,
            "rmsprop": FusedOptimizer._rmsprop}


def _optimizer_ranges(optimizers: Sequence[str]) -> list[tuple[str, int, int]]:
    """[(optimizer, first_row, end_row)], requiring each type to be one contiguous range."""
    ranges: list[tuple[str, int, int]] = []
    for i, opt in enumerate(optimizers):
        if ranges and ranges[-1][0] == opt:
            ranges[-1] = (opt, ranges[-1][1], i + 1)
        elif any(r[0] == opt for r in ranges):
            raise ValueError(f"members must be grouped by optimizer, but got {list(optimizers)}")
        else:
            ranges.append((opt, i, i + 1))
    return ranges


def member_order(configs: Sequence[TrialConfig]) -> list[int]:
    """Indices of `configs` sorted by optimizer type (stable), the order FusedOptimizer needs."""
    return sorted(range(len(configs)), key=lambda i: OPTIMIZER_ORDER.index(configs[i].optimizer))


def member_losses(logits: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy per member: logits (B, K, classes), y (B,) -> (K,)."""
    b, k, _ = logits.shape
    per = F.cross_entropy(logits.permute(0, 2, 1), y[:, None].expand(b, k), reduction="none")
    return per.mean(dim=0)


def member_correct(logits: Tensor, y: Tensor) -> Tensor:
    """Correct predictions per member: (K,) int64."""
    return (logits.argmax(dim=2) == y[:, None]).sum(dim=0)
