"""One way to show a database URL without its secrets, used wherever a URL is shown or logged.

The apps' captions, the CLI, error messages and logs all go through :func:`redact_url`, and any
text that may quote a URL (a driver's error message) goes through :func:`redact_text`. Under
supervisord those lines land in log files that other users may read, so "never print the
password" has to hold everywhere at once, not only where someone remembered it.
"""

from __future__ import annotations

import logging
import re
import urllib.parse

#: What a password (and a user name in a refused URL) is shown as.
MASK = "***"

# key=value pairs of a libpq keyword connection string ("host=db password=s3cret dbname=jobq").
_KEYWORD_PAIR = re.compile(r"^\s*[A-Za-z_][A-Za-z0-9_]*\s*=")
_SECRET_KEYS = ("password", "passfile", "sslpassword", "sslkey")
# Query options that hold a URL of their own (jobq's ``listen_url``): shown redacted in turn.
_URL_KEYS = ("listen_url",)


def looks_like_keyword_string(text: str) -> bool:
    """True for a libpq ``key=value ...`` connection string (as opposed to a URL or a path)."""
    return "://" not in text and bool(_KEYWORD_PAIR.match(text))


def redact_url(url: str) -> str:
    """``url`` with its password (and secret query options) replaced by ``***``.

    >>> redact_url("postgresql://ann:s3cret@db:5432/jobq?sslpassword=x")
    'postgresql://ann:***@db:5432/jobq?sslpassword=***'
    >>> redact_url("sqlite:///data/queue.db")
    'sqlite:///data/queue.db'

    A keyword string keeps its keys but masks every secret value; text that cannot be parsed is
    shown only by its scheme, so nothing of it can leak.
    """
    if looks_like_keyword_string(url):
        return re.sub(
            r"\b(" + "|".join(_SECRET_KEYS) + r")\s*=\s*('(?:[^'\\]|\\.)*'|\S+)",
            lambda m: f"{m.group(1)}={MASK}",
            url,
            flags=re.IGNORECASE,
        )
    if "://" not in url:
        return url  # a bare SQLite path holds no secret
    scheme = url.split("://", 1)[0]
    try:
        parts = urllib.parse.urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, hostinfo = netloc.rsplit("@", 1)
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:{MASK}@{hostinfo}" if ":" in userinfo else f"{user}@{hostinfo}"
        query = "&".join(
            f"{k}={MASK}"
            if k.lower() in _SECRET_KEYS
            else f"{k}={redact_url(v)}"
            if k.lower() in _URL_KEYS
            else f"{k}={v}"
            for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        )
        # Built by hand: urlunsplit drops the empty host of sqlite:///path URLs.
        tail = (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")
        return f"{parts.scheme}://{netloc}{parts.path}{tail}"
    except ValueError:
        return f"{scheme}://{MASK}"


def secrets_of(url: str) -> list[str]:
    """The secret substrings of ``url`` (password, user of a URL, secret options), longest first."""
    found: list[str] = []
    if looks_like_keyword_string(url):
        for m in re.finditer(r"\b(?:" + "|".join(_SECRET_KEYS) + r")\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", url, re.I):
            found.append(m.group(1).strip("'"))
    elif "://" in url:
        rest = url.split("://", 1)[1]
        # The userinfo as a URL parser reads it (up to the last "@" of the authority), and as it
        # reads when the password holds an unescaped "/" (up to the last "@" of everything).
        for authority in {rest.split("/", 1)[0], rest.split("?", 1)[0]}:
            if "@" not in authority:
                continue
            userinfo = authority.rsplit("@", 1)[0]
            if ":" in userinfo:
                raw = userinfo.split(":", 1)[1]
                found += [raw, urllib.parse.unquote(raw)]
                # libpq splits an unescaped "p@ss:word" elsewhere than urllib does and may quote
                # a piece of it as a host or port: mask the pieces too.
                found += re.split(r"[@:/]", raw)
        query = url.split("?", 1)[1] if "?" in url else ""
        for part in query.split("&"):
            key, _, value = part.partition("=")
            if key.lower() in _SECRET_KEYS and value:
                found += [value, urllib.parse.unquote(value)]
            if key.lower() in _URL_KEYS and value:
                found += secrets_of(urllib.parse.unquote(value))
    return sorted({s for s in found if len(s) >= 3}, key=len, reverse=True)


def redact_text(text: str, *urls: str | None) -> str:
    """``text`` (e.g. a driver's error message) with every secret of each of ``urls`` masked.

    >>> redact_text("login failed for s3cret", "postgresql://ann:s3cret@db/jobq", None)
    'login failed for ***'
    """
    secrets = sorted({s for url in urls if url for s in secrets_of(url)}, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that masks the secrets of database URLs in every record it passes.

    The message (after %-formatting), the formatted traceback and the stack are masked, so a
    driver error that quotes the URL cannot reach a log file. Put it on a handler to cover every
    logger behind it, or on a logger to cover the records logged there (``jobq.worker`` does).
    """

    def __init__(self, *urls: str | None) -> None:
        super().__init__()
        self.urls = tuple(u for u in urls if u)
        self._active = any(secrets_of(u) for u in self.urls)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._active:
            return True
        message = record.getMessage()
        masked = redact_text(message, *self.urls)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text, *self.urls)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info, *self.urls)
        return True


def redact_logs(*urls: str | None) -> RedactingFilter:
    """Mask the secrets of ``urls`` in everything the root logger's handlers write; returns the filter.

    Call it after ``logging.basicConfig`` (the CLI does, for ``jobq worker``, ``producer`` and ``consumer``).
    """
    redacting = RedactingFilter(*urls)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redacting)
    return redacting
