"""Flow control's values: rate limits as text (``"100/s"``, ``"10/min"``) and the checks of the
limits an operator sets. The rules themselves live in the claim (``jobq.backends.ops.claim_controlled``);
see docs/flow-control.md.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

from jobq.config import CLOCK_SKEW_CORRECTED_SECONDS
from jobq.errors import ConfigError

log = logging.getLogger("jobq.flow")

#: The largest limit or rate count accepted (a 32-bit column on both backends).
LIMIT_MAX = 2**31 - 1
#: Rate windows accepted, in seconds: a millisecond to a week.
RATE_WINDOW_MIN_SECONDS = 0.001
RATE_WINDOW_MAX_SECONDS = 7 * 86400.0
RATE_ADMISSION_SLACK_SECONDS = 2 * CLOCK_SKEW_CORRECTED_SECONDS
"""How much further than one step ahead a rate's next admission may stand and still be taken as
written (``next_admission``). Hosts whose clocks are each less than CLOCK_SKEW_CORRECTED_SECONDS
off the database server's keep their own (none is corrected), so two may be up to twice that
apart, and the one behind reads the other's admissions that much further ahead. Taken as one step
from its own now, it would move the next admission back, the host ahead would admit again at
once, and the rate would break at every such turn."""
#: The error a queue_controls row gets when it is written with values control_defect would find
#: (both backends' schema checks raise it; no quote, it sits inside SQL text).
CONTROLS_REFUSED = (
    "queue_controls: a limit is a whole number from 1 to 2147483647, a rate needs both its count "
    "and a finite window of seconds above 0 (set them with jobq limit)"
)

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
    if not isinstance(window, (int, float)):  # a row written by hand (see ``control_defect``)
        return f"{count}/{window!r:.20}s"
    return f"{count}/{window:g}s"


def next_admission(tat: float | None, rate_count: int, rate_window: float, now: float) -> float | None:
    """When a rate-limited queue admits its next claim (GCRA's "theoretical arrival time"), as
    seen at ``now``; None: at once. jobq writes it one step (``window / count``) past the claim
    that admitted a job, so it is never further ahead of the clock than that, give or take the
    clocks of other hosts (``RATE_ADMISSION_SLACK_SECONDS``). One further ahead was written by a
    clock since set back (a VM restored from a snapshot, a clock stepped back) or by hand: taken
    as it stood, the queue would admit nothing for as long as the step (minutes, or for good).
    It is taken as one step from now: a wait the rate asks anyway, so the limit never admits
    faster than its rate."""
    if tat is None:
        return None
    step = float(rate_window) / int(rate_count)
    return now + step if float(tat) > now + step + RATE_ADMISSION_SLACK_SECONDS else float(tat)


def control_defect(concurrency: Any, per_key: Any, rate_count: Any, rate_window: Any, tat: Any) -> str | None:
    """Why a ``queue_controls`` row cannot be enforced, or None when it can. jobq writes only good
    rows, but one written by hand gets past the table's CHECKs: SQLite stores text in a number
    column and orders any text above any number (``'lots' >= 1`` holds), PostgreSQL takes
    ``'NaN'`` as larger than every number, and neither ties a rate's count to its window."""

    def limit(value: Any) -> bool:
        return value is None or (type(value) is int and 1 <= value <= LIMIT_MAX)

    def seconds(value: Any) -> bool:
        return type(value) in (int, float) and math.isfinite(value)

    if not limit(concurrency):
        return f"concurrency {concurrency!r:.20}"
    if not limit(per_key):
        return f"per-key limit {per_key!r:.20}"
    if (rate_count is None) != (rate_window is None):
        return "a rate with a count or a window but not both"
    if rate_count is not None and not (limit(rate_count) and seconds(rate_window) and rate_window > 0):
        return f"rate {rate_count!r:.20}/{rate_window!r:.20}"
    if tat is not None and not seconds(tat):
        return f"next admission time {tat!r:.20}"
    return None


_REPORTED: set[tuple[str, str]] = set()


def report_defect(queue: str, defect: str) -> None:
    """Log, once per process, that ``queue`` is held back because its control row is bad."""
    if (queue, defect) not in _REPORTED:
        _REPORTED.add((queue, defect))
        log.error(
            "queue %r: its flow-control row has %s (written by hand?); none of its jobs are claimed "
            "until it is set again (jobq limit %s --clear, or --concurrency/--per-key/--rate)",
            queue,
            defect,
            queue,
        )
