"""The producer client of meerkat-worker: build, publish and await inputs and commands.

```python
from worker.client import connect, messages

async with await connect("amqp://guest:guest@localhost:5672/") as client:
    await client.prompt("rt:demo", "hello", images=[Path("cat.png")])    # confirmed publish
    outcome = await client.request(messages.retire("rt:demo"))          # the worker's answer
```

How it works, and where:

- :mod:`worker.client.messages` builds envelopes, one function per input kind (``prompt``,
  ``peer``, ``flow_step``, ``external_event``, ``continuation``, ``operation``) and per command
  (``retire``, ``reset``, ``stop``, ``resume``, ``destroy``, ``recycle``, ``abandon_pending``,
  ``abandon_input``, ``cancel_run``, or ``command(runtime_id, name, ...)``). No I/O; a bad field
  is a ``ValueError`` before anything is sent.
- :mod:`worker.client.wire` turns an envelope into the AMQP message of the contract and
  publishes it where its kind must go: inputs to ``<prefix>.ingress``, commands to
  ``<prefix>.commands`` (the worker dead-letters a message that came another way as
  ``unauthorized``). Every publish is ``mandatory`` with publisher confirms.
- :mod:`worker.client.producer` is :class:`Client`: a connection, a confirm channel, ``send``
  (returns once the broker has the message) and ``request`` (direct reply-to; returns the
  outcome typed by the kind sent). :func:`connect` opens a self-reconnecting connection.
- :mod:`worker.client.errors`: :class:`Unroutable` (the broker returned the message: nothing is
  bound, i.e. no worker declared the topology), :class:`ExchangeMissing`, :class:`NotConfirmed`,
  :class:`NoReply` (timeout), :class:`UnexpectedReply`.
- :mod:`worker.client.sync`: :class:`SyncClient`, the same methods, blocking, for code without
  an event loop (a private loop in a thread of its own).

``meerkat-worker send`` publishes through this package, so it is the one place where messages
are built and published.
"""

from worker.client import messages
from worker.client.errors import (
    ExchangeMissing,
    NoReply,
    NotConfirmed,
    UnexpectedReply,
    Unroutable,
)
from worker.client.producer import Client, CommandOutcome, InputOutcome, connect
from worker.client.sync import SyncClient

__all__ = [
    "Client",
    "CommandOutcome",
    "ExchangeMissing",
    "InputOutcome",
    "NoReply",
    "NotConfirmed",
    "SyncClient",
    "UnexpectedReply",
    "Unroutable",
    "connect",
    "messages",
]
