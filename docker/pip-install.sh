#!/bin/sh
# pip install with the build's index settings, exporting only the ones that are set: pip reads
# an empty PIP_INDEX_URL as "no index", so build args must not leak into the env unset-as-empty.
set -eu
[ -z "${MLRAY_PIP_INDEX_URL:-}" ] || export PIP_INDEX_URL="$MLRAY_PIP_INDEX_URL"
[ -z "${MLRAY_PIP_EXTRA_INDEX_URL:-}" ] || export PIP_EXTRA_INDEX_URL="$MLRAY_PIP_EXTRA_INDEX_URL"
[ -z "${MLRAY_PIP_TRUSTED_HOST:-}" ] || export PIP_TRUSTED_HOST="$MLRAY_PIP_TRUSTED_HOST"
exec python3 -m pip install --no-cache-dir "$@"
