"""The built-in HTTP executor: the run is done by a service behind ``MEERKAT_EXECUTOR_URL``.

Each run is one ``POST`` of the request as JSON::

    {"runtime_id": "rt:demo", "run_id": "0190...", "inputs": [<input JSON>, ...],
     "session": {...} | null, "interrupted": false}

with the images inline (base64), exactly as on the wire. The service answers ``200`` with
``{"session": {...}, "message_count": <int >= 0>, "output": <any, optional>}``. Anything else
(another status, a body that is not JSON or not of that shape, no answer within
``MEERKAT_EXECUTOR_TIMEOUT_SECONDS``, a connection failure) raises :class:`ExecutorError`, which
fails the run so its inputs are retried.

The URL may carry credentials (``https://user:token@host/run``), so error messages name only its
scheme, host and port, never the URL itself nor the text of a client exception, which may quote
it.

``interrupted`` tells the service that the runtime asked for a yield before the call; an
interrupt arriving during the call is not forwarded.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from worker.config import load_settings
from worker.runs.executors import Executor, RunRequest, RunResult

BODY_EXCERPT_CHARS = 200
"""How much of an unexpected response body an error message quotes."""


class ExecutorError(Exception):
    """The HTTP executor did not return a usable result; the run fails."""


def make_http_executor(url: str, timeout_seconds: float) -> Executor:
    """An executor that POSTs each run to ``url`` and waits at most ``timeout_seconds``."""
    where = endpoint_name(url)
    timeout = aiohttp.ClientTimeout(total=timeout_seconds)

    async def execute_over_http(run: RunRequest) -> RunResult:
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(url, json=request_body(run)) as response,
            ):
                status = response.status
                body = await response.text()
        except TimeoutError:
            raise ExecutorError(
                f"executor at {where} did not answer within {timeout_seconds:g}s"
            ) from None
        except (aiohttp.ClientError, ValueError, OSError) as exc:
            raise ExecutorError(f"request to executor at {where} failed: {describe(exc)}") from None
        return parse_result(where, status, body)

    return execute_over_http


async def execute(run: RunRequest) -> RunResult:
    """The executor named by ``MEERKAT_EXECUTOR=worker.runs.executors.http:execute``.

    The settings are read at each call, so the URL can be set after this module is imported.
    """
    settings = load_settings()
    if settings.executor_url is None:
        raise ExecutorError("MEERKAT_EXECUTOR_URL is not set")
    executor = make_http_executor(
        settings.executor_url.get_secret_value(), settings.executor_timeout_seconds
    )
    return await executor(run)


def request_body(run: RunRequest) -> dict[str, Any]:
    return {
        "runtime_id": run.runtime_id,
        "run_id": str(run.run_id),
        "inputs": [item.model_dump(mode="json") for item in run.inputs],
        "session": None if run.session is None else dict(run.session),
        "interrupted": run.interrupt.is_set(),
    }


def parse_result(where: str, status: int, body: str) -> RunResult:
    if status != 200:
        raise ExecutorError(f"executor at {where} answered {status}: {excerpt(body)}")
    try:
        document = json.loads(body)
    except ValueError:
        raise ExecutorError(
            f"executor at {where} answered with invalid JSON: {excerpt(body)}"
        ) from None
    if not isinstance(document, dict):
        raise ExecutorError(
            f"executor at {where} answered {type(document).__name__}, not an object"
        )
    session = document.get("session")
    if not isinstance(session, dict):
        raise ExecutorError(f"executor at {where}: 'session' must be an object")
    message_count = document.get("message_count")
    # bool is an int in Python but not a count on the wire.
    if type(message_count) is not int or message_count < 0:
        raise ExecutorError(f"executor at {where}: 'message_count' must be an integer >= 0")
    return RunResult(session=session, message_count=message_count, output=document.get("output"))


def endpoint_name(url: str) -> str:
    """``scheme://host:port`` of ``url``: enough to find the service, nothing secret."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<invalid URL>"
    host = parts.hostname or "<no host>"
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


def describe(exc: BaseException) -> str:
    # The text of a client exception may quote the whole URL; the OS error text never does.
    strerror = exc.strerror if isinstance(exc, OSError) else None
    return f"{type(exc).__name__}: {strerror}" if strerror else type(exc).__name__


def excerpt(body: str) -> str:
    text = body.strip()
    if len(text) > BODY_EXCERPT_CHARS:
        return repr(text[:BODY_EXCERPT_CHARS] + "...")
    return repr(text)


__all__ = ["ExecutorError", "execute", "make_http_executor"]
