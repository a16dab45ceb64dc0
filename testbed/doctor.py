"""`python -m testbed doctor`: check the engine contract the testbed relies on, in seconds.

Why: a fresh Debian host with Podman on CNI and no DNS plugin built images for minutes, then
failed on the first container-name lookup. The contract is checked on a throwaway network
with a tiny probe image (a static busybox from the host, imported in under a second), before
any testbed image is built: containers start, resolve each other by name, and a port
published on 127.0.0.1 answers from the host.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from testbed import engine
from testbed.errors import TestbedError
from testbed.spec import LABEL

PROBE_IMAGE = "localhost/mlray-doctor-probe:1"  # bump when the applets change
PROBE_PORT = 8080
BUSYBOX_APPLETS = ("sh", "httpd", "nslookup", "nc", "printf", "echo", "mkdir")
SETUP_FIX = "run `bash testbed/setup-host.sh` (installs and configures what is missing)"
NETWORK_FIX = (
    "`apt-get install netavark aardvark-dns`, then "
    '`[network] network_backend = "netavark"` in a containers.conf drop-in '
    "(`bash testbed/setup-host.sh` does both), then `python -m testbed doctor` again"
)
FIREWALL_FIX = "`apt-get install iptables` (`bash testbed/setup-host.sh` does it)"
OUTBOUND_FIX = (
    "compare `ip route` with `podman network inspect podman`: a leftover `cni-podman0` bridge "
    "shadows netavark's default network after a switch from CNI (`ip link delete cni-podman0`; "
    "`bash testbed/setup-host.sh` does it), or the host's firewall drops forwarded traffic"
)
STEP_TIMEOUT = 20


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = "✓" if self.ok else "✗"
        text = f"{mark} {self.name}: {self.detail}"
        return f"{text}\n    fix: {self.fix}" if self.fix and not self.ok else text


def run_checks(state_dir: Path) -> list[Check]:
    """Every check in order; stops at the first one the rest depend on."""
    checks: list[Check] = []
    for step in (_podman, _host_settings, _network_backend, _api_service):
        check = step(state_dir)
        checks.append(check)
        if not check.ok and step in (_podman, _host_settings):
            return checks
    checks += contract_checks()
    return checks


def require_contract(state_dir: Path) -> float:
    """Raise with every failed check (and its fix) unless the contract holds; returns seconds."""
    started = time.monotonic()
    failed = [c for c in run_checks(state_dir) if not c.ok]
    if failed:
        lines = "\n".join(c.line() for c in failed)
        raise TestbedError(
            f"got a container engine that breaks the testbed's contract; expected every check "
            f"of `python -m testbed doctor` to pass (no image was built):\n{lines}"
        )
    return time.monotonic() - started


def report(checks: list[Check]) -> str:
    return "\n".join(c.line() for c in checks)


# ---- host and engine -----------------------------------------------------------------------


def _podman(_: Path) -> Check:
    try:
        version = engine.run_podman("version", "--format", "{{.Client.Version}}", timeout=30)
    except TestbedError as exc:
        return Check("podman", False, str(exc), SETUP_FIX)
    return Check("podman", True, f"version {version.stdout.strip()}")


def _host_settings(state_dir: Path) -> Check:
    """The containers.conf settings `up` applies (cgroup v1 hybrid, no CAP_SYS_RESOURCE, ...)."""
    try:
        changes = engine.configure_host(state_dir)
    except TestbedError as exc:
        return Check("host settings", False, str(exc), SETUP_FIX)
    if changes:
        return Check("host settings", True, "; ".join(changes))
    return Check("host settings", True, "none needed beyond what containers.conf sets")


def _network_backend(_: Path) -> Check:
    info = engine.engine_info()
    if engine.firewall_binary() is None:
        return Check(
            "network backend",
            False,
            f"got {info.network_backend} and no `iptables` on this host; expected iptables, "
            "which Podman's bridge networks run at every container start (without it: "
            '"netavark: No such file or directory")',
            FIREWALL_FIX,
        )
    if engine.resolves_names(info):
        helper = "aardvark-dns" if info.network_backend == "netavark" else "dnsname plugin"
        return Check("network backend", True, f"{info.network_backend} with {helper}")
    missing = "aardvark-dns" if info.network_backend == "netavark" else "no dnsname plugin"
    return Check(
        "network backend",
        False,
        f"got {info.network_backend} with {missing}; expected a backend that gives containers "
        "DNS for each other's names",
        NETWORK_FIX,
    )


def _api_service(state_dir: Path) -> Check:
    try:
        url = engine.ensure_service(state_dir)
    except TestbedError as exc:
        return Check("Docker-compatible API", False, str(exc), SETUP_FIX)
    return Check("Docker-compatible API", True, f"{url} answers /_ping (testcontainers uses it)")


# ---- the contract, on a throwaway network --------------------------------------------------


def contract_checks(dns: bool = True) -> list[Check]:
    """Probe image, a container start, name resolution, a published port; always cleans up.

    dns=False makes the throwaway network without DNS, as CNI without its plugin does: the
    testbed's self-test proves the check fails, fast and with the fix, on a real engine.
    """
    try:
        detail = _ensure_probe_image()
    except TestbedError as exc:
        return [Check("probe image", False, str(exc), "apt-get install busybox-static")]
    checks = [Check("probe image", True, detail)]
    suffix = secrets.token_hex(3)
    with _throwaway_network(f"mlray-doctor-{suffix}", dns) as network:
        server, client = f"mlray-doctor-{suffix}-a", f"mlray-doctor-{suffix}-b"
        started = _check("container start", lambda: _start_server(server, network))
        checks.append(started)
        if not started.ok:
            return checks
        checks.append(_check("name resolution", lambda: _resolve(client, server, network)))
        checks.append(_check("published port", lambda: _published_port(server)))
    checks.append(_check("outbound DNS", _outbound))
    return checks


def _check(name: str, probe: Callable[[], str]) -> Check:
    try:
        return Check(name, True, probe())
    except TestbedError as exc:
        fix = {"name resolution": NETWORK_FIX, "outbound DNS": OUTBOUND_FIX}.get(name, SETUP_FIX)
        return Check(name, False, str(exc), fix)


def ensure_probe_image() -> str:
    """The probe image's name, imported first if this host lacks it (the testbed's DNS repair
    runs it too)."""
    _ensure_probe_image()
    return PROBE_IMAGE


def _ensure_probe_image() -> str:
    if engine.run_podman("image", "exists", PROBE_IMAGE, check=False).returncode == 0:
        return f"{PROBE_IMAGE} (cached)"
    busybox = _static_busybox()
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "rootfs.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(busybox, arcname="bin/busybox")
            for applet in BUSYBOX_APPLETS:
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
        engine.run_podman(
            "import", "--change", f"LABEL {LABEL}.probe=1", str(archive), PROBE_IMAGE,
            timeout=STEP_TIMEOUT,
        )  # fmt: skip
    return f"{PROBE_IMAGE} imported from {busybox}"


def _static_busybox() -> Path:
    """A statically linked busybox: it runs in an empty root file system."""
    for candidate in ("/bin/busybox", "/usr/bin/busybox", shutil.which("busybox") or ""):
        path = Path(candidate)
        if candidate and path.is_file() and _is_static_elf(path):
            return path
    raise TestbedError(
        "got no statically linked busybox on this host for the probe image; expected "
        "/bin/busybox from Debian's busybox-static"
    )


def _is_static_elf(path: Path) -> bool:
    """An ELF file with no PT_INTERP program header needs no dynamic loader."""
    data = path.read_bytes()[:65536]
    if data[:4] != b"\x7fELF" or data[4] != 2:  # 64-bit only, like every testbed host
        return False
    order = "little" if data[5] == 1 else "big"
    phoff = int.from_bytes(data[32:40], order)
    phentsize = int.from_bytes(data[54:56], order)
    phnum = int.from_bytes(data[56:58], order)
    for i in range(phnum):
        start = phoff + i * phentsize
        if int.from_bytes(data[start : start + 4], order) == 3:  # PT_INTERP
            return False
    return True


@contextmanager
def _throwaway_network(name: str, dns: bool) -> Iterator[str]:
    engine.forget_stale_dns(name)
    flags = () if dns else ("--disable-dns",)
    engine.run_podman(
        "network", "create", "--label", f"{LABEL}=1", *flags, name, timeout=STEP_TIMEOUT
    )
    try:
        yield name
    finally:
        ids = engine.run_podman(
            "ps", "-aq", "--filter", f"network={name}", check=False, timeout=STEP_TIMEOUT
        ).stdout.split()
        if ids:
            engine.run_podman("rm", "--force", "--time", "0", *ids, check=False, timeout=60)
        engine.run_podman("network", "rm", "--force", name, check=False, timeout=STEP_TIMEOUT)
        engine.forget_stale_dns(name)


def _start_server(name: str, network: str) -> str:
    cmd = ("sh", "-c", f"mkdir -p /www && echo ok > /www/index.html && "
                       f"exec httpd -f -p {PROBE_PORT} -h /www")  # fmt: skip
    proc = engine.run_podman(
        "run", "-d", "--name", name, "--label", f"{LABEL}=1", "--network", network,
        "-p", f"127.0.0.1::{PROBE_PORT}", PROBE_IMAGE, *cmd,
        check=False, timeout=STEP_TIMEOUT,
    )  # fmt: skip
    if proc.returncode != 0:
        raise TestbedError(
            f"got exit {proc.returncode} from `podman run` of the probe; expected a running "
            f"container:\n{proc.stderr.strip()[-1500:]}"
        )
    return f"{name} runs on {network}"


def _resolve(client: str, server: str, network: str) -> str:
    """Ask the network's DNS for the server by name, then fetch its page at that address.

    busybox's nslookup has its own resolver; its wget goes through static glibc's, which
    crashes in an empty root file system, hence nslookup + nc.
    """
    backend = engine.engine_info().network_backend
    where = f"on network {network} (network backend {backend})"
    address = _lookup(server, network, where, "container names to resolve")
    request = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {address} {PROBE_PORT}"
    fetch = _probe_run(client, network, "sh", "-c", request)
    if fetch.stdout.strip().splitlines()[-1:] != ["ok"]:
        raise TestbedError(
            f"got no page from {server} at {address}:{PROBE_PORT} (exit {fetch.returncode}: "
            f"{fetch.stderr.strip()[-200:]}); expected containers on {network} to reach each other"
        )
    return f"{server} is {address} by name, and answers there"


def _lookup(name: str, network: str | None, where: str, wanted: str) -> str:
    """The address busybox's nslookup finds for `name` in a probe container (None: Podman's
    default network), or an error saying what it said instead."""
    lookup = _probe_run(None, network, "nslookup", name)
    address = _answer(lookup.stdout)
    if lookup.returncode != 0 or not address:
        said = " ".join(lookup.stdout.split()[-8:]) or lookup.stderr.strip()[-200:]
        raise TestbedError(
            f"got no DNS answer for {name} inside a container {where}; nslookup said: {said}; "
            f"expected {wanted}"
        )
    return address


def _probe_run(
    name: str | None, network: str | None, *cmd: str
) -> subprocess.CompletedProcess[str]:
    named = ("--name", name) if name else ()
    net = ("--network", network) if network else ()
    return engine.run_podman(
        "run", "--rm", *named, "--label", f"{LABEL}=1", *net, PROBE_IMAGE, *cmd,
        check=False, timeout=STEP_TIMEOUT,
    )  # fmt: skip


def _answer(nslookup_output: str) -> str:
    """The first address after a `Name:` line of busybox nslookup (the server's own comes first)."""
    named = False
    for line in nslookup_output.splitlines():
        if line.startswith("Name:"):
            named = True
        elif named and line.startswith("Address:"):
            return line.split(":", 1)[1].strip()
    return ""


def _outbound() -> str:
    """Image builds' RUN steps run on Podman's default network and need the package index."""
    index = os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple"
    host = urllib.parse.urlsplit(index).hostname or "pypi.org"
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return f"not checked: this host itself cannot resolve {host} (offline?)"
    where, wanted = "on Podman's default network", "what the host resolves (image builds need it)"
    _lookup(host, None, where, wanted)
    return f"{host} resolves on the default network (image builds' RUN steps)"


def _published_port(server: str) -> str:
    out = engine.run_podman("port", server, f"{PROBE_PORT}/tcp", timeout=STEP_TIMEOUT).stdout
    address = out.strip().splitlines()[0] if out.strip() else ""
    if not address.startswith("127.0.0.1:"):
        raise TestbedError(f"got {address!r} for {server}:{PROBE_PORT}; expected 127.0.0.1:PORT")
    url = f"http://{address}/"
    deadline, last = time.monotonic() + 10, ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                if resp.read().strip() == b"ok":
                    return f"{url} answers from the host"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.3)
    raise TestbedError(f"got no answer from {url} ({last}); expected the probe's 'ok'")


def main(state_dir: Path) -> int:
    """Print each check with ✓/✗; exit 0 only if all pass."""
    started = time.monotonic()
    checks = run_checks(state_dir)
    print(report(checks), flush=True)
    ok = all(c.ok for c in checks)
    verdict = "engine contract holds" if ok else "engine contract broken"
    print(f"{verdict} ({time.monotonic() - started:.1f} s)", flush=True)
    return 0 if ok else 1
