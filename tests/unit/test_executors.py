"""Run executors: the deterministic echo executor, loading by import path, the HTTP executor
against a real local HTTP server."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from aiohttp import web

from schemas import (
    AnyInput,
    ContinuationInput,
    Durability,
    ExternalEventInput,
    ImageMediaType,
    InputHeader,
    OperationInput,
    OperatorSource,
    PromptInput,
    SystemSource,
    TextBlock,
)
from tests.unit.images import IMAGE_BYTES, inline_image
from worker.runs.executors import ExecutorLoadError, RunRequest, echo, http, load_executor
from worker.runs.executors.http import ExecutorError, make_http_executor

pytestmark = pytest.mark.unit

RUN_ID = UUID("01900000-0000-7000-8000-000000000001")


def header(id_: UUID | None = None, system: bool = False) -> InputHeader:
    return InputHeader(
        id=id_ or uuid4(),
        timestamp=datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
        source=SystemSource() if system else OperatorSource(),
        durability=Durability.DURABLE,
    )


def prompt(text: str, id_: UUID | None = None) -> PromptInput:
    return PromptInput(header=header(id_), content=text)


def run_of(*inputs: AnyInput, session: dict[str, Any] | None = None) -> RunRequest:
    return RunRequest(
        runtime_id=f"rt:test:{uuid4()}", run_id=RUN_ID, inputs=tuple(inputs), session=session
    )


# --- echo -----------------------------------------------------------------------------------


async def test_echo_is_deterministic() -> None:
    ids = (uuid4(), uuid4())
    first = await echo.execute(run_of(prompt("hello", ids[0]), prompt("world", ids[1])))
    again = await echo.execute(run_of(prompt("hello", ids[0]), prompt("world", ids[1])))

    assert first == again
    assert first.session == {
        "transcript": [
            {"input_id": str(ids[0]), "input_type": "prompt", "text": "hello"},
            {"input_id": str(ids[1]), "input_type": "prompt", "text": "world"},
        ]
    }
    assert first.message_count == 2
    assert first.output == {"echo": ["hello", "world"]}


async def test_echo_appends_to_the_previous_transcript() -> None:
    earlier = await echo.execute(run_of(prompt("one")))
    previous = dict(earlier.session)

    later = await echo.execute(run_of(prompt("two"), session=previous))

    texts = [entry["text"] for entry in later.session["transcript"]]
    assert texts == ["one", "two"]
    assert later.message_count == 2
    assert later.output == {"echo": ["two"]}
    assert previous == earlier.session, "the previous snapshot must not be changed"


async def test_echo_describes_inline_images_by_their_decoded_size() -> None:
    png = IMAGE_BYTES[ImageMediaType.PNG]
    item = PromptInput(
        header=header(),
        content=[TextBlock(text="look:"), inline_image(ImageMediaType.PNG)],
    )

    result = await echo.execute(run_of(item))

    assert result.output == {"echo": [f"look: [image image/png {len(png)} bytes]"]}


async def test_echo_renders_events_and_continuations_and_skips_operations() -> None:
    event = ExternalEventInput(
        header=header(), event_type="build.finished", payload={"ok": True, "build": 7}
    )
    continuation = ContinuationInput(header=header(system=True), reason="tool result ready")
    operation = OperationInput(header=header(system=True), operation_id="op-1", event={})

    result = await echo.execute(run_of(event, operation, continuation))

    assert result.output == {"echo": ['build.finished {"build":7,"ok":true}', "tool result ready"]}
    assert result.message_count == 2


async def test_echo_stops_at_its_checkpoint_when_interrupted() -> None:
    run = run_of(prompt("first"), prompt("second"), prompt("third"))
    run.interrupt.set()

    result = await echo.execute(run)

    assert result.output == {"echo": ["first"], "interrupted": True}
    assert result.message_count == 1


async def test_echo_refuses_a_foreign_session_snapshot() -> None:
    with pytest.raises(ValueError, match="transcript"):
        await echo.execute(run_of(prompt("x"), session={"transcript": "not a list"}))


# --- loading --------------------------------------------------------------------------------


def test_load_executor_finds_the_built_in_ones() -> None:
    assert load_executor("worker.runs.executors.echo:execute") is echo.execute
    assert load_executor("worker.runs.executors.http:execute") is http.execute


@pytest.mark.parametrize(
    "path",
    [
        "worker.runs.executors.echo",
        "worker.runs.executors.echo:",
        ":execute",
        "worker.runs.executors.nowhere:execute",
        "worker.runs.executors.echo:missing",
        "worker.runs.executors.echo:PART_SEPARATOR",
    ],
)
def test_load_executor_refuses_bad_paths(path: str) -> None:
    with pytest.raises(ExecutorLoadError):
        load_executor(path)


# --- HTTP -----------------------------------------------------------------------------------


@dataclass
class ExecutorService:
    """A local HTTP server playing the executor service; ``answer`` decides each response."""

    url: str
    requests: list[Any] = field(default_factory=list)
    answer: Callable[[web.Request], Awaitable[web.StreamResponse]] | None = None


@pytest.fixture
async def service() -> AsyncIterator[ExecutorService]:
    state = ExecutorService(url="")

    async def handle(request: web.Request) -> web.StreamResponse:
        state.requests.append(await request.json())
        assert state.answer is not None
        return await state.answer(request)

    app = web.Application()
    app.router.add_post("/run", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}/run"
    try:
        yield state
    finally:
        await runner.cleanup()


def answer_json(document: Any, status: int = 200) -> Callable[[web.Request], Awaitable[Any]]:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response(document, status=status)

    return answer


def answer_text(text: str, status: int = 200) -> Callable[[web.Request], Awaitable[Any]]:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(text=text, status=status)

    return answer


async def test_http_executor_posts_the_run_and_returns_the_result(
    service: ExecutorService,
) -> None:
    service.answer = answer_json({"session": {"turns": 3}, "message_count": 3, "output": ["hi"]})
    item = PromptInput(header=header(), content=[TextBlock(text="hi"), inline_image()])
    run = run_of(item, session={"turns": 2})
    execute = make_http_executor(service.url, timeout_seconds=30)

    result = await execute(run)

    assert result.session == {"turns": 3}
    assert result.message_count == 3
    assert result.output == ["hi"]
    (sent,) = service.requests
    assert sent == {
        "runtime_id": run.runtime_id,
        "run_id": str(RUN_ID),
        "inputs": [json.loads(item.model_dump_json())],
        "session": {"turns": 2},
        "interrupted": False,
    }
    assert sent["inputs"][0]["content"][1]["data"] == inline_image().data


async def test_http_executor_forwards_a_pending_interrupt(service: ExecutorService) -> None:
    service.answer = answer_json({"session": {}, "message_count": 0})
    run = run_of(prompt("x"))
    run.interrupt.set()

    result = await make_http_executor(service.url, timeout_seconds=30)(run)

    assert service.requests[0]["interrupted"] is True
    assert result.output is None


async def test_http_executor_fails_on_an_error_status_without_leaking_the_url(
    service: ExecutorService,
) -> None:
    service.answer = answer_text("boom", status=500)
    secret_url = service.url.replace("http://", "http://user:s3cret@") + "?token=t0ken"
    execute = make_http_executor(secret_url, timeout_seconds=30)

    with pytest.raises(ExecutorError, match="answered 500") as caught:
        await execute(run_of(prompt("x")))

    message = str(caught.value)
    assert "boom" in message
    assert "s3cret" not in message
    assert "t0ken" not in message


async def test_http_executor_fails_on_invalid_json(service: ExecutorService) -> None:
    service.answer = answer_text("{not json")

    with pytest.raises(ExecutorError, match="invalid JSON"):
        await make_http_executor(service.url, timeout_seconds=30)(run_of(prompt("x")))


@pytest.mark.parametrize(
    ("document", "complaint"),
    [
        ([], "not an object"),
        ({"message_count": 1}, "'session'"),
        ({"session": [], "message_count": 1}, "'session'"),
        ({"session": {}}, "'message_count'"),
        ({"session": {}, "message_count": -1}, "'message_count'"),
        ({"session": {}, "message_count": True}, "'message_count'"),
        ({"session": {}, "message_count": "2"}, "'message_count'"),
    ],
)
async def test_http_executor_fails_on_a_result_of_the_wrong_shape(
    service: ExecutorService, document: Any, complaint: str
) -> None:
    service.answer = answer_json(document)

    with pytest.raises(ExecutorError, match=complaint):
        await make_http_executor(service.url, timeout_seconds=30)(run_of(prompt("x")))


async def test_http_executor_gives_up_after_its_timeout(service: ExecutorService) -> None:
    released = asyncio.Event()
    reached = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        reached.set()
        await released.wait()
        return web.json_response({"session": {}, "message_count": 0})

    service.answer = hang
    try:
        with pytest.raises(ExecutorError, match="did not answer within"):
            await make_http_executor(service.url, timeout_seconds=0.05)(run_of(prompt("x")))
        assert reached.is_set()
    finally:
        released.set()


async def test_http_executor_fails_when_nothing_listens() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    execute = make_http_executor(f"http://127.0.0.1:{free_port}/run", timeout_seconds=30)

    with pytest.raises(ExecutorError, match="failed: ClientConnectorError"):
        await execute(run_of(prompt("x")))


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("MEERKAT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.mark.usefixtures("clean_environment")
async def test_http_execute_reads_the_url_at_call_time(
    service: ExecutorService, monkeypatch: pytest.MonkeyPatch
) -> None:
    service.answer = answer_json({"session": {"n": 1}, "message_count": 1})
    monkeypatch.setenv("MEERKAT_EXECUTOR_URL", service.url)

    result = await http.execute(run_of(prompt("x")))

    assert result.session == {"n": 1}


@pytest.mark.usefixtures("clean_environment")
async def test_http_execute_without_a_url_fails_the_run() -> None:
    with pytest.raises(ExecutorError, match="MEERKAT_EXECUTOR_URL"):
        await http.execute(run_of(prompt("x")))
