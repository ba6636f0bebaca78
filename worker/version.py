"""The installed version of the worker, for the start-up log line, ``meerkat_build_info`` and
the ``service.version`` of traces."""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "meerkat-worker"


@cache
def package_version() -> str:
    """The version of the installed distribution, or ``unknown`` when it is not installed."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"
