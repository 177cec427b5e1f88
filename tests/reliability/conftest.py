"""Fixtures of the reliability suite (defined in ``harness.py``, which the tests import by name)."""

from harness import agents, record, tmpfs

__all__ = ["agents", "record", "tmpfs"]
