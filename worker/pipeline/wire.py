"""Strict JSON at the door: a delivery's bytes become a document, or a readable reason they can't.

Anyone who can publish chooses these bytes, so the reader is built around three facts:

- Python's own ``json`` recurses in C and raises ``RecursionError`` for deep nesting, an error
  nobody expects from a parser; anything that later walks the result recursively (pydantic,
  ``json.dumps`` at commit time) has the same problem. The first reader of the bytes is therefore
  jiter, the Rust parser inside pydantic-core: it keeps its own nesting counter (about 200
  levels) and never recurses in Python. Nothing recursive sees a document before
  :func:`read_strict_json` has passed it.
- Strict JSON is enforced in that same native pass: the bytes must be UTF-8 (a lone surrogate is
  invalid UTF-8 raw and is refused escaped too), ``NaN`` and ``Infinity`` are not JSON, and a key
  may appear only once per object at every level. A duplicate key is how one body tells two
  readers two different things (the router one ``runtime_id``, the store another), so
  "last one wins" is not acceptable.
- Two rules jiter does not know are checked on the result by one breadth-first walk, with no
  recursion: the configured nesting limit (``Limits.max_json_depth``, lower than jiter's), and
  numbers such as ``1e999`` that parse to an infinite float and would be stored as ``null``.

Reading is O(size): native speed for the bytes, plus the walk, which touches each container
element once. An ordinary message has a few dozen elements, and a 5 MiB inline image is one
string; only a body made of millions of tiny containers makes the walk cost noticeable time
(about as much as building those objects did in the old ``json.loads`` path). Time is spent on
a good explanation only once a body is refused, and that is bounded too: the JSON path of a
duplicate key comes from a scan of the bytes before the error, and the path of an overflowing
number from a walk that gives up after a fixed number of values.
"""

from __future__ import annotations

import gc
import itertools
import json
import math
import re
from collections.abc import Iterator
from typing import Any

import jiter

PARSER_MAX_DEPTH = 200
"""jiter's own nesting limit (approximately): a configured limit above it cannot take effect."""

_LOCATION = re.compile(r" at line (\d+) column (\d+)$")
_DUPLICATE = re.compile(r'^Detected duplicate key "(.*)"$', re.DOTALL)
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}:,]', re.DOTALL)
_ESCAPE = re.compile(rb"\\u([0-9a-fA-F]{4})")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_LOCATE_TOKENS = 50_000
"""Tokens (or values) looked at to name where a refused body went wrong; past this the
detail says only what is wrong."""
_MAX_SHOWN = 64
_INFINITIES = (math.inf, -math.inf)


class NotStrictJson(ValueError):
    """The bytes are not one strict JSON document; ``detail`` says why, for a producer."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def read_strict_json(body: bytes, max_depth: int) -> Any:
    """The document in ``body``; :class:`NotStrictJson` for anything that is not strict JSON.

    The cyclic garbage collector is paused for the parse: a body of millions of tiny arrays
    makes millions of container objects, and the collector, triggered every few hundred
    allocations, would rescan the growing tree again and again (the same parse then takes about
    five times as long). Nothing else runs on the event loop meanwhile, and a JSON tree holds no
    reference cycles for it to find.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        try:
            document = jiter.from_json(
                body, allow_inf_nan=False, catch_duplicate_keys=True, cache_mode="keys"
            )
        except ValueError as exc:
            raise NotStrictJson(_explain(body, str(exc), max_depth)) from None
        _check_shape(document, max_depth)
    finally:
        if collecting:
            gc.enable()
    return document


# -- the walk ------------------------------------------------------------------------------------


def _check_shape(document: Any, max_depth: int) -> None:
    """Depth and finiteness, level by level: the list of one level's containers is the stack."""
    if type(document) is float and document in _INFINITIES:
        raise NotStrictJson(_overflow_detail(document))
    level = [document] if type(document) in (dict, list) else []
    depth = 0
    while level:
        depth += 1
        if depth > max_depth:
            raise NotStrictJson(f"body is not strict JSON: nested deeper than {max_depth} levels")
        below: list[Any] = []
        for node in level:
            values = node.values() if type(node) is dict else node
            for value in values:
                kind = type(value)
                if kind is dict or kind is list:
                    below.append(value)
                elif kind is float and value in _INFINITIES:
                    raise NotStrictJson(_overflow_detail(document))
        level = below


def _overflow_detail(document: Any) -> str:
    values = itertools.islice(_walk(document), _MAX_LOCATE_TOKENS)
    found = (path for path, v in values if type(v) is float and v in _INFINITIES)
    path = next(found, None)
    where = f" at {path}" if path is not None else ""
    return f"body is not strict JSON: a number{where} is too large for a double (infinite)"


def _walk(document: Any) -> Iterator[tuple[str, Any]]:
    """Every value with its JSON path, depth first, for explanations. Paths are made only for
    the values visited, so a caller that stops early pays only for what it looked at; the stack
    is as deep as the document, which jiter has already bounded."""
    yield "$", document
    stack = [("$", _children(document))]
    while stack:
        path, children = stack[-1]
        step = next(children, None)
        if step is None:
            stack.pop()
            continue
        child_path, value = path + step[0], step[1]
        yield child_path, value
        if type(value) in (dict, list):
            stack.append((child_path, _children(value)))


def _children(value: Any) -> Iterator[tuple[str, Any]]:
    if type(value) is dict:
        return ((_member(key), v) for key, v in value.items())
    if type(value) is list:
        return ((f"[{i}]", v) for i, v in enumerate(value))
    return iter(())


# -- explaining a refusal ------------------------------------------------------------------------


def _explain(body: bytes, message: str, max_depth: int) -> str:
    """A producer's reading of jiter's error: what is wrong, and where."""
    located = _LOCATION.search(message)
    what = message[: located.start()] if located else message
    offset = _offset(body, int(located[1]), int(located[2])) if located else None
    where = f" at line {located[1]} column {located[2]}" if located else ""
    duplicate = _DUPLICATE.match(what)
    if duplicate is not None:
        return _duplicate_detail(body, offset, duplicate[1])
    if what == "recursion limit exceeded":
        limit = min(max_depth, PARSER_MAX_DEPTH)
        return f"body is not strict JSON: nested deeper than {limit} levels"
    if offset is not None:
        special = _special_value(body, offset)
        if special is not None:
            return f"body is not strict JSON: {special} is not a JSON number{where}"
        if "surrogate" in what or "hex escape" in what:
            return f"body is not strict JSON: {_escape_problem(body, offset)}{where}"
    if "unicode code point" in what:
        return f"body is not UTF-8 JSON: {_utf8_problem(body)}"
    return f"body is not UTF-8 JSON: {what}{where}"


def _offset(body: bytes, line: int, column: int) -> int:
    """The byte offset of jiter's (1-based line, 1-based byte column)."""
    start = 0
    for _ in range(line - 1):
        start = body.find(b"\n", start) + 1
    return max(start + column - 1, 0)


def _special_value(body: bytes, offset: int) -> str | None:
    """``NaN``/``Infinity`` at the error (jiter points past the sign of a negative one)."""
    candidates = ((offset - 1, b"-Infinity"), (offset - 1, b"-NaN"), (offset, b"-Infinity"),
                  (offset, b"-NaN"), (offset, b"Infinity"), (offset, b"NaN"))
    for start, name in candidates:
        if start >= 0 and body.startswith(name, start):
            return name.decode()
    return None


def _escape_problem(body: bytes, offset: int) -> str:
    """Name the ``\\uXXXX`` escape near ``offset`` that is half a surrogate pair."""
    window = body[max(offset - 16, 0) : offset + 16]
    for match in _ESCAPE.finditer(window):
        code = int(match[1], 16)
        if 0xD800 <= code <= 0xDFFF:
            return f"lone surrogate escape \\u{match[1].decode().lower()} (half a UTF-16 pair)"
    return "invalid \\u escape"


def _utf8_problem(body: bytes) -> str:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"invalid UTF-8 at byte {exc.start} ({exc.reason})"
    return "invalid unicode code point"


def _duplicate_detail(body: bytes, offset: int | None, reported: str) -> str:
    found = _key_path(body[:offset]) if offset is not None else None
    key, path = found if found is not None else (reported, None)
    shown = key if len(key) <= _MAX_SHOWN else key[:_MAX_SHOWN] + "..."
    where = f"at {path}" if path is not None else "(path not traced)"
    return f"body is not strict JSON: duplicate key {shown!r} {where}"


def _key_path(prefix: bytes) -> tuple[str, str] | None:
    """(key, path of its object) for the last key in ``prefix``, which jiter ends just before the
    value of the repeated key; None when the prefix is too long to trace cheaply."""
    frames: list[list[Any]] = []
    """[is_object, current key or index] per open container."""
    expecting_key = False
    for count, token in enumerate(_TOKEN.finditer(prefix)):
        if count > _MAX_LOCATE_TOKENS:
            return None
        text = token[0]
        first = text[:1]
        if first == b'"':
            if expecting_key and frames:
                frames[-1][1] = json.loads(text)
        elif first in (b"{", b"["):
            frames.append([first == b"{", None if first == b"{" else 0])
            expecting_key = first == b"{"
        elif first in (b"}", b"]"):
            if frames:
                frames.pop()
            expecting_key = False
        elif first == b",":
            if frames and frames[-1][0]:
                expecting_key = True
            elif frames:
                frames[-1][1] += 1
        else:
            expecting_key = False
    if not frames or not frames[-1][0] or frames[-1][1] is None:
        return None
    path = "$" + "".join(
        _member(step) if is_object else f"[{step}]" for is_object, step in frames[:-1]
    )
    return str(frames[-1][1]), path


def _member(key: str) -> str:
    if _IDENTIFIER.fullmatch(key):
        return f".{key}"
    shown = key if len(key) <= _MAX_SHOWN else key[:_MAX_SHOWN] + "..."
    return f"[{json.dumps(shown)}]"
