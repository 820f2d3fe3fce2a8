"""The fuzzing invariant: a parser of untrusted bytes returns, or raises a typed error.

A typed error is a :class:`~modelguard.errors.ModelGuardError` with exit code 1 or 2, or a
:class:`ledger.LedgerError` (which modelguard maps to 1 or 2). Anything else (an
``IndexError``, a ``RecursionError``, an ``InternalError``) is a bug that would exit 3, and
a call that runs past :data:`TIME_LIMIT_S` is reported as a hang.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import strategies as st

from ledger import LedgerError
from modelguard.errors import ModelGuardError

T = TypeVar("T")
TIME_LIMIT_S = 10


class Hang(Exception):
    """A parser ran past the time limit on one input."""


def _expire(signum: int, frame: Any) -> None:
    raise Hang(f"a parser ran for more than {TIME_LIMIT_S} s on one input")


def typed_outcome(call: Callable[[], T]) -> T | None:
    """Run ``call``; None when it raised a typed error, its result otherwise."""
    previous = signal.signal(signal.SIGALRM, _expire)
    signal.alarm(TIME_LIMIT_S)
    try:
        return call()
    except ModelGuardError as error:
        assert error.exit_code in (1, 2), f"exit {error.exit_code}: {error}"
        return None
    except LedgerError:
        return None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@st.composite
def mutated(draw: st.DrawFn, seed: bytes, max_edits: int = 4) -> bytes:
    """``seed`` with a few byte flips, insertions, deletions, duplications or a truncation."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(0, max_edits))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "duplicate", "truncate"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[at : at + draw(st.integers(1, 8))]
        elif op == "duplicate" and data:
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
        elif op == "truncate":
            del data[at:]
    return bytes(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
