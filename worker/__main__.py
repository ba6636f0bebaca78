"""``python -m worker``: the same as the ``meerkat-worker`` command."""

import sys

from worker.cli.main import main

sys.exit(main())
