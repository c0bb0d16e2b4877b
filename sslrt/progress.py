"""Progress for a person at a terminal; nothing for pipes and logs, whose stderr holds only
warnings and the one-line error. The one progress-bar factory of sslrt."""
from __future__ import annotations

import sys


class _NoBar:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def progress_bar(enabled: bool = True, fields: tuple[str, ...] = (), always: bool = False):
    """A rich Progress on stderr (use `with`). Yields None where disabled or, unless `always`,
    where stderr is no terminal; with `always` a disabled Progress is yielded instead, so callers
    can update it unconditionally. `fields`: extra task fields shown after the count."""
    if not always and (not enabled or not sys.stderr.isatty()):
        return _NoBar()
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    *(TextColumn(f"{{task.fields[{f}]}}") for f in fields), TimeElapsedColumn(),
                    TextColumn("eta"), TimeRemainingColumn(), console=Console(stderr=True), disable=not enabled)


def step_printer(prefix: str = "sslrt"):
    """A `progress(msg)` callback that prints steps of long work at a terminal only."""
    def step(msg: str) -> None:
        if sys.stderr.isatty():
            print(f"{prefix}: {msg}...", file=sys.stderr)
    return step
