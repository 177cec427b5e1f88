"""The ops console's four charts over time as two Vega-Lite specs (plain dicts, no Streamlit).

Each of the page's two columns is ONE chart: a ``vconcat`` of two panels (left: completed and
failed, then wait times; right: due jobs, then run times). Measured in Chromium at 125,000 jobs
(bench/apps.py), every Vega view the page builds costs the browser's main thread a fixed share of
the first render (compile, dataflow, resize observer, React element): four views took 0.4-0.7 s.
Streamlit stretches a ``vconcat``'s panels to the column's width (an ``hconcat`` or 2x2 ``concat``
cannot stretch: Vega-Lite's "container" width holds for single and layered views only), so two
columns of one vconcat each keep the page's layout with half the views.

The specs are dicts, not Altair charts: Altair validates every chart against the Vega-Lite JSON
schema when it is converted, about 0.2 s of the server's CPU per render for these four.
Data travel as named datasets (pandas frames, which Streamlit sends as Arrow): ``history`` (one row
per bucket), ``due`` (due jobs per bucket) and ``current`` (the start of the bucket still filling).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

CHART_HEIGHT = 220
"""Pixel height of each panel."""
PARTIAL_NOTE = "current bucket, still filling"
COLORS: dict[str, str] = {
    "completed": "#21a366",
    "failed": "#e0464e",
    "due": "#4c78e0",
    "wait p50": "#8fb4ff",
    "wait p95": "#2a56c6",
    "run p50": "#ffc06b",
    "run p95": "#d9730d",
}
_X: dict[str, Any] = {
    "field": "time",
    "type": "temporal",
    "title": None,
    "axis": {"format": "%H:%M", "labelFlush": True, "labelOverlap": True},
}
# The value labels sit inside the plot, above their grid lines: Streamlit gives each panel of a
# vconcat the column's whole width, so anything drawn left of the plot (labels, a title) would
# push the chart past the column's edge. The unit is in the panel's title instead.
_Y_AXIS: dict[str, Any] = {
    "title": None,
    "labelAlign": "left",
    "labelBaseline": "bottom",
    "labelPadding": -4,
    "tickSize": 0,
    "domain": False,
    "labelFlush": False,
}
_TIME_TIP: dict[str, Any] = {"field": "time", "type": "temporal", "format": "%H:%M"}

Spec = dict[str, Any]


def _title(text: str) -> dict[str, Any]:
    return {"text": text, "anchor": "start", "fontSize": 14, "fontWeight": 600, "offset": 6}


def _partial_rule() -> Spec:
    """A dashed line at the start of the newest bucket: it is still filling, so its low counts
    read as "so far", not as a collapse. Drawn from the ``current`` dataset (empty: no line)."""
    return {
        "data": {"name": "current"},
        "mark": {"type": "rule", "strokeDash": [4, 4], "color": "#6b7280"},
        "encoding": {"x": {"field": "time", "type": "temporal"}, "tooltip": [{"field": "note", "type": "nominal"}]},
    }


def line_panel(title: str, columns: Sequence[str]) -> Spec:
    """One panel: a line per column of the ``history`` dataset (points too: a series with a value
    in one bucket only, one slow job, is a point, not nothing), and the partial-bucket rule."""
    return {
        "title": _title(title),
        "height": CHART_HEIGHT,
        "layer": [
            {
                "data": {"name": "history"},
                "transform": [{"fold": list(columns), "as": ["series", "value"]}],
                "mark": {"type": "line", "interpolate": "monotone", "point": {"size": 18}, "strokeWidth": 2},
                "encoding": {
                    "x": _X,
                    "y": {"field": "value", "type": "quantitative", "axis": _Y_AXIS},
                    "color": {
                        "field": "series",
                        "type": "nominal",
                        "scale": {"domain": list(columns), "range": [COLORS[c] for c in columns]},
                        "legend": {"orient": "top", "title": None},
                    },
                    "tooltip": [
                        _TIME_TIP,
                        {"field": "series", "type": "nominal"},
                        {"field": "value", "type": "quantitative", "format": ".3~f"},
                    ],
                },
            },
            _partial_rule(),
        ],
    }


def area_panel(title: str, column: str) -> Spec:
    """One panel: ``column`` of the ``due`` dataset as a stepped area, and the partial-bucket rule."""
    color = COLORS[column]
    return {
        "title": _title(title),
        "height": CHART_HEIGHT,
        "layer": [
            {
                "data": {"name": "due"},
                "mark": {"type": "area", "interpolate": "step-after", "line": {"color": color}, "opacity": 0.35},
                "encoding": {
                    "x": _X,
                    # A legend as the line panels have, so that the panels beside each other line up.
                    "color": {
                        "datum": column,
                        "type": "nominal",
                        "scale": {"domain": [column], "range": [color]},
                        "legend": {"orient": "top", "title": None},
                    },
                    "y": {"field": column, "type": "quantitative", "axis": _Y_AXIS},
                    "tooltip": [_TIME_TIP, {"field": column, "type": "quantitative"}],
                },
            },
            _partial_rule(),
        ],
    }


def column_spec(panels: Sequence[Spec], datasets: dict[str, pd.DataFrame]) -> Spec:
    """One chart of ``panels`` one above the other, each with its own scales and legend."""
    return {
        "vconcat": list(panels),
        "spacing": 24,
        # Streamlit gives each panel the column's whole width: no padding beside it, or the chart
        # would reach past the column's right edge by Vega's default padding.
        "padding": {"left": 0, "right": 0, "top": 5},
        # Sized to the column with whatever is drawn beside the plots counted in: Streamlit's own
        # choice for a vconcat ("pad") drew the canvas 8-16 px past the column's right edge
        # (tests/web/test_browser_ops.py measures it at 1366 and 1920 px).
        "autosize": {"type": "fit-x", "contains": "padding"},
        "resolve": {"scale": {"color": "independent", "y": "independent"}, "legend": {"color": "independent"}},
        "datasets": datasets,
    }


def current_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The ``current`` dataset of a time-indexed frame: its newest bucket's start (none if empty)."""
    times = [frame.index[-1]] if not frame.empty else []
    return pd.DataFrame({"time": pd.Series(times, dtype="datetime64[ns]"), "note": [PARTIAL_NOTE] * len(times)})


def _columns(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    """Only what a chart draws travels to the browser."""
    return frame[list(columns)].reset_index()


def chart_specs(history: pd.DataFrame, due: pd.DataFrame, per: str) -> tuple[Spec, Spec]:
    """The left and right columns' charts from ``ops_model.history_frame`` and ``ops_model.due_frame``
    (time-indexed, naive local time: what the operator reads). ``per`` names the bucket ("minute")."""
    current = current_frame(history)
    left = column_spec(
        [
            line_panel(f"Completed and failed jobs per {per}", ["completed", "failed"]),
            line_panel("Wait time (ready → started), seconds", ["wait p50", "wait p95"]),
        ],
        {"history": _columns(history, "completed", "failed", "wait p50", "wait p95"), "current": current},
    )
    right = column_spec(
        [
            area_panel("Due jobs (waiting for a worker)", "due"),
            line_panel("Run time (started → finished), seconds", ["run p50", "run p95"]),
        ],
        {"history": _columns(history, "run p50", "run p95"), "due": due.reset_index(), "current": current},
    )
    return left, right
