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

import functools
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

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
    line on stderr every :func:`log_interval` seconds in a log, nothing when quiet.

    ``update(stage, done, total)`` sets absolute progress (evaluation's hook signature);
    ``advance(n)`` adds to it (hashing callbacks)."""

    def __init__(self, stage: str, total: float | None = None, unit: str = "") -> None:
        self.stage, self.total, self.unit = stage, total, unit
        self.title = stage  # the operation as a whole, for the closing line
        self.done = 0.0
        self._mode = "off" if is_quiet() else "bar" if sys.stdout.isatty() else "log"
        self._bar: Progress | None = None
        self._task: Any = None
        self._start = time.monotonic()
        self._last_line = self._start
        self._interval = log_interval()
        self._printed = False

    def __enter__(self) -> ProgressReporter:
        if self._mode == "bar":
            columns: list[Any] = [TextColumn("[bold]{task.description}"), BarColumn()]
            columns.append(MofNCompleteColumn() if self.unit != "bytes" else TextColumn(""))
            columns += [TimeElapsedColumn(), TimeRemainingColumn()]
            self._bar = Progress(*columns, transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.stage, total=self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
        elif self._mode == "log" and self._printed and exc[0] is None:
            elapsed = time.monotonic() - self._start
            click.echo(f"{self.title}: done in {_duration(elapsed)}", err=True)

    def update(self, stage: str, done: float, total: float | None) -> None:
        self.stage, self.done, self.total = stage, done, total
        self._show()

    def advance(self, n: float) -> None:
        self.done += n
        self._show()

    def hashed(self, n: int, total: int) -> None:
        """A hashing callback (``manifest.ProgressCallback``): ``n`` more of ``total`` bytes.

        A different total is a new hashing pass (say, the full check after the layout's):
        its count starts again."""
        if total != self.total:
            self.total, self.done = total, 0.0
        self.advance(n)

    def _show(self) -> None:
        if self._bar is not None:
            self._bar.update(
                self._task, completed=self.done, total=self.total, description=self.stage
            )
        elif self._mode == "log":
            now = time.monotonic()
            if now - self._last_line >= self._interval:
                self._last_line = now
                self._printed = True
                line = eta_line(self.stage, self.done, self.total, now - self._start, self.unit)
                click.echo(line, err=True)


@contextmanager
def working(stage: str) -> Iterator[None]:
    """For a long call that reports no progress of its own: a spinner in a terminal, a plain
    "still working" line every :func:`log_interval` seconds in a log, nothing when quiet."""
    if is_quiet():
        yield
        return
    if sys.stdout.isatty():
        with Progress(
            TextColumn("[bold]{task.description}"), TimeElapsedColumn(), transient=True
        ) as bar:
            bar.add_task(stage, total=None)
            yield
        return
    stop = threading.Event()
    start = time.monotonic()

    def beat() -> None:
        while not stop.wait(log_interval() or 5.0):
            click.echo(f"{stage}: working, {_duration(time.monotonic() - start)} elapsed", err=True)

    thread = threading.Thread(target=beat, name="modelguard-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def heartbeat(stage: str) -> Callable[[F], F]:
    """Run a whole command under :func:`working` (decorate the click callback)."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with working(stage):
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


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
