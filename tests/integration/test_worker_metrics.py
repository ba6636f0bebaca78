"""``/metrics`` of a running worker after a prompt and a poison message, scraped over HTTP and
parsed as Prometheus text: each series the operators read, with the counts these two made."""

from __future__ import annotations

from uuid import uuid4

import aio_pika
import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from schemas import INPUT_MESSAGE_TYPE, Accepted
from tests.integration.conftest import Stack, StackFactory, new_runtime_id
from worker.cli.publish import build_prompt

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(stack: Stack) -> tuple[str, Samples]:
    assert stack.worker.health is not None
    url = f"http://127.0.0.1:{stack.worker.health.port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        text = await response.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"no series {name}{labels}"
    return samples[key]


async def test_the_series_count_a_prompt_and_a_poison_message(stack_factory: StackFactory) -> None:
    stack: Stack = await stack_factory(serve_http=True)
    runtime_id = new_runtime_id()

    reply = await stack.request(build_prompt(runtime_id, "hello", []))
    assert isinstance(reply.outcome, Accepted)
    exchange = await stack.channel.get_exchange(stack.topology.ingress_exchange, ensure=False)
    await exchange.publish(aio_pika.Message(b"{not json", message_id=str(uuid4()),
                                            type=INPUT_MESSAGE_TYPE), routing_key=runtime_id)
    await stack.wait_for_event(lambda e: e.code.value == "run.completed"
                               and e.runtime_id == runtime_id)
    await stack.settled(2)

    text, samples = await scrape(stack)

    settled = "meerkat_deliveries_settled_total"
    assert value(samples, settled, settlement="acked") == 1
    assert value(samples, settled, settlement="dead_lettered") == 1
    assert value(samples, settled, settlement="duplicate") == 0
    assert value(samples, settled, settlement="requeued") == 0
    assert value(samples, "meerkat_replies_total", result="sent") == 1
    assert value(samples, "meerkat_accept_seconds_count") == 2
    assert value(samples, "meerkat_accept_seconds_sum") > 0
    assert value(samples, "meerkat_accept_seconds_bucket", le="+Inf") == 2
    assert value(samples, "meerkat_runs_ended_total", outcome="completed") == 1
    assert value(samples, "meerkat_runs_ended_total", outcome="failed") == 0
    assert value(samples, "meerkat_run_seconds_count") == 1
    assert value(samples, "meerkat_executor_seconds_count") == 1
    assert value(samples, "meerkat_commit_seconds_count") >= 2  # the accept, the stage, the end
    assert value(samples, "meerkat_version_conflicts_total") == 0
    assert value(samples, "meerkat_shards_owned") == stack.topology.shards
    assert value(samples, "meerkat_messages_dead_lettered_total", reason="malformed") == 1
    assert any(name == "meerkat_build_info" for name, _ in samples)
    assert value(samples, "process_cpu_seconds_total") > 0
    assert value(samples, "process_resident_memory_bytes") > 0
    assert any(name == "python_info" for name, _ in samples)
    assert "_created" not in text
