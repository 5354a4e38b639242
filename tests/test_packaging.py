"""Packaging: dependency floors are the tested versions, the LICENSE matches pyproject."""

from __future__ import annotations

import importlib.metadata as metadata
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _requirements() -> list[Requirement]:
    listed = list(PROJECT["dependencies"])
    for extra in PROJECT["optional-dependencies"].values():
        listed += extra
    return [r for r in map(Requirement, listed) if r.name != PROJECT["name"]]


def _floor(requirement: Requirement) -> Version:
    floors = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
    assert floors, f"{requirement} has no >= floor"
    return max(floors)


@pytest.mark.parametrize("requirement", _requirements(), ids=str)
def test_every_floor_is_the_tested_release(requirement):
    """The floor is the major.minor release the tests run with: never an untested older one."""
    try:
        installed = Version(metadata.version(requirement.name))
    except metadata.PackageNotFoundError:
        pytest.skip(f"{requirement.name} is not installed here (an extra)")
    floor = _floor(requirement)
    assert installed in requirement.specifier, f"{requirement} but {installed} is installed"
    assert installed.release[:2] == floor.release[:2], (
        f"{requirement.name}: the tests run with {installed}; raise the floor to "
        f">={installed.major}.{installed.minor}")


def test_extras_exist_for_the_optional_commands():
    extras = PROJECT["optional-dependencies"]
    assert {"mlflow", "optuna-dashboard", "frost", "tensorboard", "bench"} <= set(extras)
    core = {Requirement(r).name for r in PROJECT["dependencies"]}
    assert not core & {"mlflow-skinny", "optuna-dashboard", "pandas", "imagecorruptions"}


def test_license_file_matches_pyproject():
    assert PROJECT["license"] == "MIT" and PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Permission is hereby granted, free of charge" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS"' in text


def test_constraints_pin_the_installed_releases():
    """constraints.txt (what `make install` installs) is in step with the environment the tests
    run in: every pinned package is installed at its pinned version, and every requirement of
    pyproject is pinned."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            assert spec.operator == "==", line
            pins[canonicalize_name(requirement.name)] = Version(spec.version)
    for name, pinned in pins.items():
        installed = Version(metadata.version(name))
        assert installed == pinned, f"constraints.txt pins {name}=={pinned}, {installed} is " \
                                    "installed; run `make lock`"
    unpinned = {canonicalize_name(r.name) for r in _requirements()} - set(pins)
    assert not unpinned, f"{sorted(unpinned)} not in constraints.txt; run `make lock`"
