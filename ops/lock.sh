#!/usr/bin/env bash
# Regenerate requirements.lock: the runtime dependencies of pyproject.toml (no extras), every
# transitive package pinned with its hashes, resolved for the image's Python (3.11 on Linux).
# docker/Dockerfile installs from it with `pip install --require-hashes`. Run after changing
# [project].dependencies; tests/unit/test_deploy_lock.py fails while the lock misses one.
#
#   bash ops/lock.sh            uses uv from .venv (dev extra) or PATH
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

uv=.venv/bin/uv
[ -x "$uv" ] || uv="$(command -v uv)" || { echo "lock: uv not found (pip install uv)" >&2; exit 1; }

"$uv" pip compile pyproject.toml \
    --generate-hashes \
    --python-version 3.11 \
    --python-platform x86_64-unknown-linux-gnu \
    --index-url https://pypi.org/simple \
    --no-header --annotation-style line \
    --custom-compile-command "bash ops/lock.sh" \
    --quiet \
    --output-file requirements.lock
