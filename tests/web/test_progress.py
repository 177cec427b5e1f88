"""Progress reported by a handler, as the manager's job detail and the ops running-jobs view show it."""

from __future__ import annotations

import re

from seeding import MANAGER, Seeded, run_ops
from test_apps import open_job, run

from jobq import JobStatus, Queue
from jobq.web import ops_model, safety, views


def _report(seeded: Seeded, fraction: float | None, message: str) -> int:
    running = seeded.ids[JobStatus.PROCESSING][0]
    with Queue(seeded.url) as q:
        q.progress(q.get(running), fraction, message)  # the lease the seed's worker holds
    return running


def test_manager_detail_shows_the_progress_of_a_running_job(seeded: Seeded) -> None:
    running = _report(seeded, 0.4, "4 of 10 *files*")
    at = run(MANAGER)
    open_job(at, running)
    (bar,) = at.get("progress")
    assert bar.proto.value == 40
    shown = re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", bar.proto.text).replace(safety.WORD_JOINER, "")
    assert "40% - 4 of 10 *files*" in shown
    assert "*files*" not in bar.proto.text  # Markdown in a message is escaped: shown as typed


def test_ops_lists_running_jobs_with_their_progress(seeded: Seeded) -> None:
    def running_row(job_id: int) -> object:
        at = run_ops("Running jobs")
        (frame,) = [d.value for d in at.dataframe if list(d.value.columns) == views.RUNNING_COLUMNS]
        # Without a manager URL, ops' id column says how to show the job (ops_model.job_link).
        return frame.set_index("id").loc[ops_model.job_link(job_id, None)]

    running = seeded.ids[JobStatus.PROCESSING][0]
    before = running_row(running)
    assert before["reported"] == views.DASH and before["message"] == ""  # nothing reported yet
    _report(seeded, 0.75, "almost")
    row = running_row(running)
    assert (row["progress"], row["message"]) == (0.75, "almost")
