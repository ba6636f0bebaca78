#!/usr/bin/env bash
# Run examples/pytest-suite the way a user's project would run its own tests: in a fresh
# virtualenv, with meerkat-worker installed from this checkout as a package (not editable) with
# its `testing` extra, then the example project, then `pytest examples/pytest-suite`.
#
#   bash ops/example-suite.sh              the venv goes to examples/pytest-suite/.venv
#   MEERKAT_EXAMPLE_VENV=/tmp/x bash ...   somewhere else
#   bash ops/example-suite.sh -k poison    extra arguments go to pytest
#
# The services come from the test kit: MEERKAT_TEST_* URLs, else containers when Docker
# answers, else the machine's own RabbitMQ and PostgreSQL (bash ops/services.sh starts them)
# and an in-process S3. pip uses whatever index it is configured with (pip config list).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "example-suite: $*"; }
die() { echo "example-suite: ERROR: $*" >&2; exit 1; }

find_python() {
    local candidate
    for candidate in python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
    die "Python 3.11 or newer is needed (none of python3.13, python3.12, python3.11, python3)"
}

venv="${MEERKAT_EXAMPLE_VENV:-examples/pytest-suite/.venv}"
case "$venv" in /*) ;; *) venv="$PWD/$venv" ;; esac
python="$(find_python)"
say "fresh virtualenv in $venv ($python)"
rm -rf "$venv"
"$python" -m venv "$venv" || die "$python -m venv failed (on Debian: apt-get install python3-venv)"
# setuptools builds in place and keeps build/ between builds: a module deleted from the sources
# would still be in build/lib and so in the wheel.
rm -rf build examples/pytest-suite/build
say "pip install '.[testing]' (this checkout, as a package)"
"$venv/bin/python" -m pip install -q '.[testing]'
say "pip install ./examples/pytest-suite[test]"
"$venv/bin/python" -m pip install -q './examples/pytest-suite[test]'
# The suite must test the installed package, not this checkout's sources.
installed="$(cd / && "$venv/bin/python" -c 'import worker; print(worker.__file__)')"
case "$installed" in
    "$PWD"/worker/*) die "worker is imported from the checkout ($installed), not the venv" ;;
esac
say "pytest examples/pytest-suite $*"
"$venv/bin/pytest" examples/pytest-suite "$@"
