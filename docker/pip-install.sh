#!/bin/sh
# Install Python packages into the image's system interpreter with the build's index settings.
#
# Uses uv (bootstrapped with pip): a cold Ray + MLflow install takes minutes with pip on a
# 2-core host and a fraction of that with uv. `--pip` forces plain pip (used to bootstrap).
# Only index settings that are set get exported: pip reads an empty PIP_INDEX_URL as an index.
set -eu
if [ -n "${MLRAY_PIP_INDEX_URL:-}" ]; then
    export PIP_INDEX_URL="$MLRAY_PIP_INDEX_URL" UV_INDEX_URL="$MLRAY_PIP_INDEX_URL"
fi
if [ -n "${MLRAY_PIP_EXTRA_INDEX_URL:-}" ]; then
    export PIP_EXTRA_INDEX_URL="$MLRAY_PIP_EXTRA_INDEX_URL"
    export UV_EXTRA_INDEX_URL="$MLRAY_PIP_EXTRA_INDEX_URL"
fi
if [ -n "${MLRAY_PIP_TRUSTED_HOST:-}" ]; then
    export PIP_TRUSTED_HOST="$MLRAY_PIP_TRUSTED_HOST" UV_INSECURE_HOST="$MLRAY_PIP_TRUSTED_HOST"
fi
# uv: trust the system store (which holds the extra CA), not only its bundled roots.
export UV_NATIVE_TLS=1

if [ "${1:-}" = "--pip" ]; then
    shift
    exec python3 -m pip install --no-cache-dir "$@"
fi
command -v uv >/dev/null 2>&1 || python3 -m pip install --no-cache-dir uv
exec uv pip install --system --break-system-packages --no-cache --compile-bytecode "$@"
