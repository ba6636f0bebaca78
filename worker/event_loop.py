"""The event loop ``meerkat-worker run`` runs on: ``MEERKAT_EVENT_LOOP``.

The worker is one event loop, and under load a tenth of its time is the loop itself (asyncio's
scheduling of callbacks and its selector). uvloop (libuv under asyncio's interface) does the
same work in C. ``auto`` (the default) runs on uvloop when it is installed (a dependency on
Linux and macOS) and on the standard loop otherwise; ``uvloop`` insists on it (not installed is
a configuration error, exit code 2); ``asyncio`` is the standard library's loop. Nothing else
in the worker depends on the choice: aio-pika, asyncpg, SQLAlchemy's greenlet bridge, signal
handlers and subprocesses run on both.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable
from typing import Literal

EventLoopChoice = Literal["auto", "uvloop", "asyncio"]


def uvloop_installed() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def loop_factory(choice: EventLoopChoice) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What :class:`asyncio.Runner` makes its loop with; ``None``: the standard one."""
    if choice == "asyncio" or (choice == "auto" and not uvloop_installed()):
        return None
    import uvloop  # a missing uvloop with choice "uvloop" was refused by the settings

    return uvloop.new_event_loop


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio``, as the start-up line reports it."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
