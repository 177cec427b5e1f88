"""The contract suite once more, through ``jobq.AsyncQueue`` (on both backends): every test that
calls a method ``AsyncQueue`` defines runs that coroutine."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import jobq
from jobq.testing import FakeClock
from jobq.testing.contract import *  # noqa: F403 - every contract test, collected here
from jobq.testing.contract.asyncio_adapter import BlockingAsyncQueue


@pytest.fixture
def queue(backend_url: str, clock: FakeClock) -> Iterator[BlockingAsyncQueue]:
    q = BlockingAsyncQueue(jobq.AsyncQueue(settings=jobq.Settings(database_url=backend_url), clock=clock))
    yield q
    q.close()
