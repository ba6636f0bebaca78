"""The published log and the events capture: what is written reads back, in order, from any
number of threads, and a bad line is reported with its file and line number."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from schemas import InlineImageBlock
from schemas.validation import blob_id_for, content_blocks
from tests.contract.runtime_builders import event
from worker.cli.publish import build_command, build_prompt
from worker.history.published import (
    EventCapture,
    PublishedLog,
    PublishedLogError,
    read_events,
    read_published,
)

pytestmark = pytest.mark.unit


@pytest.fixture
def png(tmp_path: Path) -> Path:
    from tests.unit.images import png_bytes

    path = tmp_path / "pixel.png"
    path.write_bytes(png_bytes())
    return path


def test_records_read_back_in_publish_order(tmp_path: Path, png: Path) -> None:
    prompt = build_prompt("rt:log", "look", [png, png], idempotency_key="k-1")
    command = build_command("rt:log", "stop")
    path = tmp_path / "published.jsonl"
    with PublishedLog(path) as log:
        recorded = [
            log.record_input(prompt),
            log.record_command(command),
            log.record_hostile("rt:log", "m-bad"),
            log.record_hostile("rt:log", None),
        ]
    assert read_published(path) == recorded
    first, second, hostile, anonymous = recorded
    assert [r.seq for r in recorded] == [0, 1, 2, 3]
    assert (first.kind, first.input_type, first.idempotency_key) == ("input", "prompt", "k-1")
    assert first.message_id == str(first.input_id) == str(prompt.input.header.id)
    [image] = {b for b in content_blocks(prompt.input) if isinstance(b, InlineImageBlock)}
    expected = blob_id_for(image.media_type.value, image.data)
    assert first.image_blob_ids == (expected, expected)
    assert (second.kind, second.command_type, second.expect) == ("command", "stop", "accepted")
    assert second.command_id == command.command.command_id
    assert (hostile.kind, hostile.message_id, hostile.expect) == ("hostile", "m-bad", "dead_letter")
    assert anonymous.message_id is None


def test_append_continues_the_numbering(tmp_path: Path) -> None:
    path = tmp_path / "published.jsonl"
    with PublishedLog(path) as log:
        log.record_hostile("rt:log", "a")
    with PublishedLog(path, append=True) as log:
        assert log.record_hostile("rt:log", "b").seq == 1
    with PublishedLog(path) as log:
        assert log.record_hostile("rt:log", "c").seq == 0
    assert [r.message_id for r in read_published(path)] == ["c"]


def test_appends_from_many_threads_are_whole_lines_numbered_once(tmp_path: Path) -> None:
    path = tmp_path / "published.jsonl"
    threads, each = 8, 200
    with PublishedLog(path) as log:

        def publish(worker: int) -> None:
            for n in range(each):
                log.record_hostile(f"rt:thread-{worker}", f"{worker}-{n}")

        pool = [threading.Thread(target=publish, args=(w,)) for w in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join(timeout=60)
    records = read_published(path)
    assert [r.seq for r in records] == list(range(threads * each))
    for worker in range(threads):
        mine = [r.message_id for r in records if r.runtime_id == f"rt:thread-{worker}"]
        assert mine == [f"{worker}-{n}" for n in range(each)]


def test_each_record_is_on_disk_once_recorded(tmp_path: Path) -> None:
    path = tmp_path / "published.jsonl"
    log = PublishedLog(path)
    log.record_hostile("rt:log", "a")
    assert len(read_published(path)) == 1
    log.close()
    with pytest.raises(ValueError, match="closed"):
        log.record_hostile("rt:log", "b")


def test_a_bad_line_is_named_by_file_and_number(tmp_path: Path) -> None:
    path = tmp_path / "published.jsonl"
    with PublishedLog(path) as log:
        log.record_hostile("rt:log", "a")
    with path.open("a") as handle:
        handle.write("\n")
        handle.write(json.dumps({"seq": 1, "runtime_id": "rt:log", "kind": "gossip"}) + "\n")
    with pytest.raises(PublishedLogError, match=r"published\.jsonl:3: kind: "):
        read_published(path)
    path.write_text("not json\n")
    with pytest.raises(PublishedLogError, match=r"published\.jsonl:1: "):
        read_published(path)


def test_the_events_capture_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    first, second = event("rt:log"), event("rt:other")
    with EventCapture(path) as capture:
        capture.append(first.model_dump_json(indent=2).encode())
        capture.append(second.model_dump_json())
        with pytest.raises(ValueError, match="Expecting value"):
            capture.append(b"not json")
    assert read_events(path) == [first, second]
    assert len(path.read_text().splitlines()) == 2
    path.write_text('{"event_id": "nope"}\n')
    with pytest.raises(PublishedLogError, match=r"events\.jsonl:1: event_id"):
        read_events(path)
