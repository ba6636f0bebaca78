#!/usr/bin/env bash
# The test command: lint, type-check, then pytest with any extra arguments passed through.
#
#   bash ops/test.sh                 everything (makes PostgreSQL and RabbitMQ available and
#                                    installs the Node contract tools first)
#   bash ops/test.sh --unit          only the `unit` tier: needs no service
#   bash ops/test.sh -k config -x    extra arguments go to pytest
#   bash ops/test.sh -m faults       the fault suite, with the scale and cluster tests (`scale`,
#                                    also marked `faults`); `-m scale` runs only those. The full
#                                    run (no -m) includes all of them, as .ci/run does.
#
# A virtualenv is created in .venv on first use and refreshed when pyproject.toml changes.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "test: $*"; }
die() { echo "test: ERROR: $*" >&2; exit 1; }

find_python() {
    local candidate
    for candidate in python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
            echo "$candidate"
            return
        fi
    done
    die "Python 3.11 or newer is needed (none of python3.13, python3.12, python3.11, python3)"
}

ensure_venv() {
    local stamp=.venv/.meerkat-installed
    if [ ! -x .venv/bin/python ]; then
        local python
        python="$(find_python)"
        say "creating .venv with $python"
        "$python" -m venv .venv || die "$python -m venv failed (on Debian: apt-get install python3-venv)"
    fi
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        say "installing the package and its dev and otel dependencies into .venv"
        .venv/bin/python -m pip install -q --upgrade pip
        .venv/bin/python -m pip install -q -e '.[dev,otel]'
        touch "$stamp"
    fi
}

main() {
    local unit_only=0
    local pytest_args=()
    local arg
    for arg in "$@"; do
        if [ "$arg" = "--unit" ]; then
            unit_only=1
        else
            pytest_args+=("$arg")
        fi
    done

    ensure_venv
    if [ "$unit_only" -eq 1 ]; then
        pytest_args=(-m "unit and not integration" "${pytest_args[@]}")
    else
        bash ops/services.sh
        bash ops/node-tools.sh
    fi

    say "ruff check ."
    .venv/bin/ruff check .
    say "mypy"
    .venv/bin/mypy
    say "pytest ${pytest_args[*]}"
    local status=0
    .venv/bin/pytest "${pytest_args[@]}" || status=$?
    if [ "$status" -eq 5 ]; then
        die "pytest collected no tests"
    fi
    return "$status"
}

main "$@"
