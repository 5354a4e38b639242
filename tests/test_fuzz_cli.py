"""Fuzz the command line with generated bad input: spec files, --set values, SQL and --where.

Every case is bad input by construction (each generator only produces values a rule refuses), so
each must end with exit code 2 and `error: ...` lines (one per problem), never a traceback, and
the results store the commands read must be byte-identical afterwards. Cases are generated from a
fixed seed (reproducible; a failure names its case). Most run in-process through the real CLI
(qgen_sweep.cli.main); a few of each family run as real `qgen-sweep` subprocesses.
"""

from __future__ import annotations

import copy
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w
from cli_helpers import CliResult, run_cli, snapshot
from test_analysis import build_known_store

from qgen_sweep.spec import CHOICES, CONFIG_FIELDS, RESOURCE_FIELDS, RUNTIME_FIELDS, load_spec

SEED = 20_240_611
N_SPECS, N_SETS, N_SQL, N_WHERE = 70, 70, 70, 30
QGEN = [sys.executable, "-m", "qgen_sweep.cli"]
SMOKE = load_spec("smoke").raw
_ALPHABET = "abcdefghijklmnopqrstuvwxyz"


# ---- generators: every value below breaks a rule --------------------------------------------
def _word(rng: random.Random, prefix: str = "zz") -> str:
    return prefix + "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(3, 9)))


def _bad_value(rng: random.Random, kind: str, name: str) -> object:
    """A value of the wrong type or out of range for a field of TOML type `kind`."""
    wrong_type = {
        "integer": ["x", 1.5, True, [1], {"a": 1}],
        "number": ["x", True, [1.0], {"a": 1}, float("nan"), float("inf")],
        "string": [5, 1.5, True, ["a"], {"a": "b"}],
        "boolean": ["yes", 1, 0.0, ["true"]],
        "list of integers": ["x", [1.5], [3, 2], [0], [1, 1], [2**40]],
    }[kind]
    out_of_range = {"integer": [-1, 2**63 if name == "seed" else 3_000_000_000],
                    "number": [-1.0, -1e-9]}.get(kind, [])
    if kind == "string" and name in CHOICES:
        out_of_range = ["nope-" + _word(rng, ""), "", "  "]
    if name == "device":
        out_of_range = ["cuda:abc", "gpu", "cuda:", "tpu:0"]
    if name in ("compile", "dtype", "engine"):
        out_of_range = [_word(rng)]
    return rng.choice(wrong_type + out_of_range)


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def _mutate(rng: random.Random, raw: dict) -> str | None:
    """Break one rule of `raw` in place; return replacement TOML text for text-level breaks."""
    choice = rng.randrange(9)
    if choice in (4, 5) and not isinstance(raw.get("grid"), dict):  # made a non-table before
        raw["grid"] = {}
    sections = {"train": CONFIG_FIELDS, "runtime": RUNTIME_FIELDS, "resources": RESOURCE_FIELDS}
    if choice <= 2:  # a wrong value for a real field
        section = rng.choice(list(sections))
        fields = {k: v for k, v in sections[section].items()
                  if not (section == "train" and k in raw.get("grid", {}))}
        name = rng.choice(sorted(fields))
        if not isinstance(raw.get(section), dict):  # an earlier mutation made it a non-table
            raw[section] = {}
        raw[section][name] = _bad_value(rng, fields[name], name)
    elif choice == 3:  # an unknown key somewhere
        where = rng.choice([None, "grid", "train", "runtime", "resources"])
        if where is not None and not isinstance(raw.get(where), dict):
            raw[where] = {}
        (raw if where is None else raw[where])[_word(rng)] = 1
    elif choice == 4:  # a broken axis
        axis = rng.choice(["bits", "optimizer", "width"])
        good = SMOKE["grid"][axis]
        raw["grid"][axis] = rng.choice([good[0], [], [good[0], good[0]], [{"a": 1}],
                                        [3] if axis == "bits" else ["nope"]])
    elif choice == 5:  # a broken learning-rate table
        raw["grid"]["lr"] = rng.choice([{"sgd": []}, {"sgd": [-0.1]}, {"lion": [0.1]},
                                        {"sgd": "fast"}, {"adam": [1e-3]}])
    elif choice == 6:  # top-level values of the wrong kind
        key = rng.choice(["description", "search", "results_dir", "grid", "train"])
        raw[key] = rng.choice([5, [1], True]) if key != "search" else _word(rng)
    elif choice == 7:  # text that is not valid TOML
        text = tomli_w.dumps(raw)
        if rng.random() < 0.2:  # cut anywhere, then a line no TOML parser accepts
            return text[:rng.randrange(1, len(text))] + "\n]]] = \n"
        return text + rng.choice(['\nx = "unterminated\n', "\n[[[\n", "\n= 3\n",
                                  "\ntrain = 1\n", "\n[train]\nepochs = 2\n"])
    else:  # deep nesting in a value
        raw["description"] = {"a": 1}
        return tomli_w.dumps(raw).replace('[description]\na = 1', f"x = {_deep(2_000)}")
    return None


def bad_spec_texts(rng: random.Random, n: int) -> Iterator[str | bytes]:
    for index in range(n):
        raw = copy.deepcopy(SMOKE)
        if index % 10 == 9:  # a file that is not UTF-8 at all
            yield tomli_w.dumps(raw).encode() + b'\ndescription = "caf\xe9"\n'
            continue
        text = None
        for _ in range(rng.randint(1, 3)):
            text = _mutate(rng, raw) or text
            if text is not None:
                break
        yield text if text is not None else tomli_w.dumps(raw)


def _toml(value: object) -> str:
    return tomli_w.dumps({"v": value}).removeprefix("v = ").strip()


def bad_set_values(rng: random.Random, n: int) -> Iterator[str]:
    malformed = ["no_equals_sign", "=3", "train.=3", ".epochs=3", "train..epochs=3",
                 "grid.lr.sgd.fast=1", "train.epochs.x=3", f"grid.bits={_deep(50_000)}",
                 "description=caf\udce9", "train=3", "grid=[1]"]
    sections = {"train": CONFIG_FIELDS, "runtime": RUNTIME_FIELDS, "resources": RESOURCE_FIELDS}
    for index in range(n):
        if index % 7 == 0:
            yield rng.choice(malformed)
        elif index % 7 == 1:
            section = rng.choice(["train", "runtime", "resources", "grid", "optuna"])
            yield f"{section}.{_word(rng)}=1"
        elif index % 7 == 2:
            axis = rng.choice(["bits", "optimizer", "width", "depth"])
            yield f"grid.{axis}=" + rng.choice(["[]", "3", "[2, 2]", '["x"]', "[[2]]", "{a=1}"])
        else:
            section = rng.choice(list(sections))
            name = rng.choice(sorted(k for k in sections[section]
                                     if not (section == "train" and k in SMOKE["grid"])))
            yield f"{section}.{name}={_toml(_bad_value(rng, sections[section][name], name))}"


REFUSED = [
    "DELETE FROM raw_trials", "DELETE FROM trials WHERE bits = 2", "UPDATE raw_trials SET gap = 0",
    "INSERT INTO raw_trials SELECT * FROM raw_trials", "DROP VIEW trials", "DROP TABLE raw_plan",
    "CREATE TABLE x AS SELECT 1", "CREATE VIEW v AS SELECT 1", "CREATE MACRO m() AS 1",
    "ALTER TABLE raw_trials ADD COLUMN x INTEGER", "TRUNCATE raw_trials",
    "COPY raw_trials TO '{store}/trials/bits=2/x.parquet'", "COPY (SELECT 1) TO '{store}/x.csv'",
    "ATTACH '{store}/x.db' AS x", "DETACH memory", "SET memory_limit = '100GB'",
    "SET enable_external_access = true", "RESET lock_configuration", "PRAGMA enable_profiling",
    "INSTALL httpfs", "LOAD httpfs", "EXPORT DATABASE '{store}/dump'", "CHECKPOINT", "VACUUM",
    "BEGIN TRANSACTION", "USE memory", "PREPARE p AS SELECT 1", "CALL pragma_version()",
    "SELECT 1; SELECT 2", "SELECT 1; DELETE FROM raw_trials",
]
DML = ["DELETE FROM raw_trials", "UPDATE raw_trials SET gap = 0",
       "INSERT INTO raw_trials SELECT * FROM raw_trials"]
FAILING_READS = [
    "SELECT * FROM read_csv('/etc/passwd')", "SELECT * FROM read_parquet('{store}/plan.parquet')",
    "SELECT * FROM '{store}/plan.parquet'", "SELECT * FROM glob('/*')",
    "SELECT * FROM read_text('/etc/hostname')", "SELECT getenv('HOME')", "SELECT nope FROM trials",
    "SELECT * FROM no_such_view", "SELECT 'a'::INTEGER", "SELECT error('boom')",
    "SELECT sum(bits) FROM trials GROUP BY nope", "SELECT 'caf\udce9'",
    "SELECT 1\x00; DELETE FROM raw_trials", "SELECT " + "1 + " * 5000 + "1",
]
# Each makes "SELECT bits FROM trials<breaker>" a syntax error (a trailing comma does not:
# DuckDB accepts it).
BREAKERS = [")", "(", "'", " WHERE", " FROM", " JOIN", " AND", " ORDER BY", " = ", " LIMIT",
            " GROUP BY", " UNION"]


def _decorate(rng: random.Random, sql: str) -> str:
    """Random keyword case, comments and whitespace between the words (same statement)."""
    words = []
    for word in sql.split(" "):
        if word.isalpha() and rng.random() < 0.5:
            word = "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in word)
        words.append(word)
    glue = [" ", "  ", "\n", " /* c */ ", "\t"]
    return "".join(w + (rng.choice(glue) if i < len(words) - 1 else "")
                   for i, w in enumerate(words))


def bad_sql(rng: random.Random, n: int, store: Path) -> Iterator[str]:
    for index in range(n):
        family = index % 4
        if family == 0:
            sql = rng.choice(REFUSED)
        elif family == 1:
            inner = rng.choice(DML)
            sql = rng.choice([f"WITH d AS ({inner} RETURNING *) SELECT count(*) FROM d",
                              f"EXPLAIN ANALYZE {inner}", f"EXPLAIN /* x */ ANALYZE {inner}",
                              f"EXPLAIN (FORMAT json) {inner}",
                              f"EXPLAIN ANALYZE WITH d AS ({inner} RETURNING *) SELECT * FROM d",
                              f"WITH d AS MATERIALIZED ({inner} RETURNING 1) SELECT 1"])
        elif family == 2:
            sql = rng.choice(FAILING_READS)
        else:
            sql = "SELECT bits FROM trials" + rng.choice(BREAKERS)
        yield _decorate(rng, sql.format(store=store))


def bad_where(rng: random.Random, n: int, store: Path) -> Iterator[str]:
    cases = [
        f"FALSE); COPY (SELECT 1 AS x) TO '{store}/trials/bits=2/x.parquet'; SELECT 1 WHERE (FALSE",
        "bits = 2; DROP VIEW trials", "bits = 2) OR (TRUE", "TRUE) UNION SELECT * FROM trials --",
        "CAST((SELECT string_agg(column0, '|') FROM read_csv('/etc/passwd')) AS INTEGER) = 1",
        "EXISTS (SELECT * FROM read_parquet('" + str(store) + "/plan.parquet'))",
        "EXISTS (WITH d AS (DELETE FROM raw_trials RETURNING *) SELECT 1 FROM d)",
        "bitz = 2", "bits = 'two'", "count(*) > 1", "bits = 2, lr = 0.1", "SELECT 1", "(",
        "bits IN (", "row_number() OVER () = 1", "nope(bits)", "bits = 2 AND",
        "getenv('HOME') = ''", "bits = 2\x00 OR TRUE", "optimizer = 'caf\udce9'",
    ]
    for _ in range(n):
        yield _decorate(rng, rng.choice(cases))


# ---- the store the commands read, and the assertions -------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz") / "known"
    build_known_store(root, sweep="known")
    return root


@pytest.fixture(autouse=True)
def cache_dir(tmp_path_factory, monkeypatch) -> Path:
    folder = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("QGEN_SWEEP_CACHE_DIR", str(folder))
    return folder


def _assert_bad_input(result: CliResult, case: str) -> None:
    where = f"case {case!r}"
    assert not result.crashed, f"{where}: traceback\n{result.stderr[-3000:]}"
    assert result.code == 2, f"{where}: exit {result.code}\n{result.stdout[-500:]}{result.stderr}"
    lines = result.error_lines
    assert lines and all(line.startswith("error: ") for line in lines), f"{where}: {lines}"


def test_generated_bad_specs_exit_2_and_write_nothing(tmp_path, store):
    rng = random.Random(SEED)
    before = snapshot(store)
    for index, text in enumerate(bad_spec_texts(rng, N_SPECS)):
        path = tmp_path / f"bad{index}.toml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "replace"))
        _assert_bad_input(run_cli("validate", str(path)), f"spec {index}")
        if index % 5 == 0:  # a launch of a bad spec writes nothing at all
            fresh = tmp_path / f"results{index}"
            _assert_bad_input(run_cli("launch", str(path), "--backend", "local",
                                      "--results-dir", str(fresh)), f"launch spec {index}")
            assert not fresh.exists(), f"spec {index}: launch wrote {fresh}"
        if index % 7 == 0:  # a dry run over an existing store leaves it untouched
            _assert_bad_input(run_cli("launch", str(path), "--dry-run", "--results-dir",
                                      str(store)), f"dry-run spec {index}")
    assert snapshot(store) == before


def test_generated_bad_set_values_exit_2(tmp_path, store):
    rng = random.Random(SEED + 1)
    before = snapshot(store)
    for index, item in enumerate(bad_set_values(rng, N_SETS)):
        _assert_bad_input(run_cli("validate", "smoke", "--set", item), f"--set {item[:200]}")
        if index % 6 == 0:
            _assert_bad_input(run_cli("launch", "smoke", "--set", item, "--dry-run",
                                      "--results-dir", str(store)), f"launch --set {item[:200]}")
        if index % 9 == 0:
            fresh = tmp_path / f"slurm{index}"
            _assert_bad_input(run_cli("slurm", "smoke", "--print", "--set", item,
                                      "--results-dir", str(fresh)), f"slurm --set {item[:200]}")
    assert snapshot(store) == before


def test_generated_bad_sql_exits_2_and_leaves_the_store_byte_identical(store):
    rng = random.Random(SEED + 2)
    before = snapshot(store)
    for sql in bad_sql(rng, N_SQL, store):
        _assert_bad_input(run_cli("query", "--results-dir", str(store), sql), f"query {sql}")
    for where in bad_where(rng, N_WHERE, store):
        result = run_cli("measure", "known", "--results-dir", str(store), "--backend", "local",
                         "--where", where)
        _assert_bad_input(result, f"--where {where}")
        assert "root:" not in result.stderr  # nothing of /etc/passwd reaches a message
    assert snapshot(store) == before
    assert not list(store.parent.glob("**/x.parquet")) and not (store / "x.csv").exists()


def test_a_few_cases_of_each_family_as_real_subprocesses(tmp_path, store):
    rng = random.Random(SEED + 3)
    spec = tmp_path / "bad.toml"
    text = next(bad_spec_texts(rng, 1))
    spec.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "replace"))
    cases = [["validate", str(spec)], ["validate", "smoke", "--set", next(bad_set_values(rng, 2))],
             ["query", "--results-dir", str(store),
              "EXPLAIN /* c */ ANALYZE DELETE FROM raw_trials"],
             ["measure", "known", "--results-dir", str(store), "--backend", "local", "--where",
              next(bad_where(rng, 1, store))]]
    before = snapshot(store)
    for args in cases:
        proc = subprocess.run([*QGEN, *args], capture_output=True, text=True, timeout=120)
        result = CliResult(proc.returncode, proc.stdout, proc.stderr)
        _assert_bad_input(result, " ".join(args)[:300])
    assert snapshot(store) == before


def test_the_generators_are_reproducible_and_big_enough(store):
    first = list(bad_sql(random.Random(SEED + 2), N_SQL, store))
    assert first == list(bad_sql(random.Random(SEED + 2), N_SQL, store))
    total = N_SPECS + N_SETS + N_SQL + N_WHERE
    assert total >= 200 and len(set(first)) > N_SQL // 2
