"""The job model: statuses, the transition table, and the immutable Job and Event records.

The transition table is data, not scattered ``if`` statements: every backend guards its
conditional UPDATEs with ``TRANSITIONS[action].sources``, and ``docs/state_machine.md`` draws
the same table (a unit test checks that the drawing and the table agree).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any


class JobStatus(enum.StrEnum):
    """Where a job is in its life. The values are the upper-case words stored in ``jobs.status``."""

    PENDING = "PENDING"
    """Waiting to be claimed; not before ``run_at`` (delayed jobs and retry backoff)."""
    PROCESSING = "PROCESSING"
    """Claimed by a worker that holds a lease (owner, token, expiry) and heartbeats it."""
    COMPLETED = "COMPLETED"
    """Finished successfully. Terminal until an operator resubmits it."""
    FAILED = "FAILED"
    """Gave up: attempts exhausted, a permanent error, or set by hand. Resubmittable."""
    CANCELLED = "CANCELLED"
    """Stopped by an operator before or while it ran. Resubmittable."""


class Action(enum.StrEnum):
    """Everything that may change a job's status (or request a change)."""

    CLAIM = "claim"
    COMPLETE = "complete"
    RETRY = "retry"
    FAIL = "fail"
    RESCUE = "rescue"
    EXPIRE = "expire"
    RELEASE = "release"
    CANCEL = "cancel"
    REQUEST_CANCEL = "request_cancel"
    ACK_CANCEL = "ack_cancel"
    RESUBMIT = "resubmit"


@dataclasses.dataclass(frozen=True, slots=True)
class Transition:
    """One row of the state machine: ``action`` moves a job from any of ``sources`` to ``target``."""

    action: Action
    sources: frozenset[JobStatus]
    target: JobStatus
    who: str
    why: str


def _t(action: Action, sources: set[JobStatus], target: JobStatus, who: str, why: str) -> Transition:
    return Transition(action, frozenset(sources), target, who, why)


_P, _R, _C, _F, _X = (
    JobStatus.PENDING,
    JobStatus.PROCESSING,
    JobStatus.COMPLETED,
    JobStatus.FAILED,
    JobStatus.CANCELLED,
)

#: The state machine. Backends use ``sources`` as the guard of every conditional UPDATE.
TRANSITIONS: Mapping[Action, Transition] = {
    t.action: t
    for t in (
        _t(Action.CLAIM, {_P}, _R, "worker", "due job handed out with a fresh lease token"),
        _t(Action.COMPLETE, {_R}, _C, "worker", "handler returned; fenced by the lease token"),
        _t(Action.RETRY, {_R}, _P, "worker", "handler failed, attempts left: run_at = now + backoff"),
        _t(Action.FAIL, {_R}, _F, "worker", "handler failed for good, or attempts exhausted"),
        _t(Action.RESCUE, {_R}, _P, "any worker", "lease expired (owner dead or frozen), attempts left"),
        _t(Action.EXPIRE, {_R}, _F, "any worker", "lease expired and attempts exhausted"),
        _t(Action.RELEASE, {_R}, _P, "worker", "shutdown: grace period over, or the handler gave it back"),
        _t(Action.CANCEL, {_P, _F}, _X, "operator", "cancel a waiting job, or dismiss a failed one"),
        _t(Action.REQUEST_CANCEL, {_R}, _R, "operator", "running job: flag it; the worker stops it"),
        _t(Action.ACK_CANCEL, {_R}, _X, "worker", "a job whose cancel was requested stopped, given back or failed"),
        _t(Action.RESUBMIT, {_F, _X, _C}, _P, "operator", "run it again: attempts reset, run + 1"),
    )
}


def allowed(action: Action, status: JobStatus | str) -> bool:
    """True when ``action`` may be applied to a job in ``status``."""
    return JobStatus(status) in TRANSITIONS[action].sources


#: What an operator may ask for, and the transitions that carry it out, tried in this order:
#: "cancel" cancels a waiting or failed job, and asks a running one to stop.
OPERATOR_VERBS: Mapping[str, tuple[Action, ...]] = {
    "resubmit": (Action.RESUBMIT,),
    "cancel": (Action.CANCEL, Action.REQUEST_CANCEL),
}


def operator_actions(status: JobStatus | str) -> dict[str, Action]:
    """What an operator may do to a job in ``status``: each legal verb of ``OPERATOR_VERBS`` with
    the transition it applies there (read from ``TRANSITIONS``). A verb that is missing is refused.

    The one answer for the apps' buttons, the CLI and the backends' operator actions.

    >>> operator_actions("PROCESSING")
    {'cancel': <Action.REQUEST_CANCEL: 'request_cancel'>}
    >>> sorted(operator_actions("FAILED"))
    ['cancel', 'resubmit']
    """
    legal: dict[str, Action] = {}
    for verb, actions in OPERATOR_VERBS.items():
        action = next((a for a in actions if allowed(a, status)), None)
        if action is not None:
            legal[verb] = action
    return legal


class EventKind(enum.StrEnum):
    """Entries of a job's append-only history (table ``job_events``)."""

    ENQUEUED = "enqueued"
    CLAIMED = "claimed"
    COMPLETED = "completed"
    RETRY_SCHEDULED = "retry_scheduled"
    FAILED = "failed"
    RESCUED = "rescued"
    EXPIRED = "expired"
    RELEASED = "released"
    CANCELLED = "cancelled"
    CANCEL_REQUESTED = "cancel_requested"
    RESUBMITTED = "resubmitted"
    STALE_WRITE_REFUSED = "stale_write_refused"
    EXTERNAL_UPDATE = "external_update"
    RESTAMPED = "restamped"
    """Written ahead of the host's clock, since set back by ``detail["clock_set_back"]`` seconds,
    the waiting job was made as if written now (``Queue.restamp_ahead``): its due time moved back."""
    MOVED = "moved"
    """An operator moved the job to another queue (``Queue.move_many``; ``detail["from"]`` and
    ``detail["to"]`` name them): no transition, its status stays."""


MOVABLE: frozenset[JobStatus] = frozenset({JobStatus.PENDING, JobStatus.FAILED, JobStatus.CANCELLED})
"""The statuses whose jobs an operator may move to another queue: not running (its worker serves
the queue it claimed from) and not COMPLETED (its history stays where it ran)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Job:
    """A snapshot of one row of ``jobs``. Times are UNIX seconds (float)."""

    id: int
    queue: str
    task: str
    payload: Any
    status: JobStatus
    priority: int
    run_at: float
    attempts: int
    max_attempts: int
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None
    timeout: float | None = None
    last_error: str | None = None
    lease_owner: str | None = None
    lease_token: str | None = None
    lease_expires_at: float | None = None
    idempotency_key: str | None = None
    result: Any = None
    cancel_requested: bool = False
    run: int = 1
    """1 for the first run; each operator resubmit starts the next run."""
    defect: str | None = None
    """Why this stored row cannot be run as it is (None: it can). Rows written by hand, by another
    program or by an older version may hold a payload that is not JSON, nests too deeply, or
    columns of the wrong type. Such a job is still listed and shown (``payload`` is then the raw
    text); a worker fails it with this reason instead of running it, and goes on with the next."""
    policy: str | None = None
    """The retry policy its enqueue set, as stored (JSON of ``jobq.retry.JobPolicy``); None: the
    task's and the queue's defaults apply."""


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One entry of a job's history."""

    id: int
    job_id: int
    at: float
    kind: EventKind | str
    actor: str | None
    attempt: int | None
    detail: dict[str, Any]


def mermaid_state_diagram() -> str:
    """The transition table drawn as a mermaid state diagram (``docs/state_machine.md``)."""
    lines = ["stateDiagram-v2", "    [*] --> PENDING: enqueue"]
    for t in TRANSITIONS.values():
        for source in sorted(t.sources):
            lines.append(f"    {source.value} --> {t.target.value}: {t.action.value}")
    lines += ["    COMPLETED --> [*]: purge", "    CANCELLED --> [*]: purge", "    FAILED --> [*]: purge"]
    return "\n".join(lines)
