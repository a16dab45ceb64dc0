"""Self-test of the Podman testbed against real containers (marker `testbed`).

Brings the default testbed up through the Python API, checks what the e2e suite will rely on
(nodes, Python versions, MLflow reachability, pip trust inside Ray containers, a failing start
reports logs), then tears down and checks nothing labelled remains. Tears down any running
testbed first: it recreates the default one from scratch.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from testbed import Testbed, TestbedError, doctor, engine, images, nodes
from testbed.spec import LABEL, default_state_dir

pytestmark = pytest.mark.testbed

JOB_TIMEOUT = 120


@pytest.fixture(scope="module")
def bed() -> Iterator[Testbed]:
    tb = Testbed.from_file()
    try:
        tb.up(reuse=False)
        yield tb
    finally:
        tb.down()


def _doctor_leftovers() -> list[str]:
    names = engine.run_podman("network", "ls", "--format", "{{.Name}}").stdout.split()
    names += engine.run_podman("ps", "-a", "--format", "{{.Names}}").stdout.split()
    return [n for n in names if n.startswith("mlray-doctor-")]


def test_doctor_passes_on_this_host_and_cleans_up() -> None:
    """What `.ci/run`'s doctor stage and every `up` rely on, on the real engine."""
    checks = doctor.run_checks(default_state_dir())
    assert [c.name for c in checks if not c.ok] == [], doctor.report(checks)
    assert {"name resolution", "published port"} <= {c.name for c in checks}
    assert _doctor_leftovers() == []


def test_doctor_fails_fast_naming_the_fix_when_names_do_not_resolve() -> None:
    """A network without DNS (what CNI without its plugin gives) must fail in seconds."""
    started = time.monotonic()
    checks = {c.name: c for c in doctor.contract_checks(dns=False)}
    assert time.monotonic() - started < 30
    failed = checks["name resolution"]
    assert not failed.ok
    assert "got no DNS answer" in failed.detail
    assert "aardvark-dns" in failed.fix and "setup-host.sh" in failed.fix
    assert checks["container start"].ok and checks["published port"].ok
    assert _doctor_leftovers() == []


def _exec(container: str, *cmd: str) -> tuple[int, str]:
    result = engine.docker_client().containers.get(container).exec_run(list(cmd))
    return result.exit_code, result.output.decode(errors="replace")


def test_each_cluster_has_head_and_workers_alive(bed: Testbed) -> None:
    assert set(bed.clusters) == {bed.spec.cluster_name(py) for py in bed.spec.python}
    for info in bed.clusters.values():
        assert nodes.alive_ray_nodes(info.dashboard_url, bed.auth_headers) == 1 + bed.spec.workers


def test_every_node_runs_the_cluster_python(bed: Testbed) -> None:
    for info in bed.clusters.values():
        for container in (info.head, *info.workers):
            code, out = _exec(
                container, "python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"
            )
            assert (code, out.strip()) == (0, info.python), container
            # Named as `podman ps` names it, so Ray's node list and /metadata read plainly.
            assert _exec(container, "hostname")[1].strip() == container


def test_every_ray_node_starts_with_the_specs_ingress(bed: Testbed) -> None:
    """Serve reads RAY_SERVE_ENABLE_HA_PROXY per node at `ray start`: all nodes must agree."""
    want = "1" if bed.spec.ingress == "haproxy" else "0"
    for info in bed.clusters.values():
        for container in (info.head, *info.workers):
            code, out = _exec(container, "printenv", "RAY_SERVE_ENABLE_HA_PROXY")
            assert (code, out.strip()) == (0, want), container


def test_dashboards_refuse_requests_without_the_token(bed: Testbed) -> None:
    """Token auth is on, as on production clusters: a request must carry the token."""
    assert bed.spec.auth == "token" and bed.auth_headers
    for info in bed.clusters.values():
        url = f"{info.dashboard_url}/api/serve/applications/"
        assert requests.get(url, timeout=10).status_code in (401, 403), url
        wrong = {"Authorization": "Bearer not-the-token"}
        assert requests.get(url, timeout=10, headers=wrong).status_code in (401, 403), url
        assert requests.get(url, timeout=10, headers=bed.auth_headers).status_code == 200, url


def test_ray_job_reports_python_through_the_jobs_api(bed: Testbed) -> None:
    """The dashboard's Jobs REST API runs code on the cluster: the path mlray relies on."""
    for info in bed.clusters.values():
        entry = "python -c \"import sys; print('PY=%d.%d' % sys.version_info[:2])\""
        reply = requests.post(
            f"{info.dashboard_url}/api/jobs/", json={"entrypoint": entry}, headers=bed.auth_headers
        )
        reply.raise_for_status()
        job_id = reply.json()["submission_id"]
        status = _wait_job(bed, info.dashboard_url, job_id)
        logs = requests.get(
            f"{info.dashboard_url}/api/jobs/{job_id}/logs", timeout=10, headers=bed.auth_headers
        ).json()
        assert status == "SUCCEEDED", logs
        assert f"PY={info.python}" in logs["logs"]


def _wait_job(bed: Testbed, dashboard_url: str, job_id: str) -> str:
    deadline = time.monotonic() + JOB_TIMEOUT
    while time.monotonic() < deadline:
        reply = requests.get(
            f"{dashboard_url}/api/jobs/{job_id}", timeout=10, headers=bed.auth_headers
        )
        status = reply.json()["status"]
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            return str(status)
        time.sleep(1)
    return "TIMEOUT"


def test_mlflow_answers_from_host_and_from_ray_containers(bed: Testbed) -> None:
    assert requests.get(f"{bed.mlflow_url}/health", timeout=10).status_code == 200
    # An API call (not just /health) by container name: proves the allowed-hosts setting.
    probe = (
        "import os, urllib.request; "
        "url = os.environ['MLFLOW_TRACKING_URI'] + '/api/2.0/mlflow/experiments/search'; "
        "req = urllib.request.Request(url + '?max_results=1'); "
        "print(urllib.request.urlopen(req, timeout=10).status)"
    )
    for info in bed.clusters.values():
        code, out = _exec(info.workers[0] if info.workers else info.head, "python3", "-c", probe)
        assert (code, out.strip()) == (0, "200"), out


def test_pip_download_works_inside_a_ray_container(bed: Testbed) -> None:
    """Runtime-env pip installs run in the containers: the trust settings must reach them."""
    for info in bed.clusters.values():
        code, out = _exec(
            info.head, "python3", "-m", "pip", "download", "--no-deps", "--dest", "/tmp/dl",
            "six==1.17.0",
        )  # fmt: skip
        assert code == 0, out


def test_config_yml_describes_the_running_testbed(bed: Testbed) -> None:
    config = yaml.safe_load(bed.config_path.read_text())
    assert config["mlflow"]["tracking_uri"] == bed.mlflow_url
    for name, info in bed.clusters.items():
        entry = config["clusters"][name]
        assert entry["python"] == info.python
        assert entry["dashboard_url"] == info.dashboard_url
        assert entry["mlflow_tracking_uri"] == bed.mlflow_internal_url
        assert entry["http_options"] == {"host": "0.0.0.0", "port": 8000}
        assert entry["platform"].startswith("linux_")
        assert entry["auth_token_file"] == str(bed.spec.auth_token_path)
        headers = {"Authorization": f"Bearer {Path(entry['auth_token_file']).read_text().strip()}"}
        version = requests.get(f"{info.dashboard_url}/api/version", timeout=10, headers=headers)
        assert version.status_code == 200


def _aardvark_pids() -> set[int]:
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        mine = stat.parent.stat().st_uid == os.geteuid()  # rootless: this user's own server
        if mine and "(aardvark-dns) " in text and ") Z " not in text:
            pids.add(int(stat.parent.name))
    return pids


def test_a_deaf_dns_server_is_restarted_by_the_start_check(bed: Testbed) -> None:
    """A CI host lost container names on the testbed network with its engine otherwise healthy:
    up's DNS check restarts aardvark-dns once before it gives up."""
    deaf = _aardvark_pids()
    assert deaf, "expected aardvark-dns to serve the testbed network"
    for pid in deaf:
        os.kill(pid, signal.SIGSTOP)  # alive, on record, and answering nothing
    try:
        bed._check_dns(bed.spec.head_container(bed.spec.python[0]), timeout_s=3)
    finally:
        for pid in deaf:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    assert _aardvark_pids() and not _aardvark_pids() & deaf
    code, out = _exec(bed.spec.head_container(bed.spec.python[0]), "python3", "-c",
                      f"import socket; print(socket.gethostbyname({bed.spec.mlflow_container!r}))")  # fmt: skip
    assert code == 0, out


def test_broken_start_fails_fast_with_the_containers_log_lines(bed: Testbed) -> None:
    python = bed.spec.python[0]
    name = f"{bed.spec.name}-testbed-broken"
    spec = nodes.ContainerSpec(
        name=name,
        image=images.ray_tag(python),
        command=["ray", "start", "--head", "--block", "--no-such-flag"],
        labels={"io.mlray.testbed.role": "broken"},
        network=bed.spec.network,
    )
    nodes.start(spec)
    started = time.monotonic()
    try:
        with pytest.raises(TestbedError) as failure:
            nodes.wait_until(name, lambda: False, "Ray dashboard answer", timeout=60)
        assert time.monotonic() - started < 60
        assert "no-such-flag" in str(failure.value)
        assert f"{name}|" in str(failure.value)
    finally:
        engine.docker_client().containers.get(name).remove(force=True)


def test_down_leaves_nothing_labelled(bed: Testbed) -> None:
    bed.down(stop_service=False)
    with engine.podman_client() as client:
        label = {"label": f"{LABEL}=1"}
        leftovers = [
            *client.containers.list(all=True, filters=label),
            *client.pods.list(filters=label),
            *client.networks.list(filters=label),
            *client.volumes.list(filters=label),
        ]
    assert leftovers == []
