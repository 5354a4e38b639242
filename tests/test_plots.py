"""Report figures on the known store (tests/test_analysis.py): every figure's labels name their
quantity, unit and n; the numbers drawn are the SQL's and the bootstrap's; the saved PNG, PDF and
SVG files open, and the SVG's text carries the same labels."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from test_analysis import _write_measures, build_known_store

from qgen_sweep.analysis import connect, plots, stats, style
from qgen_sweep.errors import UsageError


@pytest.fixture(autouse=True)
def cache_dir(tmp_path_factory, monkeypatch) -> Path:
    path = tmp_path_factory.mktemp("analysis-cache")
    monkeypatch.setenv("QGEN_SWEEP_CACHE_DIR", str(path))
    return path


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    root = tmp_path_factory.mktemp("figures") / "tiny"
    build_known_store(root)
    _write_measures(root)
    return connect(root)


def _figure(con, name: str):
    fetch, draw = plots.FIGURES[name]
    return draw(fetch(con))


def _texts(fig) -> str:
    return "\n".join(style.figure_texts(fig))


def test_paired_figure_has_units_n_zero_line_and_the_bootstrap_ci(con):
    fig = _figure(con, "paired_diff")
    gap_ax, loss_ax, acc_ax = fig.axes
    assert gap_ax.get_ylabel() == "Δ generalization gap, Int-b − FP32 (nats)"
    assert loss_ax.get_ylabel() == "Δ train loss, Int-b − FP32 (nats)"
    assert acc_ax.get_ylabel() == "Δ test accuracy, Int-b − FP32 (pp)"
    # known store: 3 Int8 pairs, 2 Int4 (c2 diverged), 2 Int2 (c2 failed)
    ticks = [t.get_text() for t in gap_ax.get_xticklabels()]
    assert ticks == ["Int8\nn = 3", "Int4\nn = 2", "Int2\nn = 2"]
    for ax in fig.axes:
        assert any(list(line.get_ydata()) == [0.0, 0.0] for line in ax.get_lines())
    # the black bar of Int8's gap: mean and bootstrap CI of the three paired differences
    diffs = [r["gap_diff"] for r in plots._rows(con, plots.sql_file("paired.sql").read_text())
             if r["bits"] == 8]
    low, high = stats.bootstrap_ci(diffs)
    bar = gap_ax.containers[0]
    (x, y), = bar.lines[0].get_xydata()
    assert y == pytest.approx(sum(diffs) / 3)
    segment = bar.lines[2][0].get_segments()[0]
    assert [segment[0][1], segment[1][1]] == pytest.approx([low, high])


def test_loss_curves_are_split_by_optimizer_with_integer_epochs_and_bands(con):
    fig = _figure(con, "loss_curves")
    (ax,) = fig.axes  # the known store trains with sgd only
    assert ax.get_xlabel() == "epoch"
    assert ax.get_ylabel() == "cross-entropy loss, median and IQR (nats)"
    # 10 done trials with epochs: FP32 3, Int8 3, Int4 2, Int2 2
    assert ax.get_title() == "sgd (n = 10 trials: FP32 3, Int8 3, Int4 2, Int2 2)"
    fig.canvas.draw()
    ticks = [float(t) for t in ax.get_xticks() if 1 <= t <= 3]
    assert ticks and all(t == int(t) for t in ticks)
    assert len(ax.collections) == 8  # one IQR band per precision and split
    # FP32 train median at epoch 1: losses 0.10+0.2, 0.20+0.2, 0.30+0.2 -> 0.40
    fp32_train = next(line for line in ax.get_lines() if line.get_label() == "FP32 train")
    assert list(fp32_train.get_xdata()) == [1, 2, 3]
    assert fp32_train.get_ydata()[0] == pytest.approx(0.40)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:2] == ["FP32 train", "FP32 test"]


def test_step_sizes_have_readable_layers_and_the_first_last_note(con):
    fig = _figure(con, "step_sizes")
    depth2, depth3 = fig.axes
    assert depth2.get_title() == "depth 2 (n = 6 trials, 2 per precision)"
    assert depth3.get_title() == "depth 3 (n = 1 trials, 1 per precision)"
    assert depth2.get_ylabel() == "learned step size s (weight units)"
    assert depth2.get_yscale() == "log"
    assert "kept at 8 bits in every quantized model (LSQ)" in fig.get_supxlabel()
    assert [t.get_text() for t in depth2.get_xticklabels()] == \
        ["features.0.conv", "features.1.conv", "head.conv"]  # names other than NiN's: as they are
    shaded = [p for p in depth2.patches if p.get_alpha() == pytest.approx(0.15)]
    assert len(shaded) == 2  # the first and the last layer


def test_layer_labels_name_nin_blocks_and_the_head():
    names = [f"layers.{3 * k}" for k in range(7)]  # depth 2: 2 blocks of 3 convs + head
    labels = [plots.layer_label(n, i, 7) for i, n in enumerate(names, start=1)]
    assert labels == ["block 1 · 3×3", "block 1 · 1×1 a", "block 1 · 1×1 b", "block 2 · 3×3",
                      "block 2 · 1×1 a", "block 2 · 1×1 b", "head 1×1"]
    assert plots.layer_label("layer1.0.conv1", 2, 21) == "layer1.0.conv1"  # ResNet-18
    assert plots.layer_label("features.3.conv.0", 2, 53) == "3.conv.0"  # MobileNet-V2
    assert plots.layer_label("fc", 21, 21) == "fc"


def test_step_sizes_of_other_architectures_get_a_panel_each():
    rows = [{"sweep": "s", "bits": 4, "precision": "Int4", "layer": name, "layer_index": k,
             "step_size_mean": 0.01 * k, "step_size_std": None, "n": 2, "depth": 1,
             "first_last": "int8", "layers": 30, "arch": "resnet18"}
            for k, name in enumerate([f"layer{k}.conv" for k in range(1, 31)], start=1)]
    fig = plots.fig_step_sizes(rows)
    (ax,) = fig.axes
    assert ax.get_title() == "resnet18 (n = 2 trials, 2 per precision)"
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks[:2] == ["layer1.conv", "layer3.conv"] and len(ticks) == 15  # every 2nd of 30


def test_measures_figure_has_a_panel_per_computed_measure_with_n(con):
    fig = _figure(con, "measures")
    (ax,) = [a for a in fig.axes if a.get_visible()]  # only pacbayes_init is in the files
    assert ax.get_title() == "PAC-Bayes init"
    assert ax.get_ylabel() == "normalised measure (√(bound / m))"
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == ["FP32\nn = 3", "Int8\nn = 3", "Int4\nn = 2", "Int2\nn = 2"]
    # FP32 mean of pacbayes_init = l2_norm / 10 over 10, 12, 14 -> 1.2
    (_, mean), = ax.containers[0].lines[0].get_xydata()
    assert mean == pytest.approx(1.2)


def test_gap_figures_carry_units_and_n(con):
    text = _texts(_figure(con, "gap_by_precision"))
    assert "gap, test − train loss (nats)" in text and "FP32\nn = 3 trials" in text
    fig = _figure(con, "test_acc_vs_gap")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "gap, test − train loss (nats)"
    assert ax.get_ylabel() == "test accuracy (%)"
    assert "Int2 (n = 2)" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_saved_files_open_and_the_svg_text_has_the_labels(con, tmp_path):
    written = plots.write_figures(con, tmp_path, ("svg",))
    assert sorted(p.name for p in written) == sorted(f"tiny-{name}.svg" for name in plots.FIGURES)
    svg = " ".join(style.svg_texts(tmp_path / "tiny-paired_diff.svg"))
    assert "Δ generalization gap, Int-b − FP32 (nats)" in svg and "n = 3" in svg
    svg = " ".join(style.svg_texts(tmp_path / "tiny-loss_curves.svg"))
    assert "cross-entropy loss, median and IQR (nats)" in svg and "epoch" in svg
    svg = " ".join(style.svg_texts(tmp_path / "tiny-step_sizes.svg"))
    assert "kept at 8 bits" in svg and "depth 3" in svg
    first = (tmp_path / "tiny-step_sizes.svg").read_bytes()
    style.save(_figure(con, "step_sizes"), tmp_path / "again", "s", ("svg",))
    assert (tmp_path / "again" / "s.svg").read_bytes() == first  # no dates: same data, same bytes


def test_png_and_pdf_open(con, tmp_path):
    png, pdf, svg = style.save(_figure(con, "gap_by_precision"), tmp_path, "gap")
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert image.size[0] >= 900  # 300 dpi of a >= 3 in wide figure
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    assert "gap, test − train loss (nats)" in style.svg_texts(svg)


def test_bad_figure_format_is_a_usage_error(con, tmp_path):
    with pytest.raises(UsageError, match="figure formats must be among png, pdf, svg"):
        style.save(_figure(con, "gap_by_precision"), tmp_path, "x", ("jpg",))


def test_labels_helpers():
    assert style.label("gap", "nats") == "gap (nats)"
    assert style.label("gap", "nats", n=243) == "gap (nats), n = 243"
    assert style.present(["Int2", "FP32", "Int8"]) == ["FP32", "Int8", "Int2"]
    assert len({style.color(p) for p in style.PRECISIONS}) == 4  # one colour each
