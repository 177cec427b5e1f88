"""jobq's own options in a PostgreSQL URL (schema, pooler, listen_url, prepare_threshold,
lock_timeout, pool_timeout) and the
qualification of every statement with the queue's schema."""

from __future__ import annotations

import re

import pytest

from jobq.errors import ConfigError
from jobq.redact import redact_text, redact_url

pytest.importorskip("psycopg")

from jobq.backends.postgres import PostgresDialect, describe_url
from jobq.backends.postgres.schema import TABLES, qualify
from jobq.backends.postgres.url import POOL_TIMEOUT_SECONDS_DEFAULT, split_url

LISTEN = "postgresql%3A%2F%2Fbob%3Alisten-secret%40db-direct%3A5432%2Fapp"


def test_jobq_options_are_taken_out_and_the_rest_is_kept_byte_for_byte() -> None:
    o = split_url(
        f"postgresql://ann@pgbouncer:6432/app?sslmode=require&schema=mail&pooler=transaction&listen_url={LISTEN}&application_name=x%20y"
    )
    assert o.libpq_url == "postgresql://ann@pgbouncer:6432/app?sslmode=require&application_name=x%20y"
    assert (o.schema, o.pooler, o.prepare_threshold) == ("mail", "transaction", None)
    assert o.listen_url == "postgresql://bob:listen-secret@db-direct:5432/app"
    assert o.channel == "jobq_wakeup_mail"


def test_defaults() -> None:
    o = split_url("postgresql://ann@db/app")
    assert (o.libpq_url, o.schema, o.pooler, o.prepare_threshold, o.listen_url) == (
        "postgresql://ann@db/app",
        "jobq",
        "none",
        5,
        None,
    )


def test_lock_timeout_is_taken_out_and_set_for_the_session() -> None:
    from jobq.backends.postgres import _connect_kwargs

    o = split_url("postgresql://db/app?lock_timeout=2000&sslmode=require")
    assert (o.libpq_url, o.lock_timeout_ms) == ("postgresql://db/app?sslmode=require", 2000)
    assert split_url("postgresql://db/app").lock_timeout_ms is None
    options = _connect_kwargs(o.libpq_url, session=True, lock_timeout_ms=o.lock_timeout_ms)["options"]
    assert options.endswith(" -c lock_timeout=2000")
    assert "lock_timeout" not in _connect_kwargs(o.libpq_url, session=True)["options"]


def test_pool_timeout_is_taken_out_and_kept_in_seconds() -> None:
    o = split_url("postgresql://db/app?pool_timeout=0.5&sslmode=require")
    assert (o.libpq_url, o.pool_timeout_seconds) == ("postgresql://db/app?sslmode=require", 0.5)
    assert split_url("postgresql://db/app").pool_timeout_seconds == POOL_TIMEOUT_SECONDS_DEFAULT == 15
    # A client-side wait: allowed behind a transaction pooler, unlike lock_timeout.
    assert split_url("postgresql://db/app?pooler=transaction&pool_timeout=3").pool_timeout_seconds == 3


@pytest.mark.parametrize(("option", "threshold"), [("prepare_threshold=none", None), ("prepare_threshold=0", 0)])
def test_prepare_threshold(option: str, threshold: int | None) -> None:
    assert split_url(f"postgresql://db/app?pooler=transaction&{option}").prepare_threshold == threshold


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("schema=Mail", "bad schema name 'Mail'"),
        ("schema=public", "bad schema name 'public'"),
        ("schema=pg_x", "bad schema name"),
        ("schema=a;drop", "bad schema name"),
        ("schema=a&schema=b", "schema is given twice"),
        ("pooler=session", "bad pooler 'session'"),
        ("prepare_threshold=-1", "bad prepare_threshold"),
        ("listen_url=db:5432", "must be a postgresql:// URL"),
        ("listen_url=postgresql%3A%2F%2Fdb%2Fapp%3Fschema%3Dx", "names a server only"),
        ("lock_timeout=2s", "bad lock_timeout '2s'"),
        ("lock_timeout=0", "bad lock_timeout '0'"),
        ("lock_timeout=2147483648", "1 to 2147483647"),
        ("pooler=transaction&lock_timeout=2000", "a transaction pooler (pooler=transaction) refuses it"),
        ("pool_timeout=2s", "bad pool_timeout '2s'"),
        ("pool_timeout=0", "bad pool_timeout '0'"),
        ("pool_timeout=-1", "bad pool_timeout '-1'"),
        ("pool_timeout=nan", "bad pool_timeout 'nan'"),
        ("pool_timeout=inf", "more than 0 and at most 86400"),
        ("pool_timeout=", "bad pool_timeout ''"),
    ],
)
def test_bad_options_are_one_clear_line(query: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        split_url(f"postgresql://db/app?{query}")
    assert "\n" not in str(caught.value)


def test_a_listen_url_never_shows_its_password() -> None:
    url = f"postgresql://ann:main-secret@pgbouncer/app?listen_url={LISTEN}"
    shown = redact_url(url)
    assert "secret" not in shown and "listen_url=postgresql://bob:***@db-direct:5432/app" in shown
    assert "secret" not in redact_text(f"failed: {url} bob:listen-secret@db-direct", url)
    assert describe_url(url) == "pgbouncer:5432/app"


def test_every_statement_names_tables_by_their_schema() -> None:
    dialect = PostgresDialect("mail")
    unqualified = re.compile(r"(?<![\w.\"'])(?<!%\()(" + "|".join(TABLES) + r")(?![\w\"'])(?!\.\w)")
    for name, text in dialect.sql.items():
        assert not unqualified.search(text), f"{name}: {text}"
    assert "UPDATE mail.jobs SET" in dialect.sql["claim"]


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("INSERT INTO jobs (a) VALUES (1)", "INSERT INTO s.jobs (a) VALUES (1)"),
        ("SELECT jobs.id, jobs_done FROM jobs, workers", "SELECT jobs.id, jobs_done FROM s.jobs, s.workers"),
        ("DELETE FROM job_events WHERE x = 'jobs'", "DELETE FROM s.job_events WHERE x = 'jobs'"),
        ("SELECT max(version) FROM jobq_schema", "SELECT max(version) FROM s.jobq_schema"),
        ("SELECT 1 FROM other.jobs", "SELECT 1 FROM other.jobs"),
        (
            "INSERT INTO jobs SELECT * FROM json_array_elements(%(jobs)s::json)",
            "INSERT INTO s.jobs SELECT * FROM json_array_elements(%(jobs)s::json)",
        ),
    ],
)
def test_qualify(before: str, after: str) -> None:
    assert qualify(before, "s") == after
