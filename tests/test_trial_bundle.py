"""run_bundle against K separate run_trial calls: float64 on the CPU, real digits data,
real checkpoint files. Also divergence isolation, bundle-level resume and plan_bundles."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from qgen_sweep.errors import UsageError
from qgen_sweep.plan import interrupted_bundles, plan_bundles
from qgen_sweep.trial.bundle import check_bundle, run_bundle
from qgen_sweep.trial.config import TrialConfig, TrialRuntime, bundle_id
from qgen_sweep.trial.train import load_model, run_trial

torch.set_num_threads(2)
TOL = 1e-6  # per-member weights and metrics must agree to 1e-6 in float64
RUNTIME = TrialRuntime(device="cpu", dtype="float64", eval_batch_size=512)
BASE = dict(dataset="digits", depth=2, width=1, base_width=4, epochs=2, batch_size=128,
            milestones=(1,), gamma=0.1)  # N = 2 x 11 steps, across an lr milestone
# Mixed bits, optimizers, learning rates and weight decays; listed out of optimizer order on
# purpose (run_bundle sorts members internally and must answer in the caller's order).
MEMBERS = [(2, "rmsprop", 5e-4, 1e-4), (32, "sgd", 0.05, 1e-4), (4, "adam", 1e-3, 2e-4),
           (8, "sgd", 0.1, 0.0), (2, "adam", 5e-4, 0.0)]
DIVERGING = [  # (row, extra fields): at once, and at epoch 2 (lr x 1e300 from then on);
    ((32, "sgd", 1e300, 0.0), {}),  # float64 needs far larger steps than float32 to overflow
    ((2, "sgd", 0.05, 0.0), {"gamma": 1e300}),
]

METRICS = ("train_acc", "test_acc", "train_loss", "test_loss", "gap", "l2_norm")
EPOCH_METRICS = ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "step_size_min",
                 "step_size_mean", "step_size_max")


def make(rows, **kw) -> list[TrialConfig]:
    return [TrialConfig(bits=b, optimizer=o, lr=lr, weight_decay=wd, **{**BASE, **kw})
            for b, o, lr, wd in rows]


def diverging() -> list[TrialConfig]:
    return [make([row], **extra)[0] for row, extra in DIVERGING]


def close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= TOL


def assert_same_result(got, want, label: str) -> None:
    assert got.status == want.status, label
    assert got.best_epoch == want.best_epoch and got.epochs_run == want.epochs_run, label
    assert got.diverged_epoch == want.diverged_epoch, label
    for name in METRICS:
        assert close(getattr(got, name), getattr(want, name)), (label, name)
    assert got.step_sizes.keys() == want.step_sizes.keys(), label
    for layer, value in want.step_sizes.items():
        assert close(got.step_sizes[layer], value), (label, layer)
    assert len(got.history) == len(want.history), label
    for g, w in zip(got.history, want.history, strict=True):
        # In the epoch a member diverges, run_trial goes on with NaN weights to the epoch's end
        # while a fused member is frozen at the bad step: accuracy and step sizes of that epoch
        # describe different (meaningless) models, the loss is NaN in both.
        names = EPOCH_METRICS if math.isfinite(w.train_loss) else ("train_loss", "test_loss")
        for name in names:
            assert close(getattr(g, name), getattr(w, name)), (label, g.epoch, name)


def assert_same_weights(path_a, path_b, label: str) -> None:
    a = torch.load(path_a, weights_only=True)
    b = torch.load(path_b, weights_only=True)
    assert a["epoch"] == b["epoch"] and a["config"] == b["config"], label
    assert a["model"].keys() == b["model"].keys(), label
    for key, want in b["model"].items():
        got = a["model"][key].to(want.dtype)
        assert torch.allclose(got, want, rtol=0, atol=TOL), (label, key)


@pytest.fixture(scope="module")
def singles(tmp_path_factory):
    """Each member trained alone by run_trial (the reference)."""
    root = tmp_path_factory.mktemp("singles")
    out = {}
    for config in make(MEMBERS) + diverging():
        out[config.trial_id] = (run_trial(config, RUNTIME, root / config.trial_id),
                                root / config.trial_id)
    return out


@pytest.fixture(scope="module")
def bundled(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle")
    configs = make(MEMBERS)
    return configs, run_bundle(configs, RUNTIME, root, conv_impl="grouped"), root


def test_bundle_equals_separate_trials(singles, bundled):
    configs, results, root = bundled
    for config, result in zip(configs, results, strict=True):
        label = f"{config.bits}-bit {config.optimizer} lr={config.lr} wd={config.weight_decay}"
        want, folder = singles[config.trial_id]
        assert want.status == "done"
        assert_same_result(result, want, label)
        assert_same_weights(root / config.trial_id / "best.pt", folder / "best.pt", label)
        assert_same_weights(root / config.trial_id / "init.pt", folder / "init.pt", label)


def test_diverging_member_leaves_the_others_unchanged(singles, bundled, tmp_path):
    configs, clean, _ = bundled
    early, late = diverging()
    with_bad = configs[:2] + [early] + configs[2:] + [late]
    results = run_bundle(with_bad, RUNTIME, tmp_path, conv_impl="split")
    by_id = {c.trial_id: r for c, r in zip(with_bad, results, strict=True)}
    for bad, epoch, best in ((early, 1, 0), (late, 2, 1)):
        want, _ = singles[bad.trial_id]
        assert want.status == "diverged" and want.diverged_epoch == epoch
        assert want.best_epoch == best
        assert_same_result(by_id[bad.trial_id], want, f"member diverging at epoch {epoch}")
    for config, result in zip(configs, clean, strict=True):
        assert_same_result(by_id[config.trial_id], result, f"member {config.trial_id}")


class Interrupt(Exception):
    pass


def test_interrupted_bundle_resumes_to_the_same_results(bundled, tmp_path):
    configs, clean, _ = bundled
    seen: list[int] = []

    def stop_after_one(metrics):
        epochs = {m.epoch for m in metrics.values()}
        seen.extend(epochs)
        assert set(metrics) == {c.trial_id for c in configs}
        if 1 in epochs:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_bundle(configs, RUNTIME, tmp_path, on_epoch=stop_after_one, conv_impl="grouped")
    assert (tmp_path / f"bundle-{bundle_id(configs)}" / "last.pt").is_file()
    # A resume planned with a smaller bundle size keeps the interrupted bundle whole.
    (kept,) = interrupted_bundles(tmp_path)
    assert sorted(kept) == sorted(c.trial_id for c in configs)
    replanned = plan_bundles(configs, 2, keep=[kept])
    assert [bundle_id(b) for b in replanned] == [bundle_id(configs)]
    resumed_order = {c.trial_id: c for c in replanned[0]}
    resumed = run_bundle(replanned[0], RUNTIME, tmp_path, on_epoch=lambda m: seen.extend(
        {x.epoch for x in m.values()}), conv_impl="grouped")
    resumed = [resumed[list(resumed_order).index(c.trial_id)] for c in configs]
    assert seen == [1, 2]  # epoch 1 was not trained again
    assert interrupted_bundles(tmp_path) == []  # ended: its members have results
    for config, got, want in zip(configs, resumed, clean, strict=True):
        assert_same_result(got, want, f"resumed {config.trial_id}")
    # Finished members are never trained again, also in a new bundle of other members.
    again = run_bundle(configs[:2], RUNTIME, tmp_path, on_epoch=lambda m: pytest.fail("trained"))
    assert [r.train_loss for r in again] == [r.train_loss for r in resumed[:2]]


def test_member_checkpoints_load_as_unfused_models(bundled):
    configs, results, root = bundled
    config, result = configs[2], results[2]
    model, info = load_model(root / config.trial_id, config, "best")
    assert info.name == "digits"
    assert [conv.bits for conv in model.layers if hasattr(conv, "bits")] == [8, 4, 4, 4, 4, 4, 8]
    assert result.step_sizes == pytest.approx(
        {n: float(m.step_size.detach()) for n, m in model.named_modules()
         if hasattr(m, "step_size")})


def test_plan_bundles_groups_by_shared_fields_and_chunks_evenly():
    grid = make([(b, o, lr, wd) for b in (2, 32) for o, lr in (("sgd", 0.1), ("adam", 1e-3))
                 for wd in (0.0, 1e-4)])  # 8 configs, one architecture
    wide = [dataclasses.replace(c, width=2) for c in grid[:3]]
    bundles = plan_bundles(grid + wide, 3)
    assert [len(b) for b in bundles] == [3, 3, 2, 3]
    assert [c for b in bundles[:3] for c in b] == grid  # plan order kept
    assert all(c.width == 2 for c in bundles[3])
    for b in bundles:
        check_bundle(b)
    # Same unfinished set -> same bundles and ids; a finished bundle does not move the others.
    again = plan_bundles([c for b in bundles[1:] for c in b], 3)
    assert [bundle_id(b) for b in again] == [bundle_id(b) for b in bundles[1:]]
    # An interrupted bundle stays whole only while all its members are still unfinished.
    kept = [c.trial_id for c in grid[1:6]]
    bundles = plan_bundles(grid, 2, keep=[kept])
    assert [len(b) for b in bundles] == [5, 2, 1]
    assert [c.trial_id for c in bundles[0]] == kept
    assert [c for b in bundles[1:3] for c in b] == [grid[0], *grid[6:]]
    assert plan_bundles(grid[2:], 3, keep=[kept]) == plan_bundles(grid[2:], 3)
    with pytest.raises(UsageError, match="bundle size must be an integer >= 1, but got 0"):
        plan_bundles(grid, 0)


def test_check_bundle_names_the_differing_field():
    a, b = make([(2, "sgd", 0.1, 0.0), (4, "adam", 1e-3, 0.0)])
    check_bundle([a, b])
    with pytest.raises(UsageError, match="differs in depth"):
        check_bundle([a, dataclasses.replace(b, depth=3)])
    with pytest.raises(UsageError, match="duplicate"):
        check_bundle([a, a])
