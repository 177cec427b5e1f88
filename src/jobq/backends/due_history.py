"""Due depth over time and per-queue waits, assembled from job rows (backend-neutral, no SQL).

Why job rows and not events: a job row keeps when it became due (``max(created_at, run_at)``),
when it was claimed (``started_at``) and when it finished, so this needs no event per claim or
completion (issue 13 takes those off the hot path). The price: only each job's latest due period
is known (a retried job's earlier waits are overwritten), which the ops page says.

The depth at time ``t`` counts the jobs whose due period ``[due_from, due_until)`` holds ``t``.
The buckets end at ``since + (i + 1) * bucket`` and the last one at ``now`` (it is still filling).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from jobq.backends.base import DueHistory, QueueWait
from jobq.backends.common import percentile

DueRow = tuple[str, float, float | None, float | None]
"""(queue, due_from, started_at, finished_at) of a PROCESSING or finished job."""


def bucket_count(since: float, bucket_seconds: float, now: float) -> int:
    """How many buckets ``history`` and ``due_history`` draw between ``since`` and ``now``."""
    return max(1, math.ceil((now - since) / bucket_seconds))


def _first_bucket_ending_at_or_after(x: float, since: float, bucket_seconds: float, now: float, n: int) -> int:
    i = max(0, math.ceil((x - since) / bucket_seconds) - 1)
    if i < n - 1:
        return i
    return n - 1 if x <= now else n


def build_due_history(
    since: float,
    bucket_seconds: float,
    now: float,
    pending_from: Iterable[tuple[int, int]],
    rows: Iterable[DueRow],
    finished_read: int,
    oldest_finished_read: float | None,
    limit: int,
) -> DueHistory:
    """Assemble a :class:`DueHistory`.

    ``pending_from``: (first bucket index whose end is at or after ``due_from``, jobs) of the
    PENDING jobs due now (index below 0: due before ``since``). ``rows``: every PROCESSING job and
    the newest ``limit`` finished ones (``finished_read`` of them, the oldest finished at
    ``oldest_finished_read``).
    """
    n = bucket_count(since, bucket_seconds, now)
    capped = finished_read >= limit and oldest_finished_read is not None
    covers = max(since, oldest_finished_read) if capped and oldest_finished_read is not None else since
    delta = [0] * (n + 1)  # +1 where a due period starts counting, -1 where it stops

    def first(x: float) -> int:
        return _first_bucket_ending_at_or_after(x, since, bucket_seconds, now, n)

    for index, jobs in pending_from:
        delta[min(max(0, index), n - 1)] += jobs
    waits: dict[str, list[float]] = {}
    for queue, due_from, started, finished in rows:
        # A started_at older than the due time belongs to an earlier attempt: this period ended
        # unclaimed (cancelled while pending), at finished_at.
        claimed = started is not None and started >= due_from
        until = started if claimed else finished
        if claimed and started is not None and started >= covers:
            waits.setdefault(queue, []).append(started - due_from)  # 0 too: claimed as it came due
        if until is None or until <= due_from:
            continue
        lo, hi = first(due_from), first(until)
        if lo < hi:
            delta[lo] += 1
            delta[hi] -= 1
    due: list[int | None] = []
    depth = 0
    for i in range(n):
        depth += delta[i]
        end = min(since + (i + 1) * bucket_seconds, now)
        due.append(depth if end >= covers else None)
    by_queue = {}
    for queue, values in sorted(waits.items()):
        values.sort()
        by_queue[queue] = QueueWait(len(values), percentile(values, 0.5), percentile(values, 0.95))
    return DueHistory(
        since=since,
        bucket_seconds=bucket_seconds,
        covers_since=covers,
        sample_limit=limit if capped else None,
        due=due,
        waits=by_queue,
    )
