"""One redaction for every place a database URL is shown: apps, CLI, errors, logs."""

from __future__ import annotations

import pytest

import jobq
from jobq.backends import open_backend
from jobq.redact import redact_text, redact_url

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
