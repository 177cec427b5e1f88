"""The backend contract: schedules (``jobq.schedules``), stored and fired exactly once per slot."""

from __future__ import annotations

import collections
import random
from collections.abc import Callable

import pytest

import jobq
from jobq.schedules import SCHEDULE_KEY_PREFIX, Schedule
from jobq.testing import FakeClock
from jobq.worker.scheduler import Scheduler

DAY = 86400.0


def _slot_jobs(queue: jobq.Queue) -> collections.Counter[str]:
    """How many jobs each slot made, by the slot's key."""
    jobs = queue.list_jobs(None, jobq.Page(limit=100_000))
    keys = [j.idempotency_key or "" for j in jobs]
    return collections.Counter(k for k in keys if k.startswith(SCHEDULE_KEY_PREFIX))


def test_schedules_are_stored_listed_and_fired_once_per_slot(
    queue: jobq.Queue, clock: FakeClock, open_queue: Callable[[], jobq.Queue]
) -> None:
    clock.now = 1_800_000_000.0 - 1  # 2027-01-15 07:59:59 UTC
    info = queue.add_schedule("report", task="build-report", cron="0 9 * * *", zone="Europe/Paris", queue="reports")
    assert (info.name, info.task, info.queue, info.cron, info.zone, info.origin) == (
        "report",
        "build-report",
        "reports",
        "0 9 * * *",
        "Europe/Paris",
        "api",
    )
    assert info.next_run_at == 1_800_000_000.0  # 09:00 in Paris is 08:00 UTC in January
    assert queue.schedules(due=True) == []
    clock.advance(1)
    other = open_queue()
    [mine], [theirs] = queue.schedules(due=True), other.schedules(due=True)
    # Both read the same due slot: one takes it, the other writes nothing.
    assert queue.fire_schedule(mine, [mine.next_run_at], mine.next_run_at + DAY) is not None
    assert other.fire_schedule(theirs, [theirs.next_run_at], theirs.next_run_at + DAY) is None
    [job] = queue.list_jobs()
    assert (job.task, job.queue, job.payload) == (
        "build-report",
        "reports",
        {"schedule": "report", "slot": info.next_run_at},
    )
    [after] = queue.schedules()
    assert (after.last_run_at, after.last_job_id, after.next_run_at) == (
        info.next_run_at,
        job.id,
        info.next_run_at + DAY,
    )


def test_pause_and_resume_are_recorded_and_skip_the_paused_slots(queue: jobq.Queue, clock: FakeClock) -> None:
    queue.add_schedule("tick", task="t", every="1m")
    queue.pause_schedule("tick", actor="ann")
    [paused] = queue.schedules()
    assert (paused.paused, paused.paused_by, paused.paused_at) == (True, "ann", clock.now)
    clock.advance(3600)
    assert queue.schedules(due=True) == []
    assert Scheduler(queue, declared={}).run_due() == {}
    queue.resume_schedule("tick", actor="bob")
    [resumed] = queue.schedules()
    assert (resumed.paused, resumed.paused_by) == (False, "bob")
    assert clock.now < resumed.next_run_at <= clock.now + 60  # the hour while paused never runs
    with pytest.raises(jobq.ScheduleNotFound, match=r"^no schedule named 'nope'$"):
        queue.pause_schedule("nope")
    queue.remove_schedule("tick")
    assert queue.schedules() == []


def test_every_pause_and_resume_is_kept_in_the_history(queue: jobq.Queue, clock: FakeClock) -> None:
    queue.add_schedule("tick", task="t", every="1m")
    queue.add_schedule("other", task="t", every="1h")
    start = clock.now
    for actor, pause in [("ann", True), ("bob", False), ("ann", True), ("cy", False)]:
        (queue.pause_schedule if pause else queue.resume_schedule)("tick", actor=actor)
        clock.advance(10)
    queue.pause_schedule("other", actor="dee")
    with pytest.raises(jobq.ScheduleNotFound):
        queue.resume_schedule("nope", actor="eve")  # nothing happened: nothing recorded
    history = queue.schedule_history("tick")
    assert [(a.name, a.action, a.actor, a.at - start) for a in history] == [
        ("tick", "resume", "cy", 30.0),
        ("tick", "pause", "ann", 20.0),
        ("tick", "resume", "bob", 10.0),
        ("tick", "pause", "ann", 0.0),
    ]
    assert [a.actor for a in queue.schedule_history()] == ["dee", "cy", "ann", "bob", "ann"]
    assert [a.actor for a in queue.schedule_history("tick", limit=2)] == ["cy", "ann"]
    assert queue.schedule_history("nope") == []
    queue.remove_schedule("tick")  # an audit history outlives what it audits
    assert len(queue.schedule_history("tick")) == 4


def test_saving_again_keeps_state_unless_the_timing_changed(queue: jobq.Queue, clock: FakeClock) -> None:
    first = queue.add_schedule("s", task="t", every=60)
    queue.pause_schedule("s", actor="ann")
    clock.advance(600)
    again = queue.add_schedule("s", task="t2", every=60)
    assert (again.task, again.paused, again.next_run_at) == ("t2", True, first.next_run_at)
    moved = queue.add_schedule("s", task="t2", every=120)
    assert moved.next_run_at > clock.now and moved.paused


@pytest.mark.parametrize(("catchup", "expected"), [("latest", 1), ("all", 36), ("none", 0)])
def test_catchup_after_downtime(queue: jobq.Queue, clock: FakeClock, catchup: str, expected: int) -> None:
    clock.now = 1_800_000_000.0 + 30  # just after a slot of "*/5"
    spec = Schedule("five", "t", cron="*/5 * * * *", catchup=catchup)
    scheduler = Scheduler(queue, declared={"five": spec})
    scheduler.run_due()
    clock.advance(3 * 3600 + 120)  # three hours down: 36 slots passed, the latest 150 s ago
    fired = scheduler.run_due()
    assert len(fired.get("five", [])) == expected
    assert queue.count() == expected
    [info] = queue.schedules()
    assert clock.now < info.next_run_at <= clock.now + 300


def test_overlap_false_skips_a_slot_while_the_previous_job_is_active(queue: jobq.Queue, clock: FakeClock) -> None:
    clock.now = 1_800_000_000.0 + 1
    scheduler = Scheduler(queue, declared={"slow": Schedule("slow", "t", every=60, overlap=False)})
    scheduler.run_due()
    clock.advance(60)
    [first] = scheduler.run_due()["slow"]
    clock.advance(60)
    assert scheduler.run_due()["slow"] == [first]  # still PENDING: no second job
    job = queue.claim("w")
    assert job is not None and job.id == first
    queue.complete(job)
    clock.advance(60)
    [second] = scheduler.run_due()["slow"]
    assert second != first and queue.count() == 2


def test_a_simulated_day_over_several_stores_makes_one_job_per_slot(
    queue: jobq.Queue, clock: FakeClock, open_queue: Callable[[], jobq.Queue]
) -> None:
    clock.now = 1_800_000_000.0  # a slot of both schedules
    # catchup="all": a stretch with no tick at all (it happens: ticks are random) still owes
    # every slot, so each slot of the day must make exactly one job.
    declared = {
        "five": Schedule("five", "t", cron="*/5 * * * *", zone="America/New_York", catchup="all"),
        "ninety": Schedule("ninety", "t", every=90, catchup="all"),
    }
    schedulers = [Scheduler(q, declared=declared) for q in (queue, open_queue(), open_queue())]
    rng = random.Random(15)
    start = clock.now
    while clock.now < start + DAY:
        # Each store ticks now and then, in any order, some several times per slot: several
        # workers of a deployment, with the clock moving on between and within their ticks.
        for scheduler in rng.sample(schedulers, k=len(schedulers)):
            if rng.random() < 0.7:
                scheduler.run_due()
        clock.advance(rng.uniform(5, 80))
    for scheduler in schedulers:
        scheduler.run_due()
    made = _slot_jobs(queue)
    assert set(made.values()) == {1}  # 0 doubled
    by_schedule = collections.Counter(key.split("@")[0].removeprefix(SCHEDULE_KEY_PREFIX) for key in made)
    end = clock.now
    assert by_schedule == {
        "five": len([s for s in range(int(start), int(end) + 1, 300) if s > start]),  # 0 missed
        "ninety": len([s for s in range(int(start), int(end) + 1, 90) if s > start]),
    }


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"payload": "x" * 70_000}, jobq.InvalidPayload, "over the limit"),
        ({"priority": 2**40}, jobq.InvalidPayload, "priority must be between"),
        ({"priority": "high"}, jobq.ConfigError, "priority must be an integer"),
        ({"priority": True}, jobq.ConfigError, "priority must be an integer"),
        ({"overlap": "no"}, jobq.ConfigError, "overlap must be True or False"),
        ({"every": True}, jobq.ConfigError, "every= must be from 1 second to 100 years"),
        ({"every": 1e300}, jobq.ConfigError, "every= must be from 1 second to 100 years"),
        ({"every": None, "cron": 5}, jobq.ConfigError, "a cron expression is text"),
        ({"zone": "Europe"}, jobq.ConfigError, "unknown time zone 'Europe'"),
        ({"zone": "x" * 300}, jobq.ConfigError, "unknown time zone"),
        ({"zone": 5}, jobq.ConfigError, "a time zone is an IANA name"),
    ],
)
def test_a_schedule_whose_jobs_could_not_be_made_is_refused_when_added(
    queue: jobq.Queue, kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    """What firing would refuse is refused when the schedule is added, in one line, and nothing
    is stored: a payload over the size limit was stored, and then every scheduler tick failed on
    it (no schedule fired at all); ``every=1e300`` made every listing of the schedules fail."""
    queue.add_schedule("kept", task="t", every=60)
    with pytest.raises(error, match=message) as raised:
        queue.add_schedule("bad", task="t", **{"every": 60, **kwargs})  # type: ignore[arg-type]
    assert "\n" not in str(raised.value)
    assert [s.name for s in queue.schedules()] == ["kept"]
