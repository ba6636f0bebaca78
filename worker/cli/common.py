"""What every command module of the command line shares: the program name and exit codes,
the argument types of the parser, error printing, and loading the settings.

The argument types are plain functions from the text given on the command line to a value; they
raise ``ValueError`` with a message fit for the user, which the parser shows as a usage error
(exit code 2). Imports nothing of the command line itself, so each command module can import it.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from uuid import UUID

from pydantic import ValidationError
from pydantic_settings import SettingsError

from schemas import RUNTIME_ID_PATTERN
from worker.config import ENV_PREFIX, Settings, load_settings

PROG = "meerkat-worker"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_REJECTED = 4
EXIT_FATAL = 5
EXIT_NOT_FOUND = 6

Handler = Callable[[argparse.Namespace, Settings], int]
"""A command's implementation: the parsed arguments and the settings in, the exit code out."""


# --- argument types ---------------------------------------------------------------------------


def runtime_id(text: str) -> str:
    if not re.fullmatch(RUNTIME_ID_PATTERN, text):
        raise ValueError(
            f"not a runtime id (1..200 of A-Z a-z 0-9 : . _ -): {text!r}"
        )
    return text


def existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise ValueError(f"no such file: {text}")
    return path


def uuid(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise ValueError(f"not a UUID: {text!r}") from None


def key(text: str) -> str:
    if not 1 <= len(text) <= 256:
        raise ValueError("a key is 1..256 characters")
    return text


def positive_int(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise ValueError(f"not a positive integer: {text!r}")
    return number


_DURATION = re.compile(r"(\d+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``24h``, ``7d`` or several run together, summed, such as ``1h30m``; no
    spaces, signs or fractions."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration like 24h, 30m, 90s, 7d: {text!r}")
    try:
        return timedelta(seconds=sum(int(n) * _UNIT_SECONDS[u] for n, u in parts))
    except OverflowError:
        raise ValueError(f"too long a duration: {text!r}") from None


# --- errors -----------------------------------------------------------------------------------


def fail(message: str, code: int, command: str = "") -> int:
    """Print ``meerkat-worker[ COMMAND]: MESSAGE`` to stderr; return ``code``."""
    print(f"{PROG} {command}: {message}" if command else f"{PROG}: {message}", file=sys.stderr)
    return code


def scrub(text: str, settings: Settings) -> str:
    """The text with every configured secret URL masked, whatever library wrote it."""
    return settings.scrub(text)


# --- settings ---------------------------------------------------------------------------------


def settings_or_report() -> Settings | None:
    """The settings, or ``None`` after printing what is wrong with the configuration."""
    try:
        return load_settings()
    except (ValidationError, SettingsError) as exc:
        fail(f"invalid configuration: {describe_config_error(exc)}", EXIT_USAGE)
        return None


def describe_config_error(exc: ValidationError | SettingsError) -> str:
    if isinstance(exc, SettingsError):
        return str(exc)
    # Only locations and messages: an input value could be a secret.
    return "; ".join(
        ENV_PREFIX + "__".join(str(part) for part in error["loc"]).upper() + ": "
        + error["msg"].removeprefix("Value error, ")
        for error in exc.errors()
    )
