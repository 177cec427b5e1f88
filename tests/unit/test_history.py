"""A job's visible history: stored events plus the claimed/completed entries derived from the job
row and from the events that carry them (``jobq.backends.common.history_of``)."""

from __future__ import annotations

from jobq.backends.common import AttemptRow, history_of
from jobq.job import Event


def stored(i: int, at: float, kind: str, attempt: int | None = None, **detail: object) -> Event:
    return Event(i, 7, at, kind, "w" if kind != "enqueued" else None, attempt, dict(detail))


def kinds(events: list[Event]) -> list[str]:
    return [str(e.kind) for e in events]


def test_structure_wins_over_skewed_clocks() -> None:
    """An operator's cancel request is stamped when it read its clock, before it waited for the
    lock the claim held: it may carry an earlier time than the claim, yet comes after it."""
    history = history_of(
        [
            stored(1, 10.0, "enqueued", 0),
            stored(2, 10.9, "cancel_requested"),
            stored(3, 12.0, "cancelled", 1, by="worker", claimed_at=11.0),
        ],
        AttemptRow(7, "CANCELLED", 1, 11.0, "w", None, 12.0),
    )
    assert kinds(history) == ["enqueued", "claimed", "cancel_requested", "cancelled"]
    # ... and a claim stamped before the retry that made its job due still comes after it.
    history = history_of(
        [stored(1, 10.0, "enqueued", 0), stored(2, 12.0, "retry_scheduled", 1, claimed_at=11.0)],
        AttemptRow(7, "PROCESSING", 2, 11.9, "w2", "n-7", None),
    )
    assert [(str(e.kind), e.attempt) for e in history] == [
        ("enqueued", 0),
        ("claimed", 1),
        ("retry_scheduled", 1),
        ("claimed", 2),
    ]


def test_completion_with_a_note_and_entries_an_older_jobq_stored_are_shown_once() -> None:
    row = AttemptRow(7, "COMPLETED", 1, 11.0, "w", "n-7", 12.0)
    noted = [stored(1, 10.0, "enqueued", 0), stored(2, 12.0, "completed", 1, note="a cancel came too late")]
    history = history_of(noted, row)
    assert kinds(history) == ["enqueued", "claimed", "completed"] and history[-1].detail["note"]
    older = [stored(1, 10.0, "enqueued", 0), stored(2, 11.0, "claimed", 1), stored(3, 12.0, "completed", 1)]
    assert history_of(older, row) == older


def test_a_refused_late_write_comes_after_the_completion_it_came_too_late_for() -> None:
    row = AttemptRow(7, "COMPLETED", 1, 11.0, "w", "n-7", 12.0)
    history = history_of([stored(1, 10.0, "enqueued", 0), stored(2, 13.0, "stale_write_refused")], row)
    assert kinds(history) == ["enqueued", "claimed", "completed", "stale_write_refused"]
    # An outside edit clears the lease token: the row's completion is not a worker's, not derived.
    edited = AttemptRow(7, "COMPLETED", 1, 11.0, "w", None, 12.0)
    assert kinds(history_of([stored(1, 10.0, "enqueued", 0)], edited)) == ["enqueued"]


def test_the_enqueued_entry_comes_from_the_rows_created_at_first_and_once() -> None:
    """An enqueue stores no event (issue 13): the row's ``created_at`` is the ``enqueued`` entry,
    first whatever the clocks say, and shown once beside one an older jobq stored."""
    row = AttemptRow(7, "COMPLETED", 1, 9.5, "w", "n-7", 12.0, created_at=10.0)
    history = history_of([], row)
    assert [(str(e.kind), e.at, e.attempt) for e in history] == [
        ("enqueued", 10.0, 0),
        ("claimed", 9.5, 1),  # a worker's clock behind the producer's
        ("completed", 12.0, 1),
    ]
    assert kinds(history_of([stored(1, 10.0, "enqueued", 0)], row)) == ["enqueued", "claimed", "completed"]
    assert kinds(history_of([], AttemptRow(7, "PENDING", 0, None, None, None, None))) == []
