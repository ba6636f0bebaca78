"""The message pipeline: every state change of this process goes through it.

Theory of operation
-------------------
::

    shard consumers ──deliveries──▶ inbox ──windows──▶ decide ──▶ commit ──▶ settle
    run loop ───────run steps─────▶   ▲                 (driver transaction)  │
                                      └──── policy: retry, hold, dead-letter ◀┘

- :mod:`~worker.pipeline.inbox` collects deliveries (parsed by :mod:`~worker.pipeline.parsing`,
  whose strict JSON reader is :mod:`~worker.pipeline.wire`) and run steps
  (:mod:`~worker.pipeline.steps`) into windows of up to the prefetch, a few milliseconds long,
  in per-runtime order.
- :mod:`~worker.pipeline.authz` is pure too: whether a delivery came through the exchange of
  its kind, whether its publisher may send that command, and where replies may go; a refusal
  is an ``unauthorized`` parse result, dead-lettered like a malformed body.
- :mod:`~worker.pipeline.decide` decides a window in one driver transaction
  (:mod:`worker.driver`): each item on the state the previous one produced.
- :mod:`~worker.pipeline.committer` commits the window, deciding the next one meanwhile
  (pipelined, ``MEERKAT_COMMITS_IN_FLIGHT``), and hands the outcome on.
- :mod:`~worker.pipeline.policy` is pure: what each outcome or failure leads to (the settlement
  table), what is transient, and every retry preset of the worker.
- :mod:`~worker.pipeline.isolation` carries out the failure rows (retry alone, hold, give up),
  so no runtime's later item overtakes an earlier one.
- :mod:`~worker.pipeline.settle` is the only module that acks or rejects a delivery; replies
  (:mod:`~worker.pipeline.replies`) go out after the acks, events through the outbox relay.

A delivery is acked only after the COMMIT of its window returned; nothing is ever given back to
the broker by the pipeline itself (a closed channel gives its deliveries back on its own).
"""
