"""``MEERKAT_EVENT_LOOP``: which loop ``meerkat-worker run`` makes."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest
from pydantic import ValidationError

from worker import event_loop
from worker.config import Settings
from worker.event_loop import loop_factory, loop_name

pytestmark = pytest.mark.unit


def _name_of(choice: event_loop.EventLoopChoice) -> str:
    async def name() -> str:
        return loop_name(asyncio.get_running_loop())

    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(name())


def test_auto_runs_on_uvloop_when_it_is_installed() -> None:
    assert event_loop.uvloop_installed()
    assert _name_of("auto") == "uvloop"
    assert _name_of("uvloop") == "uvloop"


def test_asyncio_is_the_standard_loop() -> None:
    assert loop_factory("asyncio") is None
    assert _name_of("asyncio") == "asyncio"


def test_without_uvloop_auto_falls_back_and_uvloop_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "uvloop" else real(name, *a))
    assert loop_factory("auto") is None
    with pytest.raises(ValidationError, match="uvloop is not installed"):
        Settings(event_loop="uvloop")
    assert Settings(event_loop="auto").event_loop == "auto"
