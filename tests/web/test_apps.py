"""The manager and ops apps, headless (streamlit.testing.v1.AppTest) on a seeded temporary database."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pandas as pd
import pytest
import streamlit as st
from seeding import MANAGER, OPS, Seeded, html_tables, metric_cards, metrics, ops_frames, run_ops, seed
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.util import patch_config_options

from jobq import JobFilter, JobStatus, Queue, redact
from jobq.web import access, manager, manager_model, safety, views
from jobq.web import job_table as job_table_module

TIMEOUT = 60


def run(path: Path) -> AppTest:
    at = AppTest.from_file(str(path), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def job_table(at: AppTest) -> pd.DataFrame | None:
    """The manager's job list (None when the page shows none): the cells the page sends to its
    table (``jobq.web.job_table``), ids as numbers."""
    tables = [e.proto for e in at.get("bidi_component") if e.proto.component_name == job_table_module.NAME]
    assert len(tables) <= 1
    if not tables:
        return None
    data = json.loads(tables[0].json)
    frame = pd.DataFrame(data["rows"], columns=[c["name"] for c in data["columns"]])
    assert list(frame.columns) == manager_model.TABLE_COLUMNS
    return frame.astype({"id": int})


def row_ids(at: AppTest) -> set[int]:
    table = job_table(at)
    return set() if table is None else {int(i) for i in table["id"]}


def ticked(at: AppTest) -> list[int]:
    """The rows the job list draws ticked, which are also the rows its state reports."""
    [table] = [e.proto for e in at.get("bidi_component") if e.proto.component_name == job_table_module.NAME]
    drawn = json.loads(table.json)["selected"]
    assert at.session_state[at.session_state["_jobs_table"]]["rows"] == drawn
    return list(drawn)


def select(at: AppTest, *job_ids: int) -> AppTest:
    """Tick these rows of the job list, as clicking their check boxes in the browser does (the
    table's state: the positions of the ticked rows; the app maps them to job ids itself)."""
    table = job_table(at)
    assert table is not None
    shown = [int(i) for i in table["id"]]
    at.session_state[at.session_state["_jobs_table"]] = {"rows": [shown.index(i) for i in job_ids]}
    return at.run()


def open_job(at: AppTest, job_id: int) -> AppTest:
    """Open one job's detail: select its row, then the bar's Details button."""
    select(at, job_id)
    return at.button(key="open_selected").click().run()


def act(at: AppTest, verb: str, *job_ids: int) -> AppTest:
    """Resubmit or cancel the selected jobs: select them, the bar's button, confirm."""
    select(at, *job_ids)
    at.button(key=f"bulk_{verb}").click().run()
    return at.button(key="confirm_yes").click().run()


def texts(elements: object) -> str:
    """The elements' text; Markdown bodies read as shown (the apps escape punctuation in untrusted text)."""
    text = "\n".join(str(e.value) for e in elements)  # type: ignore[attr-defined]
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", text).replace(safety.WORD_JOINER, "")


# -- manager ---------------------------------------------------------------------------------------
def test_manager_default_view_shows_actionable_jobs_with_their_buttons(seeded: Seeded) -> None:
    at = run(MANAGER)
    ids = seeded.ids
    shown = row_ids(at)
    assert shown == {*ids[JobStatus.PENDING], *ids[JobStatus.PROCESSING], *ids[JobStatus.FAILED]}
    failed = ids[JobStatus.FAILED][0]
    pending = ids[JobStatus.PENDING][0]
    table = job_table(at)
    assert table is not None and "data/files/broken.txt" in set(table["path / payload"])
    assert table.set_index("id").loc[failed, "status"] == "FAILED"
    # The seed's step 6: a FAILED job offers "Resubmit" and "Cancel"; a PENDING one only "Cancel".
    open_job(at, failed)
    keys = {b.key for b in at.button}
    assert {"detail_resubmit", "detail_cancel"} <= keys
    open_job(at, pending)
    keys = {b.key for b in at.button}
    assert "detail_cancel" in keys and "detail_resubmit" not in keys


def test_resubmit_failed_job_records_the_operator(seeded: Seeded) -> None:
    failed = seeded.ids[JobStatus.FAILED][0]
    at = run(MANAGER)
    open_job(at, failed)
    at.button(key="detail_resubmit").click().run()
    assert not at.exception
    assert seeded.status(failed) == JobStatus.PENDING
    with Queue(seeded.url) as q:
        last = q.events(failed)[-1]
    assert (last.kind, last.actor) == ("resubmitted", "alice")
    assert "Resubmitted 1 job" in texts(at.success)
    assert any("Resubmitted 1 job" in t.value for t in at.toast)


def test_the_detail_moves_a_waiting_job_to_the_queue_typed_and_refuses_a_bad_name(seeded: Seeded) -> None:
    pending = seeded.ids[JobStatus.PENDING][0]
    running = seeded.ids[JobStatus.PROCESSING][0]
    at = run(MANAGER)
    open_job(at, running)
    assert "detail_move" not in {b.key for b in at.button}  # a running job is not moved
    open_job(at, pending)
    at.text_input(key="detail_move_to").input(" mail").run()
    at.button(key="detail_move").click().run()
    assert not at.exception
    assert "the queue to move to must not be empty or begin or end with a space" in texts(at.error)
    with Queue(seeded.url) as q:
        assert q.get(pending).queue == "default"
    at.text_input(key="detail_move_to").input("mail").run()
    at.button(key="detail_move").click().run()
    assert "Moved 1 job." in texts(at.success)
    with Queue(seeded.url) as q:
        assert q.get(pending).queue == "mail"
        last = q.events(pending)[-1]
    assert (last.kind, last.actor, last.detail) == ("moved", "alice", {"from": "default", "to": "mail"})


def test_a_bulk_move_asks_for_the_queue_and_moves_what_it_may(seeded: Seeded) -> None:
    pending = seeded.ids[JobStatus.PENDING][0]
    running = seeded.ids[JobStatus.PROCESSING][0]
    at = run(MANAGER)
    select(at, pending, running)
    at.button(key="bulk_move").click().run()
    at.text_input(key="confirm_move_to").input("mail").run()
    at.button(key="confirm_yes").click().run()
    assert not at.exception
    shown = texts(at.warning)
    assert "Moved 1 job." in shown and f"job {running} not moved: it is running" in shown
    with Queue(seeded.url) as q:
        assert (q.get(pending).queue, q.get(running).queue) == ("mail", "default")


def test_cancel_pending_job_makes_it_disappear(seeded: Seeded) -> None:
    pending = seeded.ids[JobStatus.PENDING][0]
    at = run(MANAGER)
    act(at, "cancel", pending)
    assert seeded.status(pending) == JobStatus.CANCELLED
    assert pending not in row_ids(at)
    assert "0 selected" in texts(at.caption)  # a job acted on leaves the selection


def test_cancel_processing_job_requests_cancellation(seeded: Seeded) -> None:
    running = seeded.ids[JobStatus.PROCESSING][0]
    at = run(MANAGER)
    act(at, "cancel", running)
    with Queue(seeded.url) as q:
        job = q.get(running)
    assert job.status == JobStatus.PROCESSING and job.cancel_requested
    assert "cancellation requested" in texts(at.success)


def test_stale_button_gives_a_readable_error_and_changes_nothing(seeded: Seeded) -> None:
    pending = seeded.ids[JobStatus.PENDING][0]
    at = run(MANAGER)
    select(at, pending)
    at.button(key="bulk_cancel").click().run()
    with Queue(seeded.url) as q:  # someone else cancels it while the page is open
        q.cancel(pending, actor="bob")
        events_before = len(q.events(pending))
    at.button(key="confirm_yes").click().run()
    assert not at.exception
    assert f"job {pending}: cannot cancel a job that is CANCELLED" in texts(at.error)
    with Queue(seeded.url) as q:
        assert len(q.events(pending)) == events_before


def test_bulk_cancel_of_a_selection_asks_first(seeded: Seeded) -> None:
    first, second = seeded.ids[JobStatus.PENDING]
    at = run(MANAGER)
    select(at, first, second)
    assert "2 selected" in texts(at.caption)
    at.button(key="bulk_cancel").click().run()
    assert "Cancel the 2 selected jobs?" in texts(at.warning)
    assert seeded.status(first) == JobStatus.PENDING  # nothing happens before the confirmation
    at.button(key="confirm_yes").click().run()
    assert seeded.status(first) == seeded.status(second) == JobStatus.CANCELLED
    assert "Cancelled 2 jobs" in texts(at.success)
    assert at.session_state["selected"] == set()  # the jobs acted on left the selection


def test_resubmit_all_matching_the_filter(seeded: Seeded, tmp_path: Path) -> None:
    with Queue(seeded.url) as q:  # two more failed jobs
        for name in ("x", "y"):
            q.enqueue({"path": f"data/files/{name}.txt"}, max_attempts=1)
        for _ in range(2):
            job = q.claim("w")
            assert job is not None
            q.fail(job, "boom", retry=False)
        failed = [j.id for j in q.list(JobFilter(statuses=(JobStatus.FAILED,)))]
    assert len(failed) == 3
    at = run(MANAGER)
    at.multiselect(key="statuses").set_value(["FAILED"]).run()
    assert row_ids(at) == set(failed)
    at.button(key="all_resubmit").click().run()
    assert "all 3 jobs matching status FAILED" in texts(at.warning)
    at.button(key="confirm_no").click().run()
    assert all(seeded.status(i) == JobStatus.FAILED for i in failed)
    at.button(key="all_resubmit").click().run()
    at.button(key="confirm_yes").click().run()
    assert all(seeded.status(i) == JobStatus.PENDING for i in failed)
    assert "Resubmitted 3 jobs" in texts(at.success)


def test_resubmit_what_failed_in_the_last_hour_in_one_queue_with_one_error(seeded: Seeded) -> None:
    """The operator's daily task in a few clicks: the filter shown is exactly what is resubmitted."""
    two_hours_ago = time.time() - 7200

    def failed(queue: str, error: str, clock: Any = time.time) -> int:
        with Queue(seeded.url, clock=clock) as q:
            job_id = q.enqueue({"path": f"data/files/{queue}-{error}.txt"}, queue=queue, task="mail", max_attempts=1)
            job = q.claim("w", queue=queue)
            assert job is not None and job.id == job_id
            q.fail(job, f"OSError: {error}", retry=False)
        return job_id

    old = failed("y", "smtp timeout", lambda: two_hours_ago)
    recent = failed("y", "smtp Timeout")
    other = failed("y", "mailbox full")
    elsewhere = failed("z", "smtp timeout")
    at = run(MANAGER)
    at.multiselect(key="statuses").set_value(["FAILED"]).run()
    at.multiselect(key="queues").set_value(["y"]).run()
    at.text_input(key="error").input("timeout").run()
    at.selectbox(key="time_range").set_value("Last hour").run()
    assert row_ids(at) == {recent}
    assert "of 1 matching jobs" in texts(at.caption)
    at.button(key="all_resubmit").click().run()
    assert "all 1 jobs matching status FAILED, queue y, last error containing 'timeout', finished since" in texts(
        at.warning
    )
    at.button(key="confirm_yes").click().run()
    assert seeded.status(recent) == JobStatus.PENDING
    assert {seeded.status(i) for i in (old, other, elsewhere)} == {JobStatus.FAILED}
    assert "Resubmitted 1 job" in texts(at.success)


def test_a_link_opens_the_filter_and_the_job_it_names_and_follows_changes(seeded: Seeded) -> None:
    failed = seeded.ids[JobStatus.FAILED]
    at = AppTest.from_file(str(MANAGER), default_timeout=TIMEOUT)
    at.query_params["status"] = "failed"
    at.query_params["job"] = str(failed[0])
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert row_ids(at) == set(failed)
    assert at.multiselect(key="statuses").value == ["FAILED"]
    assert any(b.key == "detail_close" for b in at.button)  # the job named in the link is open
    at.text_input(key="error").input("boom").run()
    assert at.query_params["error"] == "boom" and at.query_params["status"] == "FAILED"


def test_filters_search_and_paging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path}/queue.db"
    ids = seed(url, pending=30)
    monkeypatch.setenv("JOBQ_DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)
    at = run(MANAGER)
    at.selectbox(key="page_size").set_value(10).run()
    first_page = row_ids(at)
    assert len(first_page) == 10
    assert "of 32 matching jobs" in texts(at.caption)  # 30 pending + processing + failed
    assert hasattr(at, "pagination") and len(at.pagination) == 2  # above and below the list
    shown = sorted([*ids[JobStatus.PENDING], *ids[JobStatus.PROCESSING], *ids[JobStatus.FAILED]], reverse=True)
    at.pagination[0].set_value(4).run()
    assert row_ids(at) == set(shown[30:])
    assert at.pagination[1].value == 4  # the bottom pager shows the same page
    at.pagination[1].set_value(2).run()  # and moves the top one
    assert row_ids(at) == set(shown[10:20]) and at.pagination[0].value == 2
    at.text_input(key="search").input("waiting-17").run()
    assert row_ids(at) == {ids[JobStatus.PENDING][17]}
    at.text_input(key="search").input("").run()
    at.multiselect(key="statuses").set_value(["COMPLETED", "CANCELLED"]).run()
    assert row_ids(at) == {*ids[JobStatus.COMPLETED], *ids[JobStatus.CANCELLED]}


def test_selection_survives_paging_and_refresh_and_select_page_adds_the_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path}/queue.db"
    seed(url, pending=30)
    monkeypatch.setenv("JOBQ_DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)
    at = run(MANAGER)
    at.selectbox(key="page_size").set_value(10).run()
    first_page = sorted(row_ids(at), reverse=True)
    select(at, first_page[0], first_page[3])
    assert "2 selected" in texts(at.caption)
    at.run()  # what the auto-refresh does: the selection stays
    assert "2 selected" in texts(at.caption)
    at.pagination[0].set_value(2).run()
    second_page = sorted(row_ids(at), reverse=True)
    assert "2 selected" in texts(at.caption) and not set(first_page) & set(second_page)
    select(at, second_page[1])
    assert at.session_state["selected"] == {first_page[0], first_page[3], second_page[1]}
    at.pagination[0].set_value(1).run()  # back: the table starts from the kept selection
    shown = sorted(row_ids(at), reverse=True)
    assert ticked(at) == [
        shown.index(first_page[0]),
        shown.index(first_page[3]),
    ]
    at.button(key="select_page").click().run()
    assert at.session_state["selected"] == {*first_page, second_page[1]} and "11 selected" in texts(at.caption)
    assert len(ticked(at)) == 10
    at.button(key="bulk_resubmit").click().run()
    assert "Resubmit the 11 selected jobs?" in texts(at.warning)
    at.button(key="confirm_no").click().run()
    at.button(key="clear_selection").click().run()
    assert "0 selected" in texts(at.caption)
    assert ticked(at) == []


def test_job_detail_shows_payload_events_and_traceback(seeded: Seeded) -> None:
    failed = seeded.ids[JobStatus.FAILED][0]
    at = run(MANAGER)
    open_job(at, failed)
    assert f"Job {failed}" in texts(at.markdown)
    assert '"path": "data/files/broken.txt"' in texts(at.code)
    code = texts(at.code)
    assert "Traceback (most recent call last)" in code and "disk quota exceeded" in code
    (events,) = html_tables(at)
    assert list(events["event"]) == ["enqueued", "claimed", "failed"]
    assert not at.dataframe
    at.button(key="detail_resubmit").click().run()
    assert seeded.status(failed) == JobStatus.PENDING
    at.button(key="detail_close").click().run()
    assert f"Job {failed}" not in texts(at.markdown)


def test_enqueue_by_path_validates_it(seeded: Seeded, tmp_path: Path) -> None:
    files = tmp_path / "data" / "files"
    files.mkdir(parents=True)
    (files / "manual.txt").write_text("hello\n")
    (tmp_path / "secret.txt").write_text("no\n")
    at = run(MANAGER)
    with Queue(seeded.url) as q:
        before = q.count()
    # The expander is lazy: closed, its form is not drawn; opened, it is.
    assert "enqueue_path" not in [t.key for t in at.text_input]
    at.session_state[manager.ENQUEUE_OPEN] = True
    at.run()
    at.text_input(key="enqueue_path").input("../secret.txt").run()
    at.button(key="enqueue_submit").click().run()
    assert "Not enqueued" in texts(at.error)
    at.text_input(key="enqueue_path").input("data/files/manual.txt").run()
    at.button(key="enqueue_submit").click().run()
    assert "Enqueued job" in texts(at.success)
    with Queue(seeded.url) as q:
        assert q.count() == before + 1
        newest = q.list(page=None)[0]
    assert newest.payload == {"path": "data/files/manual.txt"} and newest.task == "stamp"
    assert newest.idempotency_key == "file:files/manual.txt"  # as the producer keys its files
    # A second click (a double click, or a file the producer already submitted) makes no second
    # job: the file would be stamped twice. The warning names the job to resubmit instead.
    at.text_input(key="enqueue_path").input("data/files/manual.txt").run()
    at.button(key="enqueue_submit").click().run()
    assert f"data/files/manual.txt is job {newest.id} already" in texts(at.warning)
    with Queue(seeded.url) as q:
        assert q.count() == before + 1


def test_action_messages_stay_through_refreshes_for_a_while(seeded: Seeded, tmp_path: Path) -> None:
    # The messages were drawn once, in the job list's fragment, and gone with its next run: a
    # refresh every 5 s, or any click. A browser test missed "Enqueued job" so under load.
    files = tmp_path / "data" / "files"
    files.mkdir(parents=True)
    for name in ("a.txt", "b.txt"):
        (files / name).write_text("hello\n")
    at = run(MANAGER)
    at.session_state[manager.ENQUEUE_OPEN] = True
    at.run()
    at.text_input(key="enqueue_path").input("data/files/a.txt").run()
    at.button(key="enqueue_submit").click().run()
    assert "Enqueued job" in texts(at.success)
    at.run()  # a refresh, or a click elsewhere
    assert "Enqueued job" in texts(at.success) and "for data/files/a.txt" in texts(at.success)
    # At most FLASH_SHOWN_MAX at once, the newest.
    for path in ("../x", "data/files/a.txt", "data/files/b.txt"):
        at.text_input(key="enqueue_path").input(path).run()
        at.button(key="enqueue_submit").click().run()
    shown = [*at.success, *at.warning, *at.error]
    assert len(shown) == manager.FLASH_SHOWN_MAX
    assert "for data/files/a.txt" not in texts(at.success) and "for data/files/b.txt" in texts(at.success)
    assert "data/files/a.txt is job" in texts(at.warning) and "Not enqueued" in texts(at.error)
    # Gone once their time is up.
    at.session_state[manager.FLASHES_SHOWN] = [
        (level, text, 0.0) for level, text, _ in at.session_state[manager.FLASHES_SHOWN]
    ]
    at.run()
    assert not [*at.success, *at.warning, *at.error]


def page_text(at: AppTest) -> str:
    """Everything the page holds for the browser (every element's and block's message), as text."""
    return "\n".join(str(getattr(node, "proto", "")) for node in at._tree)


def test_password_hides_the_queue_until_it_is_entered(seeded: Seeded, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBQ_MANAGER_PASSWORD", "s3cret")
    failed = seeded.ids[JobStatus.FAILED][0]
    at = run(MANAGER)
    shown = page_text(at)
    # Nothing of the queue: no job, no count, no database, no action; only the login form.
    for absent in ("broken.txt", "waiting-0", "queue.db", "PENDING", "Resubmit", "Enqueue"):
        assert absent not in shown, absent
    assert row_ids(at) == set() and [b.label for b in at.button] == ["Unlock"]
    at.text_input(key="login_password").input("wrong")
    at.button[0].click().run()
    assert "Wrong password" in texts(at.error) and row_ids(at) == set()
    assert "broken.txt" not in page_text(at)
    at.text_input(key="login_password").input("s3cret")
    at.button[0].click().run()
    assert failed in row_ids(at)
    assert "login_password" not in {t.key for t in at.text_input}  # the form is gone once unlocked
    act(at, "resubmit", failed)
    assert seeded.status(failed) == JobStatus.PENDING
    at.button(key="lock").click().run()
    assert row_ids(at) == set() and "broken.txt" not in page_text(at)


def test_a_wrong_password_is_delayed_more_each_time_and_logged_without_the_guess(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("JOBQ_MANAGER_PASSWORD", "s3cret")
    at = run(MANAGER)
    took = []
    for guess in ("guess-one", "guess-two"):
        at.text_input(key="login_password").input(guess)
        started = time.monotonic()
        at.button[0].click().run()
        took.append(time.monotonic() - started)
    first, second = access.LOGIN_GUARD.delay(1), access.LOGIN_GUARD.delay(2)
    assert (first, second) == (access.LOGIN_DELAY_SECONDS_FIRST, 2 * access.LOGIN_DELAY_SECONDS_FIRST)
    assert took[0] >= first and took[1] >= second, took
    logged = [r.getMessage() for r in caplog.records if r.name == "jobq.web.login"]
    assert len(logged) == 2, logged
    assert all("manager: wrong password from session " in m for m in logged), logged
    assert "2 wrong in a row" in logged[1]
    assert not any("guess" in m or "s3cret" in m for m in logged), logged
    # The guess is not kept in the session either.
    assert at.text_input(key="login_password").value == ""


def test_ops_has_its_own_password_or_the_managers(seeded: Seeded, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBQ_MANAGER_PASSWORD", "manager-pw")
    at = run(OPS)
    assert not metrics(at) and not at.dataframe and "queue.db" not in page_text(at)
    at.text_input(key="login_password").input("manager-pw")
    at.button[0].click().run()
    assert metrics(at)["Pending"] == "2"

    monkeypatch.setenv("JOBQ_OPS_PASSWORD", "ops-pw")
    at = run(OPS)
    assert not metrics(at)
    at.text_input(key="login_password").input("manager-pw")
    at.button[0].click().run()
    assert not metrics(at) and "Wrong password" in texts(at.error)
    at.text_input(key="login_password").input("ops-pw")
    at.button[0].click().run()
    assert metrics(at)["Pending"] == "2"


@pytest.mark.parametrize("app", [MANAGER, OPS])
@pytest.mark.parametrize(("address", "password", "serves"), [
    (None, None, False),  # unset: Streamlit listens on every interface
    (None, "pw", False),  # ... a password does not make an implicit exposure deliberate
    ("0.0.0.0", None, False),
    ("0.0.0.0", "pw", True),  # explicit address and a password: a deliberate exposure
    ("::1", None, True),
    ("unix:///run/jobq.sock", None, True),
])  # fmt: skip
def test_apps_refuse_to_serve_beyond_loopback_without_a_password(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch, app: Path, address: str | None, password: str | None, serves: bool
) -> None:
    if password:
        monkeypatch.setenv("JOBQ_MANAGER_PASSWORD", password)
    with patch_config_options({"server.address": address}):
        at = run(app)
    text = page_text(at)
    assert ("refuses to serve" in texts(at.error)) is not serves
    if not serves:
        assert "queue.db" not in text and "broken.txt" not in text and not metrics(at) and not at.button
        assert "JOBQ_MANAGER_PASSWORD" in texts(at.error) and "--server.address 127.0.0.1" in texts(at.error)
    elif password:
        assert [b.label for b in at.button] == ["Unlock"]


def test_a_foreign_host_header_gets_nothing(seeded: Seeded) -> None:
    """Where Streamlit's server.allowedHosts is not configured, the page itself refuses a foreign Host."""
    at = AppTest.from_file(str(MANAGER), default_timeout=TIMEOUT)
    with patch.object(type(st.context), "headers", property(lambda self: {"Host": "evil.example:8501"})):
        at.run()
    assert not at.exception
    assert "host name the app does not answer to" in texts(at.error)
    assert row_ids(at) == set() and "broken.txt" not in page_text(at)


def test_operator_name_from_the_sidebar(seeded: Seeded) -> None:
    pending = seeded.ids[JobStatus.PENDING][0]
    at = run(MANAGER)
    assert at.text_input(key="operator").value == "alice"
    at.text_input(key="operator").input("carol").run()
    act(at, "cancel", pending)
    with Queue(seeded.url) as q:
        assert q.events(pending)[-1].actor == "carol"


def test_operator_name_is_stored_without_control_or_bidi_characters_and_cut(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    pending, other = seeded.ids[JobStatus.PENDING]
    failed = seeded.ids[JobStatus.FAILED][0]
    at = run(MANAGER)
    at.text_input(key="operator").input("mal\u202elory\x1b[31m\n\u200b\u2066 ops").run()
    act(at, "cancel", pending)
    act(at, "resubmit", failed)
    with Queue(seeded.url) as q:
        actors = {q.events(pending)[-1].actor, q.events(failed)[-1].actor}
    assert actors == {"mallory[31m ops"}, actors
    assert f"acting as **{safety.md_literal('mallory[31m ops')}**" in at.caption[0].value

    # A name longer than the text box allows (from JOBQ_OPERATOR) is cut.
    monkeypatch.setenv("JOBQ_OPERATOR", "\u202e" + "y" * 500)
    at = run(MANAGER)
    act(at, "cancel", other)
    with Queue(seeded.url) as q:
        assert q.events(other)[-1].actor == "y" * manager_model.OPERATOR_NAME_CHARS


@pytest.mark.parametrize("app", [MANAGER, OPS])
def test_unusable_database_is_a_readable_error(app: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "corrupt.db"
    bad.write_bytes(b"this is not a database at all" * 200)
    monkeypatch.setenv("JOBQ_DATABASE_URL", f"sqlite:///{bad}")
    monkeypatch.chdir(tmp_path)
    at = AppTest.from_file(str(app), default_timeout=TIMEOUT).run()
    assert not at.exception
    assert "Cannot open the job queue" in texts(at.error)
    assert "not a SQLite database" in texts(at.error)


@pytest.mark.parametrize("app", [MANAGER, OPS])
def test_apps_report_a_missing_database_instead_of_creating_it(
    app: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nowhere" / "queue.db"
    monkeypatch.setenv("JOBQ_DATABASE_URL", f"sqlite:///{missing}")
    monkeypatch.chdir(tmp_path)
    at = AppTest.from_file(str(app), default_timeout=TIMEOUT).run()
    assert not at.exception
    assert "no database at" in texts(at.error)
    assert not missing.exists()


# -- ops -------------------------------------------------------------------------------------------
def test_ops_shows_counts_charts_workers_and_alerts(seeded: Seeded) -> None:
    at = run(OPS)
    cards = metric_cards(at)
    shown = {label: card["value"] for label, card in cards.items()}
    assert shown["Pending"] == "2"
    assert shown["Failed"] == "1"
    assert shown["Completed"] == "1"
    assert shown["Due now"] == "2"
    assert cards["Due now"]["note"] == "0 scheduled"
    assert shown["Workers alive"] == "2 / 2"
    charts = "".join(e.proto.body for e in at.get("html") if "jobq-charts" in e.proto.body)
    assert charts.count('<figure class="jobq-chart">') == 4 and charts.count("<img") == 4  # jobq.web.ops_charts
    # Only the open tab of tables is drawn: the first, Queues, as a plain HTML table.
    assert not at.dataframe and len(html_tables(at)) == 1
    frames = ops_frames(TIMEOUT)
    workers = next(f for f in frames if "restarts" in f.columns)
    assert dict(zip(workers["id"], workers["restarts"], strict=True))["consumer1-new"] == 1
    jobs = next(f for f in frames if "path / payload" in f.columns)
    assert set(jobs["status"]) == {s.value for s in JobStatus}
    health = next(f for f in frames if "live workers" in f.columns).set_index("queue")
    assert health.loc["default", "due"] == 2 and health.loc["default", "live workers"] == 2
    assert "All clear" in texts(at.success)
    assert not at.button  # read-only: no actions at all
    # The seed's one claimed job waited for its claim; without JOBQ_MANAGER_URL jobs show the command.
    assert health.loc["default", "wait p50"] != "-"
    assert set(jobs["id"]) == {f"jobq show {i}" for ids in seeded.ids.values() for i in ids}


def test_ops_links_jobs_to_the_manager_where_its_url_is_set(seeded: Seeded, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBQ_MANAGER_URL", "http://localhost:8501")
    frames = ops_frames(TIMEOUT)
    jobs = next(f for f in frames if "path / payload" in f.columns)
    failed = seeded.ids[JobStatus.FAILED][0]
    assert f"http://localhost:8501/?job={failed}" in set(jobs["id"])
    events = next(f for f in frames if "event" in f.columns)
    assert all(str(link).startswith("http://localhost:8501/?job=") for link in events["job"])
    monkeypatch.setenv("JOBQ_MANAGER_URL", "javascript:alert(1)")
    at = run(OPS)
    assert "not an http(s) URL" in texts(at.warning), texts(at.warning)  # said, and nothing linked to it


def test_ops_alerts_on_expired_lease_and_lost_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path}/queue.db"
    seed(url)
    with Queue(url) as q:
        q.enqueue({"path": "data/files/stuck.txt"})
        # claimed with a lease that has already run out: the worker "died"
        q.claim_many("ghost", 5, lease=0.001)
        from jobq import WorkerInfo

        q.register_worker(
            WorkerInfo(id="c3", name="consumer3", host="h", pid=7, queues=("default",),
                       started_at=time.time() - 900, last_seen_at=time.time() - 600)
        )  # fmt: skip
    monkeypatch.setenv("JOBQ_DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)
    time.sleep(0.01)  # let the 1 ms lease run out (not a wait for an outcome)
    at = run(OPS)
    assert "PROCESSING with an expired lease" in texts(at.error)
    assert "Lost worker (no heartbeat): consumer3" in texts(at.warning)


@pytest.mark.slow
def test_both_apps_render_with_100k_jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path}/queue.db"
    with Queue(url) as q:
        for start in range(0, 100_000, 10_000):
            q.enqueue_many([{"path": f"data/files/f{i}.txt"} for i in range(start, start + 10_000)], task="stamp")
        for job in q.claim_many("bench", 2_000):
            q.complete(job)
    monkeypatch.setenv("JOBQ_DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)
    started = time.perf_counter()
    at = run(MANAGER)
    manager_seconds = time.perf_counter() - started
    # More than the list's window (a smaller one here: the one it has is 50,000) match: the list
    # says so, and reads and sorts the newest of them only.
    window = 20_000
    monkeypatch.setattr(manager_model, "LIST_WINDOW", window)
    at = run(MANAGER)
    caption = texts(at.caption)
    assert f"of {window:,}+ matching jobs (the newest {window:,} are listed" in caption, caption
    assert at.button(key="all_cancel").label == f"Cancel all {window:,}+ matching…"
    at.button(key="all_cancel").click().run()
    assert f"Cancel all {window:,}+ jobs matching" in texts(at.warning)
    assert at.button(key="confirm_yes").label == f"Yes, cancel {window:,}+"
    at.button(key="confirm_no").click().run()
    assert f"page 1 of {window // 25:,}" in caption
    at.sidebar.selectbox(key="sort").select("Created").run()
    at.sidebar.toggle(key="descending").set_value(False).run()
    assert min(row_ids(at)) == 100_000 - window + 1  # the oldest of the newest 20,000
    at.text_input(key="search").input("f99999.").run()
    assert len(row_ids(at)) == 1
    assert "of 1 matching jobs" in texts(at.caption)
    started = time.perf_counter()
    at = run(OPS)
    ops_seconds = time.perf_counter() - started
    assert metrics(at)["Pending"] == "98,000"
    print(f"\n100k jobs: manager first render {manager_seconds:.2f} s, ops first render {ops_seconds:.2f} s")


# -- the database URL's password ------------------------------------------------------------------
def _with_secrets(url: str) -> str:
    """``url`` with a password (kept if it has one: the test server trusts loopback) and a secret option."""
    parts = urllib.parse.urlsplit(url)
    if "@" in parts.netloc and ":" not in parts.netloc.rsplit("@", 1)[0]:
        user, host = parts.netloc.rsplit("@", 1)
        parts = parts._replace(netloc=f"{user}:SECRET-pw@{host}")
    query = "&".join(q for q in (parts.query, "sslpassword=SECRET-ssl") if q)
    return urllib.parse.urlunsplit(parts._replace(query=query))


@pytest.mark.postgres
@pytest.mark.parametrize("app", [MANAGER, OPS])
def test_the_database_password_never_reaches_the_page(
    app: Path, postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _with_secrets(postgres_url)
    seed(url)
    monkeypatch.setenv("JOBQ_DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)
    at = run(app)
    assert row_ids(at) if app == MANAGER else metrics(at)  # the page is drawn, with its data
    page = page_text(at)
    secrets = redact.secrets_of(url)
    assert "SECRET-ssl" in secrets and not [s for s in secrets if s in page]
    assert views.database_line(url) in texts(at.caption)  # the database is named, masked


@pytest.mark.parametrize("app", [MANAGER, OPS])
def test_an_unreachable_database_is_named_without_its_password(
    app: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBQ_DATABASE_URL", "postgresql://jobq:SECRET-pw@127.0.0.1:1/jobq?sslpassword=SECRET-ssl")
    monkeypatch.chdir(tmp_path)
    at = run(app)
    assert "Cannot open the job queue" in texts(at.error)
    assert "SECRET" not in page_text(at)


def test_ops_latest_jobs_filter_by_status(seeded: Seeded) -> None:
    """The latest-jobs table's status filter redraws the open tab (the tabs' fragment) alone."""
    at = run_ops("Latest jobs")

    def latest() -> pd.DataFrame:
        (frame,) = [d.value for d in at.dataframe if "path / payload" in d.value.columns]
        return frame

    assert set(latest()["status"]) == {s.value for s in JobStatus}
    at.button_group(key="jobs_status").set_value("FAILED").run()
    assert not at.exception
    assert list(latest()["status"]) == ["FAILED"] * len(seeded.ids[JobStatus.FAILED])


def test_the_apps_read_a_queue_on_a_read_only_mount(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ops app's usual place: the queue's volume mounted read-only. Both apps draw their
    pages from it; the manager's cancel is refused with a readable message and changes nothing.
    A read-only *mount* (root ignores file permissions); skipped where `mount` is not permitted."""
    fs = tmp_path / "fs"
    fs.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(fs)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        url = f"sqlite:///{fs}/queue.db"
        ids = seed(url)
        subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
        monkeypatch.setenv("JOBQ_DATABASE_URL", url)
        monkeypatch.setenv("JOBQ_OPERATOR", "alice")
        monkeypatch.chdir(tmp_path)
        at = run(MANAGER)
        assert row_ids(at) == {*ids[JobStatus.PENDING], *ids[JobStatus.PROCESSING], *ids[JobStatus.FAILED]}
        pending = ids[JobStatus.PENDING][0]
        act(at, "cancel", pending)
        assert not at.exception, [e.value for e in at.exception]
        assert "read-only" in texts([*at.error, *at.warning]), texts([*at.error, *at.warning])
        frames = ops_frames()
        assert frames and not frames[0].empty
        with Queue(url) as q:
            assert q.get(pending).status is JobStatus.PENDING  # type: ignore[union-attr]
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(fs)], capture_output=True)
        subprocess.run(["umount", "-l", str(fs)], check=True)
