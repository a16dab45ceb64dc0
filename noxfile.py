"""Developer and CI entry points. `nox -l` lists them; expensive sessions are opt-in.

Python versions of the testbed come from testbed/testbed.yml (read lazily, only by the
sessions that need it), so the matrix is defined in exactly one place.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
TESTBED_FILE = Path(os.environ.get("MLRAY_TESTBED_FILE") or ROOT / "testbed" / "testbed.yml")

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "tests"]


def _testbed_pythons() -> list[str]:
    """The `python:` list of the description file, parsed without importing yaml (fast)."""
    if os.environ.get("MLRAY_TESTBED_PYTHON"):
        return [v.strip() for v in os.environ["MLRAY_TESTBED_PYTHON"].split(",") if v.strip()]
    match = re.search(r"^python:\s*\[([^\]]*)\]", TESTBED_FILE.read_text(), re.MULTILINE)
    if not match:
        return ["3.11", "3.13"]
    return [v.strip().strip("'\"") for v in match.group(1).split(",") if v.strip()]


def _install(session: nox.Session, *extras: str) -> None:
    """The project itself plus extras, editable so the testbed package is importable."""
    session.install("-e", f".[{','.join(extras)}]")


def _testbed(session: nox.Session, *args: str) -> None:
    """Run the testbed CLI in a session venv that has its dependencies."""
    _install(session, "testbed")
    session.run("python", "-m", "testbed", *args)


def _pytest(session: nox.Session, *args: str, extras: tuple[str, ...] = ("test",)) -> None:
    _install(session, *extras)
    session.run("pytest", *args, *session.posargs)


@nox.session(default=False)
@nox.parametrize("python_version", _testbed_pythons())
def images(session: nox.Session, python_version: str) -> None:
    """Build the Ray image for one testbed Python (cached by content hash)."""
    _testbed(session, "images", "--python", python_version)


@nox.session(python=False, default=False)
def doctor(session: nox.Session) -> None:
    """Check the container engine in seconds (✓/✗ per check); builds nothing.

    Runs on the host's python3 (standard library only), so it works before any venv exists.
    """
    session.run("python3", "-m", "testbed", "doctor", external=True)


@nox.session(default=False)
def up(session: nox.Session) -> None:
    """Start MLflow + one Ray cluster per Python and print every endpoint."""
    _testbed(session, "up", *session.posargs)


@nox.session(default=False)
def down(session: nox.Session) -> None:
    """Remove every container, network, volume and pod with the testbed label."""
    _testbed(session, "down")


@nox.session(name="idle-cpu", default=False)
def idle_cpu(session: nox.Session) -> None:
    """Each running testbed container's share of a core while idle (-- --seconds 60)."""
    _testbed(session, "idle-cpu", *session.posargs)


@nox.session(default=False)
def train(session: nox.Session) -> None:
    """Train + register examples/models.yml in each cluster's image on the running testbed.

    Idempotent: models whose inputs are unchanged are only re-tagged (seconds, no container).
    Options after `--`: --model NAME, --force-new-version, --jobs N, --list.
    """
    _install(session, "testbed")
    session.run("python", "-m", "testbed.training", *session.posargs)


@nox.session(default=False)
def demo(session: nox.Session) -> None:
    """The main job: testbed up, train + register examples, deploy, sample requests.

    Idempotent and left running; `nox -s down` removes it.
    """
    _install(session, "testbed")
    session.run("python", "-m", "testbed.demo")


@nox.session
def tests(session: nox.Session) -> None:
    """Unit and integration tests (no containers)."""
    _pytest(session, "tests/unit", "tests/integration")


@nox.session(default=False)
def testbed(session: nox.Session) -> None:
    """Testbed self-test: real containers up, checks, broken start, teardown."""
    _pytest(session, "-m", "testbed", "tests/testbed", extras=("test", "testbed"))


@nox.session(default=False)
def e2e(session: nox.Session) -> None:
    """End-to-end suite on the full testbed: up, train, deploy, every check, down.

    MLRAY_E2E_REUSE=1 adopts a running testbed (and keeps it); MLRAY_E2E_KEEP=1 keeps a new
    one; MLRAY_TESTBED_PYTHON=3.11 narrows the matrix. Extra args go to pytest.
    """
    _pytest(session, "-m", "e2e", "-n", "auto", "tests/e2e", extras=("test", "testbed"))


@nox.session(default=False)
def load(session: nox.Session) -> None:
    """Locust load scenarios: batching, mlray against its peers (`mlflow models serve -w 1`
    and `-w <cores>`, MLServer), autoscaling, the untuned app; gates, and the data-plane goals.

    Adopts a running testbed, else starts one (removed after unless MLRAY_LOAD_KEEP=1).
    Report: reports/<timestamp>/. `nox -s load -- --profile short` is the CI gate (~9 min).
    """
    _install(session, "load")
    session.run("python", "-m", "loadtests", *session.posargs)


@nox.session(default=False)
def chaos(session: nox.Session) -> None:
    """Faults under steady load on a running testbed: replica, worker and head failures (with
    and without GCS fault tolerance), MLflow outage, concurrent deploys, fuzzed requests and
    tags; gates. Options after `--`: --profile short|full, --scenario NAME (repeatable).
    Report: reports/<timestamp>/chaos.json and one PNG per scenario. See docs/reliability.md.
    """
    _install(session, "chaos")
    session.run("python", "-m", "loadtests.chaos", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check + format check, and the GitHub workflow against its schema."""
    session.install("ruff>=0.6", "check-jsonschema>=0.29")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("check-jsonschema", "--builtin-schema", "vendor.github-workflows",
                *map(str, sorted(ROOT.glob(".github/workflows/*.yml"))))  # fmt: skip


@nox.session(python=False, default=False)
def ci(session: nox.Session) -> None:
    """What CI runs (the README's test command): lint, unit + integration tests, testbed
    self-test, e2e, then the short load and chaos gates on the e2e's testbed, then down."""
    # The load and chaos gates adopt the testbed e2e brought up and deployed, instead of a
    # second bring-up; `down` removes it at the end (nox runs it even when an earlier session
    # failed).
    os.environ["MLRAY_E2E_KEEP"] = "1"
    for name in ("lint", "tests", "testbed"):
        session.notify(name)
    session.notify("e2e", posargs=["-n", "0"])
    session.notify("load", posargs=["--profile", "short"])
    session.notify("chaos", posargs=["--profile", "short"])
    session.notify("down")
