"""grouped_bar_chart: the PNG's size, bars and error bars, NaN = no bar, bad arguments."""
import math
import os

import cv2
import numpy as np
import pytest

from dcn_det.plots import grouped_bar_chart, nice_ticks
from dcn_det.visualization import class_color


def _read(path):
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    assert img is not None
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _pixels_of(img, rgb):
    return int((img == np.array(rgb, np.uint8)).all(-1).sum())


def test_writes_a_png_of_the_requested_size(tmp_path):
    path = str(tmp_path / "sub" / "chart.png")
    out = grouped_bar_chart(path, ["res5a", "res5b", "res5c"], ["small", "medium"],
                            [[1.0, 2.0, 3.0], [2.5, 1.5, 0.5]], [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]],
                            title="Effective dilation", ylabel="pixels")
    assert out == path and not os.path.exists(path + ".tmp")
    assert _read(path).shape == (480, 800, 3)
    grouped_bar_chart(path, ["a"], ["b"], [[1.0]], size=(640, 360))
    assert _read(path).shape == (360, 640, 3)


def test_nan_means_no_bar_and_taller_bars_have_more_pixels(tmp_path):
    color = class_color(1)  # the second series

    def count(means):
        path = str(tmp_path / "c.png")
        grouped_bar_chart(path, ["g1", "g2"], ["s0", "s1"], means)
        return _pixels_of(_read(path), color)

    swatch_only = count([[1.0, 1.0], [math.nan, math.nan]])
    one_bar = count([[1.0, 1.0], [math.nan, 2.0]])
    two_bars = count([[1.0, 1.0], [2.0, 2.0]])
    assert 0 < swatch_only < one_bar < two_bars
    assert two_bars - swatch_only == pytest.approx(2 * (one_bar - swatch_only), rel=0.05)
    # All NaN still draws axes and legend.
    grouped_bar_chart(str(tmp_path / "empty.png"), ["g"], ["s"], [[math.nan]])


def test_negative_values_and_error_bars_change_the_picture(tmp_path):
    a, b = str(tmp_path / "a.png"), str(tmp_path / "b.png")
    grouped_bar_chart(a, ["g1", "g2"], ["s"], [[-1.0, 2.0]])
    grouped_bar_chart(b, ["g1", "g2"], ["s"], [[-1.0, 2.0]], [[0.5, 0.5]])
    assert (_read(a) != _read(b)).any()
    assert _pixels_of(_read(a), class_color(0)) > 0


def test_bad_arguments_name_the_argument(tmp_path):
    p = str(tmp_path / "x.png")
    with pytest.raises(ValueError, match="means"):
        grouped_bar_chart(p, ["a", "b"], ["s"], [[1.0]])
    with pytest.raises(ValueError, match="stds"):
        grouped_bar_chart(p, ["a"], ["s"], [[1.0]], [[1.0, 2.0]])
    with pytest.raises(ValueError, match="groups"):
        grouped_bar_chart(p, [], ["s"], [])
    with pytest.raises(ValueError, match="png"):
        grouped_bar_chart(str(tmp_path / "x.jpg"), ["a"], ["s"], [[1.0]])
    with pytest.raises(ValueError, match="inf"):
        grouped_bar_chart(p, ["a"], ["s"], [[math.inf]])


def test_nice_ticks_cover_the_range_with_round_steps():
    assert nice_ticks(0, 3.4).tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    ticks = nice_ticks(-1.2, 7.7)
    assert ticks[0] <= -1.2 and ticks[-1] >= 7.7 and np.allclose(np.diff(ticks), 2.0)
