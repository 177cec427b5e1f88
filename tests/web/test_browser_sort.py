"""The manager's job list sorts by a click on a column's header, in Chromium: a first click sorts by
that column (largest or newest first), a second the other way round, and a header can be chosen with
the keyboard; the sidebar's sort follows the header, and the header shows the direction."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    JOB_TABLE,
    UI_TIMEOUT_MS,
    cut_elements,
    free_port,
    need_chromium,
    serve,
    wait_rows,
)
from seeding import MANAGER, REPO

from jobq import Queue

pytestmark = pytest.mark.slow


def _jobs_with_attempts(url: str, attempts: list[int]) -> list[int]:
    """One PENDING job per entry, made in this order, each with that many attempts spent."""
    ids = []
    with Queue(url) as q:
        for n in attempts:
            queue = f"tried-{n}"  # a queue each: a claim takes this job, not an earlier one
            job_id = q.enqueue({"path": f"data/files/{queue}.txt"}, queue=queue, max_attempts=10)
            for _ in range(n):  # each attempt: claimed, then failed and due again at once
                job = q.claim("w", queue=queue)
                assert job is not None and job.id == job_id
                q.fail_many([(job, "again", True)], delays=[0.0])
            ids.append(job_id)
    return ids


def test_a_click_on_a_header_sorts_the_job_list_and_a_second_reverses_it(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from playwright.sync_api import expect, sync_playwright

    need_chromium()
    url = f"sqlite:///{tmp_path}/queue.db"
    ids = _jobs_with_attempts(url, [2, 0, 3, 1])
    by_attempts = [ids[2], ids[0], ids[3], ids[1]]  # 3, 2, 1, 0 attempts
    (tmp_path / ".streamlit").mkdir()
    shutil.copy(REPO / ".streamlit" / "config.toml", tmp_path / ".streamlit" / "config.toml")
    env = {**os.environ, "JOBQ_DATABASE_URL": url, "JOBQ_OPERATOR": "browser-test", "PYTHONUNBUFFERED": "1"}
    env.pop("JOBQ_MANAGER_PASSWORD", None)
    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", str(MANAGER), "--server.headless", "true",
               "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats",
               "false", "--server.fileWatcherType", "none"]  # fmt: skip
    serve(request, command, cwd=tmp_path, env=env, port=port, log_path=tmp_path / "manager.log")

    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 1200})
            page.set_default_timeout(UI_TIMEOUT_MS)
            page.goto(f"http://127.0.0.1:{port}/")

            def header(name: str):  # type: ignore[no-untyped-def]
                return page.locator(f"{JOB_TABLE} th", has_text=name)

            def order_is(expected: list[int], what: str) -> None:
                wait_rows(page, lambda rows: list(rows) == expected, what)

            order_is(ids[::-1], "the newest job first (the default sort)")
            expect(header("id")).to_have_attribute("aria-sort", "descending")
            expect(header("path / payload")).not_to_have_attribute("aria-sort", "descending")

            header("tries").click()
            order_is(by_attempts, "the most attempts first")
            expect(header("tries")).to_have_attribute("aria-sort", "descending")
            expect(page.get_by_label("Sort by", exact=True)).to_have_value("Attempts")  # the sidebar follows
            found = cut_elements(page)  # the header's mark takes room: no header is cut for it at 1366 px
            assert found["checked"] > 10 and found["cut"] == [], found

            header("tries").click()
            order_is(by_attempts[::-1], "the fewest attempts first")
            expect(header("tries")).to_have_attribute("aria-sort", "ascending")

            header("id").focus()  # the keyboard: a header takes the focus, Enter sorts by it
            page.keyboard.press("Enter")
            order_is(ids[::-1], "the newest job first again")
            expect(header("id")).to_have_attribute("aria-sort", "descending")
            header("queue").click()  # not a sort of its own: nothing changes
            expect(header("id")).to_have_attribute("aria-sort", "descending")
            order_is(ids[::-1], "the same order after a click on a header that does not sort")
        finally:
            browser.close()
