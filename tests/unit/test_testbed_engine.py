"""Pure parts of the engine setup and the doctor: what a host needs, and how checks read."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from testbed import doctor, engine

CNI = engine.EngineInfo("runc", "cgroupfs", "file", rootless=False, network_backend="cni")
NETAVARK = engine.EngineInfo("runc", "cgroupfs", "file", rootless=False)


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Which network helpers the fake host has; nothing is configured explicitly."""
    names: set[str] = set()

    def helper(name: str, dirs: tuple[str, ...] = engine.HELPER_DIRS) -> Path | None:
        return Path("/usr/lib/podman") / name if name in names else None

    monkeypatch.setattr(engine, "helper_binary", helper)
    monkeypatch.setattr(engine, "configured_keys", set)
    return names


def test_cni_without_dns_switches_to_netavark_once_it_is_installed(installed: set[str]) -> None:
    assert not engine.resolves_names(CNI)
    assert not engine.switch_to_netavark(CNI)  # nothing to switch to: the doctor names the fix
    installed.update({"netavark", "aardvark-dns"})
    assert engine.switch_to_netavark(CNI)


def test_hosts_that_resolve_names_are_left_alone(installed: set[str]) -> None:
    installed.update({"netavark", "aardvark-dns", "dnsname"})
    assert engine.resolves_names(CNI)  # CNI with its dnsname plugin (an older laptop setup)
    assert not engine.switch_to_netavark(CNI)
    assert engine.resolves_names(NETAVARK)
    assert not engine.switch_to_netavark(NETAVARK)


def test_an_explicit_backend_setting_is_respected(
    installed: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    installed.update({"netavark", "aardvark-dns"})
    monkeypatch.setattr(engine, "configured_keys", lambda: {"network.network_backend"})
    assert not engine.switch_to_netavark(CNI)


def test_drop_in_groups_network_setting_in_its_section() -> None:
    text = engine.render_drop_in(
        {"network.network_backend": '"netavark"', "engine.runtime": '"runc"'}
    )
    assert engine.parse_settings(text) == {
        "engine.runtime": '"runc"',
        "network.network_backend": '"netavark"',
    }


BUSYBOX_FOUND = """Server:\t\t10.89.0.1
Address:\t10.89.0.1:53

Name:\tmlray-doctor-abc-a.dns.podman
Address: 10.89.0.2

"""
BUSYBOX_NXDOMAIN = """Server:\t\t10.255.255.53
Address:\t10.255.255.53:53

** server can't find mlray-doctor-abc-a: NXDOMAIN
"""


def test_nslookup_answer_is_the_named_address_not_the_server() -> None:
    assert doctor._answer(BUSYBOX_FOUND) == "10.89.0.2"
    assert doctor._answer(BUSYBOX_NXDOMAIN) == ""


def test_static_elf_detection(tmp_path: Path) -> None:
    assert not doctor._is_static_elf(Path(sys.executable).resolve())  # dynamically linked
    not_elf = tmp_path / "script"
    not_elf.write_text("#!/bin/sh\n")
    assert not doctor._is_static_elf(not_elf)


def test_a_failed_check_prints_its_fix_and_a_passed_one_does_not() -> None:
    bad = doctor.Check("name resolution", False, "got NXDOMAIN", doctor.NETWORK_FIX)
    good = doctor.Check("podman", True, "version 4.3.1", "unused")
    assert bad.line().startswith("✗ name resolution: got NXDOMAIN\n    fix: `apt-get install")
    assert good.line() == "✓ podman: version 4.3.1"


def test_stale_cni_bridges_are_only_portless_cni_bridges_under_netavark(tmp_path: Path) -> None:
    """Fake /sys/class/net: a dead CNI bridge, a busy one, netavark's own, and the uplink."""
    for name, ports in {"cni-podman0": [], "cni-podman1": ["veth1"], "podman0": []}.items():
        (tmp_path / name / "bridge").mkdir(parents=True)
        (tmp_path / name / "brif").mkdir()
        for port in ports:
            (tmp_path / name / "brif" / port).mkdir()
    (tmp_path / "eth0").mkdir()
    assert engine.stale_cni_bridges("netavark", tmp_path) == ["cni-podman0"]
    assert engine.stale_cni_bridges("cni", tmp_path) == []  # CNI still owns them


def test_the_doctor_names_iptables_before_any_container_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A brand-new host had netavark without iptables: every `podman run` failed with
    "netavark: No such file or directory", and the doctor blamed the container start."""
    monkeypatch.setattr(engine, "engine_info", lambda: NETAVARK)
    monkeypatch.setattr(
        engine, "helper_binary", lambda name, dirs=(): Path("/usr/lib/podman") / name
    )
    monkeypatch.setattr(engine, "firewall_binary", lambda: None)
    check = doctor._network_backend(Path("."))
    assert not check.ok
    assert "iptables" in check.detail and "apt-get install iptables" in check.fix

    monkeypatch.setattr(engine, "firewall_binary", lambda: Path("/usr/sbin/iptables"))
    assert doctor._network_backend(Path(".")).ok


def test_firewall_binary_is_found_off_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert engine.firewall_binary((str(tmp_path),)) is None
    tool = tmp_path / "iptables"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert engine.firewall_binary((str(tmp_path),)) == tool


BOOT = 1_000_000.0
STALE = {
    "alive_mtime": BOOT - 3600,
    "boot_time": BOOT,
    "run_is_tmpfs": False,
    "engine_running": False,
    "engine_mounts": False,
}


def test_podman_state_from_before_the_boot_is_left_over_on_a_disk_backed_run() -> None:
    """A CI host boots from a disk snapshot: /run kept the dead boot's Podman state."""
    assert engine.left_by_previous_boot(**STALE)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"alive_mtime": BOOT + 5}, "Podman already ran in this boot"),
        ({"alive_mtime": None}, "Podman never ran: nothing to forget"),
        ({"run_is_tmpfs": True}, "a tmpfs /run was emptied by the reboot"),
        ({"engine_running": True}, "a live engine owns the state"),
        ({"engine_mounts": True}, "mounted layers mean the state is live"),
    ],
)
def test_podman_state_is_kept_whenever_it_may_be_live(change: dict[str, object], why: str) -> None:
    assert not engine.left_by_previous_boot(**{**STALE, **change}), why


def test_a_paths_file_system_is_that_of_its_deepest_mount() -> None:
    mounts = [("/", "ext4"), ("/run", "tmpfs"), ("/run/user/1000", "tmpfs"), ("/running", "xfs")]
    assert engine._fstype_of(Path("/run"), mounts) == "tmpfs"
    assert engine._fstype_of(Path("/run/libpod"), mounts) == "tmpfs"
    assert engine._fstype_of(Path("/running/x"), mounts) == "xfs"
    assert engine._fstype_of(Path("/var/lib"), mounts) == "ext4"
    assert engine._fstype_of(Path("/run"), [("/", "ext4")]) == "ext4"  # the CI hosts


def test_boot_time_is_read_from_proc_stat(tmp_path: Path) -> None:
    (tmp_path / "stat").write_text("cpu  1 2 3\nbtime 1764918000\nprocesses 42\n")
    assert engine._boot_time(tmp_path) == 1764918000.0


def test_only_live_engine_processes_count(tmp_path: Path) -> None:
    def process(pid: int, comm: str, state: str) -> None:
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(f"{pid} ({comm}) {state} 1 {pid} 0\n")

    process(1, "init", "S")
    process(2, "tmux: server (x)", "S")
    process(3, "conmon", "Z")  # a zombie holds no state
    assert not engine._engine_running(tmp_path)
    process(4, "aardvark-dns", "S")
    assert engine._engine_running(tmp_path)
