#!/usr/bin/env bash
# Install the Node tools of the contract checks (tools/contract/: the official AsyncAPI parser
# and Ajv, versions pinned by the committed package-lock.json) with `npm ci`.
#
#   bash ops/node-tools.sh
#
# Idempotent and quick: when node_modules was installed from the same package.json and
# package-lock.json (a checksum stamp in node_modules), nothing is done. Install scripts are not
# run (--ignore-scripts): none of the tools needs one. Needs Node 20 or newer and npm.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../tools/contract"

readonly STAMP=node_modules/.meerkat-installed
readonly NODE_MAJOR_MIN=20

say() { echo "node-tools: $*"; }
die() { echo "node-tools: ERROR: $*" >&2; exit 1; }

command -v node >/dev/null 2>&1 || die "node is not installed (Node $NODE_MAJOR_MIN or newer)"
command -v npm >/dev/null 2>&1 || die "npm is not installed"
major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$major" -ge "$NODE_MAJOR_MIN" ] || die "Node $NODE_MAJOR_MIN or newer is needed, not $(node --version)"

wanted="$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$wanted" ]; then
    exit 0
fi
say "npm ci in tools/contract"
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error || die "npm ci failed"
echo "$wanted" > "$STAMP"
