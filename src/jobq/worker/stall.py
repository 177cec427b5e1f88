"""Stalls this process saw: when an expired lease is no evidence that its worker died.

Rescue is liveness-based: a lease expires because its worker stopped heartbeating. But a lease can
also expire because *nobody* could write: on SQLite a process frozen (SIGSTOP, a debugger, a VM
pause) while it holds the write lock stops every writer; on PostgreSQL a restart or failover
refuses every write. When the stall ends, the first rescuer to get in would find the live workers'
leases expired (their heartbeats were waiting too) and take their jobs, which then run twice.

Every worker process writes at least every ``heartbeat_seconds`` (its heartbeat and registry
row), so it notices such a stall itself: as a write that waited longer than ``threshold`` (or
failed), as its own loop running late (the process itself was frozen), or as the queue's clock
jumping ahead of this process's monotonic one. That last one is a host suspended (a laptop's lid
closed, a VM paused: CLOCK_MONOTONIC does not count the sleep) or NTP stepping the clock; every
lease judged by this host's clock (SQLite) then reads expired at once, its worker as alive as
before. A process that started after such a jump learns of it from the registry (its peers'
wall clock less monotonic clock at their last beat against its own: ``stepped_before_start``).
A lease that expired after the stall began (less a heartbeat's margin) is then not counted as
lost until the stall has been over for ``grace`` seconds: long enough for every live worker's
waiting heartbeat to land. A worker that really died during the stall is rescued that much later;
one whose process is known to be gone (same process table, pid gone) is rescued at once as always.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator

log = logging.getLogger("jobq.worker")


class StallWatch:
    """Remembers the latest stall (start and end, in the queue's clock) this process observed.

    Args:
        clock: the queue's clock (UNIX seconds; leases are stamped with it).
        threshold: a write that took longer than this, or a loop this late, counts as a stall.
        margin: leases that expired up to this long before a stall began are excused too (the
            stall may have begun before this process noticed it: up to one heartbeat earlier).
        grace: how long after a stall ends expired leases are still excused.
        steps: whether a jump of ``clock`` ahead of the monotonic clock counts (``clock_stepped``):
            True for the host's own clock, False for a clock the caller moves by hand.
    """

    def __init__(
        self, clock: Callable[[], float], *, threshold: float, margin: float, grace: float, steps: bool = True
    ) -> None:
        self.clock = clock
        self.steps = steps
        self.threshold = threshold
        self.margin = margin
        self.grace = grace
        self._lock = threading.RLock()
        self._start: float | None = None
        self._end: float | None = None
        self._failing_since: float | None = None
        self._in_flight: dict[object, float] = {}
        self._clock_ahead = clock() - time.monotonic()  # moves only when the clock steps
        self._back = 0.0  # how far the clock was set back, not yet taken by ``restamped``

    def note(self, start: float, end: float) -> None:
        """Record that writes were impossible from ``start`` to ``end``."""
        with self._lock:
            if self._start is not None and self._end is not None and start <= self._end + self.grace:
                start = min(start, self._start)  # overlapping or back to back: one longer stall
            self._start, self._end = start, max(end, self._end or end)

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        """Time a write this process makes every heartbeat. While it waits, it already counts:
        the rescuer may get the lock before this write does, and must know it was waiting."""
        started, began = self.clock(), time.monotonic()
        key = object()
        with self._lock:
            self._in_flight[key] = started
        try:
            yield
        except BaseException:
            with self._lock:
                if self._failing_since is None:  # unreachable until a write succeeds again
                    self._failing_since = started
            raise
        else:
            seconds = time.monotonic() - began
            with self._lock:
                failing_since, self._failing_since = self._failing_since, None
                if failing_since is not None:
                    self.note(failing_since, started + seconds)
                elif seconds > self.threshold:
                    self.note(started, started + seconds)
        finally:
            with self._lock:
                del self._in_flight[key]

    def loop_late(self, seconds: float) -> None:
        """A loop ran ``seconds`` later than it should have (this process was frozen or starved)."""
        if seconds > self.threshold:
            now = self.clock()
            self.note(now - seconds, now)

    def clock_stepped(self, moment: float) -> None:
        """Note a jump of the clock ahead of ``moment`` (``time.monotonic()`` now) since the last
        look as a stall of that length ending now. A clock set back excuses no lease (leases then
        read longer, which takes no job wrongly); it is kept for ``stepped_back``: what was
        written before it is stamped ahead of the clock. Each look compares with the one before,
        so that NTP's slewing (at most 0.5 ms a second) never adds up to a step."""
        if not self.steps:
            return
        now = self.clock()
        with self._lock:  # two rescues at once: one of them sees the jump
            jump, self._clock_ahead = now - moment - self._clock_ahead, now - moment
            if jump < -self.threshold:
                self._back -= jump
        if jump > self.threshold:
            self.note(now - jump, now)
            log.warning(
                "this host's clock jumped %.1f s ahead (the host suspended, or the clock stepped): "
                "leases that ran out meanwhile wait %g s for their workers' heartbeats",
                jump,
                self.grace,
            )

    def stepped_before_start(self, here: float, peers: Iterable[tuple[float, float]]) -> None:
        """At this process's start, a jump of the clock ahead that came before it (``clock_stepped``
        sees the later ones): ``peers`` are the clock base and last beat of each live worker of
        this host (``WorkerInfo.clock_base``, ``last_seen_at``), ``here`` this process's base now
        (``Queue.clock_base``). A base behind this one by more than ``threshold`` is a jump since
        that beat, and the leases of that worker (of every worker that ran through it) may read
        expired until their next heartbeats: a stall from the earliest such beat to now."""
        if not self.steps:
            return
        peers = list(peers)
        back = max((base - here for base, _ in peers), default=0.0)
        if back > self.threshold:  # set back since a peer's beat: see clock_stepped
            self._read_back(back)
        jumped = [(here - base, seen) for base, seen in peers if here - base > self.threshold]
        if not jumped:
            return
        now = self.clock()
        self.note(min(seen for _, seen in jumped), now)
        log.warning(
            "this host's clock jumped %.1f s ahead before this worker started (the host suspended, or "
            "the clock stepped): the leases of the workers that ran through it wait %g s for their heartbeats",
            max(jump for jump, _ in jumped),
            self.grace,
        )

    def written_ahead(self, written: float) -> None:
        """At this process's start, a step back no live worker may have seen (every worker stopped
        across it, or one killed before it restamped): ``written`` is when the newest job was last
        written (``Queue.newest_write``). Ahead of the clock by more than ``threshold``, the clock
        was set back at least that far since."""
        if not self.steps:
            return
        ahead = written - self.clock()
        if ahead > self.threshold:
            self._read_back(ahead)

    def _read_back(self, back: float) -> None:
        """A step back read at this process's start (``stepped_before_start``, ``written_ahead``):
        the rows written before it are ``back`` seconds ahead. A step back since this watch last
        looked at the clock is part of that reading: ``clock_stepped`` must not count it again.
        It did: a worker whose first rescue came after a step of an hour restamped the rows
        written up to two hours ahead, and said the clock was set back 7200 s."""
        moment = time.monotonic()
        now = self.clock()
        with self._lock:
            self._back = max(self._back, back)
            self._clock_ahead = min(self._clock_ahead, now - moment)

    def stepped_back(self) -> float:
        """How many seconds the clock was set back since the last ``restamped`` (0.0: not at all):
        rows written before were stamped that far ahead of it (``Queue.restamp_ahead``)."""
        with self._lock:
            return self._back

    def restamped(self, step: float) -> None:
        """``step`` seconds of ``stepped_back`` were seen to (a step noted meanwhile stays)."""
        with self._lock:
            self._back = max(0.0, self._back - step)

    def excused_since(self, now: float) -> float | None:
        """Leases that expired at or after this time are not evidence of a dead worker (None:
        every expired lease is)."""
        with self._lock:
            since = [t for t in self._in_flight.values() if now - t > self.threshold]
            if self._failing_since is not None:
                since.append(self._failing_since)
            if self._start is not None and self._end is not None and (since or now <= self._end + self.grace):
                since.append(self._start)
            return min(since) - self.margin if since else None

    def rescue_cutoff(self) -> Callable[[float], float]:
        """A ``cutoff`` for ``Queue.rescue_expired``: given the time read under the lock, the
        expiry before which a lease counts as lost. The rescue's own wait for the lock, if it was
        a stall, counts as one too, and so does a step of the clock since the last rescue."""
        asked = time.monotonic()

        def cutoff(now: float) -> float:
            moment = time.monotonic()
            self.clock_stepped(moment)  # before judging any lease by a clock that may have jumped
            waited = moment - asked
            if waited > self.threshold:
                self.note(now - waited, now)
            since = self.excused_since(now)
            return now if since is None else min(now, since)

        return cutoff
