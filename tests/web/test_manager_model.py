"""The manager's model (jobq.web.manager_model): filters, action summaries, operator, manual paths."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from jobq import ActionResult, ActionResults, Job, JobFilter, JobStatus
from jobq.job import operator_actions
from jobq.web import manager_model, views


def test_legal_buttons_follow_the_transition_table() -> None:
    assert [s for s in JobStatus if "resubmit" in operator_actions(s)] == [
        JobStatus.COMPLETED,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
    ]
    assert [s for s in JobStatus if "cancel" in operator_actions(s)] == [
        JobStatus.PENDING,
        JobStatus.PROCESSING,
        JobStatus.FAILED,
    ]


def test_filter_and_its_description() -> None:
    where = manager_model.build_filter(["FAILED"], ["default"], "  a.txt ")
    assert where == JobFilter(statuses=(JobStatus.FAILED,), queues=("default",), search="a.txt")
    assert manager_model.describe_filter(where) == "status FAILED, queue default, payload containing 'a.txt'"
    assert manager_model.describe_filter(manager_model.build_filter()) == "all jobs"
    assert manager_model.page_count(0, 25) == 1 and manager_model.page_count(101, 25) == 5


def test_a_count_past_the_lists_window_reads_more_than_and_its_pages_end_there() -> None:
    """A windowed count (``Page.window``) stops at window + 1: that reads "N+" (more than the window),
    and the pager ends at the window's last page (a page past it would be empty)."""
    window = manager_model.LIST_WINDOW
    assert manager_model.count_label(window, window) == f"{window:,}"
    assert manager_model.listed(window, window) == window
    assert manager_model.count_label(window + 1, window) == f"{window:,}+"
    assert manager_model.listed(window + 1, window) == window
    assert manager_model.count_label(1_234_567, None) == "1,234,567" and manager_model.listed(7, None) == 7
    assert manager_model.page_count(manager_model.listed(window + 1, window), 25) == window // 25


def test_filter_by_task_error_and_time_is_absolute_and_described() -> None:
    now = 1_800_000_000.0
    where = manager_model.build_filter(
        ["FAILED"], ["y"], tasks=["resize", " ", ""], error=" Timeout ", time_range="Last hour", now=now
    )
    assert where == JobFilter(
        statuses=(JobStatus.FAILED,), queues=("y",), tasks=("resize",), error="Timeout", finished_after=now - 3600
    )
    described = manager_model.describe_filter(where)
    assert described.startswith("status FAILED, queue y, task resize, last error containing 'Timeout', finished since ")
    assert views.fmt_time(now - 3600) in described
    created = manager_model.build_filter(time_range="Last 15 minutes", time_field="created", now=now)
    assert (created.created_after, created.finished_after) == (now - 900, None)
    assert manager_model.build_filter(time_range="Any time", now=now) == JobFilter()


def test_history_names_workers_and_shows_dates() -> None:
    from jobq import Event

    at = 1_800_000_000.0
    events = [
        Event(1, 7, at, "claimed", "vm-42-ab12", 1, {}),
        Event(2, 7, at + 1, "retry_scheduled", "vm-42-ab12", 1, {"retry_at": at + 60}),
        Event(3, 7, at + 2, "resubmitted", "alice", 1, {}),
    ]
    frame = manager_model.events_frame(events, {"vm-42-ab12": "consumer1"})
    assert list(frame["actor"]) == ["consumer1 (vm-42-ab12)", "consumer1 (vm-42-ab12)", "alice"]
    assert frame["detail"][1] == f"retry_at={views.fmt_time(at + 60)}"


def test_summaries_of_action_results() -> None:
    ok = ActionResult(1, True, JobStatus.PENDING, "resubmitted")
    bad = ActionResult(2, False, JobStatus.PENDING, "job 2: cannot resubmit a job that is PENDING")
    missing = ActionResult(3, False, None, "")
    assert manager_model.summarize([ok], "Resubmit") == manager_model.Outcome("success", "Resubmitted 1 job.", 1, 0)
    mixed = manager_model.summarize([ok, bad, missing], "Resubmit")
    assert mixed.level == "warning" and "2 refused" in mixed.message and "job 3 not found" in mixed.message
    assert manager_model.summarize([bad], "Resubmit").level == "error"
    assert manager_model.summarize([], "Cancel").level == "warning"
    many = [ActionResult(i, False, None) for i in range(10, 20)]
    listed = manager_model.summarize([ok, *many], "Cancel")
    assert listed == manager_model.Outcome(
        "warning", "Cancelled 1 job. 10 refused, nothing changed for them: job 10 not found; job 11 not found; "
        "job 12 not found; and 7 more.", 1, 10,
    )  # fmt: skip


def test_a_summary_of_many_results_reads_them_without_keeping_them() -> None:
    """ "Cancel all matching" may act on millions of jobs: the summary counts them in one pass,
    not in lists of ActionResult objects (~110 bytes each; 200,000 of them: ~22 MB)."""
    import tracemalloc

    results = ActionResults(
        ActionResult(i, True, JobStatus.CANCELLED, "cancelled") for i in range(10**12, 10**12 + 200_000)
    )
    tracemalloc.start()
    try:
        outcome = manager_model.summarize(results, "Cancel")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert outcome == manager_model.Outcome("success", "Cancelled 200,000 jobs.", 200_000, 0)
    assert peak < 1_000_000, f"{peak:,} B"


def test_operator() -> None:
    assert manager_model.resolve_operator("  carol ", {"JOBQ_OPERATOR": "alice"}) == "carol"
    assert manager_model.resolve_operator("", {"JOBQ_OPERATOR": "alice"}) == "alice"
    assert manager_model.resolve_operator(None, {}) == manager_model.login_name()


def test_manual_path_validation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "files").mkdir(parents=True)
    (tmp_path / "data" / "files" / "a.txt").write_text("a\n")
    (tmp_path / "outside.txt").write_text("no\n")
    assert manager_model.validate_path("data/files/a.txt", "data") == "data/files/a.txt"
    for bad in ("", "../outside.txt", "data/files/missing.txt", str(tmp_path / "outside.txt")):
        with pytest.raises(ValueError):
            manager_model.validate_path(bad, "data")


def test_operator_names_are_cleaned_and_cut() -> None:
    assert manager_model.clean_operator(" mal\u202elory\x1b\n  ops ") == "mallory ops"
    assert manager_model.clean_operator("z" * 500) == "z" * manager_model.OPERATOR_NAME_CHARS
    assert manager_model.resolve_operator("\u202e\u200b", {"JOBQ_OPERATOR": "al\x00ice"}) == "alice"


def test_a_link_carries_the_filter_and_the_open_job_and_reads_back() -> None:
    state = {
        "statuses": ["FAILED"],
        "queues": ["y"],
        "tasks": "mail",
        "search": "",
        "error": "timeout",
        "time_range": "Last hour",
        "time_field": "finished",
        "detail": 42,
    }
    params = manager_model.link_params(state)
    assert params == {
        "status": "FAILED",
        "queue": "y",
        "task": "mail",
        "error": "timeout",
        "time": "Last hour",
        "time_of": "finished",
        "job": "42",
    }
    back = manager_model.state_from_link(params, ["default", "y"])
    assert back == {k: v for k, v in state.items() if k != "search"}
    default = {"statuses": [s.value for s in manager_model.DEFAULT_STATUSES], "time_range": "Any time"}
    assert manager_model.link_params(default) == {}
    # Nonsense in a link is left out, never an error.
    assert manager_model.state_from_link({"status": "failed,bogus", "queue": "nope", "time": "x", "job": "7a"}, []) == {
        "statuses": ["FAILED"],
        "queues": [],
    }


def test_the_job_table_keeps_the_selection_of_other_pages() -> None:
    page = [9, 8, 7]
    assert manager_model.merge_selection({1, 8}, page, [0, 2]) == {1, 9, 7}
    assert manager_model.merge_selection({1, 8}, page, []) == {1}
    assert manager_model.merge_selection(set(), page, [5]) == set()  # a row that is gone meanwhile
    assert manager_model.selected_rows({1, 7, 9}, page) == [0, 2]


def test_the_job_table_shows_plain_short_cells() -> None:
    job = Job(
        5, "q\u202eueue", "mail", {"path": "data/files/a.txt"}, JobStatus.PROCESSING, 1, 100.0, 0, 3, 100.0, 100.0
    )
    job = dataclasses.replace(job, attempts=1, cancel_requested=True, last_error="Traceback...\nOSError: boom")
    frame = manager_model.jobs_table([job], now=100.0)
    assert list(frame.columns) == manager_model.TABLE_COLUMNS
    row = frame.iloc[0].to_dict()
    assert row["id"] == 5 and row["status"] == "PROCESSING cancelling" and row["tries"] == "1/3"
    assert row["path / payload"] == "data/files/a.txt" and "\u202e" not in row["queue"]
    assert row["last error"] == "OSError: boom" and row["finished"] == views.DASH
    # A queue no worker can serve (an older jobq's, or written by hand): quoted, not a blank cell.
    blank = manager_model.jobs_table([dataclasses.replace(job, queue="")], now=100.0)
    assert blank.iloc[0]["queue"] == "''"


def test_a_click_on_a_header_sorts_by_it_and_a_second_reverses_it() -> None:
    after = manager_model.sort_after_click
    assert after("tries", "Newest first", True) == ("Attempts", True)  # another column: largest first
    assert after("tries", "Attempts", True) == ("Attempts", False)  # the same one: reversed
    assert after("tries", "Attempts", False) == ("Attempts", True)
    assert after("id", "Newest first", True) == ("Newest first", False)
    assert after("queue", "Attempts", True) is None  # not a sort of its own
    assert after(None, "Attempts", True) is None and after(["tries"], "Attempts", True) is None
    assert manager_model.sorted_column("Attempts") == "tries"
    assert manager_model.sorted_column("Last update") is None  # a sort no header stands for
    assert set(manager_model.SORT_BY_COLUMN.values()) <= set(manager_model.SORTS)
    assert set(manager_model.SORT_BY_COLUMN) <= set(manager_model.TABLE_COLUMNS)
