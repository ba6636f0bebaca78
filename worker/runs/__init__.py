"""Runs: what happens between a runtime's admission signal and its next boundary.

- :mod:`~worker.runs.loop`: the run loop (one task per runtime with work, executor slots, the
  stage and end of each run sent through the commit pipeline);
- :mod:`~worker.runs.executors`: the executor interface and the built-in executors (echo, http);
- :mod:`~worker.runs.restore`: the request an executor gets (images inline again, the last
  session snapshot).
"""
