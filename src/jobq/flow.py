"""Flow control's values: rate limits as text (``"100/s"``, ``"10/min"``) and the checks of the
limits an operator sets. The rules themselves live in the claim (``jobq.backends.ops.claim_controlled``);
see docs/flow-control.md.
"""

from __future__ import annotations

import math
import re

from jobq.errors import ConfigError

#: The largest limit or rate count accepted (a 32-bit column on both backends).
LIMIT_MAX = 2**31 - 1
#: Rate windows accepted, in seconds: a millisecond to a week.
RATE_WINDOW_MIN_SECONDS = 0.001
RATE_WINDOW_MAX_SECONDS = 7 * 86400.0

_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*\.?\d*)\s*([a-z]+)\s*$")


def parse_rate(text: str) -> tuple[int, float]:
    """``"100/s"`` -> ``(100, 1.0)``: a count of claims per window of seconds.

    The window is a unit (``ms``, ``s``, ``min``, ``h``, ``d``) with an optional number before it
    (``"5/10s"``: 5 per 10 seconds). Raises ConfigError with one line for anything else.

    >>> parse_rate("10/min")
    (10, 60.0)
    """
    match = _RATE.match(text.lower()) if isinstance(text, str) else None
    unit = match.group(3) if match else ""
    seconds = _UNITS.get(unit) or (_UNITS.get(unit[:-1]) if unit.endswith("s") else None)  # "mins", "hours"
    if match is None or seconds is None:
        shown = text if isinstance(text, str) and len(text) <= 40 else repr(text)[:40]
        raise ConfigError(f"not a rate: {shown!r} (use COUNT/UNIT, e.g. 100/s, 10/min, 5/10s, 1000/h)")
    count = int(match.group(1))
    scale = float(match.group(2)) if match.group(2) not in ("", ".") else 1.0
    window = scale * seconds
    return check_rate(count, window)


def check_rate(count: int, window: float) -> tuple[int, float]:
    """``(count, window)`` if both are in range, else ConfigError."""
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= LIMIT_MAX:
        raise ConfigError(f"a rate's count must be a whole number from 1 to {LIMIT_MAX}, not {count!r}")
    if not isinstance(window, int | float) or not math.isfinite(window):
        raise ConfigError(f"a rate's window must be a number of seconds, not {window!r}")
    if not RATE_WINDOW_MIN_SECONDS <= float(window) <= RATE_WINDOW_MAX_SECONDS:
        raise ConfigError(f"a rate's window must be from 1 ms to 7 days, not {window} s")
    return count, float(window)


def check_limit(value: int, what: str) -> int:
    """A concurrency limit: a whole number from 1 (pause a queue to stop it: ``jobq pause``)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= LIMIT_MAX:
        raise ConfigError(
            f"{what} must be a whole number from 1 to {LIMIT_MAX}, not {value!r} (to stop a queue, pause it)"
        )
    return value


def format_rate(count: int, window: float) -> str:
    """``(100, 1.0)`` -> ``"100/s"``; ``(5, 10.0)`` -> ``"5/10s"``."""
    for unit, seconds in (("d", 86400.0), ("h", 3600.0), ("min", 60.0), ("s", 1.0), ("ms", 0.001)):
        if window == seconds:
            return f"{count}/{unit}"
    return f"{count}/{window:g}s"
