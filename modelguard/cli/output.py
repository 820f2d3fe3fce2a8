"""Shared CLI plumbing: ``--json``, progress bars, and rendering.

Every command takes ``--json`` (via :func:`json_option`) and then prints exactly one JSON
document on stdout. Human output goes through rich. Progress bars show only for humans on
a terminal, never with ``--json`` or ``--quiet``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

F = TypeVar("F", bound=Callable[..., Any])


def json_option(func: F) -> F:
    """Add ``--json``: print one JSON document on stdout instead of human output."""

    def remember(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        if value:
            ctx.ensure_object(dict)["json"] = True
        return value

    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        callback=remember,
        expose_value=True,
        is_eager=True,
        help="Print one JSON document on stdout (for CI and scripts).",
    )(func)


def console() -> Console:
    return Console(soft_wrap=True)


def is_quiet() -> bool:
    ctx = click.get_current_context(silent=True)
    while ctx is not None:
        obj = ctx.obj if isinstance(ctx.obj, dict) else {}
        if obj.get("quiet") or obj.get("json"):
            return True
        ctx = ctx.parent
    return False


def progress_enabled() -> bool:
    return not is_quiet() and sys.stdout.isatty()


@contextmanager
def progress(description: str, total: float | None = None) -> Iterator[Callable[[float], None]]:
    """Yield ``advance(n)``; draws a bar only when a human is watching."""
    if not progress_enabled():
        yield lambda _n: None
        return
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TimeElapsedColumn(), transient=True
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


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
    elif human is not None:
        human(console())
    else:
        emit_json(document)
