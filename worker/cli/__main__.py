"""``python -m worker.cli``: the same as ``python -m worker`` and the ``meerkat-worker`` command."""

import sys

from worker.cli.main import main

sys.exit(main())
