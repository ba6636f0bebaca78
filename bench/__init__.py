"""Throughput benchmarks of the worker, driven black box: ``python -m bench``.

Method
------
The worker is measured from the outside only, so the same script measures any version of it:
it runs as a subprocess (``meerkat-worker run``) configured by ``MEERKAT_*`` environment
variables, producers are plain aio-pika publishers speaking the wire format of the README
(bodies built with the ``schemas`` models), and every figure and every check is read back from
PostgreSQL with SQL (the tables of ``persistence/sql/tables.py``) and from the broker's queues.
Nothing of ``worker.*`` is imported, except the executor API (``RunRequest``/``RunResult``) by
the slow executor of :mod:`bench.executors`, which the worker loads itself.

Each scenario gets a fresh PostgreSQL database on the given server (``--database-url``, the
machine's PostgreSQL by default), a topology prefix of its own on the broker
(``MEERKAT_TOPOLOGY_PREFIX=bench-<hex>``), a ``file://`` blob store in a temporary directory and
an ephemeral HTTP port; all of them are removed afterwards, whatever the outcome. The database
is prepared with ``meerkat-worker migrate``, the queues with ``meerkat-worker topology declare``.
Every queue is filled before the consumer starts, so the start-up of the worker is never timed.
A queue that drops everything (``x-max-length: 0``) is bound to ``<prefix>.events`` with ``#``,
so that events are routed as where a consumer listens, and the broker keeps none of them.

Scenarios:

``raw``
    The baseline: a minimal durable consumer, aio-pika and asyncpg, on one quorum queue holding
    the same messages. Batches of at most 256 deliveries or 5 ms are written with one
    ``executemany`` INSERT in one transaction, then acked with ``ack(multiple=True)``
    (prefetch 512, so the next batch arrives while one commits). Timed from the first delivery to
    the last commit, by the consumer itself.
``accept``
    Prompts of about 500 bytes over many runtimes, one in ten with a small inline PNG, with the
    default (echo) executor. Timed from the first to the last input's admission time, the
    ``created_at`` the worker writes into each ``inputs`` row when it decides to accept it.
``e2e``
    The same workload, until every input is ``consumed``: from the first admission
    (``min(inputs.created_at)``) to the last consumption (``max(inputs.updated_at)`` of the
    consumed rows, written by the run's boundary commit).
``slow``
    One prompt for each of many runtimes, with an executor that sleeps 1 s
    (``bench.executors:sleep_one_second``) and the default settings. Runs per second over the same
    interval as ``e2e``, against the ideal ``max concurrent runs / 1 s``.

The rates of ``accept`` and ``e2e`` are shown as a ratio of the ``raw`` rate of the same run:
on a shared machine only ratios measured side by side are comparable.

Checks (a failed one prints ``error: ...`` and exits with code 1, with no figure): every
published input is in the ``inputs`` table exactly once and nothing else is; each has exactly one
``input.accepted`` event; per runtime, admission order is publish order; no input or command was
rejected; for ``e2e`` and ``slow`` every input is consumed, each is named by exactly one
receipt and no runtime is left ``running``. After the worker has stopped (which returns any
unacked delivery to its queue) every shard queue and the dead queue must be empty, and the worker
must have exited with code 0. Reported with the results, not checked: the warnings and errors
in the worker's log (kept in ``--logs``), the number of runs (boundary receipts), and the events
still unsent in the outbox when the worker had stopped.

Waits are on conditions (polled every 100 ms) with a stall timeout: a wait fails, naming what it
awaited, when its count has not moved for ``--stall-timeout`` seconds.
"""
