"""Retry backoff: exponential with jitter, capped."""

from __future__ import annotations

import random

from jobq.config import BACKOFF_BASE_SECONDS_DEFAULT, BACKOFF_CAP_SECONDS_DEFAULT


def backoff_seconds(
    attempt: int,
    *,
    base: float = BACKOFF_BASE_SECONDS_DEFAULT,
    cap: float = BACKOFF_CAP_SECONDS_DEFAULT,
    rng: random.Random | None = None,
) -> float:
    """Delay before the retry that follows failed ``attempt`` (1-based).

    ``base * 2**(attempt-1)``, capped at ``cap``, then scaled by a random factor in [0.5, 1.0]
    ("equal jitter"): retries of jobs that failed together spread out instead of stampeding,
    and no retry comes sooner than half the nominal delay.
    """
    nominal = min(cap, base * 2.0 ** max(0, attempt - 1))
    draw = rng.random() if rng is not None else random.random()
    return nominal * (0.5 + 0.5 * draw)
