"""Loss landscapes: filter-normalized directions, the stacked evaluator against one model at a
time, surfaces and interpolations of real trained trials, and the landscape views over them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from qgen_sweep.errors import UsageError
from qgen_sweep.landscape import ledger
from qgen_sweep.landscape.directions import parameter_roles, random_direction
from qgen_sweep.landscape.settings import LandscapeSettings, direction_seed
from qgen_sweep.landscape.stacked import (
    LoopEvaluator,
    StackedEvaluator,
    evaluator_for,
    float_state,
)
from qgen_sweep.landscape.surface import compute_trial, surface_chunk
from qgen_sweep.store import ResultsStore
from qgen_sweep.trial.archs import ARCH_NAMES
from qgen_sweep.trial.config import TrialConfig
from qgen_sweep.trial.lsq import LSQConv2d
from qgen_sweep.trial.models import build_model
from qgen_sweep.trial.train import evaluate, load_model
from tests.sweep_helpers import launch, tiny_spec

CONFIG = TrialConfig("digits", 4, "sgd", 0.05, 1e-4, depth=2, width=4, base_width=2, epochs=2,
                     batch_size=64, milestones=(1,))
SMALL = {"grid": 5, "device": "cpu", "points": 8}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: these tiny networks only lose to thread hand-offs on 2 shared
    cores (as the Ray tasks run them: threads = the task's CPUs)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _nin(bits: int) -> nn.Module:
    torch.manual_seed(CONFIG.seed)  # as the engine does: the same init for every precision
    config = TrialConfig.from_dict({**CONFIG.to_dict(), "bits": bits})
    return build_model(config, 1, 10).eval()


class _Block(nn.Module):
    """A torchvision-style ResNet basic block: two 3x3 convs, BN, a residual add, and a
    1x1 downsample branch when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = LSQConv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False, bits=4)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = LSQConv2d(c_out, c_out, 3, padding=1, bias=False, bits=4)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class _ResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(_Block(8, 8, 1), _Block(8, 16, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer1(self.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _resnet() -> nn.Module:
    torch.manual_seed(1)
    model = _ResNet()
    for module in model.modules():  # trained-looking BN statistics, so BN is not an identity
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0, 0.1)
    return model.eval()


def _data(n: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    return torch.randn(n, 1, 8, 8, generator=generator), torch.randint(0, 10, (n,),
                                                                      generator=generator)


def _filter_norms(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).norm(dim=1)


@pytest.mark.parametrize("make", [lambda: _nin(4), _resnet], ids=["nin-int4", "resnet"])
def test_each_direction_filter_has_the_norm_of_the_models_filter(make) -> None:
    model = make()
    roles = parameter_roles(model)
    params = dict(model.named_parameters())
    direction = random_direction(model, base_seed=7, index=0)
    assert set(direction) == set(params)
    filters = [n for n, role in roles.items() if role == "filter"]
    assert any(n.endswith("fc.weight") or ".0.weight" in n or n == "conv1.weight"
               for n in filters)
    for name in filters:
        torch.testing.assert_close(_filter_norms(direction[name]), _filter_norms(params[name]),
                                   rtol=1e-5, atol=1e-7)
        assert not torch.equal(direction[name], params[name])  # random, not the weights
    for name, role in roles.items():
        if role != "filter":  # BN scales and shifts, biases, LSQ step sizes
            assert not direction[name].any(), name
    bn = {f"{prefix}.{n}" for prefix, m in model.named_modules()
          if isinstance(m, nn.BatchNorm2d) for n, _ in m.named_parameters(recurse=False)}
    assert bn and {roles[n] for n in bn} == {"norm"}
    assert any(roles[n] == "other" for n in roles if n.endswith("step_size"))


def test_ignore_bn_moves_biases_along_themselves_and_keeps_bn_at_zero() -> None:
    model = _nin(4)
    roles = parameter_roles(model)
    direction = random_direction(model, 7, 0, ignore="bn")
    params = dict(model.named_parameters())
    for name, role in roles.items():
        if role == "bias":
            assert torch.equal(direction[name], params[name].detach())
        elif role in ("norm", "other"):
            assert not direction[name].any()


def test_twins_get_the_same_raw_directions_and_the_seed_is_per_configuration() -> None:
    fp32, int4 = _nin(32), _nin(4)  # the same initial weights, as the engine builds twins
    d32, d4 = random_direction(fp32, 11, 1), random_direction(int4, 11, 1)
    for name in d32:
        torch.testing.assert_close(d32[name], d4[name])
    assert set(d4) - set(d32) == {n for n in d4 if n.endswith("step_size")}
    other = random_direction(fp32, 12, 1)
    assert not torch.equal(other["layers.0.weight"], d32["layers.0.weight"])
    twin = TrialConfig.from_dict({**CONFIG.to_dict(), "bits": 32}).trial_id
    assert direction_seed(twin, 0) == direction_seed(twin, 0) != direction_seed(twin, 1)


@pytest.mark.parametrize("make", [lambda: _nin(2), _resnet], ids=["nin-int2", "resnet"])
def test_stacked_evaluation_equals_one_model_copy_per_point(make) -> None:
    model = make()
    x, y = _data()
    directions = [random_direction(model, 3, k) for k in range(2)]
    coords = torch.tensor([[0.0, 0.0], [0.3, -0.2], [-0.5, 0.5], [1.0, 1.0], [0.1, 0.0]],
                          dtype=torch.float64)
    chunk = surface_chunk(float_state(model), directions, coords)
    stacked = evaluator_for(model, x, y, batch_size=40, points=3)
    assert isinstance(stacked, StackedEvaluator)
    loop = LoopEvaluator(model, x, y, batch_size=40, points=1)
    got, expected = stacked.evaluate(chunk, 5), loop.evaluate(chunk, 5)
    torch.testing.assert_close(got[0], expected[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[1], expected[1])
    own_loss, own_acc = evaluate(model, x, y, 40)  # the centre is the model itself
    assert got[0][0].item() == pytest.approx(own_loss, rel=1e-6)
    assert got[1][0].item() == own_acc
    assert len(set(got[0].tolist())) == 5  # every point is a different model


# Attention reshapes heads out of the channel axis and LayerNorm normalises over it, so the
# transformers fail the stacked self-check and are evaluated one copy per point.
ONE_COPY = {"deit_t", "swin_t"}


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_every_registered_arch_stacks_and_matches_one_copy_per_point(arch: str) -> None:
    sizes = {"depth": 2, "width": 2} if arch == "nin" else {}
    config = TrialConfig("digits", 4, "sgd", 0.05, 0.0, arch=arch, base_width=4, **sizes)
    torch.manual_seed(0)
    model = build_model(config, 1, 10).eval()
    x, y = _data(24)
    direction = random_direction(model, 5, 0)
    for name, weight in model.named_parameters():
        if weight.dim() >= 2:  # conv and linear filters alike
            torch.testing.assert_close(_filter_norms(direction[name]), _filter_norms(weight),
                                       rtol=1e-5, atol=1e-7)
    coords = torch.tensor([[0.0], [0.25], [-0.5]], dtype=torch.float64)
    chunk = surface_chunk(float_state(model), [direction], coords)
    stacked = evaluator_for(model, x, y, batch_size=24, points=3)
    expected = LoopEvaluator if arch in ONE_COPY else StackedEvaluator
    assert isinstance(stacked, expected), arch
    torch.testing.assert_close(stacked.evaluate(chunk, 3)[0],
                               LoopEvaluator(model, x, y, 24, 1).evaluate(chunk, 3)[0],
                               rtol=1e-5, atol=1e-6)


def test_a_forward_that_mixes_channels_falls_back_to_one_copy_per_point() -> None:
    class Concat(nn.Module):  # torch.cat along channels would mix stacked copies
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 4, 3), nn.Conv2d(1, 4, 3)
            self.fc = nn.Linear(8 * 36, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.cat([self.a(x), self.b(x)], 1).flatten(1))

    x, y = _data()
    assert isinstance(evaluator_for(Concat().eval(), x, y, 32, 4), LoopEvaluator)


def test_settings_are_validated_with_the_rule_and_the_way_out() -> None:
    with pytest.raises(UsageError, match=r"--grid must be an odd integer >= 3 .* got 20"):
        LandscapeSettings(grid=20)
    with pytest.raises(UsageError, match="--dims must be 1 or 2"):
        LandscapeSettings(dims=3)
    assert LandscapeSettings(grid=5).key() != LandscapeSettings(grid=7).key()
    assert LandscapeSettings(grid=5, points=3).key() == LandscapeSettings(grid=5).key()


# ---- real trained trials in a real store ------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ResultsStore:
    """The tiny smoke variant (Int2 and FP32, SGD and Adam, 2 epochs), trained in-process."""
    return launch(tiny_spec(), tmp_path_factory.mktemp("landscape") / "tiny", "local")


def _trials(store: ResultsStore) -> list[dict]:
    return sorted(store.read("trials").to_pylist(), key=lambda r: (r["optimizer"], r["bits"]))


def _rows(store: ResultsStore, trial: dict) -> list[dict]:
    return pq.read_table(ledger.landscape_path(store, trial["trial_id"],
                                               trial["bits"])).to_pylist()


def test_surface_centre_and_line_ends_are_the_models_own_training_losses(
        store: ResultsStore) -> None:
    int2, fp32 = _trials(store)[:2]  # adam Int2 and its FP32 twin
    assert (int2["bits"], fp32["bits"]) == (2, 32)
    settings = LandscapeSettings(**SMALL).to_dict()
    compute_trial(store, int2, settings)
    rows = _rows(store, int2)
    kinds = {r["kind"] for r in rows}
    assert kinds == {"surface", "init", "twin"}
    surface = [r for r in rows if r["kind"] == "surface"]
    assert len(surface) == 25 and {r["evaluator"] for r in surface} == {"stacked"}
    centre = next(r for r in surface if (r["i"], r["j"]) == (0, 0))
    assert (centre["a"], centre["b"]) == (0.0, 0.0)
    assert centre["loss"] == pytest.approx(int2["train_loss"], rel=1e-5)
    assert centre["accuracy"] == pytest.approx(int2["train_acc"], abs=1e-12)
    assert {r["a"] for r in surface} == {-1.0, -0.5, 0.0, 0.5, 1.0}
    twin = {r["a"]: r["loss"] for r in rows if r["kind"] == "twin"}
    assert twin[0.0] == pytest.approx(fp32["train_loss"], rel=1e-5)  # the FP32 twin itself
    assert twin[1.0] == pytest.approx(int2["train_loss"], rel=1e-5)  # dequantized = quantized
    init = {r["a"]: r["loss"] for r in rows if r["kind"] == "init"}
    assert init[1.0] == pytest.approx(int2["train_loss"], rel=1e-5)
    config = TrialConfig.from_dict(json.loads(int2["config_json"]))
    model0, _ = load_model(store.checkpoint_dir(int2["trial_id"]), config, "init")
    from qgen_sweep.trial.data import load_dataset

    data = load_dataset("digits")
    assert init[0.0] == pytest.approx(evaluate(model0, data.train_x, data.train_y, 512)[0],
                                      rel=1e-5)
    assert {r["twin_id"] for r in rows} == {fp32["trial_id"]}


def test_a_rerun_recomputes_nothing_and_other_settings_add_rows(store: ResultsStore) -> None:
    trial = _trials(store)[1]  # adam FP32
    settings = LandscapeSettings(**SMALL)
    compute_trial(store, trial, settings.to_dict())
    path = ledger.landscape_path(store, trial["trial_id"], trial["bits"])
    before = path.stat()
    compute_trial(store, trial, settings.to_dict())
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert ledger.missing_curves(store, trial, settings) == ()
    one_d = LandscapeSettings(**{**SMALL, "dims": 1, "seed": 3})
    assert ledger.missing_curves(store, trial, one_d) == ("surface", "init")
    compute_trial(store, trial, one_d.to_dict())
    rows = _rows(store, trial)
    assert {r["landscape_id"] for r in rows} == {settings.key(), one_d.key()}
    line = [r for r in rows if r["landscape_id"] == one_d.key() and r["kind"] == "surface"]
    assert len(line) == 5 and {r["j"] for r in line} == {0}
    assert "twin" not in {r["kind"] for r in rows}  # an FP32 trial has no twin line


def test_landscape_view_summaries_match_the_points(store: ResultsStore) -> None:
    from qgen_sweep.analysis.db import connect

    int2 = _trials(store)[0]
    compute_trial(store, int2, LandscapeSettings(**SMALL).to_dict())
    key = LandscapeSettings(**SMALL).key()
    con = connect(store.root)
    row = con.execute("SELECT * FROM landscape WHERE trial_id = ? AND landscape_id = ?",
                      [int2["trial_id"], key]).fetchone()
    names = [d[0] for d in con.description]
    view = dict(zip(names, row, strict=True))
    points = {(r["i"], r["j"]): r for r in _rows(store, int2)
              if r["kind"] == "surface" and r["landscape_id"] == key}
    centre = points[(0, 0)]["loss"]
    h = 0.5  # span 1 over grid // 2 = 2 steps
    neighbours = [points[p]["loss"] for p in ((1, 0), (-1, 0), (0, 1), (0, -1))]
    assert view["curvature"] == pytest.approx((sum(neighbours) - 4 * centre) / (2 * h * h))
    inside = [r["loss"] - centre for (i, j), r in points.items()
              if (i, j) != (0, 0) and (r["a"] ** 2 + r["b"] ** 2) <= 0.25]
    assert len(inside) == 4 and view["loss_rise"] == pytest.approx(sum(inside) / 4)
    assert view["loss_centre"] == pytest.approx(int2["train_loss"], rel=1e-5)
    assert view["gap"] == int2["gap"] and view["precision"] == "Int2"
    assert view["n"] == 1437 and view["config_id"] == ledger.twin_id(int2)
    assert view["twin_barrier"] is not None and math.isfinite(view["init_barrier"])
    table = dict(con.execute("SELECT measure, Int2 FROM landscape_table WHERE landscape_id = ?",
                             [key]).fetchall())
    assert table["curvature"] == pytest.approx(view["curvature"])  # the one Int2 model here


def test_landscape_figures_are_written_for_every_trial_and_configuration(
        store: ResultsStore, tmp_path: Path) -> None:
    from qgen_sweep.analysis import style
    from qgen_sweep.analysis.db import connect
    from qgen_sweep.landscape.report import all_figures

    for trial in _trials(store)[:2]:
        compute_trial(store, trial, LandscapeSettings(**SMALL).to_dict())
    paths = all_figures(connect(store.root), tmp_path, ("svg",))
    names = {p.name for p in paths}
    config = ledger.twin_id(_trials(store)[0])
    assert f"tiny-landscape-panel-{config}.svg" in names or any(
        n.endswith(f"landscape-panel-{config}.svg") for n in names)
    panel = next(p for p in paths if p.name.endswith(f"panel-{config}.svg"))
    texts = " ".join(style.svg_texts(panel))
    assert "FP32" in texts and "Int2" in texts and "training loss (nats)" in texts
    assert "n = 1,437 training examples" in texts
    assert all(p.stat().st_size > 0 for p in paths)


def test_a_resnet18_trial_gets_its_surface_and_twin_line(tmp_path: Path) -> None:
    """The whole job on a registry architecture other than NiN (Int2 and its FP32 twin)."""
    spec = tiny_spec('train.arch="resnet18"', "train.base_width=4", "train.epochs=1",
                     'grid.optimizer=["sgd"]')
    store = launch(spec, tmp_path / "resnet", "local")
    int2, fp32 = sorted(store.read("trials").to_pylist(), key=lambda r: r["bits"])
    assert (int2["arch"], int2["bits"], fp32["bits"]) == ("resnet18", 2, 32)
    compute_trial(store, int2, LandscapeSettings(**{**SMALL, "grid": 3}).to_dict())
    rows = _rows(store, int2)
    centre = next(r for r in rows if r["kind"] == "surface" and (r["i"], r["j"]) == (0, 0))
    assert centre["loss"] == pytest.approx(int2["train_loss"], rel=1e-5)
    assert {r["evaluator"] for r in rows} == {"stacked"}
    twin = {r["a"]: r["loss"] for r in rows if r["kind"] == "twin"}
    assert twin[0.0] == pytest.approx(fp32["train_loss"], rel=1e-5)
    assert twin[1.0] == pytest.approx(int2["train_loss"], rel=1e-5)
