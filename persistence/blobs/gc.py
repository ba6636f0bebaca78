"""The blob garbage collector.

Images are written before the transaction that references them (DOMAIN.md §7), so a failed commit
leaves an orphan blob. Orphans are harmless and are removed here once they are older than a grace
period. The grace period is what makes this safe against in-flight commits: every put refreshes a
blob's modification time, so a blob that a commit is about to reference is always young. The grace
period must therefore exceed the longest time between a put and its commit (minutes, not hours).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta

from persistence.ports import BlobStore

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DURATION = re.compile(r"(?:\d+[smhdw])+")
_PART = re.compile(r"(\d+)([smhdw])")


class DurationError(ValueError):
    def __init__(self, text: str) -> None:
        super().__init__(
            f"not a duration: {text!r} (expected a number and a unit s, m, h, d or w, e.g. 24h, "
            "30m, 7d, 1h30m)"
        )
        self.text = text


def parse_duration(text: str) -> timedelta:
    """``"90s"``, ``"30m"``, ``"24h"``, ``"7d"``, ``"2w"`` or a sum such as ``"1h30m"``."""
    compact = text.strip().lower()
    if not _DURATION.fullmatch(compact):
        raise DurationError(text)
    total = timedelta()
    for amount, unit in _PART.findall(compact):
        total += timedelta(**{_UNITS[unit]: int(amount)})
    return total


async def collect_garbage(
    blobs: BlobStore, referenced: set[str], *, older_than: datetime, dry_run: bool,
    progress: Callable[[int, int | None], None] | None = None,
) -> list[str]:
    """Delete the blobs that no stored input references and that were last modified before
    ``older_than``; return their ids (sorted). With ``dry_run`` nothing is deleted.

    ``referenced`` should be read from the state store before this is called; a blob referenced
    by a later commit was put (and so refreshed) too recently to be taken. ``progress`` is told
    how many blobs were deleted so far and how many are to go in all, before the first and after
    each deletion.
    """
    if older_than.tzinfo is None:
        raise ValueError("older_than must carry a time zone")
    doomed = sorted(
        info.blob_id
        for info in await blobs.list_blobs()
        if info.blob_id not in referenced and info.modified_at < older_than
    )
    if dry_run:
        return doomed
    if progress is not None:
        progress(0, len(doomed))
    for done, blob_id in enumerate(doomed, start=1):
        await blobs.delete(blob_id)
        if progress is not None:
            progress(done, len(doomed))
    return doomed
