"""A handler's ``ctx.sleep`` as a wait: bounded, never an OverflowError (unit: the arithmetic)."""

from __future__ import annotations

import math

import pytest

from jobq.config import DURATION_MAX_SECONDS
from jobq.worker.context import _sleep_seconds


@pytest.mark.parametrize(
    ("seconds", "wait"),
    [(0.25, 0.25), (3, 3.0), (-5, 0.0), (0, 0.0), (math.inf, DURATION_MAX_SECONDS), (10**400, DURATION_MAX_SECONDS)],
)
def test_a_sleep_is_a_wait_of_at_most_a_century(seconds: float, wait: float) -> None:
    assert _sleep_seconds(seconds) == wait


@pytest.mark.parametrize("seconds", [math.nan, "1", None, True])
def test_what_is_no_number_of_seconds_is_refused(seconds: object) -> None:
    with pytest.raises(ValueError, match=r"ctx\.sleep takes a number of seconds"):
        _sleep_seconds(seconds)  # type: ignore[arg-type]
