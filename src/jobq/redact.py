"""One way to show a database URL without its secrets, used wherever a URL is shown or logged.

The apps' captions, the CLI, error messages and logs all go through :func:`redact_url`, and any
text that may quote a URL (a driver's error message) goes through :func:`redact_text`. Under
supervisord those lines land in log files that other users may read, so "never print the
password" has to hold everywhere at once, not only where someone remembered it.
"""

from __future__ import annotations

import re
import urllib.parse

#: What a password (and a user name in a refused URL) is shown as.
MASK = "***"

# key=value pairs of a libpq keyword connection string ("host=db password=s3cret dbname=jobq").
_KEYWORD_PAIR = re.compile(r"^\s*[A-Za-z_][A-Za-z0-9_]*\s*=")
_SECRET_KEYS = ("password", "passfile", "sslpassword", "sslkey")


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
    if scheme.lower() == "sqlite":
        return url
    try:
        parts = urllib.parse.urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, hostinfo = netloc.rsplit("@", 1)
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:{MASK}@{hostinfo}" if ":" in userinfo else f"{user}@{hostinfo}"
        query = "&".join(
            f"{k}={MASK}" if k.lower() in _SECRET_KEYS else f"{k}={v}"
            for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        )
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return f"{scheme}://{MASK}"


def secrets_of(url: str) -> list[str]:
    """The secret substrings of ``url`` (password, user of a URL, secret options), longest first."""
    found: list[str] = []
    if looks_like_keyword_string(url):
        for m in re.finditer(r"\b(?:" + "|".join(_SECRET_KEYS) + r")\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", url, re.I):
            found.append(m.group(1).strip("'"))
    elif "://" in url:
        netloc = url.split("://", 1)[1].split("/", 1)[0]
        if "@" in netloc:
            userinfo = netloc.rsplit("@", 1)[0]
            if ":" in userinfo:
                raw = userinfo.split(":", 1)[1]
                found += [raw, urllib.parse.unquote(raw)]
        query = url.split("?", 1)[1] if "?" in url else ""
        for part in query.split("&"):
            key, _, value = part.partition("=")
            if key.lower() in _SECRET_KEYS and value:
                found += [value, urllib.parse.unquote(value)]
    return sorted({s for s in found if len(s) >= 3}, key=len, reverse=True)


def redact_text(text: str, url: str) -> str:
    """``text`` (e.g. a driver's error message) with every secret of ``url`` masked."""
    for secret in secrets_of(url):
        text = text.replace(secret, MASK)
    return text
