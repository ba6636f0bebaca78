#!/usr/bin/env bash
# Resolve the image tags of docker/Dockerfile (ARG PYTHON_IMAGE) and docker/compose.yaml (every
# `image:` pulled from a registry) to their digests. Needs a Docker with `buildx imagetools` or
# `manifest inspect` and registry access.
#
#   bash ops/pin-images.sh            print  <image:tag>  <sha256:digest>
#   bash ops/pin-images.sh --write    also rewrite each reference to image:tag@sha256:digest
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

write=0
[ "${1:-}" = "--write" ] && write=1

digest_of() {
    local ref=$1 out
    if out=$(docker buildx imagetools inspect "$ref" --format '{{json .Manifest.Digest}}' 2>/dev/null); then
        echo "$out" | tr -d '"'
    elif out=$(docker manifest inspect --verbose "$ref" 2>/dev/null); then
        # The index digest is not printed by `manifest inspect`; fall back to the first manifest.
        echo "$out" | grep -o '"digest": *"sha256:[0-9a-f]*"' | head -n 1 | grep -o 'sha256:[0-9a-f]*'
    else
        echo "pin-images: cannot resolve $ref (is Docker with registry access available?)" >&2
        return 1
    fi
}

refs() {
    sed -n 's/^ARG PYTHON_IMAGE=\([^@[:space:]]*\).*/\1/p' docker/Dockerfile
    # Images built here (meerkat-worker) and variables are not resolvable.
    sed -n 's/^ *image: *\([^@[:space:]]*\).*/\1/p' docker/compose.yaml | grep -v -e '^meerkat-worker' -e '\$'
}

for ref in $(refs | sort -u); do
    digest=$(digest_of "$ref")
    printf '%s\t%s\n' "$ref" "$digest"
    if [ "$write" -eq 1 ]; then
        escaped=$(printf '%s' "$ref" | sed 's/[.\/]/\\&/g')
        sed -i "s/\(=\|image: *\)${escaped}\(@sha256:[0-9a-f]*\)\?\$/\1${escaped}@${digest}/" \
            docker/Dockerfile docker/compose.yaml
    fi
done
