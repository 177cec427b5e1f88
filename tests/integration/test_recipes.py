"""The recipes of docs/transactions.md, run as written: SQLAlchemy (a Session and a Connection)
and Django (its connection), enqueueing in the application's transaction on PostgreSQL; on
SQLite, their stdlib connection is refused in one line (two copies of SQLite in one process).

Django is configured once per process (``settings.configure``), so its recipe runs in a child
process of its own, on the test's database.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
from typing import Any

import pytest

import jobq

sqlalchemy = pytest.importorskip("sqlalchemy")
from sqlalchemy import text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402


# -- the recipes, as docs/transactions.md shows them -------------------------------------------
def enqueue_in_session(q: jobq.Queue, session: Session, payload: Any, **options: Any) -> int:
    """Enqueue in the Session's transaction: the job commits or rolls back with it."""
    dbapi = session.connection().connection.driver_connection  # psycopg.Connection
    return q.enqueue(payload, conn=dbapi, **options)


def enqueue_in_connection(q: jobq.Queue, connection: sqlalchemy.Connection, payload: Any, **options: Any) -> int:
    """The same for a Core Connection inside ``engine.begin()``."""
    return q.enqueue(payload, conn=connection.connection.driver_connection, **options)


def _engine(url: str) -> sqlalchemy.Engine:
    scheme = "postgresql+psycopg" if url.startswith(("postgresql:", "postgres:")) else "sqlite"
    return sqlalchemy.create_engine(scheme + ":" + url.split(":", 1)[1])


@pytest.mark.postgres
def test_sqlalchemy_session_and_connection(postgres_url: str) -> None:
    engine = _engine(postgres_url)
    with jobq.Queue(postgres_url) as q:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE users (email text)"))

        with Session(engine) as session, session.begin():
            session.execute(text("INSERT INTO users VALUES ('ann@example.com')"))
            committed = enqueue_in_session(q, session, {"to": "ann@example.com"}, queue="mail")
        with pytest.raises(RuntimeError), Session(engine) as session, session.begin():
            session.execute(text("INSERT INTO users VALUES ('bob@example.com')"))
            enqueue_in_session(q, session, {"to": "bob@example.com"}, queue="mail")
            raise RuntimeError("the sign-up failed")
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO users VALUES ('cy@example.com')"))
            core = enqueue_in_connection(q, connection, {"to": "cy@example.com"}, queue="mail")

        with engine.connect() as connection:
            users = sorted(r[0] for r in connection.execute(text("SELECT email FROM users")))
        assert users == ["ann@example.com", "cy@example.com"]
        mail = q.list(jobq.JobFilter(queues=("mail",)))
        assert sorted(j.id for j in mail) == sorted([committed, core])
        assert {j.payload["to"] for j in mail} == {"ann@example.com", "cy@example.com"}
    engine.dispose()


def test_sqlalchemy_on_sqlite_is_refused_in_one_line(sqlite_url: str) -> None:
    engine = _engine(sqlite_url)
    with jobq.Queue(sqlite_url) as q, Session(engine) as session, session.begin():
        with pytest.raises(jobq.ConfigError, match="second copy of SQLite") as error:
            enqueue_in_session(q, session, "x")
        assert "\n" not in str(error.value)
        assert q.count() == 0
    engine.dispose()


DJANGO_RECIPE = """
import json, sys, urllib.parse
import django
from django.conf import settings

url = urllib.parse.urlsplit(sys.argv[1])
settings.configure(DATABASES={"default": {
    "ENGINE": "django.db.backends.postgresql", "NAME": url.path[1:], "USER": url.username,
    "HOST": url.hostname, "PORT": url.port}})
django.setup()

import jobq
from django.db import connection, transaction

q = jobq.Queue(sys.argv[1])
with connection.cursor() as cur:
    cur.execute("CREATE TABLE users (email text)")

# The recipe: inside transaction.atomic(), pass Django's DB-API connection.
def enqueue_on_commit(payload, **options):
    connection.ensure_connection()
    return q.enqueue(payload, conn=connection.connection, **options)

with transaction.atomic():
    with connection.cursor() as cur:
        cur.execute("INSERT INTO users VALUES ('ann@example.com')")
    committed = enqueue_on_commit({"to": "ann@example.com"}, queue="mail")
try:
    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute("INSERT INTO users VALUES ('bob@example.com')")
        enqueue_on_commit({"to": "bob@example.com"}, queue="mail")
        raise RuntimeError("the sign-up failed")
except RuntimeError:
    pass
try:  # outside atomic(), Django autocommits: refused, nothing written
    enqueue_on_commit({"to": "nobody"}, queue="mail")
    outside = "accepted"
except jobq.ConfigError as exc:
    outside = str(exc)
with connection.cursor() as cur:
    cur.execute("SELECT email FROM users ORDER BY email")
    users = [r[0] for r in cur.fetchall()]
mail = q.list(jobq.JobFilter(queues=("mail",)))
print(json.dumps({"committed": committed, "users": users, "outside": outside,
                  "jobs": sorted((j.id, j.payload["to"]) for j in mail)}))
q.close()
"""


@pytest.mark.postgres
def test_django_connection(postgres_url: str) -> None:
    pytest.importorskip("django")
    assert urllib.parse.urlsplit(postgres_url).password is None  # the recipe's settings carry no password
    run = subprocess.run(
        [sys.executable, "-c", DJANGO_RECIPE, postgres_url], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["users"] == ["ann@example.com"]
    assert out["jobs"] == [[out["committed"], "ann@example.com"]]
    assert "autocommit mode" in out["outside"]
