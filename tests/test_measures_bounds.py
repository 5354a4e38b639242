"""Bound formulas against values worked out by hand on a two-weight network.

w = [1, -2], w0 = [0.5, -1]  ->  u = w - w0 = [0.5, -1], ||u||^2 = 1.25, ||w||^2 = 5, omega = 2;
m = 100 training examples, every scale 0.5, eps = 1e-3, delta = 0.05.
"""

from __future__ import annotations

import math

import pytest
import torch

from qgen_sweep.measures import bounds

W = torch.tensor([1.0, -2.0])
W0 = torch.tensor([0.5, -1.0])
U = W - W0
M = 100
EPS = 1e-3


def test_pacbayes_init() -> None:
    # 1.25 / (4 * 0.25) + ln(100 / 0.5) + 10 = 1.25 + 5.298317366548036 + 10
    assert bounds.pacbayes(1.25, 0.5, M) == pytest.approx(16.548317366548036, rel=1e-12)


def test_sharpness_orig() -> None:
    # 5 * ln(2 * 2) / (4 * 0.25) + ln(200) + 10 = 6.931471805599453 + 5.298317366548036 + 10
    assert bounds.sharpness(5.0, 0.5, M, omega=2) == pytest.approx(22.22978917214749, rel=1e-12)


def test_pacbayes_mag_init() -> None:
    # numerator = 1e-6 + (0.25 + 1) * 1.25 / 2 = 0.781251
    # denominators = 1e-6 + 0.25 * u_i^2 = 0.062501, 0.250001
    # 1/4 (ln(0.781251 / 0.062501) + ln(0.781251 / 0.250001)) + ln(200) + 10
    #   = 1/4 (2.5257128 + 1.1394311) + 5.2983174 + 10 = 16.2146037
    assert bounds.pacbayes_mag(1.25, U, 0.5, M, EPS) == pytest.approx(16.214603738455782, rel=1e-9)


def test_sharpness_mag_orig() -> None:
    # numerator = 1e-6 + (0.25 + 4 ln(2 * 2 / 0.05)) * 5 / 2 = 44.44526734673881
    # 1/4 (ln(44.445267 / 0.062501) + ln(44.445267 / 0.250001)) + ln(100 / 0.05) + 10
    #   = 1/4 (6.5668637 + 5.1805511) + 7.6009025 + 10 = 20.5377475
    got = bounds.sharpness_mag(5.0, U, 0.5, M, EPS, delta=0.05)
    assert got == pytest.approx(20.53774747286699, rel=1e-9)


def test_normalise_is_sqrt_x_over_m() -> None:
    assert bounds.normalise(16.548317366548036, M) == pytest.approx(0.40679623113480, rel=1e-12)
    assert math.isnan(bounds.normalise(-1.0, M))
    assert math.isnan(bounds.normalise(math.inf, M))


def test_all_bounds_uses_u_for_init_and_w_for_orig() -> None:
    scales = {"sigma": 0.5, "sigma_mag": 0.5, "alpha": 0.5, "alpha_mag": 0.5}
    out = bounds.all_bounds(W, W0, M, EPS, 0.05, scales)
    assert out["pacbayes_init_raw"] == pytest.approx(16.548317366548036, rel=1e-12)
    assert out["pacbayes_orig_raw"] == pytest.approx(5 / 1 + math.log(200) + 10, rel=1e-12)
    assert out["sharpness_orig_raw"] == pytest.approx(22.22978917214749, rel=1e-12)
    assert out["pacbayes_mag_init_raw"] == pytest.approx(16.214603738455782, rel=1e-9)
    assert out["sharpness_mag_orig_raw"] == pytest.approx(20.53774747286699, rel=1e-9)
    # The magnitude-aware denominators use u in both variants: only the numerator changes.
    assert out["pacbayes_mag_orig_raw"] > out["pacbayes_mag_init_raw"]


def test_all_bounds_leaves_unsearched_measures_empty() -> None:
    out = bounds.all_bounds(W, W0, M, EPS, 0.05, {"sigma": 0.5, "sigma_mag": None})
    assert out["pacbayes_init_raw"] is not None
    assert out["pacbayes_mag_init_raw"] is None
    assert out["sharpness_init_raw"] is None and out["sharpness_mag_orig_raw"] is None
