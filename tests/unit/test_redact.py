"""One redaction for every place a database URL is shown: apps, CLI, errors, logs."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import pytest

import jobq
from jobq.backends import open_backend
from jobq.backends.sqlite import SqliteBackend
from jobq.errors import StorageError
from jobq.redact import RedactingFilter, redact_text, redact_url
from jobq.worker import Worker

SECRET = "hunter2-s3cret"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"postgresql://ann:{SECRET}@db:5432/jobq", "postgresql://ann:***@db:5432/jobq"),
        (f"postgres://ann:{SECRET}@db/jobq?sslmode=require", "postgres://ann:***@db/jobq?sslmode=require"),
        (f"postgresql://ann@db/jobq?password={SECRET}", "postgresql://ann@db/jobq?password=***"),
        ("postgresql://db/jobq", "postgresql://db/jobq"),
        ("sqlite:///data/queue.db", "sqlite:///data/queue.db"),
        ("data/queue.db", "data/queue.db"),
        (f"host=db password={SECRET} dbname=jobq", "host=db password=*** dbname=jobq"),
        (f"host=db password='{SECRET} x' dbname=jobq", "host=db password=*** dbname=jobq"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert SECRET not in redact_url(url)


def test_redact_text_masks_raw_and_decoded_password() -> None:
    url = "postgresql://ann:p%40ss-word@db/jobq"
    assert redact_text("bad token p%40ss-word and p@ss-word", url) == "bad token *** and ***"


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+psycopg://ann:{SECRET}@127.0.0.1:1/jobq",  # unknown scheme
        f"mysql://ann:{SECRET}@127.0.0.1/jobq",
        f"host=127.0.0.1 port=1 user=ann password={SECRET} dbname=jobq",  # keyword string
        f"postgresql://ann:{SECRET}%zz@127.0.0.1:1/jobq",  # bad percent-encoding
    ],
)
def test_refused_urls_name_neither_user_nor_password(url: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(jobq.JobqError) as info:
        open_backend(url)
    message = str(info.value)
    assert SECRET not in message and "ann" not in message
    assert "\n" not in message
    assert list(tmp_path.iterdir()) == []  # no SQLite file named after the connection string


def test_queue_display_url(tmp_path) -> None:
    with jobq.Queue(f"sqlite:///{tmp_path}/q.db") as q:
        assert q.display_url == q.url


def test_pieces_of_an_unescaped_password_are_masked_too() -> None:
    # libpq splits "ann:p@ss:<secret>@host" at the first "@" and quotes "ss:<secret>@host" as a host.
    url = f"postgresql://ann:p@ss:{SECRET}@127.0.0.1:1/jobq"
    assert redact_text(f"cannot connect to PostgreSQL at ss:{SECRET}@127.0.0.1:1/jobq", url) == (
        "cannot connect to PostgreSQL at ss:***@127.0.0.1:1/jobq"
    )
    assert SECRET not in redact_text(f"bad URL 'sqlite://ann:{SECRET}@h/q.db'", f"sqlite://ann:{SECRET}@h/q.db")


def test_redact_text_takes_several_urls_and_skips_none() -> None:
    urls = (None, f"postgresql://a:{SECRET}@db/x", "postgresql://b:other-pw@db/y", "")
    assert redact_text(f"{SECRET} other-pw", *urls) == "*** ***"


def test_settings_repr_masks_the_password() -> None:
    settings = jobq.Settings(database_url=f"postgresql://ann:{SECRET}@db/jobq")
    assert SECRET not in repr(settings) and SECRET not in str(settings)
    assert "postgresql://ann:***@db/jobq" in repr(settings)


def test_redacting_filter_masks_message_arguments_and_traceback() -> None:
    url = f"postgresql://ann:{SECRET}@db/jobq"
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter(url))
    logger = logging.getLogger("test-redact")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.error("cannot open %s (%d%%)", url, 100)
        try:
            raise RuntimeError(f"driver said {url}")
        except RuntimeError:
            logger.exception("tick failed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert SECRET not in text
    assert "cannot open postgresql://ann:***@db/jobq (100%)" in text
    assert "RuntimeError: driver said postgresql://ann:***@db/jobq" in text


def test_the_worker_masks_the_password_in_its_logs_and_stored_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"postgresql://ann:{SECRET}@db.invalid/jobq"
    backend = SqliteBackend(f"sqlite:///{tmp_path}/q.db")
    queue = jobq.Queue(settings=jobq.Settings(database_url=url, poll_interval_seconds=0.01), backend=backend)
    job_id = queue.enqueue({}, max_attempts=1)
    real_claim = queue.claim_many
    calls = []

    def flaky_claim(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:  # after the job ran: fails once, as a careless driver message would
            raise StorageError(f"cannot connect to {url}")
        return real_claim(*args, **kwargs)

    def handler(ctx: Any) -> None:
        raise RuntimeError(f"handler could not reach {url}")

    monkeypatch.setattr(queue, "claim_many", flaky_claim)
    caplog.set_level(logging.INFO)
    try:
        Worker(queue, handler, exit_when_idle=True).run()
        job = queue.get(job_id)
    finally:
        queue.close()
    assert job.status == jobq.JobStatus.FAILED
    assert job.last_error and "handler could not reach postgresql://ann:***@" in job.last_error
    assert SECRET not in job.last_error
    assert "worker loop: cannot connect to postgresql://ann:***@" in caplog.text
    assert SECRET not in caplog.text


def test_sqlite_url_errors_and_postgres_hosts_are_masked() -> None:
    with pytest.raises(jobq.ConfigError) as info:
        open_backend(f"sqlite://ann:{SECRET}@host/x.db")
    assert SECRET not in str(info.value)
    from jobq.backends.postgres import describe_url

    # An unescaped "@" in the password: libpq takes part of it for the host.
    assert SECRET not in describe_url(f"postgresql://ann:pa@{SECRET}@127.0.0.1:1/db")
