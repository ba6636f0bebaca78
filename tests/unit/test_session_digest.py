"""The shell's session digest is the core's, written faster."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.core import conversation_digest
from worker.driver.digest import session_digest

pytestmark = pytest.mark.unit

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=40,
)


@given(st.dictionaries(st.text(), _JSON, max_size=8))
def test_any_json_session_has_the_cores_digest(session: dict[str, Any]) -> None:
    assert session_digest(session) == conversation_digest(session)


@pytest.mark.parametrize("session", [
    {"transcript": [{"role": "user", "text": "héllo \u2028 \x00 \"q\" \\"}], "n": 3},
    {"f": [1e-7, 1e16, 1.5, -0.0, 123456789.125], "big": 2**70},
    {"b": 1, "a": {"é": 1, "e": 2, "z": [True, None]}},
    {"key": "1e5 looks like a number"},
])
def test_the_texts_orjson_writes_otherwise_take_the_cores_way(session: dict[str, Any]) -> None:
    assert session_digest(session) == conversation_digest(session)


@dataclasses.dataclass
class _Point:
    x: int


@pytest.mark.parametrize("session", [
    {"at": datetime(2026, 1, 1, tzinfo=UTC)},
    {"point": _Point(1)},
])
def test_what_json_refuses_is_refused_as_before(session: dict[Any, Any]) -> None:
    with pytest.raises(TypeError):
        conversation_digest(session)
    with pytest.raises(TypeError):
        session_digest(session)


def test_keys_json_converts_and_other_mappings_take_the_cores_way() -> None:
    int_keyed: dict[Any, Any] = {1: "an int key"}
    assert session_digest(int_keyed) == conversation_digest(int_keyed)
    view = MappingProxyType({"a": [1, 2]})
    with pytest.raises(TypeError):
        conversation_digest(view)
    with pytest.raises(TypeError):
        session_digest(view)


@pytest.mark.parametrize("value", [6.1e-05, -6.1e-05, 1e-7, 2.5e-7, -3.25e-8, 1e-05])
def test_a_small_float_anywhere_takes_the_cores_way(value: float) -> None:
    for session in ({"v": value}, {"l": [value]}, {"l": [1, value]}, {"d": {"a": "x", "b": value}}):
        assert session_digest(session) == conversation_digest(session)


def test_a_transcript_of_ids_is_digested_without_the_core(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from worker.driver import digest

    ids = [f"0190{n:04x}-5e-3-a{n:03x}e-4f-{n:04x}e-1{n:07x}" for n in range(300)]
    session = {"transcript": [{"input_id": i, "text": "1e-5 0.00001 costs 5e-3a"} for i in ids]}
    expected = conversation_digest(session)

    def not_here(session: object) -> str:
        raise AssertionError("the transcript went the core's slower way")

    monkeypatch.setattr(digest, "conversation_digest", not_here)
    assert session_digest(session) == expected
