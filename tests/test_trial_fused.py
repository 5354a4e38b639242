"""FusedNiN, FusedLSQQuantize and FusedOptimizer against the unfused engine's own pieces.

Everything in float64 on the CPU, so "the same" means equal to ~1e-10, not "close in fp32".
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from qgen_sweep.trial.config import TrialConfig
from qgen_sweep.trial.fused import (
    FusedLSQQuantize,
    FusedNiN,
    FusedOptimizer,
    choose_conv_impl,
    member_losses,
    member_order,
    time_conv_impls,
)
from qgen_sweep.trial.lsq import LSQQuantize, clamp_step_sizes, gradient_scale, qrange
from qgen_sweep.trial.models import build_model
from qgen_sweep.trial.train import _make_optimizer

torch.set_num_threads(2)

# (bits, optimizer, lr, weight decay): mixed on every per-member axis
MIXED = [(32, "sgd", 0.05, 1e-4), (8, "sgd", 0.1, 0.0), (4, "adam", 1e-3, 2e-4),
         (2, "rmsprop", 5e-4, 1e-4), (2, "adam", 5e-4, 0.0)]


def configs(rows=MIXED, **kw) -> list[TrialConfig]:
    base = dict(dataset="digits", depth=2, width=1, base_width=4, epochs=2, batch_size=32)
    base.update(kw)
    out = [TrialConfig(bits=b, optimizer=o, lr=lr, weight_decay=wd, **base)
           for b, o, lr, wd in rows]
    return [out[i] for i in member_order(out)]


def members(cfgs: list[TrialConfig]) -> list[torch.nn.Module]:
    out = []
    for c in cfgs:
        torch.manual_seed(c.seed)
        out.append(build_model(c, 1, 10).double())
    return out


def test_quantizer_rows_equal_lsq_per_layer():
    torch.manual_seed(0)
    w = torch.randn(4, 300, dtype=torch.float64) * 0.1
    bits = [2, 4, 8, 32]
    s = torch.tensor([[0.05], [0.02], [0.003], [1.0]], dtype=torch.float64)
    qn = torch.tensor([[qrange(b)[0] if b != 32 else -1] for b in bits], dtype=torch.float64)
    qp = torch.tensor([[qrange(b)[1] if b != 32 else 1] for b in bits], dtype=torch.float64)
    g = torch.tensor([[gradient_scale(300, int(p)) if b != 32 else 0.0]
                      for b, p in zip(bits, qp.flatten().tolist(), strict=True)],
                     dtype=torch.float64)
    quant = torch.tensor([[b != 32] for b in bits])
    wf, sf = w.clone().requires_grad_(), s.clone().requires_grad_()
    out = FusedLSQQuantize.apply(wf, sf, g, qn, qp, quant)
    grad = torch.randn_like(out)
    out.backward(grad)
    for k, b in enumerate(bits):
        wk = w[k].clone().requires_grad_()
        if b == 32:
            assert torch.equal(out[k], w[k]) and torch.equal(wf.grad[k], grad[k])
            assert sf.grad[k].item() == 0.0
            continue
        sk = s[k, 0].clone().requires_grad_()
        ref = LSQQuantize.apply(wk, sk, gradient_scale(300, qrange(b)[1]), *qrange(b))
        ref.backward(grad[k])
        assert torch.equal(out[k], ref)
        assert torch.equal(wf.grad[k], wk.grad)
        assert sf.grad[k, 0].item() == pytest.approx(sk.grad.item(), rel=1e-12)


def test_member_state_dict_round_trips_every_member_exactly():
    cfgs = configs()
    nets = members(cfgs)
    fused = FusedNiN(nets)
    for k, net in enumerate(nets):
        got, want = fused.member_state_dict(k), net.state_dict()
        assert got.keys() == want.keys()
        for key in want:
            assert torch.equal(got[key].to(want[key].dtype), want[key]), key


@pytest.mark.parametrize("impl", ["grouped", "split"])
def test_forward_equals_each_unfused_member(impl):
    cfgs = configs()
    nets = members(cfgs)
    fused = FusedNiN(nets, conv_impl=impl)
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    logits = fused(x)  # (B, K, classes)
    assert logits.shape == (5, len(cfgs), 10)
    for k, net in enumerate(nets):
        torch.testing.assert_close(logits[:, k], net(x), rtol=0, atol=1e-12)


def test_training_steps_equal_unfused_members_for_mixed_optimizers():
    """Per-member SGD / Adam / RMSProp with different lr and weight decay, LSQ at mixed bits,
    an lr milestone in between: the fused weights equal K unfused models' after N steps."""
    cfgs = configs()
    nets = members(cfgs)
    fused = FusedNiN(nets)
    opt = FusedOptimizer(fused, cfgs)
    refs = [_make_optimizer(c, n) for c, n in zip(cfgs, nets, strict=True)]
    alive = torch.ones(len(cfgs), dtype=torch.bool)
    gen = torch.Generator().manual_seed(3)
    for step in range(8):
        if step == 4:  # a MultiStep milestone
            opt.scale_lr(0.1)
            for ref in refs:
                for group in ref.param_groups:
                    group["lr"] *= 0.1
        x = torch.randn(16, 1, 8, 8, dtype=torch.float64, generator=gen)
        y = torch.randint(0, 10, (16,), generator=gen)
        fused.flat.grad = None
        member_losses(fused(x), y).sum().backward()
        opt.step(alive)
        for net, ref in zip(nets, refs, strict=True):
            ref.zero_grad()
            F.cross_entropy(net(x), y).backward()
            ref.step()
            clamp_step_sizes(net)
    for k, net in enumerate(nets):
        got = fused.member_state_dict(k)
        for key, want in net.state_dict().items():
            torch.testing.assert_close(got[key].to(want.dtype), want, rtol=0, atol=1e-8,
                                       msg=f"member {k} ({cfgs[k].optimizer}) {key}")


def test_frozen_member_is_untouched_and_others_go_on():
    """A member with NaN weights is masked: its rows (and optimizer state) stay as they were,
    and the other members' logits, gradients and updates are exactly those without it."""
    cfgs = configs()
    nets = members(cfgs)
    clean, poisoned = FusedNiN(nets), FusedNiN(nets)
    bad = 2
    with torch.no_grad():
        poisoned.flat[bad, :50] = math.nan
    opts = [FusedOptimizer(m, cfgs) for m in (clean, poisoned)]
    x = torch.randn(8, 1, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 10, (8,))
    for model, opt in zip((clean, poisoned), opts, strict=True):
        losses = member_losses(model(x), y)
        ok = torch.isfinite(losses)
        model.flat.grad = None
        torch.where(ok, losses, torch.zeros_like(losses)).sum().backward()
        opt.step(ok)
    keep = [k for k in range(len(cfgs)) if k != bad]
    assert torch.equal(clean.flat[keep], poisoned.flat[keep])
    before = FusedNiN(nets).flat[bad, 50:]
    assert torch.equal(poisoned.flat[bad, 50:], before)  # frozen, not moved by wd or momentum
    for name, tensor in opts[1].state.items():
        if name != "step" and tensor.shape[0] == len(cfgs):
            assert torch.equal(tensor[keep], opts[0].state[name][keep])


def test_members_must_be_grouped_by_optimizer():
    sgd, adam = configs([(32, "sgd", 0.1, 0.0), (32, "adam", 1e-3, 0.0)])
    shuffled = [sgd, adam, dataclasses.replace(sgd, lr=0.05)]
    with pytest.raises(ValueError, match="grouped by optimizer"):
        FusedOptimizer(FusedNiN(members(shuffled)), shuffled)


def test_conv_choice_is_measured_per_shape_and_cached():
    cfg = configs()[0]
    spec = FusedNiN(members([cfg, dataclasses.replace(cfg, lr=0.01)])).convs[1]
    times = time_conv_impls(4, spec, batch=8, size=4, device=torch.device("cpu"), reps=1)
    assert set(times) == {"grouped", "split"} and all(t > 0 for t in times.values())
    first = choose_conv_impl(4, spec, 8, 4, torch.device("cpu"))
    assert first in ("grouped", "split")
    assert choose_conv_impl(4, spec, 8, 4, torch.device("cpu")) == first
