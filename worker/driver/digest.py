"""The session digest of a run's boundary, computed by the shell.

A boundary receipt and its snapshot carry a SHA-256 digest of the session's canonical JSON (keys
sorted, no whitespace, UTF-8): :func:`worker.core.conversation_digest` defines it, with the
standard library's ``json`` as the pure core must. The session is the executor's, and grows
with the conversation, so the digest is paid on every run over the whole transcript; ``json``
made it a tenth of the worker's time end to end. :func:`session_digest` writes the same text
with orjson, several times faster, and is what the driver hands the core.

The same text: orjson sorts keys by their UTF-8 bytes (the order of code points, as ``json``
does), escapes the same characters the same way, and writes integers and floats alike, but
for floats below 10⁻⁴: ``json`` writes them in exponent form (``6.1e-05``), orjson in decimals
down to 10⁻⁷ (``0.000061``) and then with a one-digit exponent (``1e-7``, not ``1e-07``). A
session holding such a float goes to the core's own function: a walk over its values finds one
before any text is written (:mod:`worker.core.floats`; looking for those numbers in the text
instead cost more than writing and hashing it, and any UUID of a transcript looks like one:
``…5e-3…``). So does anything
orjson refuses or is told to pass through (a key that is not a string, a subclass of ``str`` or
``int``, a dataclass, a time), where ``json`` either writes it its own way or raises as before.
Two differences remain, both outside JSON: a NaN or an infinite float (``json`` writes ``NaN``,
orjson and the store ``null``) and a UUID (``json`` refuses it, orjson writes its text, as the
store does).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

from worker.core import conversation_digest
from worker.core.floats import holds_float, near_zero

_OPTIONS = (orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS
            | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS)


def session_digest(session: Mapping[str, Any]) -> str:
    """:func:`worker.core.conversation_digest` of ``session``, the same text written faster."""
    if type(session) is not dict:  # a Mapping of another kind: orjson writes only dicts
        return conversation_digest(session)
    if holds_float(session, near_zero):
        return conversation_digest(session)
    try:
        text = orjson.dumps(session, option=_OPTIONS)
    except TypeError:
        return conversation_digest(session)
    return "sha256:" + hashlib.sha256(text).hexdigest()
