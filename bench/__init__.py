"""Benchmarks of the worker, driven black box, beside two baselines: ``python -m bench``.

Method
------
The worker is measured from the outside only, so the same script measures any version of it:
it runs as a subprocess (``meerkat-worker run``) configured by ``MEERKAT_*`` environment
variables, producers are plain aio-pika publishers speaking the wire format of the README
(bodies built with the ``schemas`` models; requests that await a reply are published with the
producer client's own :func:`worker.client.wire.publish_envelope`), and every figure and every
check is read back from PostgreSQL with SQL (the tables of ``persistence/sql/tables.py``), from
the broker's queues, from the worker's replies, from ``/proc/<pid>/status`` or from the worker's
JSON log. Of ``worker.*`` only the producer client and the executor API (``RunRequest`` /
``RunResult``, used by the executors of :mod:`bench.executors`, which the worker loads itself)
are imported.

The worker scenarios run in sessions (:mod:`bench.session`): a fresh PostgreSQL database on the
given server (``--database-url``), copied from a template that the build's ``meerkat-worker
migrate`` prepared once per run; a topology prefix of its own on the broker
(``MEERKAT_TOPOLOGY_PREFIX=bench-<hex>``), declared with ``meerkat-worker topology declare``; a
``file://`` blob store in a temporary directory; an ephemeral HTTP port. All of them are removed
afterwards, whatever the outcome. Where a scenario times a worker's throughput, its queues are
filled before the worker starts, so that start-up is never timed. A queue that drops everything
(``x-max-length: 0``) is bound to ``<prefix>.events`` with ``#``, so that events are routed as
where a consumer listens, and the broker keeps none of them.

Scenarios (the README's table says the same, shorter):

``raw`` (:mod:`bench.raw`)
    The baseline: a minimal durable consumer, aio-pika and asyncpg, on one quorum queue holding
    the same messages. Batches of at most 256 deliveries or 5 ms are written with one
    ``executemany`` INSERT in one transaction, then acked with ``ack(multiple=True)``
    (prefetch 512, so the next batch arrives while one commits). Timed from the first delivery to
    the last commit, by the consumer itself.
``dramatiq`` (:mod:`bench.dramatiq_scenario`)
    The same messages through Dramatiq's ``RabbitmqBroker`` and an actor doing one INSERT per
    message, in a transaction of its own (one process, 8 threads); from the first insert to the
    last. Skipped, not failed, without the ``bench`` extra.
``accept``, ``e2e``, ``latency`` (:mod:`bench.scenarios`, :mod:`bench.latency`; one session)
    Prompts of about 500 bytes over many runtimes, one in ten with a small inline PNG, with the
    default (echo) executor: from the first to the last admission (``inputs.created_at``); then,
    in the same worker run, until every input is ``consumed`` (the last ``inputs.updated_at`` of
    a consumed row); then publish → reply of paced requests (direct reply-to) at half the most
    the worker sustains (the lower of the rates ``accept`` and ``e2e`` measured), p50 and p99.
``slow`` (:mod:`bench.scenarios`)
    One prompt for each of many runtimes, with an executor that sleeps 1 s; runs per second over
    the same interval as ``e2e``, against the ideal ``max concurrent runs / 1 s``.
``hot``, ``cold`` (:mod:`bench.hotcold`; one session)
    One runtime whose first run never ends, so that its inputs queue: the admission rate once
    10,000 are queued, against ``accept``; then, after a restart, the wait for the first accept
    into that runtime, from the moment the fresh worker consumes to its reply.
``memory``, ``disk`` (:mod:`bench.footprint`; a session each)
    The worker's resident set per idle loaded runtime; the bytes on disk per consumed input once
    the outbox retention has passed and the tables are vacuumed.

Every rate is set beside the ``raw`` rate of the same run (and ``hot`` beside ``accept``): on a
shared machine only ratios measured side by side are comparable.

Checks (a failed one prints ``error: ...`` and exits with code 1, with no figure for any
scenario of its session): every published input is in the ``inputs`` table exactly once and
nothing else is; each has at most one ``input.accepted`` event; per runtime, admission order is
publish order; no input or command was rejected; where the session ran until consumption, every
input is consumed, each is named by exactly one receipt and no runtime is left ``running``;
every request got one reply, ``accepted`` for its own input id. After the worker has stopped
(which returns any unacked delivery to its queue) every shard queue and the dead queue must be
empty, and the worker must have exited with code 0. The baselines check the same of their own
table and queues. Reported with the results, not checked: the warnings and errors in the
worker's log (kept in ``--logs``), the number of runs (boundary receipts), and the events still
unsent in the outbox when the worker had stopped.

Waits are on conditions (polled every 100 ms) with a stall timeout: a wait fails, naming what it
awaited, when its count has not moved for ``--stall-timeout`` seconds.
"""
