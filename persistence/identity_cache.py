"""Values derived from objects that never change, kept by the objects' identity.

The write side encodes the same objects again and again: an input's payload and its history
entries are the very same objects in every image of the record (queued, staged, consumed), and
each image is written whole. An :class:`IdentityCache` keeps what was derived from such an
object under ``id(object)``, with the object itself, so that an id reused by a later object is
never taken for it; the most recently used is kept last and, past ``size`` entries, the least
recently used goes. :meth:`IdentityCache.forget` drops an object's entry at once, when its last
use is known (a record written terminal).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

V = TypeVar("V")


class IdentityCache(Generic[V]):
    """What was derived from each of at most ``size`` objects, by identity."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._kept: OrderedDict[int, tuple[object, V]] = OrderedDict()

    def get(self, obj: object) -> V | None:
        kept = self._kept.get(id(obj))
        if kept is None or kept[0] is not obj:
            return None
        self._kept.move_to_end(id(obj))
        return kept[1]

    def put(self, obj: object, value: V) -> V:
        self._kept[id(obj)] = (obj, value)
        self._kept.move_to_end(id(obj))
        if len(self._kept) > self._size:
            self._kept.popitem(last=False)
        return value

    def forget(self, obj: object) -> None:
        kept = self._kept.get(id(obj))
        if kept is not None and kept[0] is obj:
            del self._kept[id(obj)]

    def __contains__(self, obj: object) -> bool:
        kept = self._kept.get(id(obj))
        return kept is not None and kept[0] is obj
