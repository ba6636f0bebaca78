"""An agent executor for meerkat-worker, kept small: see :mod:`example_agent.executor`."""
