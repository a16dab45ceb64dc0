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


@nox.session(default=False)
def up(session: nox.Session) -> None:
    """Start MLflow + one Ray cluster per Python and print every endpoint."""
    _testbed(session, "up", *session.posargs)


@nox.session(default=False)
def down(session: nox.Session) -> None:
    """Remove every container, network, volume and pod with the testbed label."""
    _testbed(session, "down")


@nox.session(default=False)
def demo(session: nox.Session) -> None:
    """Bring the testbed up and print its endpoints; it stays running."""
    _testbed(session, "up")


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
    """End-to-end suite against the full testbed (pytest -m e2e)."""
    _pytest(session, "-m", "e2e", "tests/e2e", extras=("test", "testbed"))


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check + format check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=False, default=False)
def ci(session: nox.Session) -> None:
    """What CI runs (the README's test command): tests, then the testbed self-test."""
    for name in ("tests", "testbed"):
        session.notify(name)
