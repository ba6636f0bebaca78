"""A blocking facade over :class:`~worker.client.producer.Client`, for code without an event loop.

The client runs on a private event loop in a daemon thread that the facade starts; each method
hands its coroutine to that loop and blocks until it is done, so the errors are the async
client's. One facade may be used from several threads at once. ``close()`` (or leaving the
``with`` block) closes the connection and ends the thread. Do not use it from inside a running
event loop: use the async client there.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable
from types import TracebackType
from typing import Any, TypeVar, overload

from schemas import CommandEnvelope, InputEnvelope
from worker.client.messages import Image
from worker.client.producer import (
    CONNECT_TIMEOUT_SECONDS,
    DEFAULT_REQUEST_SECONDS,
    Client,
    CommandOutcome,
    Envelope,
    InputOutcome,
    connect,
)

_T = TypeVar("_T")


class SyncClient:
    """``SyncClient(url, prefix=...)`` connects at once; the methods mirror :class:`Client`."""

    def __init__(self, url: str, *, prefix: str = "meerkat",
                 request_seconds: float = DEFAULT_REQUEST_SECONDS,
                 connect_seconds: float = CONNECT_TIMEOUT_SECONDS) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="meerkat-client")
        self._thread.start()
        try:
            self._client: Client = self._call(connect(
                url, prefix=prefix, connect_seconds=connect_seconds,
                request_seconds=request_seconds))
        except BaseException:
            self._stop_loop()
            raise

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    @property
    def client(self) -> Client:
        """The async client underneath (its methods must run on the facade's loop)."""
        return self._client

    def send(self, envelope: Envelope) -> Envelope:
        return self._call(self._client.send(envelope))

    @overload
    def request(self, envelope: InputEnvelope, *,
                wait_seconds: float | None = None) -> InputOutcome: ...

    @overload
    def request(self, envelope: CommandEnvelope, *,
                wait_seconds: float | None = None) -> CommandOutcome: ...

    def request(self, envelope: InputEnvelope | CommandEnvelope, *,
                wait_seconds: float | None = None) -> InputOutcome | CommandOutcome:
        if isinstance(envelope, InputEnvelope):
            return self._call(self._client.request(envelope, wait_seconds=wait_seconds))
        return self._call(self._client.request(envelope, wait_seconds=wait_seconds))

    def prompt(self, runtime_id: str, text: str, *, images: Iterable[Image] = (),
               idempotency_key: str | None = None) -> InputEnvelope:
        return self._call(self._client.prompt(runtime_id, text, images=images,
                                              idempotency_key=idempotency_key))

    def command(self, runtime_id: str, command_type: str, *, reason: str | None = None,
                **fields: Any) -> CommandEnvelope:
        return self._call(self._client.command(runtime_id, command_type, reason=reason,
                                               **fields))

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._call(self._client.close())
        finally:
            self._stop_loop()

    def _call(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
