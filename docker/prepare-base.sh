#!/bin/sh
# Turn any Debian-family base into a uniform Python base for the mlray images.
#
# Works on both base kinds the testbed uses:
#   * an official python:X.Y-slim image (Python in /usr/local, pip present);
#   * a debootstrap'ed Debian minbase (no Python, no CA store, or Debian's python3).
# Why no venv: Ray's runtime_env pip plugin clones the *whole* interpreter venv per
# environment when Ray itself runs in a venv; from a system interpreter it creates a light
# `virtualenv --system-site-packages` instead. So the image uses the system interpreter and
# drops Debian's EXTERNALLY-MANAGED marker (the container is the "system" we own).
#
# Usage: prepare-base.sh <python major.minor> <extra CA bundle file, may be empty>
set -eu

want_python="$1"
extra_ca="$2"

# Trust the extra CA for apt as well, in case the mirror is HTTPS behind a TLS proxy.
apt_opts=""
if [ -s "$extra_ca" ]; then
    apt_opts="-o Acquire::https::CaInfo=$extra_ca"
fi

missing=""
command -v tini >/dev/null 2>&1 || missing="$missing tini"
# KubeRay's readiness probes of RayService pods run wget (docs/kubernetes.md).
command -v wget >/dev/null 2>&1 || missing="$missing wget"
[ -x /usr/sbin/update-ca-certificates ] || missing="$missing ca-certificates"
if ! python3 -m pip --version >/dev/null 2>&1; then
    missing="$missing python3 python3-pip"
fi
# Some wheels (e.g. psutil on new Pythons) may need a compiler only when no wheel exists;
# we rely on wheels and keep the image small.
if [ -n "$missing" ]; then
    echo "prepare-base: installing Debian packages:$missing"
    # shellcheck disable=SC2086
    apt-get $apt_opts update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get $apt_opts install -y -qq --no-install-recommends $missing
    rm -rf /var/lib/apt/lists/*
fi

if [ -s "$extra_ca" ]; then
    cp "$extra_ca" /usr/local/share/ca-certificates/mlray-extra-ca.crt
fi
update-ca-certificates >/dev/null 2>&1 || update-ca-certificates

# pip from Debian refuses to install into the system interpreter without this.
rm -f /usr/lib/python3*/EXTERNALLY-MANAGED

# Debian's pip only bootstraps a pip of our own in /usr/local: Debian-owned Python packages
# (e.g. python3-packaging on trixie) have no RECORD file, so pip could not upgrade them later.
if dpkg-query -W -f='${Status}' python3-pip 2>/dev/null | grep -q "ok installed"; then
    sh "$(dirname "$0")/pip-install.sh" --pip --ignore-installed pip
    debian_python_libs="$(dpkg-query -W -f='${Package} ${Status}\n' 'python3-*' \
        | awk '/ok installed/ {print $1}' \
        | grep -vE '^python3(\.[0-9]+)?(-minimal|-venv)?$' || true)"
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq $debian_python_libs >/dev/null
    hash -r
fi

got_python="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ "$got_python" != "$want_python" ]; then
    echo "prepare-base: got Python $got_python in the base image for PYTHON_VERSION=$want_python;" \
         "expected the base to provide Python $want_python (pick a matching BASE_IMAGE)" >&2
    exit 1
fi
echo "prepare-base: Python $got_python ready"
