"""Named SQL statements, one file per table and dialect, and the few fragments built at run time.

Each backend keeps its SQL in ``<backend>/sql/<table>.sql``; a statement starts with a line
``-- name: <name>`` (River's ``dbsqlc/river_job.sql`` and oban-py's ``queries/`` show the idea: a
reader sees every statement that touches a table in one place). Placeholders in braces are filled
once at load time from the transition table and the column list (so the guards of every
conditional UPDATE come from ``jobq.job.TRANSITIONS``), or per call for lists whose length varies
(``{queues}``, ``{where}``, ...). Parameters are named: ``:name`` on SQLite, ``%(name)s`` on
PostgreSQL, each dialect rendering its own through :class:`Dialect`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from jobq.backends.base import SORT_FIELDS, JobFilter
from jobq.backends.common import JOB_COLUMNS, WORKER_COLUMNS, like_pattern
from jobq.errors import ConfigError
from jobq.job import TRANSITIONS, Action, JobStatus
from jobq.payloads import json_string_body

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.M)
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
#: Runs of the characters a lowered search pattern can hold that another character's lower case
#: can also make (``Dialect.like``): every non-ASCII one, and "i" and "k".
_UNSAFE_FOR_LIKE = re.compile(r"[^\x00-\x7f]+|[ik]+")

Params = dict[str, Any]
LOWER_FUNCTION = "jobq_lower"
"""The SQL function a backend without a Unicode-aware case fold registers (``Dialect.like``)."""
_STR_ONLY = frozenset({str})
RENDERED_CACHE_SIZE = 1024
"""Statements rendered with per-call fragments that are kept (queue lists, filters)."""


def _in(statuses: Iterable[JobStatus]) -> str:
    return "(" + ", ".join(f"'{s.value}'" for s in sorted(statuses)) + ")"


#: When a job's idempotency key is held: the predicate of the unique index ``jobs_key`` (built by
#: a migration from this text: never change it, append a migration instead). Statements that must
#: use that index (the upsert's conflict target, the look-up of the holder) repeat it word for
#: word, since SQLite uses a partial index only for a query that contains its WHERE as a term.
KEY_HELD_SQL = (
    "idempotency_key IS NOT NULL AND (key_scope IN ('all', 'ttl')"
    " OR (key_scope = 'active' AND status IN ('PENDING', 'PROCESSING')))"
)

#: Fragments filled in at load time: the statuses each write is allowed from, from the table.
STATIC_FRAGMENTS = {
    "job_columns": ", ".join(JOB_COLUMNS),
    "jobs_job_columns": ", ".join(f"jobs.{c}" for c in JOB_COLUMNS),
    "worker_columns": ", ".join(WORKER_COLUMNS),
    "from_complete": _in(TRANSITIONS[Action.COMPLETE].sources),
    "from_fail": _in(TRANSITIONS[Action.FAIL].sources | TRANSITIONS[Action.RETRY].sources),
    "from_rescue": _in(TRANSITIONS[Action.RESCUE].sources),
    "terminal": _in({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}),
    "key_held": KEY_HELD_SQL,
}


def load_statements(directory: Path, fragments: Mapping[str, str]) -> dict[str, str]:
    """Every ``-- name:`` statement of the ``*.sql`` files in ``directory``, static fragments filled."""
    statements: dict[str, str] = {}
    for path in sorted(directory.glob("*.sql")):
        text = path.read_text()
        marks = list(_NAME.finditer(text))
        for i, mark in enumerate(marks):
            end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
            # Comments stay in the files, for readers; the server gets the statement alone.
            lines = [line for line in text[mark.end() : end].splitlines() if not line.lstrip().startswith("--")]
            body = "\n".join(lines).strip().rstrip(";")
            name = mark.group(1)
            if name in statements:
                raise RuntimeError(f"{path}: statement {name!r} is defined twice")
            statements[name] = _PLACEHOLDER.sub(lambda m: fragments.get(m.group(1), m.group(0)), body)
    return statements


class Dialect:
    """What differs between SQL dialects, beyond the statement texts themselves."""

    #: Statements by name, loaded by the subclass from its ``sql/`` directory.
    sql: dict[str, str]
    _rendered: dict[tuple[object, ...], str]
    #: ``stmt_for_queues``' renderings: the text and the parameters its ``{queues}`` names.
    _for_queues: dict[tuple[object, ...], tuple[str, Params]]
    #: Whether operator actions and rescues lock their rows (``FOR UPDATE``) as they read them.
    locks_rows: bool = False
    #: After each chunk of a long write (a purge, an operator's action), a pause of this share of
    #: the time the chunk took (0: none).
    chunk_pause_share: float = 0.0
    #: A claim of at least this many jobs returns only their ids, and their rows are read after
    #: its commit (``ops.claimed_rows``); 0: every claim returns its rows.
    claim_reads_after: int = 0

    def param(self, name: str) -> str:
        """How a named parameter is written in SQL text."""
        raise NotImplementedError

    def any_of(self, column: str, name: str, values: Sequence[Any], params: Params) -> str:
        """``column`` is one of ``values`` (adds the parameters it names to ``params``)."""
        raise NotImplementedError

    def statuses(self, values: Sequence[str]) -> str:
        """A job filter's ``status`` is one of ``values``: one equality per status, each a literal.

        Equalities, not ``IN``/``= ANY``: both planners then walk the partial index of each status
        (``jobs_live`` for PENDING and PROCESSING, ``jobs_status_rare`` for FAILED and CANCELLED)
        and read no COMPLETED row unless it is asked for; ``IN`` scanned the table (the manager's
        first list: 0.11 s on SQLite and 0.2 s on PostgreSQL at 1,000,000 stored jobs). Literals,
        not parameters: a plan must see the value to use a partial index (PostgreSQL's generic
        plan cannot), and each value is a ``JobStatus``' own (checked here: ValueError otherwise)."""
        checked = [JobStatus(v).value for v in values]
        return "(" + " OR ".join(f"status = '{v}'" for v in checked) + ")" if checked else "FALSE"

    def bucket_of(self, column: str, name: str, bounds: Sequence[float], params: Params) -> str:
        """Which histogram slot ``column`` falls in: the first bound it is at most, ``len(bounds)``
        past the last (+Inf), -1 when NULL (adds the parameters it names to ``params``). One
        ``CASE`` that stops at the first match: a sum per bound cost twice as much per row."""
        names = [f"{name}{i}" for i in range(len(bounds))]
        params.update(zip(names, bounds, strict=True))
        whens = " ".join(f"WHEN {column} <= {self.param(n)} THEN {i}" for i, n in enumerate(names))
        return f"CASE WHEN {column} IS NULL THEN -1 {whens} ELSE {len(names)} END"

    def text(self, value: str | None) -> str | None:
        """A value for a text column (PostgreSQL cannot store NUL)."""
        return value

    def ids(self, job_ids: Sequence[int]) -> Any:
        """A list of job ids as one parameter (``:ids`` of the ``..._set`` statements): SQLite reads
        it with ``json_each``."""
        return json.dumps([int(i) for i in job_ids])

    def event_items(self, job_ids: Sequence[int], details: Sequence[str | None]) -> Params:
        """The parameters of ``insert_events_set``: each job id with its event's detail (JSON
        text, or None). SQLite: one JSON array of pairs."""
        return {"items": json.dumps([[int(i), t] for i, t in zip(job_ids, details, strict=True)])}

    def contains(self, column: str, name: str, text: str, params: Params, *, in_json: bool = False) -> str:
        """``column`` holds ``text`` anywhere, letters of either case alike (adds the parameters it
        names to ``params``). ``in_json``: the column is JSON (a payload), which writes a ``"``, a
        ``\\`` or a control character inside a string escaped; ``text`` then also matches as
        written there, so a search for ``a\\b`` or ``"x"`` finds the payload holding that value
        (it matched only the JSON's own spelling, ``a\\\\b``), and the stored text still matches."""
        forms = [text]
        if in_json and (written := json_string_body(text)) != text:
            forms.append(written)
        clauses = []
        for i, form in enumerate(forms):
            key = f"{name}{i}"
            params[key] = like_pattern(self.text(form) or "")
            clauses.append(self.like(column, key, params))
        return clauses[0] if len(clauses) == 1 else "(" + " OR ".join(clauses) + ")"

    def like(self, column: str, name: str, params: Params) -> str:
        """``column`` matches the ``LIKE`` pattern ``params[name]`` (escape character ``\\``),
        letters of either case alike. SQLite's ``LIKE`` folds ASCII letters only ("été" missed
        "Été"): a pattern with other characters compares both sides in lower case, through
        ``jobq_lower`` (Python's ``str.lower``, on every connection the backend opens), as
        PostgreSQL's ``ILIKE`` does. It is a Python call per row it reads, so only such a pattern
        makes it, and only for the rows a ``LIKE`` in C lets through first."""
        pattern = params[name]
        if pattern.isascii():
            return f"{column} LIKE {self.param(name)} ESCAPE '\\'"
        params[name] = lowered = pattern.lower()
        # First a LIKE in C that every match passes: the lowered pattern with each character
        # that may come from another one's lower case (any non-ASCII one, and i and k: "İ" and
        # the Kelvin sign lower to them) made a "%". The others only come from themselves or their
        # ASCII capital, which LIKE folds, so a row it drops cannot match; the Python call is
        # then made for the rows it keeps (SQLite evaluates the two in this order).
        params[f"{name}_ascii"] = _UNSAFE_FOR_LIKE.sub("%", lowered)
        return (
            f"({column} LIKE {self.param(name + '_ascii')} ESCAPE '\\' "
            f"AND {LOWER_FUNCTION}({column}) LIKE {self.param(name)} ESCAPE '\\')"
        )

    def order(self, sort: str, descending: bool) -> str:
        direction = "DESC" if descending else "ASC"
        return f"{sort} {direction}" + ("" if sort == "id" else f", id {direction}")

    def stmt(self, name: str, **fragments: str) -> str:
        """The statement ``name`` with its per-call fragments filled in (rendered once per shape:
        the claim renders on every call, and the same text lets the driver reuse its prepared
        statement)."""
        if not fragments:
            return self.sql[name]
        key = (name, *sorted(fragments.items()))
        text = self._rendered.get(key)
        if text is None:
            text = _PLACEHOLDER.sub(lambda m: fragments.get(m.group(1), m.group(0)), self.sql[name])
            if len(self._rendered) < RENDERED_CACHE_SIZE:  # filters and sorts vary: bounded
                self._rendered[key] = text
        return text

    def stmt_for_queues(self, name: str, queues: Sequence[str], params: Params, **fragments: str) -> str:
        """``stmt(name, queues=any_of("queue", "q", queues, params), **fragments)``, its text and
        the parameters of its queue list kept per shape: the claim renders on every call, and
        building the list and the statement's cache key again cost ~3 us of a ~120 us per-job
        claim+complete (issue 13)."""
        # Names only: a key of other values could match an equal one of another type (1, True).
        # One queue (a worker's usual claim): its type read without building a set.
        names = type(queues[0]) is str if len(queues) == 1 else {*map(type, queues)} <= _STR_ONLY
        key = (name, *queues, *fragments.items()) if names else ()
        hit = self._for_queues.get(key) if key else None
        if hit is None:
            named: Params = {}
            text = self.stmt(name, queues=self.any_of("queue", "q", queues, named), **fragments)
            hit = (text, named)
            if key and len(self._for_queues) < RENDERED_CACHE_SIZE:  # a worker's queues repeat: bounded
                self._for_queues[key] = hit
        params.update(hit[1])
        return hit[0]

    def where(self, where: JobFilter, params: Params) -> str:
        """The ``WHERE`` clause of a job filter ("" for all jobs)."""
        clauses = [self.statuses([s.value for s in where.statuses])] if where.statuses else []
        for column, values in (
            ("queue", list(where.queues)),
            ("id", list(where.ids)),
            ("task", list(where.tasks)),
        ):
            if values:
                clauses.append(self.any_of(column, f"f_{column}", values, params))
        if where.search:
            clauses.append(self.contains("payload", "f_search", where.search, params, in_json=True))
        if where.error:
            clauses.append(self.contains("last_error", "f_error", where.error, params))
        for column, op, name, value in (
            ("created_at", ">=", "f_created_after", where.created_after),
            ("created_at", "<=", "f_created_before", where.created_before),
            ("finished_at", ">=", "f_finished_after", where.finished_after),
            ("finished_at", "<=", "f_finished_before", where.finished_before),
        ):
            if value is not None:
                params[name] = float(value)
                clauses.append(f"{column} {op} {self.param(name)}")
        return (" WHERE " + " AND ".join(clauses)) if clauses else ""

    def page_order(self, sort: str, descending: bool) -> str:
        if sort not in SORT_FIELDS:
            raise ConfigError(f"cannot sort by {sort!r}; choose one of {', '.join(SORT_FIELDS)}")
        return self.order(sort, descending)
