"""The ``meerkat-worker`` command line.

Layout (each module imports only modules above it in this list, never one below):

- :mod:`worker.cli.common`: the program name and exit codes, the argument types, error printing
  (``fail``, ``scrub``) and loading the settings. Nothing else of the package.
- :mod:`worker.cli.failures`: how a command ends on a failure :mod:`worker.refusals` knows
  (its exit code and its one line).
- :mod:`worker.cli.dead_letters`: what a dead letter is to an operator, and the filters of the
  ``dlq`` commands. Pure.
- :mod:`worker.cli.progress`: progress bars (rich, on standard error, on a terminal only).
- :mod:`worker.cli.settings_help`: the settings as ``run --help`` lists them, from the model.
- :mod:`worker.cli.parser`: the grammar, a Typer application: every command, argument and
  option, help and shell completion. It imports no command's module: each command hands its
  arguments to the dispatcher it is given.
- :mod:`worker.cli.publish`: the command line's builders of prompts and commands over the
  producer client (:mod:`worker.client`, which builds, publishes with confirms and awaits the
  replies), and the client's publishing functions under the names the test suites and the
  benchmarks use.
- :mod:`worker.cli.dlq`: the dead queue: listing, replaying and purging dead-lettered messages
  (the history checker reads it too); a replay publishes through the client's
  :func:`~worker.client.wire.publish_confirmed`.
- :mod:`worker.cli.store_commands`: ``migrate``, ``inspect``, ``blobs gc``.
- :mod:`worker.cli.broker_commands`: ``topology declare|check``, ``send input|command``, and the
  broker connection of a command.
- :mod:`worker.cli.dlq_commands`: ``dlq list|replay|purge``.
- :mod:`worker.cli.verify`: ``verify``, the history checker of :mod:`worker.history`.
- :mod:`worker.cli.members`: ``members``, the heartbeat rows of the deployment's workers.
- :mod:`worker.cli.main`: the entry point ``main`` (the ``meerkat-worker`` script,
  ``python -m worker``, ``python -m worker.cli``): it runs the parser with :func:`~worker.cli.
  main.dispatch`, which loads the settings and runs the command's handler, found in a table
  that imports the handler's module, inside a function, only when that command runs; ``run``
  and ``schemas export``. ``--help`` and completion then load none of the broker, database or
  blob-store libraries (a unit test checks).

This ``__init__`` imports nothing, so that importing :mod:`worker.cli.dlq` or
:mod:`worker.cli.publish` does not load the parser.
"""
