"""The ops console's four charts over time, drawn on the server: HTML with one SVG image each.

Measured in Chromium at 125,000 jobs (bench/apps.py, ``docs/benchmarks.md``), every Vega view a
page builds costs the browser's main thread a fixed share of the first render (compile, dataflow,
resize observer): the two views these charts were took about 0.37 s of ops' first screen, which
had to be drawn within 2 s. Here each panel is plain HTML (title, legend, axis labels, one hover
strip per bucket whose tooltip gives its values) around an ``<img>`` of an SVG of the marks: no
script, no layout pass of a chart library, nothing fetched (the image is a ``data:`` URI). The
SVG stretches to the column's width (``preserveAspectRatio="none"``) with strokes that keep
their width (``vector-effect``), so the text, all HTML, never scales with it.

Streamlit's ``st.html`` keeps HTML only (DOMPurify's html profile: inline ``<svg>`` is dropped),
hence the image. Every text is escaped; the SVG holds no text at all.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import itertools
import math
from collections.abc import Sequence

import pandas as pd

CHART_HEIGHT = 220
"""Pixel height of each panel's plot."""
PARTIAL_NOTE = "current bucket, still filling"
DASH = "\u2013"
"""A bucket with no value."""
COLORS: dict[str, str] = {
    "completed": "#21a366",
    "failed": "#e0464e",
    "due": "#4c78e0",
    "wait p50": "#8fb4ff",
    "wait p95": "#2a56c6",
    "run p50": "#ffc06b",
    "run p95": "#d9730d",
}
#: The SVG's coordinate space: x across the window, y from the top tick (0) to zero (``_SIZE``).
_SIZE = 1000
#: At most this many labelled times along the x axis (label steps in seconds, the first that fits).
_X_TICKS_MAX = 6
_X_STEPS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
_GRID = "rgba(128, 128, 128, 0.3)"

CSS = f"""<style>
.jobq-charts {{ display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 1.5rem 2rem; }}
@media (max-width: 640px) {{ .jobq-charts {{ grid-template-columns: minmax(0, 1fr); }} }}
.jobq-chart {{ margin: 0; min-width: 0; }}
.jobq-chart .title {{ font-size: 0.95rem; font-weight: 600; }}
.jobq-chart .legend {{ font-size: 0.8rem; display: flex; flex-wrap: wrap; gap: 0.2rem 1rem; margin: 0.2rem 0; }}
.jobq-chart .legend i {{ display: inline-block; width: 0.7rem; height: 0.7rem; border-radius: 50%;
  margin-right: 0.3rem; vertical-align: -0.05rem; }}
.jobq-chart .plot {{ position: relative; height: {CHART_HEIGHT}px; margin-top: 1.1rem; }}
.jobq-chart .plot img {{ position: absolute; inset: 0; width: 100%; height: 100%; display: block; }}
.jobq-chart .y {{ position: absolute; left: 0; font-size: 0.72rem; opacity: 0.75; line-height: 1;
  transform: translateY(-2px); font-variant-numeric: tabular-nums; }}
.jobq-chart .tip {{ position: absolute; top: 0; bottom: 0; }}
.jobq-chart .tip:hover {{ background: rgba(128, 128, 128, 0.12); }}
.jobq-chart .x {{ position: relative; height: 1.2rem; font-size: 0.72rem; opacity: 0.75; }}
.jobq-chart .x span {{ position: absolute; top: 0.2rem; transform: translateX(-50%); white-space: nowrap; }}
.jobq-chart .x span.first {{ transform: none; }}
.jobq-chart .x span.last {{ transform: translateX(-100%); }}
.jobq-chart .empty {{ position: absolute; inset: 0; display: flex; align-items: center; justify-content: center;
  font-size: 0.85rem; opacity: 0.75; }}
</style>"""


@dataclasses.dataclass(frozen=True, slots=True)
class Panel:
    """One chart: series over bucket start times (naive local time, what the operator reads)."""

    title: str
    times: Sequence[pd.Timestamp]
    series: dict[str, list[float | None]]
    """Values per series name (a ``COLORS`` key), one per time; None: nothing in that bucket."""
    area: bool = False
    """One series drawn as a stepped area (a level held until the next bucket), not lines."""
    current: pd.Timestamp | None = None
    """The start of the bucket still filling: a dashed line, so its low counts read as "so far"."""


def _number(value: float) -> str:
    """Up to three decimals, no trailing zeros, thousands separated: 1,204 / 0.25 / 12.5."""
    return f"{value:,.3f}".rstrip("0").rstrip(".")


def y_ticks(top_value: float) -> list[float]:
    """Evenly spaced round values from 0 covering ``top_value`` (about four steps of 1, 2 or 5 x 10^k)."""
    if not top_value > 0:
        return [0.0, 1.0]
    raw = top_value / 4
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    count = math.ceil(top_value / step - 1e-9)
    return [i * step for i in range(count + 1)]


def x_ticks(start: pd.Timestamp, end: pd.Timestamp) -> list[pd.Timestamp]:
    """Round times (whole minutes, hours) between ``start`` and ``end``: at most ``_X_TICKS_MAX``."""
    span = (end - start).total_seconds()
    if span <= 0:
        return [start]
    step = next((s for s in _X_STEPS if span / s <= _X_TICKS_MAX), _X_STEPS[-1] * math.ceil(span / 86400 / 6))
    first = start.ceil(f"{step}s")
    return list(pd.date_range(first, end, freq=f"{step}s"))


def _svg_image(panel: Panel, xs: list[float], top: float, ticks: list[float], current_x: float | None) -> str:
    def y(value: float) -> float:
        return _SIZE - value / top * _SIZE

    marks = [
        f'<line x1="0" x2="{_SIZE}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="{_GRID}" stroke-width="1" '
        'vector-effect="non-scaling-stroke"/>'
        for t in ticks
    ]
    for name, values in panel.series.items():
        color = COLORS[name]
        if panel.area:
            # A level held until the next bucket starts; a gap where a bucket has no value.
            runs: list[list[tuple[float, float]]] = [[]]
            for i, v in enumerate(values):
                if v is None:
                    runs.append([])
                    continue
                right = xs[i + 1] if i + 1 < len(xs) else xs[i]
                runs[-1] += [(xs[i], y(v)), (right, y(v))]
            for run in filter(None, runs):
                line = " ".join(f"L{px:.1f},{py:.1f}" for px, py in run)
                marks.append(
                    f'<path d="M{run[0][0]:.1f},{_SIZE} {line} L{run[-1][0]:.1f},{_SIZE} Z" fill="{color}" '
                    'fill-opacity="0.35" stroke="none"/>'
                )
                marks.append(
                    f'<path d="M{line[1:]}" fill="none" stroke="{color}" stroke-width="1.5" '
                    'vector-effect="non-scaling-stroke"/>'
                )
            # The last bucket ends at the right edge, so its level has no width: a dot shows it
            # (the count due now, what an operator looks for first; alone, the only value).
            if values and values[-1] is not None:
                marks.append(
                    f'<path d="M{xs[-1]:.1f},{y(values[-1]):.1f}h0" stroke="{color}" stroke-width="6" '
                    'stroke-linecap="round" vector-effect="non-scaling-stroke"/>'
                )
            continue
        segments: list[list[tuple[float, float]]] = [[]]
        for px, v in zip(xs, values, strict=True):
            if v is None:
                segments.append([])
            else:
                segments[-1].append((px, y(v)))
        for seg in filter(None, segments):
            d = "M" + " L".join(f"{px:.1f},{py:.1f}" for px, py in seg)
            marks.append(
                f'<path d="{d}" fill="none" stroke="{color}" stroke-width="2" stroke-linejoin="round" '
                'vector-effect="non-scaling-stroke"/>'
            )
        # A dot per value (a zero-length round-capped stroke stays round however the image is
        # stretched): a series with a value in one bucket only, one slow job, is a dot, not nothing.
        dots = "".join(f"M{px:.1f},{py:.1f}h0" for seg in segments for px, py in seg)
        if dots:
            marks.append(
                f'<path d="{dots}" stroke="{color}" stroke-width="5" stroke-linecap="round" '
                'vector-effect="non-scaling-stroke"/>'
            )
    if current_x is not None:
        marks.append(
            f'<line x1="{current_x:.1f}" x2="{current_x:.1f}" y1="0" y2="{_SIZE}" stroke="#6b7280" '
            'stroke-width="1.5" stroke-dasharray="4 4" vector-effect="non-scaling-stroke"/>'
        )
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_SIZE} {_SIZE}" preserveAspectRatio="none">'
        f"{''.join(marks)}</svg>"
    )
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


def _tip(panel: Panel, i: int) -> str:
    parts = [panel.times[i].strftime("%H:%M")]
    for name, values in panel.series.items():
        value = values[i]
        parts.append(f"{name} {_number(value) if value is not None else DASH}")
    text = " · ".join(parts)
    return text + (f" ({PARTIAL_NOTE})" if panel.current is not None and panel.times[i] == panel.current else "")


def panel_html(panel: Panel) -> str:
    """One panel as HTML: title, legend, the plot (image, y labels, hover strips) and x labels."""
    legend = "".join(f'<span><i style="background: {COLORS[n]}"></i>{html.escape(n)}</span>' for n in panel.series)
    head = f'<div class="title">{html.escape(panel.title)}</div><div class="legend">{legend}</div>'
    values = [v for vs in panel.series.values() for v in vs if v is not None]
    if not panel.times or not values:
        empty = '<div class="empty">Nothing in the window yet</div>'
        return f'<figure class="jobq-chart">{head}<div class="plot">{empty}</div><div class="x"></div></figure>'
    start, end = panel.times[0], panel.times[-1]
    span = (end - start).total_seconds()

    def at(t: pd.Timestamp) -> float:
        return (t - start).total_seconds() / span if span > 0 else 0.5

    xs = [at(t) * _SIZE for t in panel.times]
    ticks = y_ticks(max(values))
    top = ticks[-1]
    current = panel.current
    current_x = at(current) * _SIZE if current is not None and start <= current <= end else None
    image = _svg_image(panel, xs, top, ticks, current_x)
    labels = "".join(f'<span class="y" style="bottom: {t / top * 100:.2f}%">{_number(t)}</span>' for t in ticks)
    # A hover strip per bucket, from halfway to its left neighbour to halfway to its right one.
    edges = [0.0] + [(a + b) / 2 / _SIZE * 100 for a, b in itertools.pairwise(xs)] + [100.0]
    tips = "".join(
        f'<div class="tip" style="left: {edges[i]:.2f}%; width: {edges[i + 1] - edges[i]:.2f}%" '
        f'title="{html.escape(_tip(panel, i))}"></div>'
        for i in range(len(panel.times))
    )
    xlabels = []
    for t in x_ticks(start, end):
        pos = at(t) * 100
        cls = ' class="first"' if pos < 6 else ' class="last"' if pos > 94 else ""
        xlabels.append(f'<span{cls} style="left: {pos:.2f}%">{t.strftime("%H:%M")}</span>')
    return (
        f'<figure class="jobq-chart">{head}<div class="plot"><img alt="{html.escape(panel.title)}" src="{image}">'
        f'{labels}{tips}</div><div class="x">{"".join(xlabels)}</div></figure>'
    )


def _values(frame: pd.DataFrame, column: str) -> list[float | None]:
    return [None if pd.isna(v) else float(v) for v in frame[column]]


def panels(history: pd.DataFrame, due: pd.DataFrame, per: str) -> list[Panel]:
    """The four panels from ``ops_model.history_frame`` and ``ops_model.due_frame`` (time-indexed,
    naive local time), left column first: completed and failed, wait times; due jobs, run times.
    ``per`` names the bucket ("minute")."""
    times = list(history.index)
    current = times[-1] if times else None

    def lines(title: str, *columns: str) -> Panel:
        return Panel(title, times, {c: _values(history, c) for c in columns}, current=current)

    return [
        lines(f"Completed and failed jobs per {per}", "completed", "failed"),
        lines("Wait time (ready → started), seconds", "wait p50", "wait p95"),
        Panel("Due jobs (waiting for a worker)", list(due.index), {"due": _values(due, "due")}, True, current),
        lines("Run time (started → finished), seconds", "run p50", "run p95"),
    ]


def charts_html(history: pd.DataFrame, due: pd.DataFrame, per: str) -> str:
    """The four panels in two columns (completed/failed above wait times; due jobs above run times)."""
    left1, left2, right1, right2 = (panel_html(p) for p in panels(history, due, per))
    # Row by row, so panels beside each other line up: left1 | right1, then left2 | right2.
    return f'{CSS}<div class="jobq-charts">{left1}{right1}{left2}{right2}</div>'
