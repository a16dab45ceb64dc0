#!/usr/bin/env bash
# Idempotent bootstrap of a Debian/Ubuntu host for the mlray testbed, then run a command:
#   bash testbed/setup-host.sh nox -s demo      # the demo
#   bash testbed/setup-host.sh nox -s ci        # the test command CI runs
# Installs Podman with netavark + aardvark-dns (container DNS; `--no-install-recommends` alone
# gives CNI without DNS), iptables (netavark runs it at every container start), runc,
# debootstrap for offline base images, busybox-static for the engine check, uidmap/slirp4netns
# for rootless use, and a tools venv with nox; writes the containers.conf drop-in this host
# needs (only where needed); puts the venv on PATH and execs the arguments from the repo root.
# Not root? It re-runs itself with sudo (MLRAY_SETUP_NO_SUDO=1 runs it as you, for rootless
# hosts already set up). Safe to rerun: it only installs what is missing. Needs no stdin
# (CI=true works).
set -euo pipefail

if [ "$(id -u)" -ne 0 ] && [ -z "${MLRAY_SETUP_NO_SUDO:-}" ]; then
    if command -v sudo >/dev/null; then
        exec sudo -E -H bash "${BASH_SOURCE[0]}" "$@"
    fi
    printf '[setup-host] got uid %s and no sudo; expected root (run as root, or install sudo)\n' \
        "$(id -u)" >&2
    exit 1
fi

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${MLRAY_TOOLS_DIR:-${HOME}/.cache/mlray/tools}"
APT_PACKAGES=(podman netavark aardvark-dns iptables runc debootstrap busybox-static iproute2
              uidmap slirp4netns python3 python3-venv ca-certificates tar)
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
        log "got missing packages (${missing[*]}) and no root; expected: sudo bash $0 $*"
        exit 1
    fi
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Podman keeps CNI while CNI configs exist in /etc/cni/net.d, even with netavark installed:
# the testbed's engine module decides what this host needs and writes its one drop-in.
configure_podman() {
    command -v podman >/dev/null || return 0
    (cd "${REPO_ROOT}" && python3 -m testbed prepare-host)
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
configure_podman
install_tools
cd "${REPO_ROOT}"
if [ "$#" -gt 0 ]; then
    log "running: $*"
    exec "$@"
fi
log "ready; tools on PATH via: export PATH=\"${TOOLS_DIR}/bin:\$PATH\""
