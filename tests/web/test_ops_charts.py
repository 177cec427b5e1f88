"""The ops console's charts (jobq.web.ops_charts): four panels of HTML around an SVG image each."""

from __future__ import annotations

import base64
import datetime
import re

import pandas as pd

from jobq.backends.base import Bucket, DueHistory
from jobq.web import ops_charts, ops_model

NOW = 1_800_000_000.0


def bucket(start: float, completed: int, wait: float | None = None) -> Bucket:
    return Bucket(start, 0, completed, completed, 1, 0, wait, wait, 0.5, 0.9)


def panels(buckets: list[Bucket], due: list[int | None]) -> list[ops_charts.Panel]:
    history = ops_model.history_frame(buckets)
    depth = ops_model.due_frame(DueHistory(NOW - 120, 60.0, NOW - 120, None, due, {}))
    return ops_charts.panels(history, depth, "minute")


def svg_of(panel_html: str) -> str:
    (data,) = re.findall(r'src="data:image/svg\+xml;base64,([^"]+)"', panel_html)
    return base64.b64decode(data).decode()


def test_four_panels_with_only_the_drawn_series() -> None:
    found = panels([bucket(NOW - 120, 3, 1.5), bucket(NOW - 60, 5)], [4, 2])
    assert [p.title for p in found] == [
        "Completed and failed jobs per minute",
        "Wait time (ready → started), seconds",
        "Due jobs (waiting for a worker)",
        "Run time (started → finished), seconds",
    ]
    assert [list(p.series) for p in found] == [
        ["completed", "failed"],
        ["wait p50", "wait p95"],
        ["due"],
        ["run p50", "run p95"],
    ]
    assert found[0].series["completed"] == [3.0, 5.0]
    assert found[1].series["wait p50"] == [1.5, None]  # no wait in a bucket: a gap, not zero
    assert found[2].area and found[2].series["due"] == [4.0, 2.0]
    # Row by row: the two top panels first, so panels beside each other line up.
    page = ops_charts.charts_html(
        ops_model.history_frame([bucket(NOW - 60, 1)]),
        ops_model.due_frame(DueHistory(NOW - 60, 60.0, NOW - 60, None, [1], {})),
        "minute",
    )
    titles = re.findall(r'<div class="title">([^<]+)</div>', page)
    assert titles == ["Completed and failed jobs per minute", "Due jobs (waiting for a worker)",
                      "Wait time (ready → started), seconds", "Run time (started → finished), seconds"]  # fmt: skip


def test_the_bucket_still_filling_is_marked_and_told_in_its_tooltip() -> None:
    first, *_ = panels([bucket(NOW - 120, 3), bucket(NOW - 60, 5)], [1, 1])
    assert first.current == first.times[-1]
    page = ops_charts.panel_html(first)
    assert 'stroke-dasharray="4 4"' in svg_of(page)
    tips = re.findall(r'title="([^"]+)"', page)
    assert len(tips) == 2 and ops_charts.PARTIAL_NOTE in tips[1] and ops_charts.PARTIAL_NOTE not in tips[0]
    stamp = datetime.datetime.fromtimestamp(NOW - 60).strftime("%H:%M")
    assert tips[1].startswith(f"{stamp} · completed 5 · failed 1")


def test_an_empty_history_says_so_and_one_value_is_a_dot() -> None:
    empty = ops_charts.panel_html(panels([], [])[0])
    assert "Nothing in the window yet" in empty and "<img" not in empty
    # One slow job: a value in one bucket only is drawn (a round dot), centred when it is alone.
    (one, *_) = panels([bucket(NOW - 60, 1)], [0])
    svg = svg_of(ops_charts.panel_html(one))
    assert re.search(r'd="M500\.0,[0-9.]+h0"[^>]*stroke-linecap="round"', svg), svg


def test_axes_have_round_values_and_times() -> None:
    assert ops_charts.y_ticks(0) == [0.0, 1.0]
    assert ops_charts.y_ticks(17) == [0, 5, 10, 15, 20]
    assert ops_charts.y_ticks(0.9) == [0.0, 0.5, 1.0]
    assert all(len(ops_charts.y_ticks(v)) <= 6 for v in (0.01, 3, 99, 1234.5, 1e7))
    start = pd.Timestamp("2026-12-01 14:07:00")
    ticks = ops_charts.x_ticks(start, start + pd.Timedelta(minutes=60))
    assert [t.strftime("%H:%M") for t in ticks] == ["14:10", "14:20", "14:30", "14:40", "14:50", "15:00"]
    assert len(ops_charts.x_ticks(start, start + pd.Timedelta(days=3))) <= 6
    assert ops_charts.x_ticks(start, start) == [start]


def test_every_text_is_escaped_and_the_image_holds_no_text() -> None:
    panel = ops_charts.Panel("<script>alert(1)</script>", [pd.Timestamp("2026-12-01 14:00")], {"due": [3.0]}, area=True)
    page = ops_charts.panel_html(panel)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<text" not in svg_of(page)


def test_the_due_count_of_the_last_bucket_is_drawn() -> None:
    """The due chart holds each level until the next bucket; the last bucket (due now) ends at the
    right edge, where its level had no width: it is drawn as a dot."""
    due = panels([bucket(NOW - 120, 3), bucket(NOW - 60, 5)], [4, 2])[2]
    svg = svg_of(ops_charts.panel_html(due))
    top = ops_charts.y_ticks(4)[-1]
    y_now = 1000 - 2 / top * 1000
    assert re.search(rf'd="M1000\.0,{y_now:.1f}h0"[^>]*stroke-linecap="round"', svg), svg
    alone = ops_charts.panel_html(panels([bucket(NOW - 60, 1)], [3])[2])
    assert re.search(r'd="M500\.0,[0-9.]+h0"', svg_of(alone))  # one bucket: its dot, centred
