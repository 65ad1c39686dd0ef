"""Charts drawn with OpenCV (matplotlib is not a dependency), written as PNG files.

``grouped_bar_chart`` draws bars grouped along the x axis with optional error bars, a y axis
with round tick values and grid lines, x tick labels, a legend and a title; the effective
dilation table (``dcn_det.analysis``) and ablation results use it.
"""
import math
from typing import List, Sequence, Tuple

import cv2
import numpy as np

from dcn_det.io.atomic import write_bytes
from dcn_det.visualization import class_color

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BLACK, _GREY, _LIGHT = (0, 0, 0), (110, 110, 110), (225, 225, 225)


def _matrix(values, name: str, rows: int, cols: int) -> np.ndarray:
    """``values`` as a ``(rows, cols)`` float64 array; NaN allowed, inf not."""
    try:
        arr = np.array([[float(v) for v in row] for row in values], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a [len(series)][len(groups)] = [{rows}][{cols}] nested "
                         f"list of numbers (NaN = no bar), got {values!r}") from None
    if arr.shape != (rows, cols):
        raise ValueError(f"{name} must be a [len(series)][len(groups)] = [{rows}][{cols}] nested "
                         f"list, got shape {arr.shape}")
    if np.isinf(arr).any():
        raise ValueError(f"{name} must not contain inf (use NaN for a missing bar)")
    return arr


def _names(values, name: str) -> List[str]:
    if isinstance(values, str) or not isinstance(values, Sequence) or not values:
        raise ValueError(f"{name} must be a non-empty list of names, got {values!r}")
    return [str(v) for v in values]


def nice_ticks(lo: float, hi: float, target: int = 5) -> np.ndarray:
    """Round tick values (steps of 1, 2 or 5 times a power of ten) covering ``[lo, hi]``."""
    span = hi - lo if hi > lo else max(abs(hi), 1.0)
    raw = span / max(target, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw - 1e-12)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    if last <= first:
        last = first + 1
    return np.arange(first, last + 1) * step


def _fit_text(text: str, max_width: int, scale: float, min_scale: float = 0.3) -> Tuple[str, float]:
    """Shrinks the font (down to ``min_scale``), then shortens the text, to fit ``max_width``."""
    while scale > min_scale and cv2.getTextSize(text, _FONT, scale, 1)[0][0] > max_width:
        scale = max(min_scale, scale - 0.05)
    while len(text) > 2 and cv2.getTextSize(text, _FONT, scale, 1)[0][0] > max_width:
        text = text[:-3] + ".."
    return text, scale


def _put_centered(img, text, cx, y_baseline, scale, color=_BLACK, thickness=1) -> None:
    tw = cv2.getTextSize(text, _FONT, scale, thickness)[0][0]
    cv2.putText(img, text, (int(round(cx - tw / 2)), int(y_baseline)), _FONT, scale, color,
                thickness, cv2.LINE_AA)


def _format_tick(v: float, step: float) -> str:
    decimals = max(0, -int(math.floor(math.log10(step)))) if step > 0 else 0
    return f"{v:.{decimals}f}"


def _write_png(path: str, image_rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode the chart as PNG for {path!r}")
    write_bytes(path, buf, what="chart")


def grouped_bar_chart(path: str, groups: Sequence[str], series: Sequence[str], means,
                      stds=None, title: str = "", ylabel: str = "", *,
                      size: Tuple[int, int] = (800, 480)) -> str:
    """Draws a grouped bar chart with error bars and writes it as a PNG (atomically).

    Args:
        path: the PNG to write (must end in ``.png``; folders are created; replaced
            atomically by :mod:`dcn_det.io.atomic`, so readers never see a partial file).
        groups: x-axis categories, left to right.
        series: the bars within each group (one colour each, named in the legend).
        means: ``[len(series)][len(groups)]`` bar heights; NaN = no bar.
        stds: same shape, half-length of each error bar; None or NaN = no error bar.
        title: drawn centred at the top.
        ylabel: drawn vertically along the y axis.
        size: ``(width, height)`` of the image in pixels (at least 320 x 200).

    Returns:
        ``path``.

    Raises:
        ValueError: a bad path, names, shapes, values or size (names the argument).
        OSError: the file could not be written.
    """
    if not str(path).lower().endswith(".png"):
        raise ValueError(f"path must end in '.png', got {path!r}")
    groups, series = _names(groups, "groups"), _names(series, "series")
    m = _matrix(means, "means", len(series), len(groups))
    s = (np.full_like(m, np.nan) if stds is None
         else _matrix(stds, "stds", len(series), len(groups)))
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (width, height), got {size!r}") from None
    if width < 320 or height < 200:
        raise ValueError(f"size must be at least (320, 200), got {size!r}")

    img = np.full((height, width, 3), 255, np.uint8)
    font = max(0.4, min(width, height) / 1100)
    th = cv2.getTextSize("Ag", _FONT, font, 1)[0][1]
    # Legend on the right, outside the plot, so it never hides a bar.
    swatch = th + 2
    legend_w = max(cv2.getTextSize(n, _FONT, font, 1)[0][0] for n in series) + swatch + 24
    legend_w = min(legend_w, width // 3)
    left = int(3.2 * th) + max(cv2.getTextSize(f"-{9.99:.2f}", _FONT, font, 1)[0][0], 30)
    top = int(3 * th) + (int(1.5 * th) if title else 0)
    right = width - legend_w - 10
    bottom = height - int(3.2 * th)
    if right - left < 60 or bottom - top < 60:
        raise ValueError(f"size {size!r} leaves no room for the plot area; make it larger")

    tops = np.where(np.isnan(s), m, m + np.nan_to_num(s))
    lows = np.where(np.isnan(s), m, m - np.nan_to_num(s))
    finite = ~np.isnan(m)
    lo = min(0.0, float(lows[finite].min())) if finite.any() else 0.0
    hi = max(0.0, float(tops[finite].max())) if finite.any() else 1.0
    if hi <= lo:
        hi = lo + 1.0
    ticks = nice_ticks(lo, hi)
    y_lo, y_hi = float(ticks[0]), float(ticks[-1])

    def ypix(v: float) -> int:
        return int(round(bottom - (v - y_lo) / (y_hi - y_lo) * (bottom - top)))

    step = float(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    for t in ticks:
        y = ypix(float(t))
        cv2.line(img, (left, y), (right, y), _LIGHT, 1)
        label = _format_tick(float(t), step)
        tw = cv2.getTextSize(label, _FONT, font, 1)[0][0]
        cv2.putText(img, label, (left - tw - 6, y + th // 2), _FONT, font, _GREY, 1, cv2.LINE_AA)

    slot = (right - left) / len(groups)
    bar_w = 0.8 * slot / len(series)
    colors = [class_color(i) for i in range(len(series))]
    y0 = ypix(0.0)
    for g in range(len(groups)):
        for i in range(len(series)):
            if np.isnan(m[i, g]):
                continue
            x0 = left + g * slot + 0.1 * slot + i * bar_w
            x1 = x0 + bar_w
            yv = ypix(float(m[i, g]))
            xa = int(round(x0))
            xb = max(xa, int(round(x1)) - 1)  # at least one pixel wide
            cv2.rectangle(img, (xa, min(y0, yv)), (xb, max(y0, yv)), colors[i], -1)
            if not np.isnan(s[i, g]):
                cx = int(round((x0 + x1) / 2))
                cap = max(2, int(bar_w / 5))
                ya, yb = ypix(float(m[i, g] + s[i, g])), ypix(float(m[i, g] - s[i, g]))
                cv2.line(img, (cx, ya), (cx, yb), _BLACK, 1, cv2.LINE_AA)
                cv2.line(img, (cx - cap, ya), (cx + cap, ya), _BLACK, 1, cv2.LINE_AA)
                cv2.line(img, (cx - cap, yb), (cx + cap, yb), _BLACK, 1, cv2.LINE_AA)
        text, sc = _fit_text(groups[g], int(slot) - 4, font)
        _put_centered(img, text, left + (g + 0.5) * slot, bottom + int(1.8 * th), sc)

    # Axes: y axis at the left, x axis at zero (the bars' base).
    cv2.line(img, (left, top), (left, bottom), _BLACK, 1)
    cv2.line(img, (left, y0), (right, y0), _BLACK, 1)
    if title:
        text, sc = _fit_text(title, width - 20, font * 1.25)
        _put_centered(img, text, width / 2, int(1.8 * th), sc, thickness=1)
    if ylabel:
        text, sc = _fit_text(ylabel, bottom - top, font)
        (tw, tth), base = cv2.getTextSize(text, _FONT, sc, 1)
        strip = np.full((tth + base + 4, tw + 4, 3), 255, np.uint8)
        cv2.putText(strip, text, (2, tth + 2), _FONT, sc, _GREY, 1, cv2.LINE_AA)
        strip = np.ascontiguousarray(np.rot90(strip))  # reads bottom to top
        sh, sw = strip.shape[:2]
        ys = max(0, (top + bottom) // 2 - sh // 2)
        img[ys:ys + sh, 4:4 + sw] = strip[:height - ys, :max(0, min(sw, width - 4))]
    ly = top
    for i, name in enumerate(series):
        text, sc = _fit_text(name, legend_w - swatch - 24, font)
        cv2.rectangle(img, (right + 16, ly), (right + 16 + swatch, ly + swatch), colors[i], -1)
        cv2.putText(img, text, (right + 22 + swatch, ly + swatch - 2), _FONT, sc, _BLACK, 1,
                    cv2.LINE_AA)
        ly += swatch + 8
    _write_png(str(path), img)
    return str(path)
