"""Podman engine setup: host quirks, the Docker-compatible API service, and API clients.

Why this exists: CI hosts (cgroup v1 hybrid, no CAP_SYS_RESOURCE, no systemd) need a few
containers.conf settings before any container runs, while laptops with working defaults must
keep them. We detect each need separately and write one drop-in file only when something is
needed.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from testbed.errors import TestbedError

if TYPE_CHECKING:
    from collections.abc import Iterator

    import podman

    import docker

ROOTFUL_SOCKET = Path("/run/podman/podman.sock")
DROP_IN = Path("/etc/containers/containers.conf.d/50-mlray-testbed.conf")
# Podman's rootful defaults ask for these; a host whose hard limits are lower and that cannot
# raise them fails every container with "setrlimit ... operation not permitted".
PODMAN_ROOTFUL_NOFILE = 1_048_576
PODMAN_ROOTFUL_NPROC = 4_194_304
CAP_SYS_RESOURCE = 24
ULIMIT_CAP = 65_536


@dataclass(frozen=True)
class EngineInfo:
    """What `podman info` reports about the settings we may need to change."""

    runtime: str
    cgroup_manager: str
    events_logger: str
    rootless: bool
    network_backend: str = "netavark"


def podman_binary() -> str:
    """Path of podman, or an error naming the bootstrap script."""
    found = shutil.which("podman")
    if not found:
        raise TestbedError(
            "got no `podman` on PATH for the testbed engine; expected Podman installed "
            "(run `sudo testbed/setup-host.sh` on Debian/Ubuntu)"
        )
    return found


def run_podman(
    *args: str, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run the podman CLI (used where the API lacks a feature, e.g. import, build progress)."""
    proc = subprocess.run(
        [podman_binary(), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise TestbedError(
            f"got exit {proc.returncode} from `podman {' '.join(args)}`; expected success:\n"
            f"{proc.stderr.strip()[-2000:]}"
        )
    return proc


def engine_info() -> EngineInfo:
    raw = json.loads(run_podman("info", "--format", "json").stdout)
    host = raw["host"]
    return EngineInfo(
        runtime=host["ociRuntime"]["name"],
        cgroup_manager=host["cgroupManager"],
        events_logger=host["eventLogger"],
        rootless=bool(host["security"]["rootless"]),
        network_backend=str(host.get("networkBackend") or "cni"),
    )


def needed_settings(info: EngineInfo) -> dict[str, str]:
    """containers.conf settings this host needs, as `key = value` TOML lines by section key."""
    needs: dict[str, str] = {}
    if not info.rootless and "containers.default_ulimits" not in configured_keys():
        ulimits = _needed_ulimits()
        if ulimits:
            needs["containers.default_ulimits"] = json.dumps(ulimits)
    if _cgroup_hybrid_or_v1() and info.runtime == "crun" and shutil.which("runc"):
        needs["engine.runtime"] = '"runc"'
    if not Path("/run/systemd/system").exists() and info.cgroup_manager == "systemd":
        needs["engine.cgroup_manager"] = '"cgroupfs"'
    if not Path("/run/systemd/journal/socket").exists() and info.events_logger == "journald":
        needs["engine.events_logger"] = '"file"'
    if switch_to_netavark(info):
        needs["network.network_backend"] = '"netavark"'
    return needs


# Where Podman looks for its network helpers (containers.conf `helper_binaries_dir`) and for
# CNI plugins (`cni_plugin_dirs`), in its default order.
HELPER_DIRS = ("/usr/local/libexec/podman", "/usr/local/lib/podman", "/usr/libexec/podman",
               "/usr/lib/podman")  # fmt: skip
CNI_PLUGIN_DIRS = ("/usr/local/libexec/cni", "/usr/libexec/cni", "/usr/local/lib/cni",
                   "/usr/lib/cni", "/opt/cni/bin")  # fmt: skip


def helper_binary(name: str, dirs: tuple[str, ...] = HELPER_DIRS) -> Path | None:
    """The first `name` executable in Podman's helper (or CNI plugin) directories."""
    for directory in dirs:
        path = Path(directory) / name
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def resolves_names(info: EngineInfo) -> bool:
    """True if networks of this backend give containers DNS for each other's names.

    netavark does it with aardvark-dns; CNI only with the dnsname plugin, which Debian's
    `podman --no-install-recommends` does not bring (a fresh host failed the demo this way).
    """
    if info.network_backend == "netavark":
        return helper_binary("aardvark-dns") is not None
    return helper_binary("dnsname", CNI_PLUGIN_DIRS) is not None


FIREWALL_DIRS = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")


def firewall_binary(dirs: tuple[str, ...] = FIREWALL_DIRS) -> Path | None:
    """The `iptables` Podman's bridge networks program NAT and published ports through.

    netavark (and CNI's bridge plugin) run it at every container start. Debian's
    `podman --no-install-recommends` does not bring it: a fresh host then failed every
    `podman run` with "netavark: No such file or directory (os error 2)".
    """
    on_path = shutil.which("iptables")
    return Path(on_path) if on_path else helper_binary("iptables", dirs)


def switch_to_netavark(info: EngineInfo) -> bool:
    """CNI without DNS, and netavark + aardvark-dns installed: Podman keeps CNI while CNI
    configs exist in /etc/cni/net.d, so only a `network_backend` setting switches it."""
    return (
        info.network_backend == "cni"
        and not resolves_names(info)
        and helper_binary("netavark") is not None
        and helper_binary("aardvark-dns") is not None
        and "network.network_backend" not in configured_keys()
    )


def _needed_ulimits() -> list[str]:
    """Explicit ulimits at the host's hard limits, when Podman's defaults cannot be granted."""
    if _has_capability(CAP_SYS_RESOURCE):
        return []
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    if _unlimited_or_at_least(nofile, PODMAN_ROOTFUL_NOFILE) and _unlimited_or_at_least(
        nproc, PODMAN_ROOTFUL_NPROC
    ):
        return []
    nofile = _cap(nofile)
    nproc = min(_cap(nproc), 8192)
    return [f"nofile={nofile}:{nofile}", f"nproc={nproc}:{nproc}"]


def _unlimited_or_at_least(limit: int, wanted: int) -> bool:
    return limit == resource.RLIM_INFINITY or limit >= wanted


def _cap(limit: int) -> int:
    return ULIMIT_CAP if limit == resource.RLIM_INFINITY else min(limit, ULIMIT_CAP)


def _has_capability(bit: int) -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> bit & 1)
    return False


def _cgroup_hybrid_or_v1() -> bool:
    """True unless /sys/fs/cgroup is a pure cgroup v2 mount (crun refuses hybrid mode)."""
    try:
        out = subprocess.run(
            ["stat", "-fc", "%T", "/sys/fs/cgroup"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return False
    return out != "cgroup2fs"


def config_files() -> list[Path]:
    """containers.conf files Podman reads (system, drop-ins, user), existing ones only."""
    etc = Path("/etc/containers")
    user = Path.home() / ".config" / "containers"
    files = [Path("/usr/share/containers/containers.conf"), etc / "containers.conf"]
    files += sorted((etc / "containers.conf.d").glob("*.conf"))
    files += [user / "containers.conf", *sorted((user / "containers.conf.d").glob("*.conf"))]
    return [f for f in files if f.is_file()]


def parse_settings(text: str) -> dict[str, str]:
    """`section.key -> raw value` of the simple TOML we read (one key per line)."""
    settings: dict[str, str] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line.strip("[]").strip()
        elif "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings[f"{section}.{key.strip()}"] = value.strip()
    return settings


def configured_keys() -> set[str]:
    """Settings explicitly present in any containers.conf (podman info hides some, e.g. ulimits)."""
    keys: set[str] = set()
    for path in config_files():
        keys.update(parse_settings(path.read_text()))
    return keys


def render_drop_in(needs: dict[str, str]) -> str:
    """TOML text of the drop-in, grouped by section."""
    sections: dict[str, list[str]] = {}
    for key, value in sorted(needs.items()):
        section, name = key.split(".", 1)
        sections.setdefault(section, []).append(f"{name} = {value}")
    lines = ["# Written by the mlray testbed: settings this host needs (see docs/testbed.md)."]
    for section, entries in sections.items():
        lines += ["", f"[{section}]", *entries]
    return "\n".join(lines) + "\n"


def apply_host_quirks() -> dict[str, str]:
    """Write the containers.conf drop-in if this host needs one; returns what was applied."""
    needs = needed_settings(engine_info())
    if not needs:
        return {}
    if os.geteuid() != 0:
        raise TestbedError(
            f"got host settings {needs} needed for Podman; expected them in {DROP_IN} "
            "(run as root once, or add them to ~/.config/containers/containers.conf)"
        )
    DROP_IN.parent.mkdir(parents=True, exist_ok=True)
    kept = parse_settings(DROP_IN.read_text()) if DROP_IN.is_file() else {}
    DROP_IN.write_text(render_drop_in({**kept, **needs}))
    still = needed_settings(engine_info())
    if still:
        raise TestbedError(
            f"got settings {still} still needed after writing {DROP_IN}; expected Podman to read "
            "containers.conf.d drop-ins (Podman >= 4.0)"
        )
    return needs


def forget_stale_dns(network: str) -> None:
    """Delete aardvark-dns's config of a network that no longer exists.

    Podman 4.3 can leave it behind (e.g. when another container on the network outlived it);
    a network re-created under the same name then gets a new gateway while aardvark-dns keeps
    listening on the old one, and container names stop resolving.
    """
    if run_podman("network", "exists", network, check=False).returncode == 0:
        return
    (_aardvark_dir() / network).unlink(missing_ok=True)


def _aardvark_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/run/containers/networks/aardvark-dns")
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    return Path(runtime_dir) / "containers" / "networks" / "aardvark-dns"


def dns_diagnosis(network: str) -> str:
    """One line on the engine's side of name resolution, for an error message; never raises."""
    facts = []
    proc = run_podman("network", "inspect", network, check=False, timeout=30)
    try:
        inspected = json.loads(proc.stdout)[0]
        gateways = [s.get("gateway", "?") for s in inspected.get("subnets", [])]
        facts.append(f"dns_enabled={inspected.get('dns_enabled')} gateway={','.join(gateways)}")
    except (ValueError, IndexError, KeyError, TypeError, AttributeError):
        facts.append(f"`podman network inspect {network}` said: {proc.stderr.strip()[-200:]}")
    base = _aardvark_dir()
    pid_file = base / "aardvark.pid"
    try:
        pid = pid_file.read_text().strip()
        comm = Path(f"/proc/{pid}/comm")
        running = comm.read_text().strip() if comm.exists() else "no such process"
        facts.append(f"{pid_file} names pid {pid} ({running})")
    except OSError:
        facts.append(f"no {pid_file}")
    config = base / network
    facts.append(f"{config} {'exists' if config.exists() else 'is missing'}")
    return "; ".join(facts)


def restart_dns(network: str, probe_image: str) -> str:
    """Start aardvark-dns afresh on `network`'s current config; say what was done.

    netavark starts aardvark-dns when a container joins a network and the pid on record is
    not alive; a live server that stopped answering is only signalled, and stays deaf. So: stop
    every aardvark-dns (they serve only Podman's networks, for the second a restart takes;
    rootless: this user's own), forget its pid, and let one short-lived container on
    the network start a new one.
    """
    base = _aardvark_dir()
    stopped = []
    for pid, comm, _state in _processes():
        if comm == "aardvark-dns":
            with contextlib.suppress(OSError):  # gone already, or another user's
                os.kill(pid, signal.SIGKILL)
                stopped.append(pid)
    (base / "aardvark.pid").unlink(missing_ok=True)
    proc = run_podman(
        "run", "--rm", "--network", network, probe_image, "sh", "-c", "true",
        check=False, timeout=60,
    )  # fmt: skip
    joined = "joined" if proc.returncode == 0 else f"failed to join ({proc.stderr.strip()[-200:]})"
    return f"stopped aardvark-dns {stopped or 'none running'}; a probe container {joined}"


def socket_path() -> Path:
    """Where the Docker-compatible API socket lives for this user."""
    if os.geteuid() == 0:
        return ROOTFUL_SOCKET
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    return Path(runtime_dir) / "podman" / "podman.sock"


def ensure_service(state_dir: Path) -> str:
    """Return a DOCKER_HOST URL with a live API, starting `podman system service` if needed.

    The service is started detached (own session) so it outlives this process; its pid is
    recorded so `down` can stop exactly the process we started.
    """
    url = os.environ.get("DOCKER_HOST") or f"unix://{socket_path()}"
    if _api_alive(url):
        return url
    if not url.startswith("unix://"):
        raise TestbedError(f"got unreachable DOCKER_HOST={url}; expected a live Docker-API")
    path = Path(url.removeprefix("unix://"))
    path.parent.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    log = (state_dir / "podman-service.log").open("ab")
    proc = subprocess.Popen(
        [podman_binary(), "system", "service", "--time=0", url],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        # It outlives this checkout; conmon inherits its cwd, and a deleted one breaks every
        # container start ("Failed to get working directory").
        cwd="/",
    )
    (state_dir / "podman-service.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if _api_alive(url):
            return url
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise TestbedError(
        f"got no answer from `podman system service` on {url}; expected it up within 20 s "
        f"(see {state_dir / 'podman-service.log'})"
    )


def stop_service(state_dir: Path) -> None:
    """Stop the API service only if this testbed started it (pid file)."""
    pid_file = state_dir / "podman-service.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text().strip() or 0)
    pid_file.unlink()
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if b"system\0service" in cmdline:
        os.kill(pid, 15)


def _api_alive(url: str) -> bool:
    """True if the socket answers the Docker API's /_ping (no curl needed)."""
    if not url.startswith("unix://"):
        return False
    path = url.removeprefix("unix://")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(3)
            sock.connect(path)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n")
            return b" 200 " in sock.recv(64)
    except OSError:
        return False


def configure_host(state_dir: Path) -> list[str]:
    """Apply the host's quirks and say what changed; restart our API service if settings
    changed, since a running `podman system service` keeps the ones it started with."""
    changes = [
        f"removed {path}: a previous boot's Podman state (/run is not a tmpfs here)"
        for path in forget_previous_boot()
    ]
    applied = apply_host_quirks()
    changes += [f"wrote {k} = {v} to {DROP_IN}" for k, v in sorted(applied.items())]
    if applied:
        stop_service(state_dir)
    changes += [f"removed stale CNI bridge {name}" for name in remove_stale_cni_bridges()]
    return changes


def stale_cni_bridges(backend: str, net_dir: Path = Path("/sys/class/net")) -> list[str]:
    """CNI's bridges with no ports left, once Podman runs netavark.

    CNI's `cni-podman0` and netavark's `podman0` both route Podman's default 10.88.0.0/16;
    the dead one wins, so containers on the default network (image builds' RUN steps) lose
    DNS and the internet. Seen on a host switched from CNI after one container had run.
    """
    if backend != "netavark" or not net_dir.is_dir():
        return []
    return sorted(
        link.name
        for link in net_dir.glob("cni-podman*")
        if (link / "bridge").is_dir() and not any((link / "brif").iterdir())
    )


def remove_stale_cni_bridges() -> list[str]:
    """Delete the bridges `stale_cni_bridges` finds (root only: rootless has none)."""
    if os.geteuid() != 0:
        return []
    stale = stale_cni_bridges(engine_info().network_backend)
    if stale and not shutil.which("ip"):
        raise TestbedError(
            f"got stale CNI bridges {stale} that shadow netavark's default network; expected "
            "`ip` (iproute2) to remove them: install iproute2, or `ip link delete` them"
        )
    for name in stale:
        subprocess.run(["ip", "link", "delete", name], capture_output=True, check=False)
    return stale


#: Podman's rootful runtime state. A reboot empties it where /run is a tmpfs.
ROOTFUL_RUNTIME_DIRS = (
    Path("/run/libpod"),
    Path("/run/containers"),
    Path("/run/podman"),
    Path("/run/runc"),
    Path("/run/crun"),
)
#: Processes that mean the engine runs now, so its runtime state is live, not left over.
ENGINE_PROCESSES = frozenset({"podman", "conmon", "aardvark-dns", "netavark", "runc", "crun"})


def left_by_previous_boot(
    *,
    alive_mtime: float | None,
    boot_time: float,
    run_is_tmpfs: bool,
    engine_running: bool,
    engine_mounts: bool,
) -> bool:
    """Is Podman's runtime state in /run a previous boot's?

    Podman refreshes its state after a reboot only when `/run/libpod/alive` is missing, which
    a tmpfs /run guarantees. A VM booted from a disk snapshot (this project's CI hosts: /run
    on the root ext4) keeps the file, so Podman trusts the dead boot's containers, network
    namespaces and aardvark-dns pid. Anything running or mounted now means the state is live.
    """
    return (
        not run_is_tmpfs
        and alive_mtime is not None
        and alive_mtime < boot_time
        and not engine_running
        and not engine_mounts
    )


def _boot_time(proc: Path = Path("/proc")) -> float:
    for line in (proc / "stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise TestbedError(f"got no btime line in {proc / 'stat'}; expected the kernel's boot time")


def _mounts(proc: Path = Path("/proc")) -> list[tuple[str, str]]:
    """(mount point, file system type) of every mount, in mount order."""
    rows = []
    for line in (proc / "mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 3:
            rows.append((fields[1], fields[2]))
    return rows


def _fstype_of(path: Path, mounts: list[tuple[str, str]]) -> str:
    best, fstype = "", ""
    for point, kind in mounts:
        inside = str(path) == point or str(path).startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, fstype = point, kind
    return fstype


def _processes(proc: Path = Path("/proc")) -> Iterator[tuple[int, str, str]]:
    """(pid, command name, state letter) of every process, from /proc/<pid>/stat."""
    for stat in proc.glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended while we looked
            continue
        # "pid (comm) state ...": comm may hold spaces and parentheses, so split at the last ")".
        end = text.rfind(")")
        yield int(stat.parent.name), text[text.find("(") + 1 : end], text[end + 2 : end + 3]


def _engine_running(proc: Path = Path("/proc")) -> bool:
    """Is an engine process alive? Zombies do not count: they hold no state."""
    return any(comm in ENGINE_PROCESSES and state != "Z" for _pid, comm, state in _processes(proc))


def forget_previous_boot(run_dir: Path = Path("/run")) -> list[Path]:
    """Delete the Podman runtime state a previous boot left in a /run that is not a tmpfs.

    Without this, a CI host booted from a snapshot started the testbed on the dead boot's
    state and container names stopped resolving on its network. Deleting it leaves /run as a
    reboot with a tmpfs would: Podman then refreshes its database on its next command.
    """
    if os.geteuid() != 0:
        return []  # rootless state lives in XDG_RUNTIME_DIR, a tmpfs that logind manages
    alive = run_dir / "libpod" / "alive"
    mounts = _mounts()
    stale = left_by_previous_boot(
        alive_mtime=alive.stat().st_mtime if alive.exists() else None,
        boot_time=_boot_time(),
        run_is_tmpfs=_fstype_of(run_dir, mounts) == "tmpfs",
        engine_running=_engine_running(),
        engine_mounts=any(
            point.startswith(("/var/lib/containers/storage/", "/run/containers/", "/run/netns/"))
            for point, _ in mounts
        ),
    )
    if not stale:
        return []
    removed = [path for path in ROOTFUL_RUNTIME_DIRS if path.exists()]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def prepare(state_dir: Path) -> str:
    """Make the engine usable by testcontainers: quirks, service, env. Returns DOCKER_HOST."""
    podman_binary()
    configure_host(state_dir)
    url = ensure_service(state_dir)
    os.environ["DOCKER_HOST"] = url
    # The Ryuk reaper image cannot be pulled without a registry; we clean up by label instead.
    os.environ["TESTCONTAINERS_RYUK_DISABLED"] = "true"
    return url


def docker_client() -> docker.DockerClient:
    """docker-py client on the Podman socket (what testcontainers uses underneath)."""
    import docker

    return docker.DockerClient(base_url=os.environ["DOCKER_HOST"], timeout=120)


def podman_client() -> podman.PodmanClient:
    """podman-py client for libpod-only features (pods, label-filtered cleanup)."""
    from podman import PodmanClient

    return PodmanClient(base_url=os.environ["DOCKER_HOST"])
