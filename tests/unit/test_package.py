"""The package's top level: every public name resolves, and a plain ``import jobq`` (the CLI's
``jobq list``, a producer) loads neither asyncio nor the worker's modules until one is used."""

from __future__ import annotations

import subprocess
import sys

import pytest

import jobq


def test_every_public_name_resolves_and_is_listed() -> None:
    for name in jobq.__all__:
        assert getattr(jobq, name) is not None, name
    assert set(jobq.__all__) <= set(dir(jobq))
    assert jobq.task is jobq.worker.task
    assert jobq.AsyncQueue is jobq.async_queue.AsyncQueue
    assert jobq.worker.REGISTRY is jobq.worker.registry.REGISTRY  # as docs/retries.md uses it
    with pytest.raises(AttributeError, match="no attribute 'Wroker'"):
        jobq.Wroker  # noqa: B018 - the misspelling is the point


def _loaded(code: str) -> str:
    probe = "; print(sorted(m for m in ('asyncio', 'jobq.worker', 'jobq.async_queue') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", f"import sys; {code}{probe}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_import_jobq_and_the_cli_load_no_asyncio_and_no_worker_until_used() -> None:
    assert _loaded("import jobq, jobq.cli; jobq.Queue") == "[]"
    assert _loaded("import jobq; jobq.Worker") == "['asyncio', 'jobq.worker']"
    assert _loaded("from jobq import AsyncQueue") == "['asyncio', 'jobq.async_queue']"
