"""`arch` as a TrialConfig field and sweep axis: ids from before stay valid, per-arch defaults,
spec validation, plan / trial rows, and stores written before the column read as NiN."""

from __future__ import annotations

import hashlib
import math

import pyarrow as pa
import pytest

from qgen_sweep.analysis import connect
from qgen_sweep.errors import SpecError, UsageError
from qgen_sweep.plan import plan
from qgen_sweep.spec import load_spec, parse_spec
from qgen_sweep.store import PLAN_SCHEMA, TRIAL_SCHEMA, ResultsStore, write_table_atomic
from qgen_sweep.trial.archs import ARCH_NAMES, ARCHS
from qgen_sweep.trial.config import TrialConfig


def test_trial_ids_from_before_the_arch_axis_are_unchanged() -> None:
    # Pinned on the revision before `arch` existed (4c288fa): NiN trials keep their ids, so
    # stores, checkpoints and measures written then belong to the same trials now.
    a = TrialConfig("cifar10", 4, "sgd", 0.1, 1e-4, depth=3, width=10)
    b = TrialConfig("digits", 32, "adam", 1e-3, 0.0, depth=2, width=2, base_width=8, epochs=15,
                    milestones=(), seed=3)
    assert (a.trial_id, b.trial_id) == ("60b5511273e1fb10", "5d4d0f453e119e52")
    assert "arch" not in a.canonical_json() and a.arch == "nin" and a.base_width == 25
    expected = {"smoke": "9abe6f06005afe45", "cifar10-grid": "3b083f402414d753",
                "cifar100-grid": "ddc75658dcd685c4", "digits-grid": "be0dd8102b7b2e19"}
    for name, digest in expected.items():
        ids = ",".join(t.trial_id for t in plan(load_spec(name)))
        assert hashlib.sha256(ids.encode()).hexdigest()[:16] == digest, name


def test_a_non_default_arch_is_part_of_the_id_with_its_own_defaults() -> None:
    nin = TrialConfig("cifar10", 4, "sgd", 0.1, 1e-4, depth=3, width=1, base_width=16)
    resnet = TrialConfig("cifar10", 4, "sgd", 0.1, 1e-4, arch="resnet18")
    assert resnet.to_dict()["arch"] == "resnet18" and resnet.trial_id != nin.trial_id
    assert (resnet.base_width, resnet.depth, resnet.width) == (16, 1, 1)  # paper: width 16
    assert TrialConfig.from_dict(resnet.to_dict()) == resnet
    for name, entry in ARCHS.items():
        config = TrialConfig("digits", 2, "sgd", 0.1, 0.0, depth=2, width=1, arch=name)
        assert config.base_width == entry.base_width
        assert config.depth == (2 if entry.uses_depth else 1)  # NiN's depth does not apply


def test_bad_arch_and_nin_without_depth_are_one_line_errors() -> None:
    with pytest.raises(UsageError, match="arch must be one of nin, resnet18.*'resnet19'"):
        TrialConfig("cifar10", 4, "sgd", 0.1, 0.0, arch="resnet19")
    with pytest.raises(UsageError, match=r"depth \(the number of NiN blocks\) is required"):
        TrialConfig("cifar10", 4, "sgd", 0.1, 0.0, width=2)


BACKBONES = """
[grid]
arch = ["nin", "resnet18", "vgg19"]
bits = [2, 32]
depth = [2, 3]
[train]
dataset = "digits"
optimizer = "sgd"
lr = 0.1
weight_decay = 0.0
width = 1
base_width = 4
"""


def test_arch_axis_plans_each_trial_once_and_rows_carry_the_arch() -> None:
    import tomllib

    spec = parse_spec(tomllib.loads(BACKBONES), name="mixed", source="mixed.toml")
    trials = plan(spec)
    archs = [t.config.arch for t in trials]
    # NiN at depth 2 and 3; the depth axis does not multiply the others' trials.
    assert archs.count("nin") == 4 and archs.count("resnet18") == 2 == archs.count("vgg19")
    assert [t.position for t in trials] == list(range(len(trials)))
    assert len({t.trial_id for t in trials}) == len(trials)
    row = trials[-1].plan_row("mixed")
    assert row["arch"] == "vgg19" and set(row) <= set(PLAN_SCHEMA.names)


@pytest.mark.parametrize(("text", "words"), [
    (BACKBONES.replace('"vgg19"]', '"vgg20"]'), ["grid.arch", "'vgg20'", "allowed", "vgg19"]),
    (BACKBONES.replace("dataset", 'arch = 3\ndataset'), ["train.arch", "string"]),
])
def test_spec_validates_arch(text: str, words: list[str]) -> None:
    import tomllib

    with pytest.raises(SpecError) as info:
        parse_spec(tomllib.loads(text), name="bad", source="bad.toml")
    assert all(w in str(info.value) for w in words), str(info.value)


def test_store_rows_without_arch_read_as_nin(tmp_path) -> None:  # noqa: ANN001
    store = ResultsStore(tmp_path)
    config = TrialConfig("digits", 32, "sgd", 0.1, 0.0, depth=2, width=1, base_width=4)
    old_schema = pa.schema([f for f in TRIAL_SCHEMA if f.name != "arch"])  # before the column
    row = {name: getattr(config, name, None) for name in old_schema.names}
    row |= {"trial_id": config.trial_id, "sweep": "old", "status": "done", "train_loss": 0.5,
            "lr_index": 0, "config_json": config.canonical_json(), "gap": math.nan}
    write_table_atomic(store.path("trials", config.trial_id, 32),
                       pa.Table.from_pylist([row], old_schema))
    resnet = TrialConfig("digits", 32, "sgd", 0.1, 0.0, arch="resnet18")
    new = {**row, "trial_id": resnet.trial_id, "arch": "resnet18",
           "config_json": resnet.canonical_json()}
    store.write_trial(new)
    con = connect(tmp_path, kinds=("trials",))
    rows = con.execute("SELECT arch FROM trials ORDER BY arch").fetchall()
    assert rows == [("nin",), ("resnet18",)]
    assert set(ARCH_NAMES) >= {r[0] for r in rows}
