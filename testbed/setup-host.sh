#!/usr/bin/env bash
# Idempotent bootstrap of a Debian/Ubuntu host for the mlray testbed, then run a command:
#   sudo testbed/setup-host.sh nox -s demo      # the demo
#   sudo testbed/setup-host.sh nox -s ci        # the test command CI runs
# Installs Podman (+ runc, debootstrap for offline base images, uidmap/slirp4netns for rootless
# use) and a tools venv with nox, puts that venv on PATH and execs the arguments from the repo
# root. Safe to rerun: it only installs what is missing. Needs no stdin (CI=true works).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${MLRAY_TOOLS_DIR:-${HOME}/.cache/mlray/tools}"
APT_PACKAGES=(podman runc debootstrap uidmap slirp4netns python3 python3-venv ca-certificates tar)
NOX_SPEC="${MLRAY_NOX_SPEC:-nox>=2024.4}"

log() { printf '[setup-host] %s\n' "$*" >&2; }

missing_packages() {
    local pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || printf '%s\n' "$pkg"
    done
}

install_packages() {
    command -v dpkg-query >/dev/null || {
        log "not a Debian/Ubuntu host: install ${APT_PACKAGES[*]} yourself, then rerun"
        return 0
    }
    local missing
    mapfile -t missing < <(missing_packages)
    if [ "${#missing[@]}" -eq 0 ]; then
        log "system packages present"
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        log "got missing packages (${missing[*]}) and no root; expected: sudo $0 $*"
        exit 1
    fi
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_tools() {
    if [ ! -x "${TOOLS_DIR}/bin/nox" ]; then
        log "creating tools venv with nox in ${TOOLS_DIR}"
        python3 -m venv "${TOOLS_DIR}"
        "${TOOLS_DIR}/bin/python" -m pip install -q --disable-pip-version-check "${NOX_SPEC}"
    fi
    export PATH="${TOOLS_DIR}/bin:${PATH}"
}

install_packages "$@"
install_tools
cd "${REPO_ROOT}"
if [ "$#" -gt 0 ]; then
    log "running: $*"
    exec "$@"
fi
log "ready; tools on PATH via: export PATH=\"${TOOLS_DIR}/bin:\$PATH\""
