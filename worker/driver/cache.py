"""The runtimes one process works on, in memory: what was last committed, nothing else.

Only a committed state enters the cache (:meth:`RuntimeCache.remember`), so dropping an entry is
always safe: the store has it. The cache keeps the most recently used runtimes; past its cap it
forgets those at rest (no live input, no run, no open transaction working on them).

Next to a cached runtime with work left (live inputs or a run) it may keep that runtime's last
session snapshot (the one its last committed boundary wrote, or the one read from the store
since), so that a run's restore does not read the store again. It goes with its runtime:
dropped, evicted or reloaded together, and forgotten when the runtime comes to rest.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable
from uuid import UUID

from worker.core import RecoveryReport, Runtime, SessionSnapshot, Signal, take_signal

SignalListener = Callable[[str, Signal], None]


class RuntimeCache:
    def __init__(self, max_runtimes: int) -> None:
        self.max_runtimes = max_runtimes
        self._entries: OrderedDict[str, Runtime] = OrderedDict()
        """Least recently used first."""
        self._pins: Counter[str] = Counter()
        """Runtime → open transactions working on it (never evicted meanwhile)."""
        self.live_runs: dict[str, UUID] = {}
        """Runs this process staged and is still executing, by runtime."""
        self.recoveries: dict[str, RecoveryReport] = {}
        self.snapshots: dict[str, SessionSnapshot | None] = {}
        """Runtime → its latest session snapshot (None: it has none), for cached runtimes."""
        self._listeners: list[SignalListener] = []

    def get(self, runtime_id: str) -> Runtime | None:
        return self._entries.get(runtime_id)

    def ids(self) -> list[str]:
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def drop(self, runtime_id: str) -> None:
        self._entries.pop(runtime_id, None)
        self.snapshots.pop(runtime_id, None)

    def _at_rest(self, runtime_id: str, runtime: Runtime) -> bool:
        """No open transaction on it, no run, no live input: nothing here would miss it."""
        return (runtime_id not in self._pins and runtime.current_run is None
                and runtime_id not in self.live_runs and not runtime.has_live_inputs())

    def pin(self, runtime_id: str) -> None:
        self._pins[runtime_id] += 1

    def unpin(self, runtime_id: str) -> None:
        self._pins[runtime_id] -= 1
        if self._pins[runtime_id] <= 0:
            del self._pins[runtime_id]

    def on_signal(self, listener: SignalListener) -> None:
        self._listeners.append(listener)

    def remember(self, runtime: Runtime) -> None:
        """Cache a committed state and tell the listeners about its signal, if any.

        The snapshot of a runtime left at rest (no live input, no run) is forgotten: it is kept
        for the next run's restore, and one that has nothing left to run may wait long for one
        (a worker keeps thousands of such runtimes); that run reads it from the store."""
        self._entries[runtime.runtime_id] = runtime
        self._entries.move_to_end(runtime.runtime_id)
        if runtime.current_run is None and not runtime.has_live_inputs():
            self.snapshots.pop(runtime.runtime_id, None)
        excess = len(self._entries) - self.max_runtimes
        if excess > 0:
            self._evict(excess)
        if runtime.signal is not Signal.NONE:
            for listener in self._listeners:
                listener(runtime.runtime_id, runtime.signal)

    def take_signal(self, runtime_id: str) -> Signal:
        """The run loop takes (and clears) a cached runtime's signal."""
        runtime = self._entries.get(runtime_id)
        if runtime is None:
            return Signal.NONE
        self._entries[runtime_id] = take_signal(runtime)[0]
        return runtime.signal

    def forget_run(self, runtime_id: str, run_id: UUID) -> None:
        if self.live_runs.get(runtime_id) == run_id:
            del self.live_runs[runtime_id]

    def _evict(self, count: int) -> None:
        for runtime_id in list(self._entries):
            if count <= 0:
                return
            if not self._at_rest(runtime_id, self._entries[runtime_id]):
                continue
            del self._entries[runtime_id]
            self.recoveries.pop(runtime_id, None)
            self.snapshots.pop(runtime_id, None)
            count -= 1
