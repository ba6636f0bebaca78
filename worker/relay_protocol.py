"""The pipe protocol between a worker and its outbox relay's child process.

Theory of operation
-------------------
The worker (:mod:`worker.relay_process`) starts the child (:mod:`worker.relay_child`) with
pipes on its standard input and output; its standard error is the worker's, so both log to the
same place in the same format.

- **Worker → child, standard input.** First one line, the :class:`Handoff`: the worker's
  settings as it resolved them (from its keyword arguments, environment, secret files and
  ``.env``, secrets included: the child resolves nothing again, so a rotated secret file or a
  setting given in code cannot make the two disagree), its topology and its id. Then single
  bytes: :data:`WAKE` (a commit wrote events: pass now), :data:`DRAIN` (publish everything
  unsent now and answer ``drained``). End of file: stop. A pipe is not an environment
  variable: the secrets are not in ``/proc/PID/environ`` of the child.
- **Child → worker, standard output.** One JSON object a line, a :class:`Report`: ``pass``
  after each pass of the relay's loop (its liveness), ``drained`` once for each :data:`DRAIN`,
  in order (the count, or the error), ``fault`` when an injected ``raise`` or ``hang`` fault
  fired (so that the next child is not given it again). Each report carries the events
  published since the previous one, the backlog and whether the relay leads, for the worker's
  metrics.

Wakes are idempotent and need no answer, so the worker writes one only while the pipe has no
byte waiting to be read: a byte in the pipe will wake the child after the commit in any case.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from worker.config import SECRET_FIELDS, Settings
from worker.topology import Topology

WAKE = b"n"
DRAIN = b"p"

ReportKind = Literal["pass", "drained", "fault"]


class ProtocolError(ValueError):
    """A line or byte that is not part of the protocol."""


@dataclass(frozen=True)
class Handoff:
    """What the child needs to be the worker's relay: settings, topology, ids."""

    settings: Mapping[str, Any]
    topology: Mapping[str, Any]
    worker_id: str | None
    parent_pid: int

    @classmethod
    def of(cls, settings: Settings, topology: Topology, worker_id: str | None,
           parent_pid: int, *, fault: str | None) -> Handoff:
        """The handoff of ``settings`` (with ``fault`` as the child's fault plan)."""
        values = settings.model_dump(mode="json")
        for name in SECRET_FIELDS:
            secret: SecretStr | None = getattr(settings, name)
            values[name] = None if secret is None else secret.get_secret_value()
        values["fault"] = fault
        return cls(values, dataclasses.asdict(topology), worker_id, parent_pid)

    def encode(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode() + b"\n"

    @classmethod
    def decode(cls, line: bytes) -> Handoff:
        try:
            raw = json.loads(line)
            return cls(dict(raw["settings"]), dict(raw["topology"]), raw["worker_id"],
                       int(raw["parent_pid"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ProtocolError(f"not a relay handoff: {exc}") from None

    def resolved_settings(self) -> Settings:
        """The worker's settings, from these values alone (no environment, no ``.env``, no
        secret file: they were resolved once, by the worker)."""
        return _HandedSettings(**self.settings)

    def resolved_topology(self) -> Topology:
        return Topology(**self.topology)


class _HandedSettings(Settings):
    """Settings whose only source is the keyword arguments."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


@dataclass(frozen=True)
class Report:
    """One line from the child (see the module)."""

    kind: ReportKind
    published: int = 0
    """Events published (and marked sent) since the previous report."""
    backlog: int = 0
    leading: bool | None = None
    count: int = 0
    """``drained``: what the drain published."""
    error: str | None = None
    """``drained``: why the drain failed."""
    point: str | None = None
    """``fault``: the fault point that fired."""

    def encode(self) -> bytes:
        fields = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        return json.dumps(fields).encode() + b"\n"

    @classmethod
    def decode(cls, line: bytes) -> Report:
        try:
            raw = json.loads(line)
            report = cls(**raw)
        except (ValueError, TypeError) as exc:
            raise ProtocolError(f"not a relay report: {line[:200]!r}") from exc
        if report.kind not in ("pass", "drained", "fault"):
            raise ProtocolError(f"unknown relay report kind {report.kind!r}")
        return report


def read_commands(chunk: bytes) -> tuple[bool, int]:
    """The commands in ``chunk`` of standard input: whether it wakes, how many drains."""
    unknown = set(chunk) - {WAKE[0], DRAIN[0]}
    if unknown:
        raise ProtocolError(f"unknown relay command bytes {bytes(sorted(unknown))!r}")
    return WAKE[0] in chunk, chunk.count(DRAIN)
