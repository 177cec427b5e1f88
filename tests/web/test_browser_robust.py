"""The apps in Chromium under a bad database: a SQLite file locked by another process (an action
fails fast and names the process; the list still reads), the file then replaced by another one
(reopened, said so), and PostgreSQL stopped and started again (both apps keep the last figures
under a "stale since" banner and recover by themselves)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    UI_TIMEOUT_MS,
    chromium_page,
    job_rows,
    need_chromium,
    select_jobs,
    serve_app,
    wait_rows,
)
from children import start_lock_holder, stop_lock_holder, wait_locked
from pg import _start_server
from seeding import MANAGER, OPS, seed

from jobq import JobStatus, Queue

pytestmark = pytest.mark.slow

#: Within this the locked action must have answered (it gave up after 2 s; before: 10 s + 120 s).
LOCKED_ANSWER_MS = 30_000
#: A stopped server is noticed within a few refreshes, and a started one used again.
RECOVERY_MS = 150_000


def _metric(page: Any, label: str) -> Any:
    return page.locator(f'.jobq-metric[data-label="{label}"] .value')


def test_manager_on_a_locked_then_replaced_sqlite_file(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    from playwright.sync_api import expect, sync_playwright

    need_chromium()
    path = tmp_path / "queue.db"
    url = f"sqlite:///{path}"
    ids = seed(url)
    first, second = ids[JobStatus.PENDING]
    port = serve_app(request, MANAGER, tmp_path, url)

    holder = start_lock_holder(path)
    request.addfinalizer(lambda: stop_lock_holder(holder))
    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 1400})
            page.goto(f"http://127.0.0.1:{port}/")
            wait_rows(page, lambda rows: first in rows, "the job list")
            wait_locked(holder)

            select_jobs(page, first)
            page.locator(".st-key-bulk_cancel button").click()
            page.locator(".st-key-confirm_yes button").click()
            alerts = page.get_by_test_id("stAlert")
            refused = alerts.filter(has_text="holds its write lock")
            expect(refused.first).to_be_visible(timeout=LOCKED_ANSWER_MS)
            expect(refused.first).to_contain_text(f"pid {holder.pid}")
            expect(refused.first).to_contain_text("Nothing was changed")
            # Reads go on: the list is still there, and nothing changed.
            assert second in job_rows(page)
            expect(page.get_by_text("Stale since")).to_have_count(0)
            with Queue(url) as q:
                assert q.get(first).status == JobStatus.PENDING
            stop_lock_holder(holder)

            # Another database moved into place (a restore): the app notices and reads it.
            other = tmp_path / "restored.db"
            with Queue(f"sqlite:///{other}") as q:
                restored = q.enqueue({"path": "data/files/restored-marker.txt"})
            os.replace(other, path)
            expect(alerts.filter(has_text="The database file was replaced")).to_have_count(1)
            wait_rows(
                page, lambda rows: restored in rows and second not in rows, "the new file's jobs"
            )  # (id 2 is not in it)
            assert "data/files/restored-marker.txt" in job_rows(page)[restored]
        finally:
            browser.close()


@pytest.mark.parametrize("app", [OPS, MANAGER], ids=["ops", "manager"])
def test_a_page_opened_before_the_queue_exists_opens_it_by_itself(
    app: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The apps may start before the first producer makes the database (supervisord starts all
    at once). A page opened then said "Cannot open the job queue" until reloaded, and one opened
    between the file's creation and its schema said so too; it now tries again by itself."""
    from playwright.sync_api import expect

    need_chromium()
    path = tmp_path / "queue.db"
    url = f"sqlite:///{path}"
    port = serve_app(request, app, tmp_path, url)
    with chromium_page(height=1400) as page:
        page.goto(f"http://127.0.0.1:{port}/")
        alerts = page.get_by_test_id("stAlert")
        expect(alerts.filter(has_text="Cannot open the job queue").first).to_contain_text("no database at")
        expect(page.get_by_text("Trying again every")).to_be_visible()
        # The file made, its schema not yet: still refused (nothing created by the app).
        path.write_bytes(b"")
        expect(alerts.filter(has_text="Cannot open the job queue").first).to_be_visible()
        with Queue(url) as q:
            job = q.enqueue({"path": "data/files/opened-by-itself.txt"})
        if app == MANAGER:
            wait_rows(page, lambda rows: job in rows, "the job list, without a reload")
        else:
            expect(page.locator('.jobq-metric[data-label="Pending"] .value')).to_have_text("1")
        expect(alerts.filter(has_text="Cannot open the job queue")).to_have_count(0)


@pytest.mark.postgres
def test_both_apps_keep_the_last_figures_while_postgresql_is_down_and_recover(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from playwright.sync_api import expect, sync_playwright

    need_chromium()
    server = _start_server()  # its own server: this test stops it

    def drop_server() -> None:
        server.stop()
        assert server.data_dir is not None
        shutil.rmtree(os.path.dirname(server.data_dir), ignore_errors=True)

    request.addfinalizer(drop_server)
    url = server.url
    ids = seed(url, pending=3)
    manager = serve_app(request, MANAGER, tmp_path, url)
    ops = serve_app(request, OPS, tmp_path, url)

    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            ops_page = browser.new_page(viewport={"width": 1366, "height": 1400})
            ops_page.goto(f"http://127.0.0.1:{ops}/")
            manager_page = browser.new_page(viewport={"width": 1366, "height": 1400})
            manager_page.goto(f"http://127.0.0.1:{manager}/")
            pending = ids[JobStatus.PENDING][0]
            expect(_metric(ops_page, "Pending")).to_have_text("3")
            wait_rows(manager_page, lambda rows: pending in rows, "the job list")

            server.stop()
            for page in (ops_page, manager_page):
                stale = page.get_by_test_id("stAlert").filter(has_text="Stale since")
                expect(stale).to_have_count(1, timeout=RECOVERY_MS)
                expect(stale).to_contain_text(f"({time.strftime('%Z')})")  # the zone is named
            # The last known figures stay on the page.
            expect(_metric(ops_page, "Pending")).to_have_text("3")
            assert pending in job_rows(manager_page)
            # A tab never opened before, whose read no other part of the page makes (Schedules),
            # reruns the tables' fragment alone with nothing remembered to show: it says in one
            # line that the queue cannot be read (no traceback); the rest keeps its figures.
            schedules_tab = ops_page.get_by_role("tab", name="Schedules", exact=True)
            schedules_tab.click()
            expect(schedules_tab).to_have_attribute("aria-selected", "true")
            unreadable = ops_page.get_by_test_id("stAlert").filter(has_text="could not be read")
            expect(unreadable).to_have_count(1, timeout=RECOVERY_MS)
            assert "Traceback" not in ops_page.locator("body").inner_text()
            expect(_metric(ops_page, "Pending")).to_have_text("3")

            server.start()
            with Queue(url) as q:
                added = [q.enqueue({"path": f"data/files/after-{n}.txt"}) for n in range(2)]
            for page in (ops_page, manager_page):
                expect(page.get_by_text("Stale since")).to_have_count(0, timeout=RECOVERY_MS)
            expect(_metric(ops_page, "Pending")).to_have_text("5")
            # The open tab reads again once the server is back.
            expect(unreadable).to_have_count(0, timeout=RECOVERY_MS)
            wait_rows(
                manager_page, lambda rows: added[-1] in rows, "the job added after the recovery", RECOVERY_MS / 1000
            )
        finally:
            browser.close()
