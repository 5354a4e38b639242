"""What a landscape job computes, and the grids and seeds it uses (torch-free).

Defaults follow Li et al. 2018 ("Visualizing the Loss Landscape of Neural Nets"): filter-normalized
random directions, a, b in [-1, 1], biases and BN parameters left out of the directions
(`ignore = "biasbn"`, their code's option for the plots in the paper). The issue's default grid
is 41 x 41 points.

Direction seed: every precision of one configuration gets the same raw Gaussian directions, so
the surfaces of twins differ only by the models (and the filter norms each is normalized
against). The seed is derived from the FP32 twin's trial id, i.e. the content address of the
configuration with bits = 32, and --seed:
    direction_seed = int(sha256(f"{fp32_twin_id}/{seed}")[:15], 16)
and each parameter tensor draws from its own generator seeded with
    int(sha256(f"{direction_seed}/{direction}/{parameter name}")[:15], 16)
so a quantized model's extra parameters (LSQ step sizes) shift no other tensor's draws.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from qgen_sweep.errors import Validated

IGNORE_MODES = ("biasbn", "bn")


@dataclass(frozen=True)
class LandscapeSettings(Validated):
    """Everything a landscape job needs besides the trial."""

    dims: int = 2
    grid: int = 41  # points per axis, odd: the kept model is the centre point
    span: float = 1.0  # a, b in [-span, span]
    seed: int = 0
    ignore: str = "biasbn"  # 1-D parameters with a zero direction: biases + BN, or BN only
    interpolate: bool = True  # also the init -> trained and FP32 -> Int-b lines
    points: int = 16  # parameter sets (grid points) per forward pass
    eval_batch_size: int = 512  # examples per forward pass (times `points` copies)
    device: str = "auto"
    data_dir: str | None = None
    threads: int | None = None

    def problems(self) -> list[str]:
        """One line per invalid setting (empty when valid)."""
        out = []
        if self.dims not in (1, 2):
            out.append(f"--dims must be 1 or 2, but got {self.dims}")
        if self.grid < 3 or self.grid % 2 == 0:
            out.append(f"--grid must be an odd integer >= 3 (the trained model is the centre "
                       f"point), but got {self.grid} (e.g. --grid 21)")
        if not self.span > 0:
            out.append(f"--span must be > 0, but got {self.span}")
        if self.ignore not in IGNORE_MODES:
            out.append(f"--ignore must be one of {', '.join(IGNORE_MODES)}, but got "
                       f"{self.ignore!r}")
        for name in ("points", "eval_batch_size"):
            if getattr(self, name) < 1:
                out.append(f"--{name.replace('_', '-')} must be >= 1, but got "
                           f"{getattr(self, name)}")
        return out

    def key(self) -> str:
        """landscape_id: 12 hex digits of the settings that change the numbers (not where or
        how fast they are computed)."""
        science = {"dims": self.dims, "grid": self.grid, "span": float(self.span),
                   "seed": self.seed, "ignore": self.ignore}
        text = json.dumps(science, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def curves(self, bits: int) -> tuple[str, ...]:
        """The curves a trial of `bits` gets: the surface, and the interpolations when asked
        for (`twin` only for quantized trials)."""
        if not self.interpolate:
            return ("surface",)
        return ("surface", "init") if bits == 32 else ("surface", "init", "twin")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LandscapeSettings:
        return cls(**data)


def surface_offsets(settings: LandscapeSettings) -> list[tuple[int, int]]:
    """(i, j) grid offsets of the surface points, row-major; j = 0 for a 1D surface."""
    half = settings.grid // 2
    steps = range(-half, half + 1)
    if settings.dims == 1:
        return [(i, 0) for i in steps]
    return [(i, j) for j in steps for i in steps]


def surface_coordinate(settings: LandscapeSettings, offset: int) -> float:
    """a (or b) of a grid offset: exactly 0 at the centre and +-span at the edges."""
    return settings.span * offset / (settings.grid // 2)


def interpolation_offsets(settings: LandscapeSettings) -> tuple[int, list[int]]:
    """(n, offsets k): the interpolation points are a = k / n for k = 0..n, n = grid - 1 (a = 0
    and a = 1 exact). Not extrapolated past the two models: every BN running variance and LSQ
    step size moves along the line too, and past an end they can cross zero."""
    n = settings.grid - 1
    return n, list(range(n + 1))


def fp32_twin_config(config: dict[str, Any]) -> dict[str, Any]:
    """The configuration of the FP32 twin of a trial config (the same with bits = 32)."""
    return {**config, "bits": 32}


def direction_seed(fp32_twin_id: str, seed: int) -> int:
    """The seed of one configuration's directions (module docstring)."""
    return int(hashlib.sha256(f"{fp32_twin_id}/{seed}".encode()).hexdigest()[:15], 16)


def tensor_seed(base: int, direction: int, name: str) -> int:
    """The generator seed of one parameter tensor of one direction."""
    return int(hashlib.sha256(f"{base}/{direction}/{name}".encode()).hexdigest()[:15], 16)
