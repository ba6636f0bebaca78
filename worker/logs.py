"""Structured logging: JSON lines in production, readable lines on a console.

An event logged with ``exc_info`` (a supervised task that died, say) carries its traceback: as
a structured ``exception`` field in JSON, as text on a console.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(log_format: str = "json", level: int = logging.INFO) -> None:
    json_lines = log_format == "json"
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json_lines
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    tracebacks: list[structlog.types.Processor] = (
        [structlog.processors.dict_tracebacks] if json_lines else []
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *tracebacks,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
