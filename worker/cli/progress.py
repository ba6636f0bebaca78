"""Progress bars of the long commands (``blobs gc``, ``dlq replay``, ``dlq purge``).

A bar is drawn with rich on standard error, and only when standard error is a terminal: what a
command prints on standard output (its results, which scripts read) is never mixed with it, and
a log file or a pipe gets no control characters. Elsewhere the bar is a no-op. The work reports
to a plain callback, ``progress(done, total)``, so the modules doing it know nothing of rich;
``total`` may be unknown (``None``) or grow (a queue that fills while it is read).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

ProgressCallback = Callable[[int, int | None], None]


def _ignore(done: int, total: int | None) -> None:
    return None


@contextmanager
def progress_bar(description: str) -> Iterator[ProgressCallback]:
    """A callback that moves a bar named ``description`` while the block runs."""
    if not sys.stderr.isatty():
        yield _ignore
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=None)

        def advance(done: int, total: int | None) -> None:
            shown = None if total is None else max(total, done)
            bar.update(task, completed=done, total=shown)

        yield advance
