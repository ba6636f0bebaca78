"""The ``meerkat-worker`` command line.

Layout (each module imports only modules above it in this list, never one below):

- :mod:`worker.cli.common`: the program name and exit codes, the argument types, error printing
  (``fail``, ``scrub``) and loading the settings. Nothing else of the package.
- :mod:`worker.cli.publish`: the command line's builders of prompts and commands over the
  producer client (:mod:`worker.client`, which builds, publishes with confirms and awaits the
  replies), and the client's publishing functions under the names the test suites and the
  benchmarks use.
- :mod:`worker.cli.dlq`: the dead queue: listing and replaying dead-lettered messages (the
  history checker reads it too).
- :mod:`worker.cli.store_commands`: ``migrate``, ``inspect``, ``blobs gc``.
- :mod:`worker.cli.broker_commands`: ``topology declare|check``, ``send input|command``,
  ``dlq list|replay``.
- :mod:`worker.cli.verify`: ``verify``, the history checker of :mod:`worker.history`.
- :mod:`worker.cli.main`: the entry point ``main`` (the ``meerkat-worker`` script,
  ``python -m worker``, ``python -m worker.cli``): the parser, ``run`` and ``schemas export``,
  and the table that imports a command's module, inside a function, only when that command
  runs; ``--help`` then loads none of the broker, database or blob-store libraries.

This ``__init__`` imports nothing, so that importing :mod:`worker.cli.dlq` or
:mod:`worker.cli.publish` does not load the parser.
"""
