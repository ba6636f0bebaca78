#!/usr/bin/env bash
# Install the dependencies of examples/node (npm ci from the committed package-lock.json).
# Idempotent: does nothing when node_modules matches the lock file already.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../examples/node"

die() { echo "node-examples: ERROR: $*" >&2; exit 1; }

command -v node >/dev/null 2>&1 || die "node is not installed: install Node.js 20 or newer"
command -v npm >/dev/null 2>&1 || die "npm is not installed: install Node.js 20 or newer (with npm)"
major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$major" -ge 20 ] || die "Node.js $(node --version) is too old: install Node.js 20 or newer"

# npm ci writes node_modules/.package-lock.json; newer than the lock file: nothing to do.
if [ -f node_modules/.package-lock.json ] && [ node_modules/.package-lock.json -nt package-lock.json ]; then
    exit 0
fi
echo "node-examples: npm ci in examples/node"
npm ci --no-audit --no-fund --loglevel=error
