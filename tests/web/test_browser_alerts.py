"""The ops console's alerts in Chromium, with real worker processes: no worker at all, no worker
for a queue with due jobs, a worker killed with ``kill -9`` (found by a live worker's rescuer and
recorded as crashed, not as a clean stop), a live worker whose host clock is off, and a process
frozen (SIGSTOP) holding the write lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from browser import CHROMIUM, CHROMIUM_ARGS, UI_TIMEOUT_MS, need_chromium, poll, serve_app
from children import start_lock_holder, stop_lock_holder, wait_locked
from seeding import OPS

from jobq import Queue, WorkerEnd, WorkerInfo

pytestmark = pytest.mark.slow


def test_ops_alerts_on_no_worker_an_unserved_queue_and_a_kill_9(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    from playwright.sync_api import expect, sync_playwright

    need_chromium()
    url = f"sqlite:///{tmp_path}/queue.db"
    with Queue(url) as q:
        for i in range(4):
            q.enqueue({"n": i}, queue="mail")  # no worker below serves "mail"
    port = serve_app(request, OPS, tmp_path, url)
    env = {**os.environ, "JOBQ_DATABASE_URL": url, "PYTHONUNBUFFERED": "1"}  # the workers'

    workers: dict[str, subprocess.Popen[bytes]] = {}

    def stop_workers() -> None:
        for proc in workers.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in workers.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    request.addfinalizer(stop_workers)

    def start_worker(name: str) -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - the child holds it
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jobq.cli",
                "worker",
                "--db",
                url,
                "--queue",
                "default",
                "--name",
                name,
                "--handler",
                "builtins:print",  # never runs: nothing is enqueued in "default"
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        workers[name] = proc
        return proc

    def registered(name: str) -> bool:
        with Queue(url) as q:
            return any(w.name == name and w.stopped_at is None for w in q.workers())

    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 1800})
            page.goto(f"http://127.0.0.1:{port}/")
            alerts = page.locator('[data-testid="stAlert"]')
            expect(alerts.filter(has_text="No worker is alive, and 4 jobs due in queue mail")).to_have_count(1)
            expect(page.get_by_text("All clear")).to_have_count(0)

            alpha = start_worker("alpha")
            start_worker("beta")
            poll(lambda: registered("alpha") and registered("beta"), "both workers to register", 60)
            # Workers live, but none for "mail": still an error, naming the queue.
            expect(alerts.filter(has_text="No live worker serves 4 jobs due in queue mail")).to_have_count(1)
            expect(alerts.filter(has_text="No worker is alive")).to_have_count(0)

            alpha.send_signal(signal.SIGKILL)
            alpha.wait(10)

            def crashed() -> bool:
                with Queue(url) as q:
                    return any(w.name == "alpha" and w.end_reason == WorkerEnd.CRASHED for w in q.workers())

            poll(crashed, "beta's rescuer to record alpha as crashed", 60)
            expect(alerts.filter(has_text="Worker crashed (exited without stopping): alpha")).to_have_count(1)

            # A live worker on a host whose clock is a minute ahead of the database server's (a
            # row as a PostgreSQL worker writes it; SQLite measures nothing): its host is named.
            with Queue(url) as q:
                now = q.wall_time()
                gamma = WorkerInfo("gamma-1", "gamma", "web-9", 4242, ("default",), now, now, clock_skew=60.0)
                q.register_worker(gamma)
            expect(alerts.filter(has_text="Clock off against the database server's")).to_have_count(1)
            expect(alerts.filter(has_text="web-9 +60.0 s (worker gamma)")).to_have_count(1)

            # A process holding the write lock in a transaction it leaves open, then frozen
            # (SIGSTOP): every writer waits for it, and the page (whose reads do not) names it
            # first, with what to do: end the transaction, or the command that continues it.
            holder = start_lock_holder(tmp_path / "queue.db")
            request.addfinalizer(lambda: stop_lock_holder(holder))  # before the workers stop: they write
            wait_locked(holder)
            frozen = alerts.filter(has_text=f"Every write waits: the queue's write lock is held by pid {holder.pid}")
            expect(frozen).to_have_count(1)
            expect(frozen).to_contain_text("while nobody committed: every write waits for its transaction to end")
            holder.send_signal(signal.SIGSTOP)
            expect(frozen).to_contain_text(f"kill -CONT {holder.pid}")
            expect(frozen).to_have_count(1)
        finally:
            browser.close()
