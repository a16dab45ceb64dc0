"""Trust and package-index settings shared by image builds and running Ray containers.

Why: behind a TLS-intercepting proxy (CI hosts, corporate networks) pip inside a container fails
with CERTIFICATE_VERIFY_FAILED unless it trusts the proxy's CA, and Ray's runtime_env pip
installs run inside the Ray containers at deploy time. So the same CA and index settings go into
the image build and into the containers' environment.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass
from pathlib import Path

from testbed.errors import TestbedError
from testbed.spec import PipSettings

PIP_ENV_KEYS = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST")


@dataclass(frozen=True)
class Trust:
    """Resolved settings: the extra CA file (or None) and pip env vars valid in a container."""

    ca_bundle: Path | None
    pip_env: dict[str, str]

    def build_args(self) -> dict[str, str]:
        """Build args for the Dockerfiles (MLRAY_-prefixed: see docker/pip-install.sh)."""
        return {f"MLRAY_{key}": value for key, value in self.pip_env.items()}

    def ca_bytes(self) -> bytes:
        return self.ca_bundle.read_bytes() if self.ca_bundle else b""


def resolve(settings: PipSettings) -> Trust:
    """Description file first, then the environment, then the host pip's own config."""
    return Trust(ca_bundle=_ca_bundle(settings), pip_env=_pip_env(settings))


def _ca_bundle(settings: PipSettings) -> Path | None:
    value = (
        os.environ.get("MLRAY_TESTBED_CA_BUNDLE")
        or settings.ca_bundle
        or os.environ.get("PIP_CERT")
        or _pip_config().get("cert")
    )
    if not value or value.lower() == "none":
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise TestbedError(
            f"got CA bundle {path} (from MLRAY_TESTBED_CA_BUNDLE / testbed pip.ca_bundle / "
            "PIP_CERT / pip config `cert`); expected a readable PEM file, or 'none'"
        )
    return path


def _pip_env(settings: PipSettings) -> dict[str, str]:
    config = _pip_config()
    chosen = {
        "PIP_INDEX_URL": settings.index_url
        or os.environ.get("PIP_INDEX_URL")
        or config.get("index-url"),
        "PIP_EXTRA_INDEX_URL": settings.extra_index_url
        or os.environ.get("PIP_EXTRA_INDEX_URL")
        or config.get("extra-index-url"),
        "PIP_TRUSTED_HOST": settings.trusted_host
        or os.environ.get("PIP_TRUSTED_HOST")
        or config.get("trusted-host"),
    }
    env: dict[str, str] = {}
    for key, value in chosen.items():
        kept = _container_usable(key, value or "")
        if kept:
            env[key] = kept
    return env


def _container_usable(key: str, value: str) -> str:
    """Drop host-only locations: file:// URLs and paths mean nothing inside a container."""
    words = value.split()
    if key == "PIP_TRUSTED_HOST":
        return " ".join(words)
    return " ".join(w for w in words if w.startswith(("http://", "https://")))


def _pip_config() -> dict[str, str]:
    """The host pip's [global] settings from its usual config files (later files win)."""
    files = [
        Path("/etc/pip.conf"),
        Path("/etc/xdg/pip/pip.conf"),
        Path.home() / ".pip" / "pip.conf",
        Path.home() / ".config" / "pip" / "pip.conf",
    ]
    if os.environ.get("PIP_CONFIG_FILE"):
        files.append(Path(os.environ["PIP_CONFIG_FILE"]))
    parser = configparser.ConfigParser()
    parser.read([str(f) for f in files if f.is_file()])
    merged: dict[str, str] = {}
    for section in ("global", "install", "download"):
        if parser.has_section(section):
            for key, value in parser.items(section):
                merged.setdefault(key, value.strip())
    return merged
