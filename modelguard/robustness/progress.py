"""How long robustness stages say how far they are: ``hook(stage, done, total)``, nothing more.

>>> from modelguard.robustness.progress import prefixed, stage
>>> seen = []
>>> hook = prefixed(lambda s, d, t: seen.append((s, d, t)), "harden")
>>> with stage(hook, "export child"):
...     pass
>>> seen
[('harden: export child', 0, 1), ('harden: export child', 1, 1)]

Training (batches), evaluation (attack runs), verification, export and signing call a
:data:`ProgressHook` when one is given; the CLI hands in
``modelguard.cli.output.ProgressReporter.update`` (a bar in a terminal, a plain line every
few seconds in a log). What belongs here: the hook's type and the two helpers that name a
stage; nothing that renders.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

ProgressHook = Callable[[str, int, int], None]  # (stage, done, total)


def prefixed(hook: ProgressHook | None, prefix: str) -> ProgressHook | None:
    """``hook`` with every stage name prefixed (``"evaluate child: pgd eps=0.1"``)."""
    if hook is None:
        return None
    inner = hook

    def report(label: str, done: int, total: int) -> None:
        inner(f"{prefix}: {label}", done, total)

    return report


@contextmanager
def stage(hook: ProgressHook | None, label: str) -> Iterator[None]:
    """A stage with no count of its own (verify, export, sign): 0/1 on entry, 1/1 when done."""
    if hook is not None:
        hook(label, 0, 1)
    yield
    if hook is not None:
        hook(label, 1, 1)
