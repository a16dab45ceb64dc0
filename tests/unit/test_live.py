"""Live progress: the live-or-plain decision, rows as pure data, and plain lines off a TTY."""

from __future__ import annotations

import io
from typing import Any

import pytest

import mlray.deploy as d
from mlray.deploy import Console, wait_until_running
from mlray.live import (
    AppRow,
    build_stage,
    live_terminal,
    message_width,
    render_build_line,
    render_row,
    truncate,
)
from mlray.plan import Plan
from tests.unit.test_capacity import Clock, FakeDash, app, details


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_live_only_on_a_tty_not_quiet_not_dumb_not_forced_plain():
    assert live_terminal(Tty(), env={"TERM": "xterm"})
    assert not live_terminal(io.StringIO(), env={"TERM": "xterm"})
    assert not live_terminal(Tty(), quiet=True, env={})
    assert not live_terminal(Tty(), env={"TERM": "dumb"})
    assert not live_terminal(Tty(), env={"MLRAY_PLAIN": "1"})
    assert live_terminal(Tty(), env={"MLRAY_PLAIN": "0"})
    closed = io.StringIO()
    closed.close()
    assert not live_terminal(closed, env={})
    assert not live_terminal(object(), env={})  # type: ignore[arg-type]


def test_a_row_shows_status_replicas_elapsed_and_a_truncated_message():
    row = AppRow("iris-b", "DEPLOYING", 1, 3, 12.4, "Installing\n  pip packages for a long time")
    assert render_row(row, 20) == ("iris-b", "DEPLOYING", "1/3", "12s", "Installing pip pack…")
    assert render_row(row, 80)[4] == "Installing pip packages for a long time"
    running = AppRow("iris-b", "RUNNING", 3, 3, 40.0, "old message")
    assert render_row(running, 80) == ("iris-b", "RUNNING", "3/3", "40s", "")


def test_truncate_and_the_message_column_width():
    assert truncate("abc", 3) == "abc"
    assert truncate("abcd", 3) == "ab…"
    assert truncate("abcd", 0) == ""
    rows = [AppRow("iris-b", "DEPLOYING", 0, 1, 5.0)]
    assert message_width(120, rows) > message_width(80, rows) >= 10
    assert message_width(20, rows) == 10


def test_build_lines_show_the_current_stage_truncated():
    stage = build_stage("STEP 11/17: RUN pip install ray\n", "")
    assert stage == "STEP 11/17: RUN pip install ray"
    assert build_stage("Collecting ray==2.60.0\n", stage) == stage
    line = render_build_line("mlray-ray:py3.11", stage, 42.3, 40)
    assert line == "  mlray-ray:py3.11 | [  42s] STEP 11/17…"
    assert len(line) == 40


def frames_run(say: Console) -> None:
    cfg = app("iris-b", 1.0)
    plan = Plan(apps=[], config={"applications": [cfg]})
    frames = [
        details("DEPLOYING", "installing", cfg),
        details("DEPLOYING", "installing", cfg),
        details("RUNNING", "", cfg),
    ]
    clock = Clock()
    sleep, d.time.sleep = d.time.sleep, lambda s: None  # type: ignore[assignment]
    try:
        wait_until_running(FakeDash(frames, clock), plan, 600, say, clock=clock)
    finally:
        d.time.sleep = sleep  # type: ignore[assignment]


def test_a_stream_that_is_not_a_tty_gets_the_plain_lines_exactly():
    out = io.StringIO()
    frames_run(Console(out))
    assert out.getvalue().splitlines() == [
        "  [ 10.0s] iris-b: DEPLOYING",
        "  [ 10.0s] iris-b: installing",
        "  [ 20.0s] waiting for iris-b DEPLOYING",
        "  [ 30.0s] iris-b: RUNNING",
    ]


def test_quiet_shows_neither_lines_nor_table():
    out = Tty()
    frames_run(Console(out, quiet=True))
    assert out.getvalue() == ""


def test_a_tty_gets_the_live_table_and_it_stays(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("MLRAY_PLAIN", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    out = Tty()
    frames_run(Console(out))
    text = out.getvalue()
    assert "[  0.0s]" not in text
    assert "APP" in text and "REPLICAS" in text and "installing" in text
    final = text.rsplit("APP", 1)[1]  # the last frame drawn, left on screen
    assert "RUNNING" in final and "installing" not in final


def test_replica_counts_sum_running_over_deployments():
    from mlray.output import replica_counts

    a: dict[str, Any] = {"deployments": {
        "A": {"target_num_replicas": 2, "replicas": [{"state": "RUNNING"}, {"state": "STARTING"}]},
        "B": {"target_num_replicas": 1, "replicas": [{"state": "RUNNING"}]},
    }}  # fmt: skip
    assert replica_counts(a) == (2, 3)


def test_testbed_builds_off_a_tty_keep_the_prefixed_lines(capsys: pytest.CaptureFixture[str]):
    import sys

    from testbed.images import _stream

    cmd = [sys.executable, "-c", "print('STEP 1/2: FROM x'); print('noise')"]
    _stream(cmd, what="build x", prefix="mlray-ray:py3.11")
    assert capsys.readouterr().err.splitlines() == [
        "  mlray-ray:py3.11 | STEP 1/2: FROM x",
        "  mlray-ray:py3.11 | noise",
    ]
