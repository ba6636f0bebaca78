"""Test configuration: service fixtures live in ``tests/fixtures`` and are loaded as plugins.

Integration fixtures use testcontainers when a Docker daemon answers and fall back to the
machine's own services otherwise (PostgreSQL on 127.0.0.1:5432, RabbitMQ on 127.0.0.1:5672, and an
in-process moto S3 server).
"""

import pytest

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.s3",
    "tests.fixtures.rabbitmq",
]

TIERS = ("unit", "integration", "faults")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test belongs to a tier; an unmarked one would run in the wrong place or never."""
    unmarked = [i.nodeid for i in items if not any(i.get_closest_marker(t) for t in TIERS)]
    if unmarked:
        raise pytest.UsageError("tests without a unit/integration/faults marker: "
                                + ", ".join(unmarked[:10]))
