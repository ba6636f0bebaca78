"""How the running worker uses Python's cyclic garbage collector.

A worker holds a large, long-lived heap: every loaded runtime's inputs, their histories and the
latest session snapshot, plus the libraries' own objects (hundreds of thousands of objects under
load). CPython's default thresholds (700, 10, 10) start a young collection every 700 net
allocations and a full collection whenever the long-lived set has grown by a quarter, and a full
collection walks the whole heap: under a steady stream it took a fifth to a third of the
process's time, in pauses of ~0.4 s each, which also lengthen the accept latency tail.

Almost nothing the worker allocates on its hot path forms a reference cycle (records, rows and
events are freed by reference counting), so collecting rarely loses nothing:

- before start-up (:func:`collect_rarely`), what the process holds (modules, settings) is
  collected once and moved to the permanent generation with :func:`gc.freeze`, so no later
  collection walks it again, and the thresholds below apply from then on: a start-up that loads
  runtimes with long queues (tens of thousands of records) would otherwise spend much of its
  time in full collections of a heap that only grows, while the first deliveries wait;
- once started (:func:`tune_for_throughput`), what start-up allocated (connections, loaded
  runtimes) is frozen too, without a collection first: by then the shards are consumed, and a
  full collection of a heap with a long queue loaded (a quarter of a second for 12,000 inputs)
  would stall the first deliveries. What start-up left as cyclic garbage stays, once;
- the young generation is collected every :data:`YOUNG_THRESHOLD` net allocations, the middle one
  every :data:`MIDDLE_THRESHOLD` young collections, and a full collection needs
  :data:`OLD_THRESHOLD` middle ones (and still CPython's own "grown by a quarter" rule).

Cyclic garbage (exceptions with tracebacks, finished tasks) is still collected, only later.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000
MIDDLE_THRESHOLD = 20
OLD_THRESHOLD = 100


def collect_rarely() -> None:
    """Before start-up: collect and freeze what exists, raise the thresholds (see the module)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)


def tune_for_throughput() -> None:
    """Once started: freeze what start-up allocated, keep the raised thresholds (see the
    module)."""
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)
