"""``ActionResults``: an operator action's results, compact, and read as the list they replace."""

from __future__ import annotations

import pickle
import tracemalloc

import pytest

from jobq import ActionResult, ActionResults, JobStatus

DONE = JobStatus.CANCELLED


def _results(n: int, first: int = 1) -> list[ActionResult]:
    out = []
    for i in range(first, first + n):
        if i % 7 == 0:  # a refusal that names its job, and one held by another job
            out.append(ActionResult(i, False, JobStatus.COMPLETED, f"job {i}: cannot cancel a COMPLETED job"))
        elif i % 11 == 0:
            out.append(ActionResult(i, False, JobStatus.FAILED, "", held_by=i + 1000))
        elif i % 13 == 0:
            out.append(ActionResult(i, False, None))
        else:
            out.append(ActionResult(i, True, DONE, "cancelled"))
    return out


def test_the_results_read_back_as_they_were_given_in_order() -> None:
    given = _results(100)
    results = ActionResults(given[:40])
    results.extend(given[40:])
    assert len(results) == 100 and list(results) == given
    assert results == given and given == results and results == ActionResults(given)
    assert results != given[:-1] and results != [*given[:-1], ActionResult(100, False, None)]
    assert results[0] == given[0] and results[-1] == given[-1] and results[6] == given[6]
    assert results[10:20] == given[10:20] and isinstance(results[10:20], ActionResults)
    assert results[::-3] == given[::-3]
    with pytest.raises(IndexError):
        results[100]
    assert results + given[:2] == given + given[:2] and isinstance(results + given[:0], ActionResults)
    assert given[:2] + results == given[:2] + given and isinstance(given[:0] + results, ActionResults)
    assert ActionResults() == [] and not ActionResults()
    assert given[6] in results and results.index(given[50]) == 50 and results.count(given[50]) == 1
    assert pickle.loads(pickle.dumps(results)) == given
    assert repr(ActionResults(given[:1])) == f"ActionResults([{given[0]!r}])"
    with pytest.raises(TypeError):
        hash(results)


def test_ids_no_job_can_have_are_kept_as_given() -> None:
    """An id past 2**63-1 ("not found": the API answers it without asking the store) does not fit
    the compact ids: it is kept aside, in its place."""
    given = [
        ActionResult(2**64, False, None),
        ActionResult(5, True, DONE, "cancelled"),
        ActionResult(-(2**63) - 1, False, None),
    ]
    results = ActionResults(given)
    assert list(results) == given and results[0] == given[0] and results[2] == given[2]
    assert results[1:] == given[1:] and results + results == given + given


def test_a_million_results_take_a_tenth_of_the_memory_of_their_objects() -> None:
    """12 bytes a job done (an id and a code) rather than an ActionResult, its int and a list's
    pointer: ~120 bytes. ``jobq cancel`` of 1,000,000 PENDING jobs peaked at 160 MB."""
    tracemalloc.start()
    try:
        results = ActionResults()
        for first in range(10**12, 10**12 + 1_000_000, 500):  # the store adds a chunk at a time
            results.extend([ActionResult(i, True, DONE, "cancelled") for i in range(first, first + 500)])
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(results) == 1_000_000
    assert held < 16 * 1_000_000, f"{held / 1e6:.1f} MB for 1,000,000 results"
    assert results[-1] == ActionResult(10**12 + 999_999, True, DONE, "cancelled")
