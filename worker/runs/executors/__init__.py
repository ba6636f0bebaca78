"""Run executors: what turns a batch of inputs into a new session snapshot.

``MEERKAT_EXECUTOR`` names any ``module:callable`` with the signature of :data:`Executor`.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast
from uuid import UUID

from schemas import AnyInput


@dataclass(frozen=True)
class RunRequest:
    runtime_id: str
    run_id: UUID
    inputs: tuple[AnyInput, ...]
    """The batch, in order, with images inline again."""
    session: Mapping[str, Any] | None
    """The previous session snapshot, or None before the first run."""
    interrupt: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the runtime wants the executor to yield at its next checkpoint."""


@dataclass(frozen=True)
class RunResult:
    session: Mapping[str, Any]
    message_count: int
    output: Any = None


Executor = Callable[[RunRequest], Awaitable[RunResult]]


class ExecutorLoadError(Exception):
    """``MEERKAT_EXECUTOR`` does not name an importable async callable."""


BUILT_IN = "worker.runs.executors."
SHORT_BUILT_IN = "worker.executors."
"""The built-in executors may also be named ``worker.executors.echo:execute`` and so on."""


def load_executor(path: str) -> Executor:
    """Import ``module:callable``."""
    if path.startswith(SHORT_BUILT_IN):
        path = BUILT_IN + path.removeprefix(SHORT_BUILT_IN)
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ExecutorLoadError(f"executor must be 'module:callable', got {path!r}")
    try:
        module = importlib.import_module(module_name)
        target = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise ExecutorLoadError(f"cannot load executor {path!r}: {exc}") from exc
    if not callable(target):
        raise ExecutorLoadError(f"executor {path!r} is not callable")
    return cast(Executor, target)
