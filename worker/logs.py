"""Structured logging: JSON lines in production, readable lines on a console.

Theory of operation
-------------------
The worker logs through structlog (``structlog.get_logger(__name__)`` in each module): each
call is an event name and key-value fields, rendered as one line on standard error. In JSON
mode (``MEERKAT_LOG_FORMAT=json``) a line is one object with ``event``, ``level``,
``timestamp`` (UTC, ISO 8601) and the fields; in console mode the same, readable.

Libraries log through the standard library's :mod:`logging` (aio-pika, aiormq, SQLAlchemy,
asyncio, alembic). :func:`configure_logging` puts one handler on the root logger whose
formatter is structlog's :class:`~structlog.stdlib.ProcessorFormatter` with the same
renderer, so their records become lines of the same shape (with ``logger``, the library's
logger name), and in JSON mode every line the process writes is JSON.

``MEERKAT_LOG_LEVEL`` is the level of the worker's own events and of the libraries'. Three are
held back, because their lower levels log per message, with its contents: aiormq logs every
frame it sends and aiosqlite every operation at debug (never below info here), SQLAlchemy's
engine every statement and its parameters at info (never below warning here).

The worker's own lines are the hot ones (one per settled delivery): they are rendered with
orjson and written as bytes (about 5 µs of CPU a line, a quarter of structlog's own JSON
renderer and timestamper); calls below the level cost well under a microsecond. Loggers are
cached on first use, so :func:`configure_logging` is called once, before the first line.

An event logged with ``exc_info`` (a supervised task that died, say) carries its traceback: as
a structured ``exception`` field in JSON, as text on a console.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import MutableMapping
from typing import Any, TextIO

import orjson
import structlog

LEVELS = ("debug", "info", "warning", "error", "critical")
HELD_BACK = {"aiormq": logging.INFO, "aiosqlite": logging.INFO, "sqlalchemy": logging.WARNING}
"""Library loggers that stay at or above these levels whatever ``MEERKAT_LOG_LEVEL`` says."""


_second: list[Any] = [0, ""]
"""The last whole second formatted, and its text (a timestamp formats only its fraction)."""


def iso_now() -> str:
    """The time now in UTC, ISO 8601 with microseconds and ``Z`` (as structlog's ``TimeStamper``
    writes it, in a third of its time)."""
    now = time.time()
    second = int(now)
    if second != _second[0]:
        _second[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    return f"{_second[1]}.{int((now - second) * 1e6):06d}Z"


def add_timestamp(
    logger: Any, name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    event_dict["timestamp"] = iso_now()
    return event_dict


def _dict_tracebacks(
    logger: Any, name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog's ``dict_tracebacks``, for the events that carry ``exc_info`` only."""
    if "exc_info" not in event_dict:
        return event_dict
    return structlog.processors.dict_tracebacks(logger, name, event_dict)


def level_number(level: str | int) -> int:
    """``"info"`` (any case) or a :mod:`logging` number, as a number."""
    if isinstance(level, int):
        return level
    number = logging.getLevelNamesMapping().get(level.upper())
    if number is None:
        raise ValueError(f"unknown log level {level!r}; one of {', '.join(LEVELS)}")
    return number


def configure_logging(
    log_format: str = "json", level: str | int = logging.INFO, *, stream: TextIO | None = None
) -> None:
    """Set up structlog and the standard library's root logger to write ``log_format`` lines
    (``json`` or ``console``) at ``level`` and above to ``stream`` (standard error)."""
    out = sys.stderr if stream is None else stream
    number = level_number(level)
    json_lines = log_format == "json"
    common: list[structlog.types.Processor] = [structlog.processors.add_log_level, add_timestamp]
    tracebacks: list[structlog.types.Processor] = [_dict_tracebacks] if json_lines else []
    text_renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json_lines
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    binary = getattr(out, "buffer", None)
    factory: Any
    if json_lines and binary is not None:
        renderer: structlog.types.Processor = structlog.processors.JSONRenderer(
            serializer=orjson.dumps
        )
        out.flush()
        factory = structlog.BytesLoggerFactory(file=binary)
    else:
        renderer, factory = text_renderer, structlog.PrintLoggerFactory(file=out)
    structlog.reset_defaults()
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *common, *tracebacks, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(number),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    _route_standard_logging(out, number, [
        structlog.stdlib.add_logger_name, *common, structlog.stdlib.ExtraAdder(),
    ], [*tracebacks, text_renderer])


def _route_standard_logging(
    out: TextIO, level: int, pre_chain: list[structlog.types.Processor],
    processors: list[structlog.types.Processor],
) -> None:
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=pre_chain,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *processors],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name, floor in HELD_BACK.items():
        logging.getLogger(name).setLevel(max(level, floor))
    logging.captureWarnings(True)
