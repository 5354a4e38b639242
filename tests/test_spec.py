"""Sweep specs: the shipped specs, --set overrides, resolved round trip, and malformed specs.

The malformed-spec table is fault scenario (5) of test_faults_ray.py: each bad spec, given to
the real `qgen-sweep validate` in a subprocess, exits 2 with one `error:` line per problem naming
the file and the key, and never prints a traceback.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from qgen_sweep.errors import SpecError, UsageError
from qgen_sweep.plan import plan
from qgen_sweep.spec import load_spec, parse_value, spec_from_text

QGEN = [sys.executable, "-m", "qgen_sweep.cli"]

VALID = """\
description = "test"
[grid]
bits = [2, 32]
optimizer = ["sgd", "adam"]
width = [1]
[grid.lr]
sgd = [0.1]
adam = [1e-3]
[train]
dataset = "digits"
depth = 2
weight_decay = 0.0
epochs = 1
"""


def test_shipped_specs_load_and_plan():
    counts = {name: len(plan(load_spec(name))) for name in
              ("cifar10-grid", "cifar100-grid", "digits-grid", "smoke")}
    assert counts == {"cifar10-grid": 972, "cifar100-grid": 972, "digits-grid": 972, "smoke": 16}
    smoke = load_spec("smoke")
    assert smoke.axes["bits"] == (2, 4, 8, 32)
    assert smoke.fixed["dataset"] == "digits"


def test_cifar_grids_follow_the_paper():
    c10, c100 = load_spec("cifar10-grid"), load_spec("cifar100-grid")
    assert c10.axes["depth"] == (2, 3, 4) and c100.axes["depth"] == (3, 4, 5)
    assert c10.axes["width"] == (8, 10, 12) and c10.axes["weight_decay"] == (0.0, 1e-4, 2e-4)
    assert c10.lr_table == {"sgd": (0.1, 0.05, 0.01), "adam": (1e-3, 5e-4, 1e-4),
                            "rmsprop": (1e-3, 5e-4, 1e-4)}
    assert c10.fixed["epochs"] == 300 and c10.fixed["milestones"] == (100, 200)
    assert c10.resources.gpu > 0  # GPU fraction by default


def test_spec_by_path_and_overrides(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(VALID)
    spec = load_spec(str(path), ["train.epochs=3", "grid.bits=[2, 4, 32]", "resources.cpu=0.25"])
    assert spec.name == "mine"
    assert spec.fixed["epochs"] == 3 and spec.axes["bits"] == (2, 4, 32)
    assert spec.resources.cpu == 0.25
    assert len(plan(spec)) == 6
    assert spec.resolved()["train"]["epochs"] == 3


def test_resolved_spec_round_trips_with_the_same_hash(tmp_path):
    spec = load_spec("smoke", ["train.epochs=2", "grid.width=[4]"])
    again = spec_from_text(spec.to_toml(), name="smoke", source="saved")
    assert again.spec_hash == spec.spec_hash
    assert [t.trial_id for t in plan(again)] == [t.trial_id for t in plan(spec)]


def test_hash_ignores_resources_but_not_training():
    base = load_spec("smoke")
    assert load_spec("smoke", ["resources.cpu=2"]).spec_hash == base.spec_hash
    assert load_spec("smoke", ["train.epochs=5"]).spec_hash != base.spec_hash


def test_unknown_override_key_suggests_the_close_one():
    with pytest.raises(SpecError) as info:
        load_spec("smoke", ["train.epoch=3"])
    assert "did you mean 'epochs'" in str(info.value)


def test_override_is_validated_like_the_file():
    with pytest.raises(SpecError) as info:
        load_spec("smoke", ["grid.bits=[3]"])
    assert "grid.bits" in str(info.value) and "2, 4, 8, 32" in str(info.value)


def test_parse_value():
    assert parse_value("3") == 3 and parse_value("1e-4") == 1e-4
    assert parse_value("[2, 32]") == [2, 32] and parse_value("digits") == "digits"
    assert parse_value("true") is True


def test_unknown_sweep_name_suggests():
    with pytest.raises(UsageError, match="did you mean 'smoke'"):
        load_spec("smok")


# (name, spec text or override list, words the single error line must contain)
MALFORMED = [
    ("unknown-top-key", VALID + "\n[resorces]\ncpu = 1\n",
     ["resorces", "did you mean 'resources'"]),
    ("unknown-train-key", VALID.replace("epochs = 1", "epoch = 1"),
     ["train.epoch", "did you mean 'epochs'"]),
    ("unknown-axis", VALID.replace("width = [1]", "widht = [1]"),
     ["grid.widht", "did you mean 'width'"]),
    ("bits-outside", VALID.replace("bits = [2, 32]", "bits = [3, 32]"),
     ["grid.bits", "3", "2, 4, 8, 32"]),
    ("wrong-type", VALID.replace("epochs = 1", 'epochs = "ten"'),
     ["train.epochs", "integer", "'ten'"]),
    ("float-for-int", VALID.replace("depth = 2", "depth = 2.5"), ["train.depth", "2.5"]),
    ("empty-axis", VALID.replace("width = [1]", "width = []"), ["grid.width", "empty"]),
    ("duplicates", VALID.replace("width = [1]", "width = [1, 1]"), ["grid.width", "duplicate"]),
    ("lr-table-missing-optimizer", VALID.replace("adam = [1e-3]\n", ""),
     ["grid.lr", "adam"]),
    ("lr-table-unknown-optimizer", VALID.replace("adam = [1e-3]", "adam = [1e-3]\nsdg = [0.1]"),
     ["grid.lr.sdg", "did you mean 'sgd'"]),
    ("bad-optimizer", VALID.replace('"adam"]', '"adamw"]'), ["grid.optimizer", "adamw"]),
    ("bad-dataset", VALID.replace('"digits"', '"mnist"'), ["train.dataset", "mnist", "cifar10"]),
    ("negative-lr", VALID.replace("sgd = [0.1]", "sgd = [-0.1]"), ["grid.lr.sgd", "> 0"]),
    ("axis-not-list", VALID.replace("width = [1]", "width = 1"), ["grid.width", "list"]),
    ("missing-dataset", VALID.replace('dataset = "digits"\n', ""), ["dataset", "missing"]),
    ("axis-and-fixed", VALID.replace("depth = 2", "depth = 2\nwidth = 1"),
     ["train.width", "also a grid axis"]),
    ("bad-search", 'search = "random"\n' + VALID, ["search", "random", "grid"]),
    ("negative-cpu", VALID + "[resources]\ncpu = -1\n", ["resources.cpu", "> 0"]),
    ("bad-runtime-device", VALID + '[runtime]\ndevice = "tpu"\n', ["runtime.device", "tpu"]),
    ("bad-runtime-dtype", VALID + '[runtime]\ndtype = "float16"\n',
     ["runtime.dtype", "float16", "float32, float64"]),
    ("bad-compile-mode", VALID + '[runtime]\ncompile = "fast"\n',
     ["runtime.compile", "fast", "max-autotune"]),
    ("not-toml", "this is = = not toml\n", ["not valid TOML"]),
    ("bad-milestones", VALID.replace("epochs = 1", "epochs = 1\nmilestones = [200, 100]"),
     ["milestones", "increasing"]),
    ("bool-for-int", VALID.replace("depth = 2", "depth = true"), ["train.depth", "boolean"]),
]


@pytest.mark.parametrize(("name", "text", "needles"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_spec_gives_one_line_error(tmp_path: Path, name, text, needles):
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    proc = subprocess.run([*QGEN, "validate", str(path)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    if name != "not-toml":
        assert str(path) in lines[0]


def test_several_problems_give_one_line_each(tmp_path):
    path = tmp_path / "two.toml"
    text = VALID.replace("epochs = 1", "epoch = 1").replace("bits = [2, 32]", "bits = [5]")
    path.write_text(text)
    proc = subprocess.run([*QGEN, "validate", str(path)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("error: ") for line in lines)


def test_bad_set_on_the_command_line(tmp_path):
    proc = subprocess.run([*QGEN, "validate", "smoke", "--set", "train.epochs=zero"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "train.epochs" in proc.stderr
    assert "Traceback" not in proc.stderr
