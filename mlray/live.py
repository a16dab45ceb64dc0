"""Live progress on a terminal: one row per app (or image) updated in place.

Off a terminal (CI, pipes, a redirected stderr) the callers keep their plain timestamped
lines; `live_terminal` is the one place that decides. Rows are rendered by pure functions
over plain data, so what a row shows is unit-tested without a terminal.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TextIO

PLAIN_ENV = "MLRAY_PLAIN"  # MLRAY_PLAIN=1: always the plain lines
APP_COLUMNS = ("APP", "STATUS", "REPLICAS", "ELAPSED", "MESSAGE")


def live_terminal(
    stream: TextIO, quiet: bool = False, env: Mapping[str, str] | None = None
) -> bool:
    """Whether progress on ``stream`` is shown live (in place) rather than as plain lines."""
    env = os.environ if env is None else env
    if quiet or env.get(PLAIN_ENV, "") not in ("", "0") or env.get("TERM") == "dumb":
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def truncate(text: str, width: int) -> str:
    """One line of at most ``width`` characters; an ellipsis marks a cut."""
    line = re.sub(r"\s+", " ", text).strip()
    if width <= 0:
        return ""
    return line if len(line) <= width else line[: width - 1] + "…"


@dataclass(frozen=True)
class AppRow:
    """What the wait knows of one app at one poll."""

    name: str
    status: str
    ready: int
    target: int
    elapsed_s: float
    message: str = ""  # Ray's last message while the app is not RUNNING


def render_row(row: AppRow, message_width: int) -> tuple[str, str, str, str, str]:
    """The cells of one app's row (APP_COLUMNS); a RUNNING app shows no message."""
    message = "" if row.status == "RUNNING" else truncate(row.message, message_width)
    return (
        row.name,
        row.status,
        f"{row.ready}/{row.target}",
        f"{row.elapsed_s:.0f}s",
        message,
    )


def message_width(term_width: int, rows: list[AppRow]) -> int:
    """What is left of the terminal for the MESSAGE column once the others are laid out."""
    fixed = 0
    for i, head in enumerate(APP_COLUMNS[:-1]):
        cells = [render_row(r, 0)[i] for r in rows]
        fixed += max([len(head), *map(len, cells)]) + 3  # rich's padding and separator
    return max(10, term_width - fixed - 4)


def build_stage(line: str, current: str) -> str:
    """The stage a build line announces (``STEP 11/17: RUN ...``, ``COMMIT``), else ``current``."""
    text = line.strip()
    return text if text.startswith(("STEP ", "COMMIT ")) else current


def render_build_line(image: str, stage: str, elapsed_s: float, width: int) -> str:
    """One image's line: ``  mlray-ray:py3.11 | [  42s] STEP 11/17: RUN ...`` fitting ``width``."""
    head = f"  {image} | [{elapsed_s:4.0f}s] "
    return head + truncate(stage, width - len(head))


class AppBoard:
    """The live table of the wait; the final table stays on screen when it stops."""

    def __init__(self, stream: TextIO):
        from rich.console import Console as RichConsole
        from rich.live import Live

        self.console = RichConsole(file=stream, force_terminal=True)
        self.live = Live(console=self.console, auto_refresh=False, transient=False)
        self.live.start()

    def update(self, rows: list[AppRow]) -> None:
        from rich.table import Table

        table = Table(box=None, header_style="bold", pad_edge=False)
        for head in APP_COLUMNS:
            table.add_column(head, no_wrap=True, overflow="ellipsis")
        width = message_width(self.console.width, rows)
        for row in rows:
            table.add_row(*render_row(row, width))
        self.live.update(table, refresh=True)

    def stop(self) -> None:
        self.live.stop()


def app_row(
    name: str, status: str, app: Mapping[str, Any], elapsed_s: float, message: str
) -> AppRow:
    from mlray.output import replica_counts

    return AppRow(name, status, *replica_counts(app), elapsed_s=elapsed_s, message=message)
