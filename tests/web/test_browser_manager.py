"""The manager in Chromium: the job list refreshes on its own and keeps the operator's filter; a
time-filtered "Resubmit all matching" acts on exactly the jobs shown; a row ticked in the list stays
ticked across the refresh and opens its job; at 1366 px no header, badge or button is cut (each
element's scrollWidth fits its clientWidth) and the job list does not scroll sideways; a file
enqueued by path twice, or by a double click, makes one job."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    SELECTED_COUNT_JS,
    UI_TIMEOUT_MS,
    click_job_row,
    cut_elements,
    cut_headers,
    job_rows,
    need_chromium,
    poll,
    select_jobs,
    serve_app,
    ticked_jobs,
    wait_rows,
    wide_tables,
)
from seeding import MANAGER, seed

from jobq import JobStatus, Queue

pytestmark = pytest.mark.slow


def _failed(url: str, queue: str, error: str, clock: Callable[[], float] = time.time) -> int:
    with Queue(url, clock=clock) as q:
        job_id = q.enqueue({"path": f"data/files/{queue}-{error}.txt"}, queue=queue, max_attempts=1)
        job = q.claim("w", queue=queue)
        assert job is not None and job.id == job_id
        q.fail(job, f"OSError: {error}", retry=False)
    return job_id


def test_manager_refreshes_keeps_its_filter_and_resubmits_exactly_what_it_shows(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from playwright.sync_api import expect, sync_playwright

    need_chromium()
    url = f"sqlite:///{tmp_path}/queue.db"
    seed(url)
    old = _failed(url, "y", "smtp timeout", lambda: time.time() - 7200)
    recent = _failed(url, "y", "smtp timeout")
    other = _failed(url, "y", "mailbox full")
    port = serve_app(request, MANAGER, tmp_path, url)

    def status(job_id: int) -> JobStatus:
        with Queue(url) as q:
            return q.get(job_id).status

    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 1400})
            page.set_default_timeout(UI_TIMEOUT_MS)
            page.goto(f"http://127.0.0.1:{port}/")
            expect(page.get_by_text("jobq manager")).to_be_visible()
            wait_rows(page, lambda rows: recent in rows, "the job list")
            found = cut_elements(page)
            assert found["checked"] > 10 and found["cut"] == [], found  # 1366 px: nothing cut mid-word
            assert cut_headers(page) == []  # nor a header of the job list
            assert wide_tables(page) == []  # and no table scrolls sideways

            error_box = page.get_by_label("Last error contains")
            error_box.fill("timeout")
            error_box.press("Enter")
            wait_rows(page, lambda rows: {recent, old} <= set(rows) and other not in rows, "the error filter")

            # A new matching job appears by itself; the filter stays as typed.
            newer = _failed(url, "y", "imap timeout")
            wait_rows(page, lambda rows: newer in rows, "the new job to appear by itself")
            expect(error_box).to_have_value("timeout")
            assert other not in job_rows(page)

            # Rows ticked one after the other all stay ticked (the table is drawn anew after each
            # tick), and untick again.
            select_jobs(page, recent, newer, old)
            assert ticked_jobs(page) == {recent, newer, old}
            for job_id, left in ((newer, 2), (old, 1)):
                click_job_row(page, job_id)
                poll(lambda n=left: bool(page.evaluate(SELECTED_COUNT_JS) == n), f"{left} selected jobs")
            assert ticked_jobs(page) == {recent}
            # A ticked row stays ticked across the auto-refresh, and opens its job.
            caption = page.get_by_text("matching jobs · page")
            before = caption.inner_text()
            poll(lambda: caption.inner_text() != before, "the list to refresh by itself")  # "updated HH:MM:SS"
            assert page.evaluate(SELECTED_COUNT_JS) == 1 and ticked_jobs(page) == {recent}
            page.locator(".st-key-open_selected button").first.click()
            expect(page.locator(".st-key-job_detail")).to_contain_text(f"Job {recent}")

            # The last hour only: the two-hour-old failure leaves the list and is not resubmitted.
            page.get_by_label("Time", exact=True).click()
            page.get_by_role("option", name="Last hour").click()
            wait_rows(page, lambda rows: old not in rows and recent in rows, "the time filter")
            page.locator(".st-key-all_resubmit button").click()
            expect(page.locator(".st-key-confirm_box")).to_contain_text("last error containing 'timeout'")
            page.locator(".st-key-confirm_yes button").click()
            poll(lambda: status(recent) == status(newer) == JobStatus.PENDING, "the matching jobs to be resubmitted")
            assert status(old) == status(other) == JobStatus.FAILED
            found = cut_elements(page)
            assert found["checked"] > 10 and found["cut"] == [], found
            assert wide_tables(page) == []
        finally:
            browser.close()


def test_enqueue_by_path_twice_makes_one_job_and_says_which(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The manager's "Enqueue a job by path" in Chromium: the first click enqueues the file, a
    second click names the job it already has and stores nothing (the file would have been
    stamped twice), and a double click on another file makes one job."""
    from browser import chromium_page
    from playwright.sync_api import expect

    url = f"sqlite:///{tmp_path}/queue.db"
    seed(url)
    files = tmp_path / MANAGER.parent.name / "data" / "files"
    files.mkdir(parents=True)
    for name in ("manual.txt", "double.txt"):
        (files / name).write_text("hello\n")
    port = serve_app(request, MANAGER, tmp_path, url)

    def jobs_of(path: str) -> list[int]:
        with Queue(url) as q:
            return [j.id for j in q.list(page=None) if j.payload == {"path": path}]

    with chromium_page() as page:
        page.goto(f"http://127.0.0.1:{port}/")
        expect(page.get_by_text("jobq manager")).to_be_visible()
        page.get_by_text("Enqueue a job by path").click()
        path_box = page.get_by_label("File path")
        button = page.locator(".st-key-enqueue_submit button")
        path_box.fill("data/files/manual.txt")
        path_box.press("Enter")
        button.click()
        poll(lambda: len(jobs_of("data/files/manual.txt")) == 1, "the file's job")
        (job_id,) = jobs_of("data/files/manual.txt")
        expect(page.get_by_text(f"Enqueued job {job_id} for data/files/manual.txt").first).to_be_visible()
        path_box.fill("data/files/manual.txt")
        path_box.press("Enter")
        button.click()
        expect(page.get_by_text(f"data/files/manual.txt is job {job_id} already").first).to_be_visible()
        assert jobs_of("data/files/manual.txt") == [job_id]
        path_box.fill("data/files/double.txt")
        path_box.press("Enter")
        button.dblclick()
        poll(lambda: len(jobs_of("data/files/double.txt")) == 1, "the double-clicked file's job")
        (double_id,) = jobs_of("data/files/double.txt")
        # The file's own message: the ones above stay on the page for a while (FLASH_SHOWN_SECONDS).
        expect(page.get_by_text(f"Enqueued job {double_id} for data/files/double.txt").first).to_be_visible()
        assert len(jobs_of("data/files/double.txt")) == 1
