"""The write side's identity caches."""

from __future__ import annotations

import pytest

from persistence.identity_cache import IdentityCache

pytestmark = pytest.mark.unit


def test_a_value_is_found_by_its_object_and_not_by_an_equal_one() -> None:
    cache: IdentityCache[str] = IdentityCache(4)
    key = ["a"]
    assert cache.put(key, "encoded") == "encoded"
    assert cache.get(key) == "encoded"
    assert key in cache
    assert cache.get(["a"]) is None
    assert ["a"] not in cache


def test_past_its_size_the_least_recently_used_goes_and_forget_drops_at_once() -> None:
    cache: IdentityCache[int] = IdentityCache(2)
    one, two, three = object(), object(), object()
    cache.put(one, 1)
    cache.put(two, 2)
    assert cache.get(one) == 1  # one is now the most recently used
    cache.put(three, 3)
    assert two not in cache
    assert cache.get(one) == 1
    cache.forget(one)
    assert one not in cache
    cache.forget(one)  # forgetting what is not kept is nothing
    assert cache.get(three) == 3
