"""Settings: one typed dataclass with named defaults, loaded in layers.

Layers, lowest first: the defaults below, a TOML file (``jobq.toml`` in the working directory or
``JOBQ_CONFIG``), environment variables ``JOBQ_*``, then explicit overrides (CLI flags).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jobq.errors import ConfigError
from jobq.payloads import names_a_queue
from jobq.redact import redact_url

DATABASE_URL_DEFAULT = "sqlite:///data/queue.db"
QUEUE_DEFAULT = "default"
LEASE_SECONDS_DEFAULT = 30.0
#: Heartbeat well inside the lease (pgqueuer#430 re-picked live jobs whose heartbeat exceeded it).
HEARTBEAT_FRACTION_OF_LEASE = 1 / 3
MAX_ATTEMPTS_DEFAULT = 3
BACKOFF_BASE_SECONDS_DEFAULT = 1.0
BACKOFF_CAP_SECONDS_DEFAULT = 300.0
PAYLOAD_LIMIT_BYTES_DEFAULT = 64 * 1024
POLL_INTERVAL_SECONDS_DEFAULT = 1.0
POLL_INTERVAL_SECONDS_MIN = 0.001
"""A poll interval of 0 made an idle worker spin at 100 % CPU."""
PRODUCER_INTERVAL_SECONDS_MIN = 0.001
"""A producer's least interval: at 0 it wrote and submitted files as fast as the disk took them."""
SHUTDOWN_GRACE_SECONDS_DEFAULT = 20.0
CONCURRENCY_DEFAULT = 1
#: Coroutines of ``async def`` handlers one worker runs at once on its event loop. A waiting
#: coroutine costs a few KiB, not a thread: 100 keeps I/O-bound jobs busy without flooding peers.
ASYNC_CONCURRENCY_DEFAULT = 100
#: The default worker claims jobs ahead of its free threads only while they would wait at most
#: this long at the recent run times (see ``jobq.worker.prefetch``); 0 turns that off.
PREFETCH_WAIT_SECONDS_DEFAULT = 0.005
RESCUE_INTERVAL_SECONDS_DEFAULT = 5.0
DATA_DIR_DEFAULT = "data"
PRODUCER_INTERVAL_SECONDS_DEFAULT = 5.0
CONSUMER_DELAY_DEFAULT = "7-15"
PRUNE_AFTER_SECONDS_DEFAULT: float | None = None
LOG_FORMAT_DEFAULT = "text"
#: ``text``: one readable line per record; ``json``: one JSON object per line (jobq.observability.logs).
LOG_FORMATS = ("text", "json")
METRICS_HOST_DEFAULT = "127.0.0.1"
"""Where ``jobq metrics`` and ``jobq worker --metrics-port`` listen: loopback unless told."""
METRICS_PORT_DEFAULT = 9464
CLOCK_SKEW_CORRECTED_SECONDS = 1.0
"""A store on other hosts (PostgreSQL): when this host's clock is at least this far from the
database server's, a Queue with the default clock reads the server's time instead (``Queue.clock_offset``).
Below it the host's clock is used as it is: leases of tens of seconds do not notice, and a
measurement's own error (half a round trip) never moves the times of a store on this machine."""
CLOCK_SYNC_SECONDS = 60.0
"""How often a Queue measures its host's clock against the store's again (``Queue.sync_clock``),
before its next call that stamps or judges a lease; at once when the host's clock steps."""
CLOCK_SAMPLES = 3
"""Reads of the store's clock per measurement: the one with the shortest round trip is kept."""
CLOCK_RETRY_SECONDS = 5.0
"""After a measurement that could not read the store's clock (the server away, a reply lost), the
next one is tried this much later, not a whole ``CLOCK_SYNC_SECONDS``: a step it was made for is
still to correct. Not sooner: while the server is away every call would wait for it twice."""

#: Job ids, LIMIT and OFFSET are 64-bit signed integers on both backends.
INT64_MAX = 2**63 - 1
#: PostgreSQL ``integer`` columns (priority, attempts) are 32-bit, SQLite's are 64-bit: jobq holds
#: both backends to the narrower range, so a value accepted on one is accepted on the other.
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
#: Most handler threads per worker process: each costs a stack, and more than this is a typo
#: (scale out with more worker processes instead).
CONCURRENCY_MAX = 1024
#: Most coroutines per worker process: far more than any peer service copes with is a typo.
ASYNC_CONCURRENCY_MAX = 100_000
#: Longest duration accepted anywhere (100 years). Longer ones are typos, and past ~292 years a
#: thread's wait() raises OverflowError; an unbounded "9"*400 would even parse as infinity.
DURATION_MAX_SECONDS = 100 * 365.25 * 86400

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(text: str | float | int) -> float:
    """Parse ``"30"``, ``"1.5s"``, ``"250ms"``, ``"10m"``, ``"7d"`` into seconds.

    >>> parse_duration("7d")
    604800.0
    """
    if isinstance(text, int | float):
        if text < 0:
            raise ConfigError(f"duration must not be negative: {text}")
        return _check_duration(float(text))
    match = _DURATION.match(text)
    if not match:
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise ConfigError(f"not a duration: {shown!r} (use e.g. 30, 1.5s, 250ms, 10m, 2h, 7d)")
    return _check_duration(float(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def _check_duration(seconds: float) -> float:
    """``seconds`` if it lies in [0, ``DURATION_MAX_SECONDS``], else ConfigError."""
    if not 0 <= seconds <= DURATION_MAX_SECONDS:  # also refuses NaN and infinity
        raise ConfigError(f"duration must be between 0 and 100 years ({DURATION_MAX_SECONDS:.0f} s)")
    return seconds


def seconds_or(value: object, other: float) -> float:
    """``value`` as float seconds when it is a real, finite number (not a bool), else ``other``:
    the one test of a time argument, each caller naming its own range."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return other
    try:
        return float(value) if math.isfinite(value) else other
    except OverflowError:  # an int past any float (10**400): no time at all
        return other


def check_lease(lease: float) -> float:
    """A lease a call asks for (``claim(lease=...)``, ``heartbeat(lease=...)``), as seconds: more
    than 0 and at most ``DURATION_MAX_SECONDS``, else ValueError. A lease of NaN was stored as no
    lease, one of infinity (or 1e300) never expired, one below 0 had expired when granted."""
    if not 0 < seconds_or(lease, -1.0) <= DURATION_MAX_SECONDS:
        raise ValueError(f"lease must be a number of seconds above 0 and at most 100 years, not {lease!r}")
    return float(lease)


def parse_range(text: str) -> tuple[float, float]:
    """Parse a ``"7-15"`` seconds range (``"0-0.05"``, or one number ``"3"``)."""
    parts = text.strip().split("-")
    try:
        if len(parts) == 1:
            low = high = float(parts[0])
        elif len(parts) == 2:
            low, high = float(parts[0]), float(parts[1])
        else:
            raise ValueError
    except ValueError:
        raise ConfigError(f"not a range of seconds: {text!r} (use e.g. 7-15 or 0-0.05)") from None
    if low < 0 or high < low:
        raise ConfigError(f"bad range of seconds: {text!r} (need 0 <= low <= high)")
    return low, _check_duration(high)


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Everything a jobq process can be told. Env names are ``JOBQ_`` + the upper-case field."""

    database_url: str = DATABASE_URL_DEFAULT
    queue: str = QUEUE_DEFAULT
    lease_seconds: float = LEASE_SECONDS_DEFAULT
    max_attempts: int = MAX_ATTEMPTS_DEFAULT
    backoff_base_seconds: float = BACKOFF_BASE_SECONDS_DEFAULT
    backoff_cap_seconds: float = BACKOFF_CAP_SECONDS_DEFAULT
    payload_limit_bytes: int = PAYLOAD_LIMIT_BYTES_DEFAULT
    poll_interval_seconds: float = POLL_INTERVAL_SECONDS_DEFAULT
    shutdown_grace_seconds: float = SHUTDOWN_GRACE_SECONDS_DEFAULT
    concurrency: int = CONCURRENCY_DEFAULT
    async_concurrency: int = ASYNC_CONCURRENCY_DEFAULT
    prefetch_wait_seconds: float = PREFETCH_WAIT_SECONDS_DEFAULT
    rescue_interval_seconds: float = RESCUE_INTERVAL_SECONDS_DEFAULT
    prune_after_seconds: float | None = PRUNE_AFTER_SECONDS_DEFAULT
    data_dir: str = DATA_DIR_DEFAULT
    producer_interval_seconds: float = PRODUCER_INTERVAL_SECONDS_DEFAULT
    consumer_delay: str = CONSUMER_DELAY_DEFAULT
    operator: str | None = None
    log_format: str = LOG_FORMAT_DEFAULT
    metrics_host: str = METRICS_HOST_DEFAULT
    metrics_port: int | None = None
    """A worker serves Prometheus metrics on this port when set (``jobq metrics`` defaults to
    ``METRICS_PORT_DEFAULT``)."""
    manager_url: str | None = None
    """Where the operator's browser reaches the manager app (e.g. ``http://localhost:8501/``):
    ops links each job to it (``?job=ID``). Unset, ops shows a copyable ``jobq show ID`` instead."""

    def __repr__(self) -> str:
        """The dataclass repr with the database password masked: settings end up in logs."""
        shown = ", ".join(
            f"{f.name}={redact_url(self.database_url) if f.name == 'database_url' else getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
        )
        return f"Settings({shown})"

    @property
    def heartbeat_seconds(self) -> float:
        return self.lease_seconds * HEARTBEAT_FRACTION_OF_LEASE

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied; ``None`` values are ignored (an unset CLI flag)."""
        given = {k: v for k, v in changes.items() if v is not None}
        return _coerce(dataclasses.replace(self, **given))


# Fields with extra env spellings: the short names users type (JOBQ_LEASE rather than JOBQ_LEASE_SECONDS).
_ENV_ALIASES = {
    "producer_interval_seconds": ("JOBQ_PRODUCER_INTERVAL",),
    "lease_seconds": ("JOBQ_LEASE",),
    "shutdown_grace_seconds": ("JOBQ_SHUTDOWN_GRACE",),
    "poll_interval_seconds": ("JOBQ_POLL_INTERVAL",),
}


def env_name(field: str) -> str:
    """The environment variable that sets ``field`` (shown in CLI help)."""
    aliases = _ENV_ALIASES.get(field)
    return aliases[0] if aliases else "JOBQ_" + field.upper()


def _coerce(settings: Settings) -> Settings:
    """Convert strings (from env or TOML) to each field's type, with one-line errors."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        kind = str(f.type)
        if value is None and "None" in kind:
            out[f.name] = None
            continue
        # Each value is of its field's type, or text to convert; anything else is refused here.
        # A TOML file's `lease_seconds = true` was a 1 s lease, `concurrency = 2.5` and
        # `data_dir = []` ended in TypeError tracebacks, `consumer_delay = 5` broke every command.
        try:
            if isinstance(value, bool):
                raise ValueError
            if "float" in kind:
                if not isinstance(value, str | int | float):
                    raise ValueError
                out[f.name] = parse_duration(value)  # numbers get the same range check as text
            elif "int" in kind:
                if isinstance(value, str) and value.strip().isascii():  # not '١٢' (Arabic digits)
                    value = int(value)
                if not isinstance(value, int):
                    raise ValueError
                out[f.name] = value
            elif not isinstance(value, str):
                raise ValueError
            else:
                out[f.name] = value
        except ValueError:
            wanted = "a duration" if "float" in kind else "a whole number" if "int" in kind else "text"
            raise ConfigError(f"{f.name} must be {wanted}, not {value!r:.40}") from None
        except ConfigError as exc:
            raise ConfigError(f"{f.name}: {exc}") from None
    result = Settings(**out)
    if not names_a_queue(result.queue):  # checked again at enqueue; here, before a producer starts
        raise ConfigError(f"queue must not be empty or begin or end with a space, not {result.queue!r:.40}")
    if result.lease_seconds <= 0:
        raise ConfigError("lease_seconds must be positive")
    if result.poll_interval_seconds < POLL_INTERVAL_SECONDS_MIN:  # 0: an idle worker spun at 100 % CPU
        raise ConfigError(f"poll_interval_seconds must be at least {POLL_INTERVAL_SECONDS_MIN:g} s")
    if result.producer_interval_seconds < PRODUCER_INTERVAL_SECONDS_MIN:
        raise ConfigError(f"producer_interval_seconds must be at least {PRODUCER_INTERVAL_SECONDS_MIN:g} s")
    if not 1 <= result.payload_limit_bytes <= INT32_MAX:
        raise ConfigError(f"payload_limit_bytes must be between 1 and {INT32_MAX}")
    if not 1 <= result.max_attempts <= INT32_MAX:
        raise ConfigError(f"max_attempts must be between 1 and {INT32_MAX}")
    if not 1 <= result.concurrency <= CONCURRENCY_MAX:
        raise ConfigError(f"concurrency must be between 1 and {CONCURRENCY_MAX}")
    if not 1 <= result.async_concurrency <= ASYNC_CONCURRENCY_MAX:
        raise ConfigError(f"async_concurrency must be between 1 and {ASYNC_CONCURRENCY_MAX}")
    parse_range(result.consumer_delay)
    if result.log_format not in LOG_FORMATS:
        raise ConfigError(f"log_format must be one of {', '.join(LOG_FORMATS)}, not {result.log_format!r}")
    if result.metrics_port is not None and not 0 < result.metrics_port <= 65535:
        raise ConfigError(f"metrics_port must be between 1 and 65535, not {result.metrics_port}")
    return result


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
) -> Settings:
    """Build Settings from defaults < TOML file < environment < ``overrides``."""
    env = os.environ if env is None else env
    layered: dict[str, Any] = {}
    named = config_file or env.get("JOBQ_CONFIG")
    path = Path(named or "jobq.toml")
    if named and not path.is_file():
        # ./jobq.toml is optional; a file named on purpose is not: a typo in --config or
        # JOBQ_CONFIG quietly ran on the defaults (another database) before.
        raise ConfigError(f"config file not found: {path}")
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        data = data.get("jobq", data)
        if not isinstance(data, dict):  # `jobq = 5`: the [jobq] table is a value
            raise ConfigError(f"{path}: [jobq] must be a table of settings")
        known = {f.name for f in dataclasses.fields(Settings)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown settings: {', '.join(unknown)}")
        layered.update(data)
    for f in dataclasses.fields(Settings):
        for name in ("JOBQ_" + f.name.upper(), *_ENV_ALIASES.get(f.name, ())):
            if env.get(name):
                layered[f.name] = env[name]
    layered.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return Settings().replace(**layered)
