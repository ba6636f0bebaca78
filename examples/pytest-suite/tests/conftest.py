"""Every worker of this suite runs this project's executor unless a test names another.

The fixtures come from the ``meerkat-worker[testing]`` plugin, which pytest loads by itself;
overriding ``meerkat_executor`` is how a project points them at its own executor.
"""

import pytest

from worker.testing import ExecutorChoice


@pytest.fixture
def meerkat_executor() -> ExecutorChoice:
    return "example_agent.executor:execute"
