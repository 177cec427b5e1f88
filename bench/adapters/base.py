"""The adapter interface every system implements (harness side and worker side)."""

from __future__ import annotations

import os
import time
from typing import Any

from bench.core import NotSupported, Record, chunks


class Consumer:
    """The worker side: claim and complete jobs, one step at a time."""

    #: Systems without a wake-up mechanism are polled this often by an idle worker.
    poll_seconds = 0.001

    def take(self) -> list[Record]:
        """Claim+complete up to one batch; one record per job; [] when nothing is due."""
        raise NotImplementedError

    def wait(self, timeout: float) -> None:
        """Sleep while idle: until woken (systems with a wake-up) or for one poll interval."""
        time.sleep(min(timeout, self.poll_seconds))

    def close(self) -> None:
        pass


class Adapter:
    """The harness side. ``env`` names the fresh store of this run (``workdir``, ``run``, ``dsn``)."""

    #: At-least-once across processes with an explicit acknowledgement (a crash loses nothing).
    safe = True
    #: "FULL" / "NORMAL" for SQLite rows (to pair with the raw limit); None elsewhere.
    durability: str | None = None

    def __init__(self, options: dict[str, Any], env: dict[str, Any]) -> None:
        self.options = options
        self.env = env

    @classmethod
    def unavailable(cls, options: dict[str, Any], env: dict[str, Any]) -> str | None:
        """Why this system cannot run here (not installed, no server), or None."""
        return None

    @property
    def sqlite_path(self) -> str:
        return os.path.join(self.env["workdir"], f"{self.env['run']}.db")

    def setup(self) -> None:
        """Create the fresh, empty store (schema included)."""

    def enqueue(self, payload: dict[str, Any]) -> None:
        raise NotImplementedError

    def enqueue_batch(self, payloads: list[dict[str, Any]]) -> None:
        raise NotSupported

    def prefill(self, payloads: list[dict[str, Any]]) -> None:
        """Store the backlog for a claim run (not timed): batches when possible."""
        try:
            for chunk in chunks(payloads, 1000):
                self.enqueue_batch(chunk)
        except NotSupported:
            for p in payloads:
                self.enqueue(p)

    def consumer(self, index: int) -> Consumer:
        raise NotImplementedError

    def close(self) -> None:
        pass
