"""The testbed description file: parsed at the edge, with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from testbed.errors import TestbedError
from testbed.spec import load_spec


def _write(tmp_path: Path, **raw) -> Path:
    path = tmp_path / "testbed.yml"
    path.write_text(yaml.safe_dump({"python": ["3.11"], **raw}))
    return path


def test_haproxy_ingress_is_the_default(tmp_path, monkeypatch):
    monkeypatch.delenv("MLRAY_TESTBED_INGRESS", raising=False)
    assert load_spec(_write(tmp_path)).ingress == "haproxy"
    assert load_spec(_write(tmp_path, ingress="proxy")).ingress == "proxy"


def test_the_env_var_picks_the_ingress(tmp_path, monkeypatch):
    monkeypatch.setenv("MLRAY_TESTBED_INGRESS", "proxy")
    assert load_spec(_write(tmp_path, ingress="haproxy")).ingress == "proxy"


def test_an_unknown_ingress_names_the_file_and_the_choices(tmp_path, monkeypatch):
    monkeypatch.delenv("MLRAY_TESTBED_INGRESS", raising=False)
    path = _write(tmp_path, ingress="nginx")
    with pytest.raises(
        TestbedError, match=r"got ingress='nginx' in .*testbed.yml; expected one of haproxy, proxy"
    ):
        load_spec(path)


def test_token_auth_is_the_default_and_none_turns_it_off(tmp_path, monkeypatch):
    monkeypatch.delenv("MLRAY_TESTBED_AUTH", raising=False)
    assert load_spec(_write(tmp_path)).auth == "token"
    assert load_spec(_write(tmp_path, auth="none")).auth == "none"
    monkeypatch.setenv("MLRAY_TESTBED_AUTH", "none")
    assert load_spec(_write(tmp_path)).auth == "none"
    monkeypatch.setenv("MLRAY_TESTBED_AUTH", "basic")
    with pytest.raises(TestbedError, match=r"got auth='basic' .*; expected one of token, none"):
        load_spec(_write(tmp_path))


def test_lean_idle_is_the_default_and_puts_rays_own_settings_and_flags_on_every_node(
    tmp_path, monkeypatch
):
    from testbed.core import LEAN_IDLE_ENV, Testbed
    from testbed.trust import Trust

    monkeypatch.delenv("MLRAY_TESTBED_IDLE", raising=False)
    monkeypatch.setenv("MLRAY_TESTBED_AUTH", "none")
    monkeypatch.setenv("MLRAY_TESTBED_DIR", str(tmp_path / "state"))
    lean = Testbed(load_spec(_write(tmp_path)))
    assert lean.spec.idle == "lean"
    env = lean._ray_env(Trust(None, {}))
    assert LEAN_IDLE_ENV.items() <= env.items()
    assert all(key.startswith(("RAY_", "REPORTER_")) for key in LEAN_IDLE_ENV)
    assert "--include-log-monitor=False" in lean._ray_args()
    monkeypatch.setenv("MLRAY_TESTBED_IDLE", "default")
    plain = Testbed(load_spec(_write(tmp_path)))
    assert not LEAN_IDLE_ENV.keys() & plain._ray_env(Trust(None, {})).keys()
    assert not any(arg.startswith("--include-log-monitor") for arg in plain._ray_args())
    monkeypatch.setenv("MLRAY_TESTBED_IDLE", "off")
    with pytest.raises(TestbedError, match=r"got idle='off' .*; expected one of lean, default"):
        load_spec(_write(tmp_path))


def test_idle_cpu_names_a_replica_by_its_pip_env_instead_of_a_long_path():
    from testbed.idle import _short

    cmd = (
        "/tmp/ray/session_2026_x/runtime_resources/pip/334d074a4e32ffee/virtualenv/bin/python "
        "-u /usr/local/lib/python3.11/dist-packages/ray/_private/workers/default_worker.py --x"
    )
    assert _short(cmd) == "[pip env 334d074a] python -u ray/_private/workers/default_worker.py --x"


def test_idle_cpu_reads_each_processs_ticks_wakeups_and_command():
    from testbed.idle import parse_processes

    lines = [
        "9 1520 1300 /usr/local/lib/python3.11/dist-packages/ray/core/src/ray/gcs/gcs_server --x",
        "435 2210 99120 ray::ServeController",
        "77 12 3",  # a process with no command line (a kernel-side or exiting one)
        "88   ",  # gone between the reads: no figures, skipped
        "100",
    ]
    assert parse_processes(lines) == {
        "9": (1520, 1300, "ray/core/src/ray/gcs/gcs_server --x"),
        "435": (2210, 99120, "ray::ServeController"),
        "77": (12, 3, ""),
    }


def test_gcs_fault_tolerance_is_off_by_default_and_redis_puts_the_heads_state_there(
    tmp_path, monkeypatch
):
    from testbed.core import GCS_FT_LABEL, Testbed
    from testbed.trust import Trust

    monkeypatch.delenv("MLRAY_TESTBED_GCS_FT", raising=False)
    monkeypatch.setenv("MLRAY_TESTBED_AUTH", "none")
    monkeypatch.setenv("MLRAY_TESTBED_DIR", str(tmp_path / "state"))
    assert load_spec(_write(tmp_path)).gcs_ft == "none"
    monkeypatch.setenv("MLRAY_TESTBED_GCS_FT", "redis")
    tb = Testbed(load_spec(_write(tmp_path)))
    assert tb.spec.gcs_ft == "redis"
    trust = Trust(None, {})
    head = tb._head_spec("3.11", "img", trust, "fp", "redis")
    worker = tb._worker_spec("3.11", 1, "img", trust, "fp", "redis")
    assert head.env["RAY_REDIS_ADDRESS"] == "mlray-redis:6379"
    # a namespace per head container: a new one never recovers an earlier cluster's state
    namespace = head.env["RAY_external_storage_namespace"]
    assert namespace.startswith("py311-")
    again = tb._head_spec("3.11", "img", trust, "fp", "redis")
    assert again.env["RAY_external_storage_namespace"] != namespace
    assert int(worker.env["RAY_gcs_rpc_server_reconnect_timeout_s"]) > 60  # Ray's default
    assert head.labels[GCS_FT_LABEL] == worker.labels[GCS_FT_LABEL] == "redis"
    assert 8000 in worker.ports  # the worker's own ingress, for traffic while the head is away
    assert "--num-cpus=0" in head.command  # replicas run on the workers only
    plain = tb._head_spec("3.11", "img", trust, "fp", "none")
    assert "RAY_REDIS_ADDRESS" not in plain.env and plain.labels[GCS_FT_LABEL] == "none"
    assert "--num-cpus=2" in plain.command
    with pytest.raises(TestbedError, match=r"got workers=0 with gcs_ft=redis"):
        load_spec(_write(tmp_path, workers=0))
    monkeypatch.setenv("MLRAY_TESTBED_GCS_FT", "etcd")
    with pytest.raises(TestbedError, match=r"got gcs_ft='etcd' .*; expected one of none, redis"):
        load_spec(_write(tmp_path))


def test_a_container_is_its_own_hostname_only_where_the_name_is_a_valid_one():
    from testbed.nodes import _HOSTNAME

    assert _HOSTNAME.fullmatch("mlray-py311-worker-1")
    assert not _HOSTNAME.fullmatch("my_bed-py311-head")  # `_` is no hostname character
    assert not _HOSTNAME.fullmatch("a" * 64)  # one DNS label: 63 at most
    assert not _HOSTNAME.fullmatch("-leading-dash")
