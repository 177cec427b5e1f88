"""jobq's own options in a PostgreSQL URL, taken out before the rest goes to libpq.

libpq refuses query parameters it does not know, so jobq's (``schema``, ``listen_url``,
``pooler``, ``prepare_threshold``, ``lock_timeout`` and ``pool_timeout``) are removed from the URL
here and everything else (``sslmode``, ``connect_timeout``, ``target_session_attrs``, ...) is
passed on untouched, byte for byte:

- ``schema=NAME`` (default ``jobq``): the PostgreSQL schema holding the queue's tables. Two
  schemas in one database are two independent queues. Never ``public``, where ``jobs`` collides
  with many applications' own tables.
- ``pooler=transaction``: the URL goes through a transaction pooler (PgBouncer's
  ``pool_mode = transaction``, or one like it), which hands each transaction to any server
  connection, so nothing may rely on session state: psycopg's server-side prepared statements
  are off (unless ``prepare_threshold`` says otherwise, e.g. for PgBouncer 1.21+ with
  ``max_prepared_statements``) and no ``LISTEN`` is sent through it.
- ``listen_url=URL`` (percent-encoded): a direct connection used only to ``LISTEN`` for wake-ups.
  Behind a transaction pooler without it, idle workers poll (``poll_interval_seconds``).
- ``prepare_threshold=N|none``: psycopg's setting (how many runs of a statement before it is
  prepared on the server; ``none``: never).
- ``lock_timeout=MS``: a statement that waits this long for a lock another session holds gives
  up, and the call raises StorageError naming the likely holders; nothing of it is changed. The
  web apps ask for 2000 (an action behind a ``SELECT ... FOR UPDATE`` left open in psql froze the
  page for as long), as they ask SQLite for ``busy_timeout``. Not behind ``pooler=transaction``
  (a session setting: the pooler refuses it).
- ``pool_timeout=SECONDS`` (default ``POOL_TIMEOUT_SECONDS_DEFAULT``, 15): how long a call waits
  for a connection before it raises StorageError. The default rides out a server's restart; a
  program that would rather fail at once while the server is away (a web request enqueueing a
  job) gives a shorter one. The error then names the cause in one line (the direct connection
  it tries: ``connection refused``, or ``no free connection`` when the pool's connections were
  all busy). With an unreachable host that one connection waits up to libpq's
  ``connect_timeout`` (10 s unless the URL sets it).
"""

from __future__ import annotations

import dataclasses
import math
import re
import urllib.parse

from jobq.errors import ConfigError

SCHEMA_DEFAULT = "jobq"
POOLER_MODES = ("none", "transaction")
OPTION_NAMES = ("schema", "listen_url", "pooler", "prepare_threshold", "lock_timeout", "pool_timeout")
#: The longest ``lock_timeout`` taken (PostgreSQL's own limit is 2**31 - 1 ms).
LOCK_TIMEOUT_MS_MAX = 2**31 - 1
POOL_TIMEOUT_SECONDS_DEFAULT = 15.0
"""How long a call waits for a pooled connection (e.g. while the server restarts) before failing."""
#: The longest ``pool_timeout`` taken: a day (longer is a typo, or a wait better not made at all).
POOL_TIMEOUT_SECONDS_MAX = 86_400.0

# Lower case only, so the name means the same quoted or not (PostgreSQL folds unquoted names to
# lower case), and short enough that the NOTIFY channel built from it stays within the 63 bytes
# of an identifier.
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,47}$")
_RESERVED_SCHEMAS = ("public", "information_schema")


@dataclasses.dataclass(frozen=True)
class PgOptions:
    """What jobq takes from a PostgreSQL URL beyond the connection itself."""

    libpq_url: str
    """The URL without jobq's options: what psycopg connects with."""
    schema: str = SCHEMA_DEFAULT
    listen_url: str | None = None
    """libpq URL of the direct connection that LISTENs (None: the main URL, or polling)."""
    pooler: str = "none"
    prepare_threshold: int | None = 5
    """psycopg's own default is 5; None turns server-side prepared statements off."""
    lock_timeout_ms: int | None = None
    """The session's ``lock_timeout`` (None: PostgreSQL's default, wait without end)."""
    pool_timeout_seconds: float = POOL_TIMEOUT_SECONDS_DEFAULT
    """How long a call waits for a pooled connection before it fails."""

    @property
    def behind_transaction_pooler(self) -> bool:
        return self.pooler == "transaction"

    @property
    def channel(self) -> str:
        """The NOTIFY channel of this queue: one per schema, so queues in one database never wake
        each other's workers."""
        return f"jobq_wakeup_{self.schema}"

    @property
    def done_channel(self) -> str:
        """The NOTIFY channel of finished jobs (payload: their ids), for ``Queue.wait``. Apart from
        ``channel``: idle workers are not woken by every completion."""
        return f"jobq_done_{self.schema}"


def check_schema_name(name: str) -> str:
    """``name`` if it may name jobq's schema; ConfigError (one line) otherwise."""
    if not _SCHEMA_NAME.match(name) or name.startswith("pg_") or name in _RESERVED_SCHEMAS:
        raise ConfigError(
            f"bad schema name {name[:64]!r} in the database URL: use 1 to 48 lower-case letters, digits "
            "and _, not starting with a digit or pg_, and not public or information_schema"
        )
    return name


def split_url(url: str) -> PgOptions:
    """Take jobq's options out of a PostgreSQL URL (see the module docstring).

    >>> o = split_url("postgresql://ann@db/app?sslmode=require&schema=mail")
    >>> (o.libpq_url, o.schema)
    ('postgresql://ann@db/app?sslmode=require', 'mail')
    """
    base, has_query, query = url.partition("?")
    query, has_fragment, fragment = query.partition("#")
    kept: list[str] = []
    found: dict[str, str] = {}
    for part in query.split("&") if has_query else []:
        key, _, value = part.partition("=")
        if key not in OPTION_NAMES:
            if part:
                kept.append(part)
            continue
        if key in found:
            raise ConfigError(f"{key} is given twice in the database URL")
        found[key] = urllib.parse.unquote(value)
    libpq_url = base + ("?" + "&".join(kept) if kept else "") + (f"#{fragment}" if has_fragment else "")

    schema = check_schema_name(found.get("schema", SCHEMA_DEFAULT))
    pooler = found.get("pooler", "none").lower()
    if pooler not in POOLER_MODES:
        raise ConfigError(f"bad pooler {pooler[:32]!r} in the database URL: use one of {', '.join(POOLER_MODES)}")
    threshold: int | None = None if pooler == "transaction" else 5
    if "prepare_threshold" in found:
        raw = found["prepare_threshold"].strip().lower()
        if raw in ("none", "off", ""):
            threshold = None
        elif raw.isdigit():
            threshold = int(raw)
        else:
            raise ConfigError(f"bad prepare_threshold {raw[:32]!r} in the database URL: a whole number, or none")
    lock_timeout: int | None = None
    if "lock_timeout" in found:
        raw = found["lock_timeout"].strip()
        if not raw.isdigit() or not 0 < int(raw) <= LOCK_TIMEOUT_MS_MAX:
            raise ConfigError(
                f"bad lock_timeout {raw[:32]!r} in the database URL: a whole number of milliseconds, "
                f"1 to {LOCK_TIMEOUT_MS_MAX}"
            )
        if pooler == "transaction":
            raise ConfigError("lock_timeout is a session setting: a transaction pooler (pooler=transaction) refuses it")
        lock_timeout = int(raw)
    pool_timeout = POOL_TIMEOUT_SECONDS_DEFAULT
    if "pool_timeout" in found:
        raw = found["pool_timeout"].strip()
        try:
            pool_timeout = float(raw)
        except ValueError:
            pool_timeout = math.nan
        if not 0 < pool_timeout <= POOL_TIMEOUT_SECONDS_MAX:  # also NaN
            raise ConfigError(
                f"bad pool_timeout {raw[:32]!r} in the database URL: seconds, more than 0 and at most "
                f"{POOL_TIMEOUT_SECONDS_MAX:.0f}"
            )
    listen_url = None
    if "listen_url" in found:
        listen = found["listen_url"]
        if not listen.lower().startswith(("postgresql://", "postgres://")):
            raise ConfigError("listen_url in the database URL must be a postgresql:// URL (percent-encoded)")
        inner_keys = {part.partition("=")[0] for part in listen.partition("?")[2].split("&")}
        if inner_keys & set(OPTION_NAMES):
            raise ConfigError("listen_url names a server only: put schema, pooler and the like on the main URL")
        listen_url = listen
    return PgOptions(
        libpq_url=libpq_url,
        schema=schema,
        listen_url=listen_url,
        pooler=pooler,
        prepare_threshold=threshold,
        lock_timeout_ms=lock_timeout,
        pool_timeout_seconds=pool_timeout,
    )
