"""Test configuration: the package's own pytest plugin, and the fixtures in ``tests/fixtures``.

The services come from the test kit's plugin (:mod:`worker.testing.plugin`, the one users get
with ``meerkat-worker[testing]``): ``MEERKAT_TEST_*`` URLs when set, else testcontainers when a
Docker daemon answers, else the machine's own services (PostgreSQL on 127.0.0.1:5432, RabbitMQ on
127.0.0.1:5672, and an in-process moto S3 server). The fixtures in ``tests/fixtures`` build on
its session fixtures, so one session never starts a service twice. The plugin is listed here as
well as installed as an entry point, so the suite also runs with plugin autoloading turned off.
"""

import pytest

pytest_plugins = [
    "worker.testing.plugin",
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
