"""Progress reporting for runs: rich bars on a terminal, plain throttled lines in logs, silence with --quiet.

One interface everywhere: ``bar(description, total)`` returns ``advance(n=1, **fields)``; fields
(``epoch="3/100", loss=0.51, acc=0.8``) appear next to the bar. The same callable is handed to
poisons as ``CraftContext.progress`` and to the trainer. Bars go to stderr, so ``--json`` output on
stdout stays machine-readable. When stderr is not a terminal (CI, Ray, nohup) a bar prints a line
when it has an epoch to report, when it completes, and otherwise at most every ``LOG_EVERY_S``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

LOG_EVERY_S = 30.0  # seconds between plain progress lines of one bar in non-terminal mode

Advance = Callable[..., None]


def _noop(n: int = 1, **fields: Any) -> None:
    return None


def format_fields(fields: dict[str, Any]) -> str:
    """``epoch 3/10  loss 0.5123  acc 0.812`` (floats to 4 significant digits)."""
    parts = []
    for key, value in fields.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        parts.append(f"{key} {value}")
    return "  ".join(parts)


class RunProgress:
    """Bars for one run; use as a context manager. ``quiet`` silences all but ``error`` lines."""

    def __init__(self, *, quiet: bool = False, stream: TextIO | None = None, live: bool | None = None):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.live = (not quiet) and (self.stream.isatty() if live is None else live)
        self._progress = None
        if self.live:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            console = Console(file=self.stream)
            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                      TextColumn("eta"), TimeRemainingColumn(), console=console,
                                      transient=False, refresh_per_second=4)

    def __enter__(self) -> RunProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

    def log(self, message: str) -> None:
        """A line above the bars (or on stderr); nothing when quiet."""
        if self.quiet:
            return
        self.error(message)

    def error(self, message: str) -> None:
        """A line about a problem (a failed cell, a failing plugin): printed even when quiet."""
        if self._progress is not None:
            self._progress.console.print(message, markup=False, highlight=False)
        else:
            print(message, file=self.stream, flush=True)

    def bar(self, description: str, total: int | None, *, keep: bool = False) -> Advance:
        """A bar of ``total`` steps; returns ``advance(n=1, **fields)``.

        A completed bar disappears from the terminal unless ``keep`` (the run's cells bar).
        """
        if self.quiet:
            return _noop
        if self._progress is not None:
            return self._live_bar(description, total, keep)
        return self._plain_bar(description, total)

    def _live_bar(self, description: str, total: int | None, keep: bool) -> Advance:
        progress = self._progress
        task = progress.add_task(description, total=total, info="")
        state = {"done": 0, "removed": False}

        def advance(n: int = 1, **fields: Any) -> None:
            if state["removed"]:  # a finished bar may still get a last field update (epoch stats)
                return
            state["done"] += n
            update: dict[str, Any] = {"advance": n}
            if fields:
                update["info"] = format_fields(fields)
            progress.update(task, **update)
            if total is not None and state["done"] >= total and not keep:
                progress.remove_task(task)
                state["removed"] = True

        return advance

    def _plain_bar(self, description: str, total: int | None) -> Advance:
        state = {"done": 0, "last": time.monotonic(), "fields": {}, "printed": False}

        def advance(n: int = 1, **fields: Any) -> None:
            state["done"] += n
            state["fields"].update(fields)
            now = time.monotonic()
            finished = total is not None and state["done"] >= total and n > 0
            # epoch reports always; completion only for bars that never reported; else throttled
            if "epoch" in fields or (finished and not state["printed"]) or now - state["last"] >= LOG_EVERY_S:
                state["last"], state["printed"] = now, True
                count = f"{state['done']}/{total}" if total else str(state["done"])
                info = format_fields(state["fields"])
                print(f"{description} [{count}] {info}".rstrip(), file=self.stream, flush=True)

        return advance

    def factory(self, prefix: str = "") -> Callable[[str, int], Advance]:
        """A ``(description, total) -> advance`` factory whose descriptions start with ``prefix``."""
        def make(description: str, total: int) -> Advance:
            return self.bar(f"{prefix}{description}" if prefix else description, total)

        return make


def silent_factory(description: str, total: int) -> Advance:
    """The progress factory for library use and tests: does nothing."""
    return _noop
