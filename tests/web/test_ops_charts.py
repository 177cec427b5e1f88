"""The ops console's charts (jobq.web.ops_charts): two Vega-Lite specs of two panels each."""

from __future__ import annotations

import json

from jobq.backends.base import Bucket, DueHistory
from jobq.web import ops_charts, ops_model

NOW = 1_800_000_000.0


def bucket(start: float, completed: int, wait: float | None = None) -> Bucket:
    return Bucket(start, 0, completed, completed, 1, 0, wait, wait, 0.5, 0.9)


def specs(buckets: list[Bucket], due: list[int | None]) -> tuple[ops_charts.Spec, ops_charts.Spec]:
    history = ops_model.history_frame(buckets)
    depth = ops_model.due_frame(DueHistory(NOW - 120, 60.0, NOW - 120, None, due, {}))
    return ops_charts.chart_specs(history, depth, "minute")


def titles(spec: ops_charts.Spec) -> list[str]:
    return [panel["title"]["text"] for panel in spec["vconcat"]]


def test_four_panels_in_two_charts_with_only_the_drawn_columns() -> None:
    left, right = specs([bucket(NOW - 120, 3, 1.5), bucket(NOW - 60, 5)], [4, 2])
    assert titles(left) == ["Completed and failed jobs per minute", "Wait time (ready → started), seconds"]
    assert titles(right) == ["Due jobs (waiting for a worker)", "Run time (started → finished), seconds"]
    assert list(left["datasets"]["history"].columns) == ["time", "completed", "failed", "wait p50", "wait p95"]
    assert list(right["datasets"]["history"].columns) == ["time", "run p50", "run p95"]
    assert list(right["datasets"]["due"]["due"]) == [4, 2]
    # Every panel draws from a dataset the chart carries, and has its own scales and legend.
    for spec in (left, right):
        names = {layer["data"]["name"] for panel in spec["vconcat"] for layer in panel["layer"]}
        assert names <= set(spec["datasets"])
        assert spec["resolve"]["scale"] == {"color": "independent", "y": "independent"}
    # No per-job rows: one row per bucket.
    assert len(left["datasets"]["history"]) == 2


def test_the_bucket_still_filling_is_marked_and_an_empty_history_draws_no_mark() -> None:
    left, _ = specs([bucket(NOW - 120, 3), bucket(NOW - 60, 5)], [1, 1])
    current = left["datasets"]["current"]
    assert list(current["note"]) == [ops_charts.PARTIAL_NOTE]
    assert current["time"].iloc[0] == ops_model.history_frame([bucket(NOW - 60, 5)]).index[0]
    empty, _ = specs([], [])
    assert empty["datasets"]["current"].empty


def test_the_specs_are_plain_json_apart_from_the_frames() -> None:
    """No Altair objects: the server does not pay Altair's schema validation on every render."""
    left, right = specs([bucket(NOW - 60, 1)], [0])
    for spec in (left, right):
        json.dumps({k: v for k, v in spec.items() if k != "datasets"})
