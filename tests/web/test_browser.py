"""Both apps served by ``streamlit run`` and driven in Debian's Chromium through Playwright.

Set JOBQ_SAVE_SCREENSHOTS=1 to also write docs/screenshots/manager.png and ops.png.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    SELECTED_COUNT_JS,
    UI_TIMEOUT_MS,
    free_port,
    poll,
    select_jobs,
    serve,
    wait_rows,
)
from seeding import MANAGER, OPS, REPO, KeepAlive, seed_demo

from jobq import JobStatus, Queue

pytestmark = pytest.mark.slow


@pytest.fixture
def served(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[str, dict[JobStatus, list[int]], int, int]]:
    """Both apps on free ports against a seeded temporary database; stopped by PID afterwards."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} missing: run scripts/install-system-deps.sh (apt-get install -y chromium)")
    url = f"sqlite:///{tmp_path}/queue.db"
    ids = seed_demo(url)
    # The seeded consumers heartbeat as live ones would: the pages (and screenshots) show them alive.
    alive = KeepAlive(url, ["consumer1-new", "consumer2-a"])
    request.addfinalizer(alive.stop)
    (tmp_path / ".streamlit").mkdir()
    shutil.copy(REPO / ".streamlit" / "config.toml", tmp_path / ".streamlit" / "config.toml")
    ports = [free_port(), free_port()]
    env = {**os.environ, "JOBQ_DATABASE_URL": url, "JOBQ_OPERATOR": "browser-test", "PYTHONUNBUFFERED": "1",
           "JOBQ_MANAGER_URL": f"http://localhost:{ports[0]}/"}  # fmt: skip
    env.pop("JOBQ_MANAGER_PASSWORD", None)
    for app, port in zip((MANAGER, OPS), ports, strict=True):
        command = [sys.executable, "-m", "streamlit", "run", str(app), "--server.headless", "true",
                   "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats",
                   "false", "--server.fileWatcherType", "none"]  # fmt: skip
        serve(request, command, cwd=tmp_path, env=env, port=port, log_path=tmp_path / f"{app.stem}.log")
    yield url, ids, ports[0], ports[1]


def test_manager_and_ops_in_chromium(served: tuple[str, dict[JobStatus, list[int]], int, int], tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, ids, manager_port, ops_port = served
    failed = max(ids[JobStatus.FAILED])  # the newest ones: on the first page (newest first)
    pending = max(ids[JobStatus.PENDING])
    shots = REPO / "docs" / "screenshots" if os.environ.get("JOBQ_SAVE_SCREENSHOTS") == "1" else tmp_path

    def status(job_id: int) -> JobStatus:
        with Queue(url) as q:
            return q.get(job_id).status

    def queue_of(job_id: int) -> str:
        with Queue(url) as q:
            return q.get(job_id).queue

    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            # Screenshots at a common laptop width (docs/screenshots), light theme.
            page = browser.new_page(viewport={"width": 1440, "height": 2000}, color_scheme="light")
            page.set_default_timeout(UI_TIMEOUT_MS)
            page.goto(f"http://127.0.0.1:{manager_port}/")
            expect(page.get_by_text("jobq manager")).to_be_visible()

            # The seed's step 6: a FAILED job offers Resubmit and Cancel; Resubmit -> PENDING.
            wait_rows(page, lambda rows: {failed, pending} <= set(rows), "the job list")
            select_jobs(page, failed)
            page.locator(".st-key-open_selected button").first.click()
            expect(page.locator(".st-key-detail_cancel button")).to_be_visible()
            page.locator(".st-key-detail_resubmit button").click()
            poll(lambda: status(failed) == JobStatus.PENDING, f"job {failed} to be resubmitted")
            expect(page.get_by_text("Resubmitted 1 job").first).to_be_visible()
            poll(lambda: page.evaluate(SELECTED_COUNT_JS) == 0, "the resubmitted job to leave the selection")

            # Cancel a selected PENDING job -> CANCELLED, and it disappears from the default view.
            select_jobs(page, pending)
            page.locator(".st-key-bulk_cancel button").click()
            page.locator(".st-key-confirm_yes button").click()
            poll(lambda: status(pending) == JobStatus.CANCELLED, f"job {pending} to be cancelled")
            wait_rows(page, lambda rows: pending not in rows, "the cancelled job to leave the list")
            with Queue(url) as q:
                assert q.events(pending)[-1].actor == "browser-test"

            # A FAILED job moved to another queue through its detail's popover (out of a mistyped one).
            moved = sorted(ids[JobStatus.FAILED])[-3]
            select_jobs(page, moved)
            page.locator(".st-key-open_selected button").first.click()
            expect(page.locator(".st-key-job_detail")).to_contain_text(f"Job {moved}")
            page.locator(".st-key-job_detail").get_by_role("button", name="Move").first.click()
            page.locator(".st-key-detail_move_to input").fill("archive")
            page.locator(".st-key-detail_move button").click()
            poll(lambda: queue_of(moved) == "archive", f"job {moved} to be moved")
            expect(page.get_by_text("Moved 1 job").first).to_be_visible()
            with Queue(url) as q:
                assert (q.events(moved)[-1].kind, q.get(moved).status) == ("moved", JobStatus.FAILED)
            page.locator(".st-key-detail_close button").click()

            # A job's detail, for the screenshot: payload, history and the traceback.
            other_failed = sorted(ids[JobStatus.FAILED])[-2]
            select_jobs(page, other_failed)
            page.locator(".st-key-open_selected button").first.click()
            expect(page.locator(".st-key-job_detail")).to_contain_text(f"Job {other_failed}")
            # For a clean screenshot: scroll back to the top, let the toasts fade and the table settle.
            page.locator('[data-testid="stMain"]').evaluate("el => el.scrollTo(0, 0)")
            page.mouse.move(0, 0)
            page.wait_for_timeout(4500)
            page.screenshot(path=str(shots / "manager.png"), full_page=True)

            page.set_viewport_size({"width": 1440, "height": 2600})
            page.goto(f"http://127.0.0.1:{ops_port}/")
            expect(page.get_by_text("jobq ops")).to_be_visible()
            metric = page.locator('.jobq-metric[data-label="Pending"] .value')
            with Queue(url) as q:
                pending_now = q.counts()["PENDING"]
            expect(metric.first).to_contain_text(f"{pending_now:,}")
            expect(page.locator('.jobq-metric[data-label="Failed"]')).to_be_visible()
            expect(page.get_by_text("All clear")).to_be_visible()  # live workers: not lost
            charts = page.locator(".jobq-chart")
            expect(charts).to_have_count(4)  # two columns of two panels each (jobq.web.ops_charts)
            expect(charts.first.locator("img")).to_be_visible()
            page.wait_for_timeout(1500)  # charts animate in: only for a clean screenshot
            page.screenshot(path=str(shots / "ops.png"), full_page=True)
        finally:
            browser.close()
    assert (shots / "manager.png").stat().st_size > 10_000
    assert (shots / "ops.png").stat().st_size > 10_000
