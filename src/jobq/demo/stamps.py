"""Stamp lines: what a consumer appends to a job's file, one per run of the job.

A stamp line is ``<ISO-8601 UTC> job=<id>``, plus `` run=<n>`` for runs after the first
(``stamp_line``). Finding the stamps in a file (``scan_stamps``) reads it in 1 MiB pieces: a file
of gigabytes costs time, not memory. Writing one exactly once is ``files.stamp_file``.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import time
from collections.abc import Callable, Iterator

_STAMP_BODY = rb"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2}) job=(\d+)(?: run=(\d+))?"
STAMP_RE = re.compile(rb"^" + _STAMP_BODY + rb"\r?\n?$")
"""One stamp line: ``<ISO-8601 UTC> job=<id>`` plus `` run=<n>`` for runs after the first."""
# The same, found inside a buffer of whole lines: a line is what lies between \r or \n (as
# bytes.splitlines() cuts), and the stamp must be all of it.
_STAMP_IN_LINES = re.compile(rb"(?<![^\r\n])" + _STAMP_BODY + rb"(?=[\r\n]|\Z)")
STAMP_SCAN_CHUNK_BYTES = 1 << 20
"""How much of a job file the stamp check reads at a time: its memory stays bounded by this (plus
one stamp-sized line), not by the file, which a user may have made gigabytes long."""
_DIGITS_KEPT = 21
"""Runs of more digits are shortened to this many (see ``_squeeze``): 21 digits exceed any
64-bit job id, and are more than any fixed-width field of a stamp (4)."""
_LONG_DIGITS = re.compile(rb"\d{%d,}" % (_DIGITS_KEPT + 1))
_ID_LIMIT = 10**20
_ID_OVERFLOW = 10**21 - 1
"""How an id or run of ``_ID_LIMIT`` or more (never a job's: ids are 64-bit) is reported, whatever
its digits: a shortened run (``_squeeze``) no longer knows them."""
_SQUEEZED_STAMP_MAX_BYTES = len(b"0000-00-00T00:00:00." + b"+00:00 job=" + b" run=") + 3 * _DIGITS_KEPT
"""The longest a stamp line can be once its digit runs are shortened: a longer line is no stamp."""


def stamp_line(job_id: int, run: int = 1, *, now: float | None = None) -> str:
    """The stamp for one run of a job, with a trailing newline.

    >>> stamp_line(7, 2, now=0.0)
    '1970-01-01T00:00:00.000Z job=7 run=2\\n'
    """
    when = dt.datetime.fromtimestamp(time.time() if now is None else now, tz=dt.UTC)
    text = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z job={job_id}"
    return text + (f" run={run}" if run > 1 else "") + "\n"


def stamps_in(data: bytes) -> list[tuple[int, int]]:
    """Every (job, run) stamped in a file's content, in order (duplicates kept).

    A line is a stamp when all of it matches ``STAMP_RE`` (lines end at ``\\n``, ``\\r`` or both).
    An id or run of 10**20 or more (never a job's) is reported as 10**21 - 1.
    """
    return list(scan_stamps(io.BytesIO(data).read))


def _squeeze(m: re.Match[bytes]) -> bytes:
    # A digit run longer than _DIGITS_KEPT becomes exactly _DIGITS_KEPT digits of the same value
    # (leading zeros dropped first) or, when its value is that large, all nines: a stamp matches
    # where it did (\d{4} and \d{2} fail on either, \d+ takes either) with the same job and run.
    # Applied again to a shortened run with more digits appended, it gives what the whole run gives.
    significant = m.group().lstrip(b"0")
    if len(significant) < _DIGITS_KEPT:
        return significant.rjust(_DIGITS_KEPT, b"0")
    return b"9" * _DIGITS_KEPT


def _line_end(data: bytes) -> int:
    """Index just past the first line break in ``data``, or -1."""
    ends = [i for i in (data.find(b"\n"), data.find(b"\r")) if i >= 0]
    return min(ends) + 1 if ends else -1


def scan_stamps(read: Callable[[int], bytes]) -> Iterator[tuple[int, int]]:
    """Every (job, run) stamped in a stream, in order, read in ``STAMP_SCAN_CHUNK_BYTES`` pieces.

    ``read(n)`` returns up to ``n`` bytes, ``b""`` at the end (``file.read``). Same lines as
    ``stamps_in`` finds, in bounded memory: digit runs are shortened (``_squeeze``), and a line
    that grows past the longest possible stamp is skipped to its end without being kept (a
    sparse file of gigabytes of NULs is one such line).
    """
    carry = b""  # the start of a line not ended yet, shortened
    skipping = False  # inside a line already too long to be a stamp
    while chunk := read(STAMP_SCAN_CHUNK_BYTES):
        if skipping:
            end = _line_end(chunk)
            if end < 0:
                continue
            chunk, skipping = chunk[end:], False
        data = _LONG_DIGITS.sub(_squeeze, carry + chunk)
        cut = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
        whole, carry = data[:cut], data[cut:]
        yield from _stamps_of_lines(whole)
        if len(carry) > _SQUEEZED_STAMP_MAX_BYTES:
            carry, skipping = b"", True
    if carry and not skipping:
        yield from _stamps_of_lines(carry)


def _stamps_of_lines(data: bytes) -> Iterator[tuple[int, int]]:
    for m in _STAMP_IN_LINES.finditer(data):
        job, run = int(m.group(1)), int(m.group(2) or 1)
        yield (job if job < _ID_LIMIT else _ID_OVERFLOW), (run if run < _ID_LIMIT else _ID_OVERFLOW)
