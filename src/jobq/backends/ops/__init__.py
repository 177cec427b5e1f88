"""Every storage operation, written once for every backend and every way of running it.

An operation is a generator: it yields commands (run this named statement with these parameters,
notify these queues) and receives each statement's rows; what it returns is the operation's
result. It holds the rules (fencing by lease token, the guards of the transition table, which
events are recorded, how a repeated write is recognised) and no I/O. A backend drives it inside
one transaction of its own (``SqlStore``), retrying the whole operation as its locking needs;
the same generator can be driven on a caller's connection or by an ``async`` runner, without a
second copy of any rule. This is psycopg's design (``psycopg/generators.py``: the protocol
written once as generators, driven by a blocking and by an asyncio ``wait``), applied one level
up; procrastinate's alternative (one async core, sync wrappers) makes every sync call pay for an
event loop, and its hand-written twins show how copies drift.

SQL texts live with each dialect (``<backend>/sql/<table>.sql``); the dialect also says how a list
parameter is written (``jobq.backends.statements.Dialect``).

The operations live in modules by concern: ``core`` (the command types, ``drive``/``adrive``, the
shared helpers, ``migrate``), ``enqueue``, ``claim`` (the worker's hot path), ``flow`` (queue
controls and the claim under them), ``rescue``, ``operator`` (resubmit, cancel, purge), ``reads``,
``metrics``, ``workers`` and ``schedules``. This package re-exports every operation, so callers
write ``ops.claim(...)``; a caller that looks an operation up at call time (``ops.progress``) sees
a replacement set on this package.
"""

from jobq.backends.ops.claim import (
    ack_cancel,
    claim,
    claim_passed_over,
    claim_statement,
    claimed_also,
    claimed_by_nonce,
    complete,
    complete_and_claim,
    completed_and_claimed,
    completion,
    completion_refused,
    fail,
    heartbeat,
    next_due_at,
    progress,
    release,
)
from jobq.backends.ops.core import (
    TERMINAL_STATUSES,
    Claimed,
    Command,
    Exec,
    ExecMany,
    Notify,
    Op,
    Rows,
    adrive,
    drive,
    migrate,
    schema_version,
)
from jobq.backends.ops.enqueue import (
    KEY_ROUNDS_MAX,
    NO_JOB_ID_LEFT,
    VALUES_CHUNK_ROWS,
    due_now,
    enqueue,
    enqueued_by_key,
    insert_alone,
)
from jobq.backends.ops.flow import (
    CONTROLLED,
    PER_KEY_CANDIDATES_EXTRA,
    claim_controlled,
    control_history,
    controls,
    update_control,
)
from jobq.backends.ops.metrics import (
    completion_cursor,
    completion_totals,
    completions_after,
    enqueue_totals,
    event_totals,
    events_after,
    last_event_id,
    last_job_id,
    progress_of,
    queue_gauges,
    trace_contexts,
)
from jobq.backends.ops.operator import Chunk, cancel, chunk_settled, purge, purge_settled, recorded, resubmit
from jobq.backends.ops.reads import (
    count_jobs,
    counts,
    due_history,
    events,
    get,
    get_locked,
    history,
    latest_jobs,
    list_jobs,
    list_page,
    recent_events,
    register_waiter,
    stats,
    unregister_waiter,
)
from jobq.backends.ops.rescue import AttemptsLimit, rescue, rescue_probe
from jobq.backends.ops.schedules import (
    delete_schedule,
    delete_schedule_settled,
    fire_schedule,
    list_schedules,
    pause_schedule,
    pause_schedule_settled,
    save_schedule,
    schedule_actions,
)
from jobq.backends.ops.workers import (
    list_workers,
    live_wake_addresses,
    lost_workers_probe,
    mark_lost_workers,
    register_worker,
    store_time,
    worker_seen,
    worker_stopped,
)

__all__ = [
    "CONTROLLED",
    "KEY_ROUNDS_MAX",
    "NO_JOB_ID_LEFT",
    "PER_KEY_CANDIDATES_EXTRA",
    "TERMINAL_STATUSES",
    "VALUES_CHUNK_ROWS",
    "AttemptsLimit",
    "Chunk",
    "Claimed",
    "Command",
    "Exec",
    "ExecMany",
    "Notify",
    "Op",
    "Rows",
    "ack_cancel",
    "adrive",
    "cancel",
    "chunk_settled",
    "claim",
    "claim_controlled",
    "claim_passed_over",
    "claim_statement",
    "claimed_also",
    "claimed_by_nonce",
    "complete",
    "complete_and_claim",
    "completed_and_claimed",
    "completion",
    "completion_cursor",
    "completion_refused",
    "completion_totals",
    "completions_after",
    "control_history",
    "controls",
    "count_jobs",
    "counts",
    "delete_schedule",
    "delete_schedule_settled",
    "drive",
    "due_history",
    "due_now",
    "enqueue",
    "enqueue_totals",
    "enqueued_by_key",
    "event_totals",
    "events",
    "events_after",
    "fail",
    "fire_schedule",
    "get",
    "get_locked",
    "heartbeat",
    "history",
    "insert_alone",
    "last_event_id",
    "last_job_id",
    "latest_jobs",
    "list_jobs",
    "list_page",
    "list_schedules",
    "list_workers",
    "live_wake_addresses",
    "lost_workers_probe",
    "mark_lost_workers",
    "migrate",
    "next_due_at",
    "pause_schedule",
    "pause_schedule_settled",
    "progress",
    "progress_of",
    "purge",
    "purge_settled",
    "queue_gauges",
    "recent_events",
    "recorded",
    "register_waiter",
    "register_worker",
    "release",
    "rescue",
    "rescue_probe",
    "resubmit",
    "save_schedule",
    "schedule_actions",
    "schema_version",
    "stats",
    "store_time",
    "trace_contexts",
    "unregister_waiter",
    "update_control",
    "worker_seen",
    "worker_stopped",
]
