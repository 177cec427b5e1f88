"""How many jobs the default worker claims ahead of its free handler threads.

A worker that claims one job per free thread pays two commits per job (claim, then completion):
with short jobs that is its whole cost (~1,100 jobs/s on SQLite at FULL against ~11,500 with
``batch=100``). Claiming ahead groups both commits over many jobs, but a job claimed ahead waits
in this worker while another worker may be idle. So the default worker claims ahead only

- while the handlers' recent run times are short: it plans the queue it builds to drain within
  ``prefetch_wait_seconds`` (5 ms by default) at the measured rate, capped at ``PREFETCH_MAX_JOBS``;
- while many jobs are due: the previous claim got every job it asked for;
- while no handler has been running longer than that wait (a long job holds its thread).

And when the estimate was wrong (a long job among short ones), the jobs still waiting after
``GIVE_BACK_AFTER_SECONDS`` behind a handler that has run at least as long are given back to
PENDING (``release``, attempt not counted), where an idle worker takes them; at shutdown they are
given back at once rather than run. Jobs that wait while no handler runs long wait for the CPU
(a loaded machine has not scheduled the runner thread yet), not behind a long job: they stay, as
do ``async def`` jobs not begun while the event loop has a free slot (it has not reached them
yet). Beside a long handler, a free slot is filled at once, not when half the slots are free.
A job of the seed (7-15 s) is never claimed ahead: the first job's run time is not known yet,
and every later estimate is far over the wait.

An explicit ``batch`` turns this off: that worker claims ``batch`` jobs as it always did, and its
batch-mates wait behind a long job (given back only at shutdown).

Limits: the estimate is a moving average of handler run times; it does not foresee a long job
behind short ones (the give-back bounds that wait instead).
"""

from __future__ import annotations

import threading

#: At most this many jobs claimed ahead of the free threads (the batch that measured best, ``batch=100``).
PREFETCH_MAX_JOBS = 100
#: Weight of the latest run time in the moving average (about the last ten runs count).
RUN_TIME_WEIGHT = 0.2
#: A job claimed ahead that waited this long is given back. Well over the planned wait (main-loop
#: wake-ups and GC pauses take milliseconds on a loaded machine, and each give-back writes an
#: event), well under anything a person notices or the seed's 2 s producer interval.
GIVE_BACK_AFTER_SECONDS = 0.05


class Prefetch:
    """Decides how many jobs to claim ahead; fed with each handler's run time.

    Args:
        wait_seconds: the longest planned wait of a job claimed ahead (0 turns claiming ahead off).
        threads: the worker's handler threads (jobs drain that many at a time).
        limit: at most this many jobs claimed ahead.
    """

    def __init__(self, wait_seconds: float, threads: int, limit: int = PREFETCH_MAX_JOBS) -> None:
        self.wait_seconds = wait_seconds
        self.threads = threads
        self.limit = limit
        self.run_seconds: float | None = None
        """Moving average of recent handler run times (None until one ran)."""
        self.many_due = True
        """The last claim got all it asked for: more jobs are probably due."""
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        """A handler ran for ``seconds`` (called by the runner threads)."""
        with self._lock:
            if self.run_seconds is None:
                self.run_seconds = seconds
            else:
                self.run_seconds += RUN_TIME_WEIGHT * (seconds - self.run_seconds)

    def claimed(self, asked: int, got: int) -> None:
        """The main loop's last claim asked for ``asked`` jobs and got ``got``."""
        self.many_due = got >= asked

    def ahead(self, longest_running: float) -> int:
        """How many jobs to claim beyond the free threads now. ``longest_running``: how long the
        longest running handler has run so far (0 when none runs)."""
        per_job = self.run_seconds
        if self.wait_seconds <= 0 or per_job is None or not self.many_due or longest_running > self.wait_seconds:
            return 0
        if per_job >= self.wait_seconds:
            return 0
        # The epsilon keeps 5 ms / 1 ms from flooring to 4 on binary fractions.
        return min(self.limit, int(self.wait_seconds * self.threads / max(per_job, 1e-9) + 1e-9))
