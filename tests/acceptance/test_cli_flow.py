"""``jobq pause``, ``resume``, ``limit``, ``limits`` and ``enqueue --concurrency-key`` (the real
command in a subprocess; docs/flow-control.md)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli import Cli, enqueue

from jobq import WorkerInfo


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    runner = Cli(tmp_path)
    yield runner
    runner.cleanup()


def test_pause_resume_and_limits_are_stored_audited_and_listed(cli: Cli) -> None:
    job_id = enqueue(cli, {"n": 1}, "--queue", "mail", "--concurrency-key", "customer-42")
    assert cli.ok("resume", "mail") == "queue mail: not paused (it never was)\n"
    assert cli.json("limits", "mail")["history"] == []  # nothing changed, nothing recorded
    assert cli.ok("pause", "mail", "--actor", "ann") == "queue mail: paused (by ann)\n"
    with cli.queue() as q:
        assert q.claim("w", queue="mail") is None  # the claim itself skips a paused queue
        assert q.stats().waiting_on_limit_by_queue == {"mail": 1}
    out = cli.ok("limit", "mail", "--concurrency", "4", "--per-key", "1", "--rate", "100/s", "--actor", "bob")
    assert out == "queue mail: concurrency 4, per key 1, rate 100/s (paused)\n"
    table = cli.ok("limits")
    assert table.splitlines()[0].split() == ["QUEUE", "PAUSED", "LIMITS", "LAST", "CHANGE"]
    assert "yes (by ann" in table and "concurrency 4, per key 1, rate 100/s" in table
    assert "WAITING ON LIMIT" in cli.ok("stats")
    stats = cli.json("stats")
    assert stats["waiting_on_limit_by_queue"] == {"mail": 1}
    assert stats["controls"]["mail"]["concurrency"] == 4
    assert cli.ok("resume", "mail", "--actor", "cat") == "queue mail: resumed (by cat)\n"
    with cli.queue() as q:
        job = q.claim("w", queue="mail")
        assert job is not None and job.id == job_id
    listed = cli.json("limits", "mail")
    assert listed["queues"][0]["rate"] == "100/s"
    assert [(e["action"], e["actor"]) for e in listed["history"]] == [
        ("resume", "cat"),
        ("limits", "bob"),
        ("pause", "ann"),
    ]
    assert cli.json("limit", "mail", "--clear", "rate")["rate"] is None
    assert cli.ok("limit", "mail", "--clear") == "queue mail: -\n"
    assert cli.ok("limits").splitlines()[1].split()[:3] == ["mail", "no", "-"]  # kept, with its history


@pytest.mark.parametrize(
    ("argv", "code", "fragment"),
    [
        (("pause",), 1, "pause: give the queue's name, e.g. jobq pause mail"),
        (("limit", "mail"), 1, "limit: give --concurrency N, --per-key N, --rate COUNT/UNIT or --clear"),
        (("limit", "mail", "--rate", "10/fortnight"), 2, "not a rate: '10/fortnight'"),
        (("limit", "mail", "--rate", "0/s"), 2, "a rate's count must be a whole number from 1"),
        (("limit", "mail", "--concurrency", "0"), 2, "--concurrency: must be at least 1, not 0"),
        (("limit", "mail", "--per-key", "x"), 2, "--per-key"),
        (("limit", "mail", "--clear", "--concurrency", "2"), 1, "--concurrency and --clear all contradict"),
        (("enqueue", "--json", "1", "--concurrency-key", "a\nb"), 1, "concurrency key must be text"),
    ],
)
def test_bad_flow_input_is_one_line_and_stores_nothing(
    cli: Cli, argv: tuple[str, ...], code: int, fragment: str
) -> None:
    enqueue(cli, 0)  # the database exists
    assert fragment in cli.fails(*argv, code=code)
    with cli.queue() as q:
        assert q.controls() == [] and q.count() == 1


def test_pausing_or_limiting_a_queue_nothing_uses_warns_of_its_name_and_still_holds(cli: Cli) -> None:
    """A mistyped queue (``mial``) is paused and limited as asked, since a queue may be paused
    before its first job, but stderr says that nothing uses it and which queues are in use;
    a queue with a waiting job, a running worker or a schedule gets no warning."""
    enqueue(cli, {"n": 1}, "--queue", "mail")
    cli.ok("schedules", "add", "nightly", "--task", "report", "--queue", "reports", "--every", "1d")
    warning = (
        "jobq: warning: no job waits or runs in queue mial, and no running worker or schedule uses it "
        "(queues in use: 'mail', 'reports'); check its name\n"
    )
    for argv, said in (
        (("pause", "mial"), "queue mial: paused (by"),
        (("limit", "mial", "--concurrency", "2"), "queue mial: concurrency 2 (paused)"),
    ):
        done = cli.run(*argv)
        assert done.returncode == 0 and done.stdout.startswith(said), done
        assert done.stderr == warning
    with cli.queue() as q:
        (control,) = q.controls()
        assert (control.queue, control.paused, control.concurrency) == ("mial", True, 2)
    assert cli.ok("pause", "mail").startswith("queue mail: paused")  # a job waits in it
    assert cli.ok("limit", "reports", "--rate", "1/s").startswith("queue reports: rate 1/s")  # a schedule's
    with cli.queue() as q:  # a running worker of queue "idle", which holds no job
        now = q.wall_time()
        q.register_worker(WorkerInfo("w-1", "w", "host", 1, ("idle",), now, now))
    assert cli.ok("pause", "idle").startswith("queue idle: paused")
    assert cli.run("resume", "mial").stderr == ""  # a resume warns of nothing
