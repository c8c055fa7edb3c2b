"""Tests for clrjax.plotting (matplotlib's Agg backend, set in the root conftest.py)."""

import sys

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import optax
import pytest

from clrjax import RangeTestResult, plotting
from clrjax.plotting import _range_test_plots, _style

NUM_STEPS = 60
LRS = np.geomspace(1e-5, 10.0, NUM_STEPS)


@pytest.fixture(autouse=True)
def _close_figures():
    # Before too: figures other tests left open count towards matplotlib's
    # more-than-20-figures warning, an error under this suite's filterwarnings.
    plt.close("all")
    yield
    plt.close("all")


def _curve(best_lr, depth=2.0, blow_lr=1.0):
    """A range-test-like curve: flat, falls around ``best_lr``, explodes past ``blow_lr``."""
    u = np.log10(LRS)
    fall = depth / (1.0 + np.exp(-4.0 * (u - np.log10(best_lr) + 0.7)))
    return 2.3 - fall + np.expm1(np.maximum(u - np.log10(blow_lr), 0.0) * 6.0)


def _result(curves, hparams, grid_names=None, diverged_at=None, val_steps=None, val_losses=None):
    smoothed = np.asarray(curves, dtype=np.float64)
    noise = np.random.default_rng(0).normal(scale=0.05, size=smoothed.shape)
    losses = smoothed + noise
    if diverged_at is None:
        diverged_at = np.full(smoothed.shape[0], -1)
    diverged_at = np.asarray(diverged_at)
    for lane, step in enumerate(diverged_at):
        if step >= 0:
            losses[lane, step:] = np.nan
            smoothed[lane, step:] = np.nan
    hparams = {k: np.asarray(v) for k, v in hparams.items()}
    return RangeTestResult(
        lrs=LRS,
        losses=losses,
        smoothed=smoothed,
        diverged_at=diverged_at,
        hparams=hparams,
        grid_names=tuple(grid_names if grid_names is not None else hparams),
        val_steps=None if val_steps is None else np.asarray(val_steps),
        val_losses=None if val_losses is None else np.asarray(val_losses),
        strategy="test",
    )


WEIGHT_DECAYS = (1e-3, 1e-4, 1e-5, 0.0)


@pytest.fixture
def wd_result():
    """Smith's weight-decay grid; the 1e-3 lane diverges at step 50."""
    curves = [_curve(1e-2 / (k + 1)) for k in range(4)]
    return _result(curves, {"weight_decay": WEIGHT_DECAYS}, diverged_at=[50, -1, -1, -1])


def _lines(ax, gid):
    return [line for line in ax.lines if line.get_gid() == gid]


def _collections(ax, gid):
    return [c for c in ax.collections if c.get_gid() == gid]


def _legend_texts(where):
    """Texts of the legend of an Axes, or of a Legend."""
    legend = where.get_legend() if isinstance(where, matplotlib.axes.Axes) else where
    return [t.get_text() for t in legend.get_texts()]


def _extents(*artists):
    """Display-space bounding boxes of artists of one figure (drawn once first)."""
    artists[0].figure.canvas.draw()
    return [artist.get_window_extent() for artist in artists]


def test_renders_png(tmp_path, wd_result):
    ax = plotting.plot_range_test(wd_result)
    path = tmp_path / "range_test.png"
    ax.figure.savefig(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_curve_per_lane_labelled_by_grid(wd_result):
    ax = plotting.plot_range_test(wd_result, suggest=None)
    smoothed = _lines(ax, "clrjax-smoothed")
    assert [line.get_label() for line in smoothed] == [
        "weight_decay=1e-3",
        "weight_decay=1e-4",
        "weight_decay=1e-5",
        "weight_decay=0",
    ]
    assert len(_lines(ax, "clrjax-raw")) == 4
    np.testing.assert_allclose(smoothed[1].get_ydata(), wd_result.smoothed[1])
    assert ax.get_xscale() == "log"
    assert ax.get_xlabel() == "learning rate"
    assert _legend_texts(ax)[:4] == [line.get_label() for line in smoothed]


def test_result_plot_delegates(wd_result):
    ax = wd_result.plot(suggest="steepest", title="via result.plot")
    assert ax.get_title() == "via result.plot"
    assert len(_lines(ax, "clrjax-smoothed")) == 4
    assert [c.get_label() for c in _collections(ax, "clrjax-suggestion")] == [
        "suggested (steepest)"
    ]


def test_sequential_colours_follow_numeric_order(wd_result):
    ax = plotting.plot_range_test(wd_result, suggest=None)
    colours = [
        matplotlib.colors.to_rgba(line.get_color()) for line in _lines(ax, "clrjax-smoothed")
    ]
    viridis = matplotlib.colormaps["viridis"]
    # Sorted ascending: 0, 1e-5, 1e-4, 1e-3 get increasing positions on the colormap.
    expected = [viridis(p) for p in np.linspace(*_style._CMAP_RANGE, 4)[[3, 2, 1, 0]]]
    np.testing.assert_allclose(colours, expected)


def test_seeds_share_colour_and_legend_entry():
    curves = [_curve(1e-2), _curve(2e-2), _curve(1e-3), _curve(2e-3)]
    hparams = {"weight_decay": [1e-4, 1e-4, 0.0, 0.0], "seed": [0, 1, 0, 1]}
    result = _result(curves, hparams, grid_names=("weight_decay",))
    ax = plotting.plot_range_test(result, suggest=None)
    colours = [line.get_color() for line in _lines(ax, "clrjax-smoothed")]
    assert colours[0] == colours[1] != colours[2] == colours[3]
    assert _legend_texts(ax) == ["weight_decay=1e-4", "weight_decay=0", "raw minimum"]
    by_seed = plotting.plot_range_test(result, suggest=None, label_by="seed", show_min=False)
    assert _legend_texts(by_seed) == ["seed=0", "seed=1"]
    # Seeds are categories: qualitative colours, not a sequential colormap.
    assert [line.get_color() for line in _lines(by_seed, "clrjax-smoothed")] == [
        "C0", "C1", "C0", "C1"
    ]  # fmt: skip


def test_two_varying_axes_colour_and_line_style():
    curves = [_curve(1e-2 / (k + 1)) for k in range(4)]
    hparams = {"weight_decay": [1e-4, 1e-4, 0.0, 0.0], "momentum": [0.9, 0.95, 0.9, 0.95]}
    result = _result(curves, hparams)
    ax = plotting.plot_range_test(result, suggest=None)
    lines = _lines(ax, "clrjax-smoothed")
    colours = [matplotlib.colors.to_hex(line.get_color()) for line in lines]
    assert colours[0] == colours[1] != colours[2] == colours[3]
    assert [line.get_linestyle() for line in lines] == ["-", "--", "-", "--"]
    assert _legend_texts(ax)[1] == "weight_decay=1e-4, momentum=0.95"
    # Validation curves are dashed: then every lane gets its own colour instead.
    val_steps = np.arange(0, NUM_STEPS, 10)
    with_val = _result(curves, hparams, val_steps=val_steps, val_losses=np.ones((4, 6)))
    ax = plotting.plot_range_test(with_val, suggest=None)
    lines = _lines(ax, "clrjax-smoothed")
    assert [line.get_color() for line in lines] == ["C0", "C1", "C2", "C3"]
    assert {line.get_linestyle() for line in lines} == {"-"}


def test_more_than_four_second_values_fall_back_to_colours():
    curves = [_curve(1e-2 / (k + 1)) for k in range(5)]
    hparams = {"weight_decay": [1e-4, 0.0] * 2 + [1e-4], "momentum": [0.8, 0.85, 0.9, 0.95, 0.99]}
    ax = plotting.plot_range_test(_result(curves, hparams), suggest=None)
    lines = _lines(ax, "clrjax-smoothed")
    assert [line.get_color() for line in lines] == ["C0", "C1", "C2", "C3", "C4"]
    assert {line.get_linestyle() for line in lines} == {"-"}


def test_suggestion_markers_sit_at_suggested_lrs(wd_result):
    methods = ["valley", "steepest"]
    ax = plotting.plot_range_test(wd_result, suggest=methods)
    markers = _collections(ax, "clrjax-suggestion")
    assert [m.get_label() for m in markers] == ["suggested (valley)", "suggested (steepest)"]
    for method, collection in zip(methods, markers, strict=True):
        picks = wd_result.suggest(method)
        np.testing.assert_allclose(collection.get_offsets()[:, 0], picks[np.isfinite(picks)])
    assert {"suggested (valley)", "suggested (steepest)"} <= set(_legend_texts(ax))


def test_no_suggestion_markers_when_suggest_is_none(wd_result):
    ax = plotting.plot_range_test(wd_result, suggest=None)
    assert _collections(ax, "clrjax-suggestion") == []


def test_divergence_marker_at_diverged_step(wd_result):
    ax = plotting.plot_range_test(wd_result, suggest=None)
    (marker,) = _collections(ax, "clrjax-diverged")
    ((x, y),) = marker.get_offsets()
    assert x == pytest.approx(LRS[50])
    assert y <= ax.get_ylim()[1]
    assert "diverged" in _legend_texts(ax)
    # Filled in the colour of the lane that diverged (lane 0).
    lane_colour = matplotlib.colors.to_rgba(_lines(ax, "clrjax-smoothed")[0].get_color())
    np.testing.assert_allclose(marker.get_facecolors()[0], lane_colour)


def _grid_3x3(curve_of):
    """A weight decay x momentum grid (3 x 3) whose lane curves are ``curve_of(wd, momentum)``."""
    wds, moms = np.repeat([0.0, 1e-9, 1e-8], 3), np.tile([0.8, 0.9, 0.95], 3)
    curves = [curve_of(wd, m) for wd, m in zip(wds, moms, strict=True)]
    return _result(curves, {"weight_decay": wds, "momentum": moms})


BEST_LR = {0.8: 1e-2, 0.9: 1e-3, 0.95: 1e-4}


def test_many_entries_legend_outside_axes():
    result = _grid_3x3(lambda wd, m: _curve(BEST_LR[m], depth=1.0 + 5e7 * wd))
    ax = plotting.plot_range_test(result, suggest=["valley", "steepest"])
    assert len(_legend_texts(ax)) == 12
    legend, axes_box = _extents(ax.get_legend(), ax)
    assert legend.x0 >= axes_box.x1
    # The figure grew by the legend, so the Axes kept the width of a default figure's.
    assert legend.x1 <= ax.figure.bbox.x1
    _, default = plt.subplots()
    assert axes_box.width == pytest.approx(_extents(default)[0].width)
    # On an Axes you pass, the figure keeps its size.
    fig, given = plt.subplots(figsize=(5.0, 4.0))
    plotting.plot_range_test(result, ax=given)
    assert tuple(fig.get_size_inches()) == (5.0, 4.0)
    legend, axes_box = _extents(given.get_legend(), given)
    assert legend.x0 >= axes_box.x1
    inside = plotting.plot_range_test(result, legend="inside")
    axes_box, legend = _extents(inside, inside.get_legend())
    assert axes_box.x0 <= legend.x0 and legend.x1 <= axes_box.x1


def test_few_entries_legend_inside_unless_asked(wd_result):
    ax = plotting.plot_range_test(wd_result, lanes=[1, 2], suggest=None)
    assert len(_legend_texts(ax)) == 3
    axes_box, legend = _extents(ax, ax.get_legend())
    assert axes_box.x0 <= legend.x0 and legend.x1 <= axes_box.x1
    ax = plotting.plot_range_test(wd_result, lanes=[1, 2], suggest=None, legend="outside")
    legend, axes_box = _extents(ax.get_legend(), ax)
    assert legend.x0 >= axes_box.x1
    for bad in ("best", None, 1):
        with pytest.raises(ValueError, match="legend"):
            plotting.plot_range_test(wd_result, legend=bad)


def test_identical_lanes_share_one_labelled_entry():
    # Weight decays that change nothing: 9 lanes, 3 curves.
    result = _grid_3x3(lambda wd, m: _curve(BEST_LR[m]))
    ax = plotting.plot_range_test(result, suggest=None, show_min=False)
    assert _legend_texts(ax) == [
        f"weight_decay={{0, 1e-9, 1e-8}}, momentum={m} (identical)" for m in ("0.8", "0.9", "0.95")
    ]
    lines = _lines(ax, "clrjax-smoothed")
    assert len(lines) == 9
    styles = [(matplotlib.colors.to_hex(line.get_color()), line.get_linestyle()) for line in lines]
    assert styles[0:3] == styles[3:6] == styles[6:9]
    assert len(set(styles[0:3])) == 3
    assert [line.get_label() for line in lines] == 3 * _legend_texts(ax)
    # Lanes that differ in their tails stay apart.
    result = _grid_3x3(lambda wd, m: _curve(BEST_LR[m], blow_lr=1.0 - 5e7 * wd))
    texts = _legend_texts(plotting.plot_range_test(result, suggest=None, show_min=False))
    assert len(texts) == 9 and not any("identical" in t for t in texts)


def test_overlapping_lanes_get_staggered_dots():
    base = _curve(1e-2)
    # Lane 1 is lane 0 until it diverges; lane 2 lies apart.
    result = _result([base, base, base + 0.5], {"weight_decay": [0.0, 1e-4, 1e-3]},
                     diverged_at=[-1, 45, -1])  # fmt: skip
    ax = plotting.plot_range_test(result, suggest=None)
    lines = _lines(ax, "clrjax-smoothed")
    assert [line.get_marker() for line in lines] == ["o", "o", "None"]
    (start_0, period_0), (start_1, period_1) = (line.get_markevery() for line in lines[:2])
    assert period_0 == period_1 == NUM_STEPS // _style._DOTS_PER_CURVE
    assert start_0 % period_0 != start_1 % period_1
    # Not merged: the curves differ after step 45.
    assert _legend_texts(ax)[:3] == ["weight_decay=0", "weight_decay=1e-4", "weight_decay=1e-3"]


def test_raw_minimum_marked_per_lane(wd_result):
    ax = plotting.plot_range_test(wd_result, suggest=None)
    (stars,) = _collections(ax, "clrjax-raw-min")
    raw = wd_result.losses
    steps = np.nanargmin(raw, axis=1)
    expected = np.column_stack([LRS[steps], np.nanmin(raw, axis=1)])
    np.testing.assert_allclose(stars.get_offsets(), expected)
    colours = [
        matplotlib.colors.to_rgba(line.get_color()) for line in _lines(ax, "clrjax-smoothed")
    ]
    np.testing.assert_allclose(stars.get_facecolors(), colours)
    assert "raw minimum" in _legend_texts(ax)
    assert ax.get_ylim()[0] < expected[:, 1].min()
    # Only the drawn steps count; beyond the y-range a star sits on the edge.
    ax = plotting.plot_range_test(wd_result, suggest=None, skip_start=40, ylim=(1.0, 3.0))
    (stars,) = _collections(ax, "clrjax-raw-min")
    window_steps = 40 + np.nanargmin(raw[:, 40:], axis=1)
    np.testing.assert_allclose(stars.get_offsets()[:, 0], LRS[window_steps])
    np.testing.assert_allclose(stars.get_offsets()[:, 1], 1.0)
    ax = plotting.plot_range_test(wd_result, show_min=False)
    assert _collections(ax, "clrjax-raw-min") == []
    assert "raw minimum" not in _legend_texts(ax)


def test_nan_tails_and_all_nan_lanes_render(tmp_path):
    curves = [_curve(1e-2), _curve(1e-3), _curve(1e-4)]
    result = _result(curves, {"weight_decay": [1e-4, 1e-5, 0.0]}, diverged_at=[0, 30, -1])
    ax = plotting.plot_range_test(result, suggest=["valley", "steepest"])
    ax.figure.savefig(tmp_path / "nan.png")
    assert len(_lines(ax, "clrjax-smoothed")) == 3
    offsets = _collections(ax, "clrjax-diverged")[0].get_offsets()
    np.testing.assert_allclose(offsets[:, 0], LRS[[0, 30]])
    # The all-NaN lane's marker sits on the top edge.
    assert offsets[0, 1] == pytest.approx(ax.get_ylim()[1])
    assert np.all(np.isfinite(ax.get_ylim()))


def test_every_lane_all_nan_renders(tmp_path):
    result = _result(
        [_curve(1e-2), _curve(1e-3)], {"weight_decay": [1e-4, 0.0]}, diverged_at=[0, 0]
    )
    ax = plotting.plot_range_test(result)
    ax.figure.savefig(tmp_path / "all_nan.png")
    assert (tmp_path / "all_nan.png").stat().st_size > 0


def test_auto_ylim_cuts_exploding_tail(wd_result):
    ax = plotting.plot_range_test(wd_result, show_raw=False, show_min=False)
    finite = wd_result.smoothed[np.isfinite(wd_result.smoothed)]
    lo, start = finite.min(), wd_result.smoothed[:, 0].max()
    top = start + _range_test_plots._YLIM_HEADROOM * (start - lo)
    assert top < finite.max()
    np.testing.assert_allclose(ax.get_ylim(), (lo - 0.05 * (top - lo), top + 0.05 * (top - lo)))
    # With raw losses drawn, the range reaches down to the lowest of them.
    floor = np.nanmin(wd_result.losses)
    assert floor < lo
    for kwargs in ({}, {"show_raw": False}, {"show_min": False}):
        ax = plotting.plot_range_test(wd_result, **kwargs)
        expected = (floor - 0.05 * (top - floor), top + 0.05 * (top - floor))
        np.testing.assert_allclose(ax.get_ylim(), expected)


def test_ylim_none_and_explicit(wd_result):
    ax = plotting.plot_range_test(wd_result, ylim=None)
    assert ax.get_ylim()[1] >= np.nanmax(wd_result.smoothed)
    ax = plotting.plot_range_test(wd_result, ylim=(0.0, 3.0))
    assert ax.get_ylim() == (0.0, 3.0)
    with pytest.raises(ValueError, match="ylim"):
        plotting.plot_range_test(wd_result, ylim="tight")


def test_validation_curves_at_val_step_lrs():
    val_steps = np.arange(0, NUM_STEPS, 10)
    curves = [_curve(1e-2), _curve(1e-3)]
    val_losses = np.stack([c[val_steps] + 0.1 for c in curves])
    result = _result(
        curves, {"weight_decay": [1e-4, 0.0]}, val_steps=val_steps, val_losses=val_losses
    )
    ax = plotting.plot_range_test(result)
    val = _lines(ax, "clrjax-val")
    assert len(val) == 2
    np.testing.assert_allclose(val[1].get_xdata(), LRS[val_steps])
    np.testing.assert_allclose(val[1].get_ydata(), val_losses[1])
    assert "validation" in _legend_texts(ax)
    assert _lines(plotting.plot_range_test(result, show_val=False), "clrjax-val") == []


def test_skip_start_and_end(wd_result):
    ax = plotting.plot_range_test(wd_result, skip_start=10, skip_end=5, show_raw=False)
    assert _lines(ax, "clrjax-raw") == []
    np.testing.assert_allclose(_lines(ax, "clrjax-smoothed")[2].get_xdata(), LRS[10:-5])
    # The lane diverging at step 50 is inside the window and still marked.
    assert len(_collections(ax, "clrjax-diverged")) == 1
    ax = plotting.plot_range_test(wd_result, skip_end=15)
    assert _collections(ax, "clrjax-diverged") == []
    for kwargs in ({"skip_start": -1}, {"skip_end": 2.0}, {"skip_start": 30, "skip_end": 30}):
        with pytest.raises(ValueError, match="skip_"):
            plotting.plot_range_test(wd_result, **kwargs)


def test_lane_selection(wd_result):
    ax = plotting.plot_range_test(wd_result, lanes=[1, 3], suggest=None)
    assert [line.get_label() for line in _lines(ax, "clrjax-smoothed")] == [
        "weight_decay=1e-4",
        "weight_decay=0",
    ]
    mask = np.array([True, False, False, False])
    ax = plotting.plot_range_test(wd_result, lanes=mask, suggest=None)
    (line,) = _lines(ax, "clrjax-smoothed")
    # A single lane has nothing varying to label it by.
    assert line.get_label() == "_nolegend_"
    for bad in ([4], [], np.array([True, False]), [0.5]):
        with pytest.raises(ValueError, match="lanes"):
            plotting.plot_range_test(wd_result, lanes=bad)


def test_label_by_unknown_name_raises(wd_result):
    with pytest.raises(ValueError, match="'momentum'"):
        plotting.plot_range_test(wd_result, label_by="momentum")


def test_linear_lr_axis_and_given_axes(wd_result):
    _, given = plt.subplots()
    ax = plotting.plot_range_test(wd_result, ax=given, log_lr=False, title="digits", legend=False)
    assert ax is given
    assert ax.get_xscale() == "linear"
    assert ax.get_title() == "digits"
    assert ax.get_legend() is None


def test_grid_small_multiples(tmp_path):
    wds, moms = [1e-4, 1e-4, 0.0, 0.0, 1e-4, 0.0], [0.9, 0.95, 0.9, 0.95, 0.99, 0.99]
    curves = [_curve(1e-2 / (k + 1)) for k in range(6)]
    result = _result(curves, {"weight_decay": wds, "momentum": moms})
    fig = plotting.plot_range_test_grid(result, title="grid")
    fig.savefig(tmp_path / "grid.png")
    assert fig.get_suptitle() == "grid"
    assert len(fig.axes) == 6
    assert [ax.get_title() for ax in fig.axes] == [
        f"weight_decay={w}, momentum={m}" for w in ("1e-4", "0") for m in ("0.9", "0.95", "0.99")
    ]
    assert all(len(_lines(ax, "clrjax-smoothed")) == 1 for ax in fig.axes)
    assert len({ax.get_ylim() for ax in fig.axes}) == 1
    # One legend for all panels, on their right, inside the figure.
    assert all(ax.get_legend() is None for ax in fig.axes)
    (legend,) = fig.legends
    box, *panels = _extents(legend, *fig.axes)
    assert box.x0 >= max(panel.x1 for panel in panels)
    assert box.x1 <= fig.bbox.x1
    assert _legend_texts(legend) == ["suggested (minimum)", "raw minimum"]
    fig = plotting.plot_range_test_grid(result, col=None, legend="inside")
    assert fig.legends == []
    assert fig.axes[0].get_legend() is not None
    assert all(ax.get_legend() is None for ax in fig.axes[1:])
    fig = plotting.plot_range_test_grid(result, col=None, legend=False)
    assert fig.legends == [] and all(ax.get_legend() is None for ax in fig.axes)


def test_grid_single_axis_and_missing_cells():
    curves = [_curve(1e-2), _curve(1e-3), _curve(1e-4)]
    result = _result(curves, {"weight_decay": [1e-4, 0.0, 1e-4], "momentum": [0.9, 0.9, 0.99]})
    fig = plotting.plot_range_test_grid(result, col=None)
    assert [ax.get_title() for ax in fig.axes] == ["weight_decay=1e-4", "weight_decay=0"]
    assert len(_lines(fig.axes[0], "clrjax-smoothed")) == 2
    fig = plotting.plot_range_test_grid(result)
    assert [ax.get_visible() for ax in fig.axes] == [True, True, True, False]
    with pytest.raises(ValueError, match="'seed'"):
        plotting.plot_range_test_grid(result, row="seed")
    with pytest.raises(TypeError, match="lanes"):
        plotting.plot_range_test_grid(result, lanes=[0])


def test_plot_schedule_values_and_momentum_twin(tmp_path):
    lr = optax.linear_schedule(0.1, 0.0, 50)
    momentum = optax.linear_schedule(0.85, 0.95, 50)
    ax = plotting.plot_schedule(lr, 50, momentum=momentum, label="linear")
    (line,) = _lines(ax, "clrjax-lr")
    np.testing.assert_allclose(line.get_ydata(), 0.1 - 0.1 * np.arange(50) / 50, atol=1e-6)
    (twin,) = [a for a in ax.figure.axes if a.get_label() == "clrjax-momentum"]
    (m_line,) = _lines(twin, "clrjax-momentum")
    np.testing.assert_allclose(m_line.get_ydata(), 0.85 + 0.1 * np.arange(50) / 50, atol=1e-6)
    assert m_line.get_color() == line.get_color()
    # A second schedule reuses the twin axis and joins the legend.
    plotting.plot_schedule(optax.constant_schedule(0.05), 50, ax=ax, momentum=momentum, label="c")
    assert sum(a.get_label() == "clrjax-momentum" for a in ax.figure.axes) == 1
    assert _legend_texts(ax) == ["linear", "linear momentum", "c", "c momentum"]
    ax.figure.savefig(tmp_path / "schedule.png")


def test_plot_schedule_plain_and_bad_args():
    ax = plotting.plot_schedule(optax.exponential_decay(1.0, 10, 0.5), 30, log_lr=True)
    assert ax.get_yscale() == "log"
    assert ax.get_legend() is None
    with pytest.raises(ValueError, match="num_steps"):
        plotting.plot_schedule(optax.constant_schedule(0.1), 0)
    with pytest.raises(TypeError, match="schedule"):
        plotting.plot_schedule(0.1, 10)
    with pytest.raises(TypeError, match="momentum"):
        plotting.plot_schedule(optax.constant_schedule(0.1), 10, momentum=0.9)


def test_missing_matplotlib_names_the_extra(monkeypatch, wd_result):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"clrjax\[plot\]"):
        plotting.plot_range_test(wd_result)


def test_importing_plotting_does_not_import_matplotlib():
    import subprocess

    code = "import sys, clrjax.plotting; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_plot_schedule_names_a_schedule_or_momentum_that_is_not_callable():
    with pytest.raises(TypeError, match="schedule must be a callable step -> value; got None"):
        plotting.plot_schedule(None, 10)
    with pytest.raises(TypeError, match="momentum must be a callable step -> value or None"):
        plotting.plot_schedule(lambda step: 0.1, 10, momentum="x")
