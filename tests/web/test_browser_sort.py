"""The manager's job list sorts by a click on a column's header, in Chromium: a first click sorts by
that column (largest or newest first), a second the other way round, and a header can be chosen with
the keyboard; the sidebar's sort follows the header, and the header shows the direction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from browser import (
    JOB_TABLE,
    chromium_page,
    cut_elements,
    cut_headers,
    poll,
    serve_app,
    wait_rows,
)
from seeding import MANAGER

from jobq import Queue

pytestmark = pytest.mark.slow

#: [header, direction] of each marked header of the job list (every table shown: one when drawn).
SORTED_JS = """(table) => [...document.querySelectorAll(table + ' th[aria-sort]')]
  .map(th => [th.textContent.trim(), th.getAttribute('aria-sort')])"""


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
    from playwright.sync_api import expect

    url = f"sqlite:///{tmp_path}/queue.db"
    ids = _jobs_with_attempts(url, [2, 0, 3, 1])
    by_attempts = [ids[2], ids[0], ids[3], ids[1]]  # 3, 2, 1, 0 attempts
    port = serve_app(request, MANAGER, tmp_path, url)

    with chromium_page(1366, 1200) as page:
        page.goto(f"http://127.0.0.1:{port}/")

        def header(name: str) -> Any:
            # While Streamlit redraws the list the old table can stand beside the new one for
            # a moment: act once one header matches.
            found = page.locator(f"{JOB_TABLE} th", has_text=name)
            poll(lambda: found.count() == 1, f"one {name!r} header")
            return found

        def sorted_by(name: str, direction: str) -> None:
            """Only ``name``'s header is marked, in ``direction`` (the list redrawn once), and
            no header is cut for the mark at 1366 px (it was: "tri…")."""
            poll(lambda: page.evaluate(SORTED_JS, JOB_TABLE) == [[name, direction]], f"{name} {direction}")
            assert cut_headers(page) == []

        def order_is(expected: list[int], what: str) -> None:
            wait_rows(page, lambda rows: list(rows) == expected, what)

        order_is(ids[::-1], "the newest job first (the default sort)")
        sorted_by("id", "descending")

        header("tries").click()
        order_is(by_attempts, "the most attempts first")
        sorted_by("tries", "descending")
        expect(page.get_by_label("Sort by", exact=True)).to_have_value("Attempts")  # the sidebar follows
        found = cut_elements(page)  # the header's mark takes room: no header is cut for it at 1366 px
        assert found["checked"] > 10 and found["cut"] == [], found

        header("tries").click()
        order_is(by_attempts[::-1], "the fewest attempts first")
        sorted_by("tries", "ascending")

        header("id").focus()  # the keyboard: a header takes the focus, Enter sorts by it
        page.keyboard.press("Enter")
        order_is(ids[::-1], "the newest job first again")
        sorted_by("id", "descending")
        header("queue").click()  # not a sort of its own: nothing changes
        sorted_by("id", "descending")
        order_is(ids[::-1], "the same order after a click on a header that does not sort")
        for name in ("created", "finished", "status"):  # each sorting header, marked
            header(name).click()
            sorted_by(name, "descending")
