"""The deployment's authorization rules (:class:`~worker.pipeline.authz.Access`), made from its
settings and topology: which exchanges inputs and commands must come through, who may send which
command, where replies may go. The rules themselves, and why, are :mod:`worker.pipeline.authz`
(which knows nothing of settings, so that it stays free of I/O and configuration)."""

from __future__ import annotations

from worker.config import Settings
from worker.pipeline.authz import Access, command_users
from worker.topology import Topology


def access_of(settings: Settings, topology: Topology) -> Access:
    """The authorization rules of the deployment (:mod:`worker.pipeline.authz`)."""
    return Access(
        ingress_exchange=topology.ingress_exchange,
        commands_exchange=topology.commands_exchange,
        command_users=command_users(settings.command_users),
        reply_queue_prefix=settings.reply_queue_prefix,
        own_prefix=topology.prefix,
    )
