"""JSON in and out of the store, safely: payloads, results and event details.

jobq never pickles. What it writes is checked before it is serialised (size and nesting, walked
without recursion); what it reads is decoded without ever raising, because a row can be written
by hand, by another program or by an older version: one bad row must fail its own job, never the
worker, the CLI or the apps that read it (a 2 KB payload nested ~990 levels deep used to raise
``RecursionError`` in the claim path and crash-loop every consumer).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from jobq.errors import InvalidPayload

CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
"""What no name may hold: C0 and C1 control characters, DEL, the line and paragraph separators (a
name shown in a terminal must not move the cursor or start a line). Bidirectional overrides are
kept, and neutralised where a name is shown (the CLI's ``clean``, the apps' plain text)."""

JSON_DEPTH_LIMIT = 64
"""Deepest nesting of lists and objects accepted in a payload or a result."""
JSON_DECODE_DEPTH_LIMIT = 256
"""Deepest nesting decoded from a stored row; deeper text is kept as text (far below where
Python's recursive decoder would raise RecursionError, also on a worker thread's stack)."""


def walk(value: Any, limit: int, what: str = "payload") -> int:
    """A cheap lower bound of ``value``'s JSON size, walking no further than ``limit`` bytes.

    Lets a huge payload be refused before it is serialised (which would copy it once as JSON
    and once more as UTF-8): every string costs at least its length, every item a byte. Raises
    InvalidPayload when lists and objects nest deeper than ``JSON_DEPTH_LIMIT`` (checked with an
    explicit stack: a deep value must not exhaust Python's recursion here either). A result
    within ``limit`` means the whole value was walked, its depth checked.
    """
    total = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack and total <= limit:
        item, depth = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item) + 2
        elif isinstance(item, dict | list | tuple):
            if depth >= JSON_DEPTH_LIMIT:
                raise InvalidPayload(f"{what} nests lists/objects deeper than {JSON_DEPTH_LIMIT} levels")
            total += 2 + len(item)
            children: Iterable[Any] = item
            if isinstance(item, dict):
                # JSON's keys are text: the encoder turned 1, True and None into "1", "true" and
                # "null", so {1: "a", "1": "b"} was stored as {"1": "b"} (data silently lost).
                for key in item:
                    if not isinstance(key, str):
                        raise InvalidPayload(f"{what} has an object key that is not text: {key!r:.40}")
                    total += len(key) + 2
                children = item.values()
            # Plain strings and numbers are counted here, not pushed: a payload is mostly those,
            # and this walk runs for every enqueued job (a stack entry each cost ~1/3 of it).
            for child in children:
                kind = type(child)
                if kind is str:
                    total += len(child) + 2
                elif kind is int or kind is float or kind is bool or child is None:
                    total += 1
                else:
                    stack.append((child, depth + 1))
        else:
            total += 1
    return total


#: ``json.loads``'s own decoder (default options), called directly by ``decode_json``.
_DECODER = json.JSONDecoder()
#: Its C scanner: ``raw_decode`` without that method's Python frame (a claimed job's payload).
_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]
#: One encoder for every value: ``json.dumps`` with options builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_C_MAKE_ENCODER: Any = getattr(json.encoder, "c_make_encoder", None)
#: ``_ENCODER.encode``'s C encoder, made once: ``encode`` makes a new one per call, through two
#: Python frames (~1.5 us of an enqueue's ~55, issue 13). The same options and output; no markers
#: of circular references, which only ``encode_walked`` uses: its value has been walked in full,
#: and a cycle is refused there (too deep). A Python without the C module uses ``encode``.


def _c_encoder() -> Callable[[Any, int], Any] | None:
    # A private constructor: should its signature change in some Python, ``encode`` serves.
    try:
        return _C_MAKE_ENCODER(  # type: ignore[no-any-return]
            None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",", False, False, False
        )
    except TypeError:
        return None


_ENCODE: Callable[[Any, int], Any] | None = None if _C_MAKE_ENCODER is None else _c_encoder()


def encode_json(value: Any, what: str = "payload") -> str:
    """Serialise to compact JSON, or raise InvalidPayload with a one-line reason."""
    walk(value, 1 << 62, what)  # the depth check; the size is the caller's business
    return encode_walked(value, what)


def encode_walked(value: Any, what: str = "payload") -> str:
    """``encode_json`` for a value whose depth ``walk`` has already checked (in full)."""
    try:
        text = _ENCODER.encode(value) if _ENCODE is None else "".join(_ENCODE(value, 0))
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidPayload(f"{what} is not JSON-serialisable: {exc}") from None
    if not text.isascii() and not is_unicode(text):  # isascii: a flag read, no scan
        raise InvalidPayload(f"{what} holds text that is not valid Unicode (e.g. undecodable bytes)")
    return text


def json_string_body(text: str) -> str:
    """``text`` as a stored payload writes it inside a JSON string (without the quotes): ``"``,
    ``\\`` and control characters escaped, other characters as they are."""
    return _ENCODER.encode(text)[1:-1]


def is_printable(text: str) -> bool:
    """Whether a name can be stored and shown as it is: no control character
    (``CONTROL_CHARACTERS``) and no lone surrogate. Queue, task and key names, actors and schedule
    names are held to it."""
    return CONTROL_CHARACTERS.search(text) is None and is_unicode(text)


def names_a_queue(text: str) -> bool:
    """Whether a (printable) name can name a queue: not empty, and neither beginning nor ending
    with a space. ``"mail "`` was a queue of its own, whose jobs no worker of ``mail`` ever took;
    a queue of no name was listed as a blank column."""
    return bool(text) and not text[0].isspace() and not text[-1].isspace()


def is_unicode(text: str) -> bool:
    """False for lone surrogates (what Python makes of undecodable bytes in argv or file names):
    they cannot be stored as UTF-8; catch them here rather than deep in a driver."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def nesting_depth(text: str) -> int:
    """How deeply ``[`` and ``{`` nest in JSON ``text`` (brackets inside strings do not count)."""
    if text.count("[") + text.count("{") <= JSON_DECODE_DEPTH_LIMIT:
        return 0  # cannot be too deep: skip the scan (the common case, and the claim's hot path)
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def decode_json(stored: object) -> tuple[Any, str | None]:
    """Decode a stored JSON column: ``(value, None)``, or ``(shown, reason)`` when it cannot be.

    Never raises. ``shown`` is then the stored text (or its repr), so listings still show it.
    """
    if stored is None:
        return None, None
    if isinstance(stored, bytes):
        try:
            stored = stored.decode()
        except UnicodeDecodeError:
            return repr(stored[:200]), "stored as bytes that are not UTF-8 text"
    if not isinstance(stored, str):
        return stored, f"stored as {type(stored).__name__}, not JSON text"
    if nesting_depth(stored) > JSON_DECODE_DEPTH_LIMIT:
        return stored, f"JSON nested deeper than {JSON_DECODE_DEPTH_LIMIT} levels"
    try:
        # What jobq stores is compact JSON: decoded in one call, without json.loads's two
        # whitespace scans around it. Anything else (whitespace, extra data, invalid text) is
        # decoded, or refused with its reason, by json.loads exactly as before.
        try:
            value, end = _SCAN(stored, 0)  # raw_decode's work without its Python frame
        except (StopIteration, ValueError):
            end = -1
        if end != len(stored):
            value = json.loads(stored)
        return value, None
    except RecursionError:
        return stored, "JSON nested too deeply to decode"
    except ValueError as exc:  # JSONDecodeError, and raw NUL or control characters
        return stored, f"not valid JSON ({str(exc).splitlines()[0][:120]})"


def parse_json(text: str, what: str = "payload") -> Any:
    """JSON typed by a person (``jobq enqueue --json``, ``schedules add --payload``), or
    InvalidPayload in one line: a mistake with its position, nesting past ``JSON_DEPTH_LIMIT``
    (60,000 levels raised RecursionError), a number of over 4,300 digits (ValueError)."""
    if nesting_depth(text) > JSON_DEPTH_LIMIT:
        raise InvalidPayload(f"{what} nests lists and objects deeper than {JSON_DEPTH_LIMIT} levels")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidPayload(f"malformed JSON {what}: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:
        raise InvalidPayload(f"{what} cannot be read: {str(exc).splitlines()[0][:120]}") from None


def loads(stored: object) -> Any:
    """Decode a stored JSON column for display; a value that is not JSON is shown as text."""
    return decode_json(stored)[0]
