"""Due depth over time and per-queue waits (jobq.backends.due_history, ops.due_history): the
arithmetic on job rows, and what one call reads."""

from __future__ import annotations

from typing import Any

from jobq.backends import ops
from jobq.backends.base import QueueWait
from jobq.backends.due_history import build_due_history
from jobq.backends.sqlite import DIALECT

NAMES = {text: name for name, text in DIALECT.sql.items()}


def test_a_job_claimed_as_it_came_due_waited_zero_and_is_counted() -> None:
    history = build_due_history(0.0, 10.0, 30.0, [], [("q", 5.0, 5.0, 6.0)], 1, 6.0, 100)
    assert history.waits == {"q": QueueWait(1, 0.0, 0.0)}
    assert history.due == [0, 0, 0]


def test_a_period_that_spans_buckets_counts_in_each_and_pending_ones_until_now() -> None:
    rows = [
        ("q", 1.0, 25.0, 26.0),  # due 1-25: at the ends 10 and 20
        ("q", 2.0, None, 12.0),  # cancelled unclaimed at 12: at 10 only
        ("q", 28.0, 3.0, 29.0),  # an earlier attempt's start, cancelled at 29 while due: at none
    ]
    history = build_due_history(0.0, 10.0, 30.0, [(-1, 2), (2, 1)], rows, 3, 12.0, 100)
    # Buckets end at 10, 20 and now (30); the pending ones: two due before `since`, one in the last.
    assert history.due == [4, 3, 3]
    assert history.waits == {"q": QueueWait(1, 24.0, 24.0)}


def test_one_call_is_three_bounded_reads() -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    def run(command: ops.Command) -> ops.Rows:
        assert isinstance(command, ops.Exec)
        seen.append((NAMES[command.sql], dict(command.params or {})))
        return []

    ops.drive(ops.due_history(DIALECT, 0.0, 60.0, 3600.0, 20_000), run)
    assert [name for name, _ in seen] == ["due_pending_from", "due_running", "due_finished"]
    assert seen[2][1]["limit"] == 20_000
