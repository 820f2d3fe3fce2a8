"""Shared CLI plumbing: ``--json``, ``-q``, progress, and rendering for terminals and logs.

Every command takes ``--json`` and ``-q/--quiet`` (via :func:`json_option`). With ``--json``
it prints exactly one JSON document on stdout; with ``--quiet`` it prints nothing but errors
(stderr) and says the rest with its exit code. Human output goes through rich: in a terminal
tables fit the window and long stages draw a progress bar; outside a terminal (CI logs)
nothing is wrapped or truncated, and long stages print a plain line every few seconds
(stage, done/total, rate, ETA) on stderr.

>>> percent(0.9611111111111111)
'96.1%'
>>> eta_line("pgd eps=0.1", 300, 900, 12.0)
'pgd eps=0.1: 300/900 (33.3%), 25.0/s, ETA 24s'
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:  # rich loads when something is drawn, not with every command
    from rich.console import Console
    from rich.progress import Progress

F = TypeVar("F", bound=Callable[..., Any])


def json_option(func: F) -> F:
    """Add ``--json`` (one JSON document on stdout) and ``-q/--quiet`` to a command."""

    def remember(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        if value:
            ctx.ensure_object(dict)["json"] = True
        return value

    def quiet(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value:
            ctx.ensure_object(dict)["quiet"] = True

    func = click.option(
        "-q",
        "--quiet",
        is_flag=True,
        callback=quiet,
        expose_value=False,
        is_eager=True,
        help="Print nothing but errors; the exit code says the rest.",
    )(func)
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        callback=remember,
        expose_value=True,
        is_eager=True,
        help="Print one JSON document on stdout (for CI and scripts).",
    )(func)


# Outside a terminal rich would wrap at 80 columns and cut hashes and paths ("model.safe…").
LOG_WIDTH = 4096


def console() -> Console:
    from rich.console import Console

    if sys.stdout.isatty():
        return Console(soft_wrap=True)
    return Console(soft_wrap=True, width=LOG_WIDTH)


def _context_flag(name: str) -> bool:
    ctx = click.get_current_context(silent=True)
    while ctx is not None:
        obj = ctx.obj if isinstance(ctx.obj, dict) else {}
        if obj.get(name):
            return True
        ctx = ctx.parent
    return False


def is_quiet() -> bool:
    """``-q`` (global or per command) or ``--json``: no progress, no human chatter."""
    return _context_flag("quiet") or _context_flag("json")


def progress_enabled() -> bool:
    return not is_quiet() and sys.stdout.isatty()


def percent(value: float | None, digits: int = 1) -> str:
    """An accuracy or rate as a percentage: 0.96111 -> '96.1%'."""
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def eta_line(stage: str, done: float, total: float | None, elapsed: float, unit: str = "") -> str:
    """One plain progress line for logs: stage, done/total, rate, ETA."""
    rate = done / elapsed if elapsed > 0 else 0.0
    rate_text = (
        f"{rate / 2**20:.1f} MiB/s"
        if unit == "bytes"
        else f"{rate:.1f}{' ' + unit if unit else ''}/s"
    )
    if unit == "bytes":
        count = (
            f"{done / 2**20:.0f}/{total / 2**20:.0f} MiB" if total else f"{done / 2**20:.0f} MiB"
        )
    else:
        count = f"{done:.0f}/{total:.0f}" if total else f"{done:.0f}"
    if not total:
        return f"{stage}: {count}, {rate_text}"
    eta = (total - done) / rate if rate > 0 else float("inf")
    eta_text = _duration(eta) if eta != float("inf") else "?"
    return f"{stage}: {count} ({percent(done / total)}), {rate_text}, ETA {eta_text}"


def log_interval() -> float:
    """Seconds between plain progress lines ($MODELGUARD_PROGRESS_INTERVAL, default 5)."""
    try:
        return max(0.0, float(os.environ.get("MODELGUARD_PROGRESS_INTERVAL", "5")))
    except ValueError:
        return 5.0


class ProgressReporter:
    """Progress of one long operation, for whoever watches: a rich bar in a terminal, a plain
    line on stderr every :func:`log_interval` seconds in a log, nothing with ``-q`` or
    ``--json`` (whose caller reads one document and the exit code).

    ``update(stage, done, total)`` sets absolute progress (the robustness hook signature,
    :mod:`modelguard.robustness.progress`); ``advance(n)`` adds to it (hashing callbacks).
    A stage whose total changes, or whose count starts again, is a new phase: its rate and ETA
    are measured from there. In a log a stage that reports nothing for an interval is
    repeated with its elapsed time, so a long silent stage still shows it is alive."""

    def __init__(self, stage: str, total: float | None = None, unit: str = "") -> None:
        self.stage, self.total, self.unit = stage, total, unit
        self.title = stage  # the operation as a whole, for the closing line
        self.done = 0.0
        self._mode = "off" if is_quiet() else "bar" if sys.stdout.isatty() else "log"
        self._bar: Progress | None = None
        self._task: Any = None
        self._start = time.monotonic()
        self._phase_start = self._last_update = self._start
        self._last_line = self._start
        self._interval = log_interval()
        self._printed = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __enter__(self) -> ProgressReporter:
        if self._mode == "bar":
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            columns: list[Any] = [TextColumn("[bold]{task.description}"), BarColumn()]
            columns.append(MofNCompleteColumn() if self.unit != "bytes" else TextColumn(""))
            columns += [TimeElapsedColumn(), TimeRemainingColumn()]
            self._bar = Progress(*columns, transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.stage, total=self.total)
        elif self._mode == "log":
            self._ticker = threading.Thread(
                target=self._tick, name="modelguard-progress", daemon=True
            )
            self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
        elif self._mode == "log" and self._printed and exc[0] is None:
            elapsed = time.monotonic() - self._start
            click.echo(f"{self.title}: done in {_duration(elapsed)}", err=True)

    def update(self, stage: str, done: float, total: float | None) -> None:
        with self._lock:
            now = time.monotonic()
            if total != self.total or done < self.done:
                self._phase_start = self._last_update  # its work began after the last report
            self._last_update = now
            self.stage, self.done, self.total = stage, done, total
        self._show()

    def advance(self, n: float) -> None:
        with self._lock:
            self._last_update = time.monotonic()
            self.done += n
        self._show()

    def hashed(self, n: int, total: int) -> None:
        """A hashing callback (``manifest.ProgressCallback``): ``n`` more of ``total`` bytes.

        A different total is a new hashing pass (say, the full check after the layout's):
        its count starts again, and so do its rate and ETA."""
        if total != self.total:
            with self._lock:
                self._phase_start = self._last_update
                self.total, self.done = total, 0.0
        self.advance(n)

    def _line(self, now: float) -> str:
        return eta_line(self.stage, self.done, self.total, now - self._phase_start, self.unit)

    def _show(self) -> None:
        if self._bar is not None:
            self._bar.update(
                self._task, completed=self.done, total=self.total, description=self.stage
            )
        elif self._mode == "log":
            with self._lock:
                now = time.monotonic()
                if now - self._last_line < self._interval:
                    return
                self._last_line, self._printed = now, True
                line = self._line(now)
            click.echo(line, err=True)

    def _tick(self) -> None:
        quiet_for = max(self._interval, 1.0)  # repeat a silent stage, never more than 1/s
        while not self._stop.wait(quiet_for):
            self.repeat_if_silent(quiet_for)

    def repeat_if_silent(self, quiet_for: float) -> None:
        """In a log: say the current stage again when no line came for ``quiet_for`` s."""
        with self._lock:
            now = time.monotonic()
            if self._mode != "log" or now - self._last_line < quiet_for:
                return
            self._last_line, self._printed = now, True
            line = f"{self._line(now)}, {_duration(now - self._start)} elapsed"
        click.echo(line, err=True)


@contextmanager
def progress(description: str) -> Iterator[Callable[[int, int], None]]:
    """Yield a hashing callback ``(n, total)`` in bytes (see :class:`ProgressReporter`)."""
    with ProgressReporter(description, unit="bytes") as reporter:
        yield reporter.hashed


def to_jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    if hasattr(value, "to_dict"):
        return to_jsonable(value.to_dict())
    return value


def emit_json(document: Mapping[str, Any]) -> None:
    click.echo(json.dumps(to_jsonable(document), indent=2, sort_keys=True))


def emit(
    document: Mapping[str, Any], as_json: bool, human: Callable[[Console], None] | None = None
) -> None:
    """Print ``document`` as JSON, or call ``human`` to render it for people."""
    if as_json:
        emit_json(document)
    elif _context_flag("quiet"):
        return
    elif human is not None:
        human(console())
    else:
        emit_json(document)
