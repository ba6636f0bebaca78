"""Test configuration: service fixtures live in ``tests/fixtures`` and are loaded as plugins.

Integration fixtures use testcontainers when a Docker daemon answers and fall back to the
machine's own services otherwise (PostgreSQL on 127.0.0.1:5432, RabbitMQ on 127.0.0.1:5672, and an
in-process moto S3 server).
"""

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.s3",
    "tests.fixtures.rabbitmq",
]
