"""modelguard's glue to the ledger's transparency formats: static tiles, offline proofs, witnesses.

>>> import os, tempfile
>>> from pathlib import Path
>>> from modelguard.audit import record_event, note_public_key_path
>>> from modelguard.transparency import export_tile_tree, verify_tile_tree
>>> url = "sqlite:///" + os.path.join(tempfile.mkdtemp(), "ledger.db")
>>> _ = record_event("sign", subject={"name": "m"}, payload_digest="sha256:00", actor="k",
...                  ledger_url=url)
>>> out = Path(tempfile.mkdtemp())
>>> export_tile_tree(out, url).size
1
>>> verify_tile_tree(out, [note_public_key_path(url)]).ok
True

Every function maps the ledger library's errors to modelguard's: bad input exits 2, a failed
check exits 1. Trust comes only from the public key files the caller names.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ledger import LedgerInputError, LedgerIntegrityError
from ledger.tiles import ExportReport, TilesReport, export_tiles, verify_tiles
from modelguard.audit import load_note_signer, load_note_verifier, open_audit_ledger
from modelguard.errors import BadInputError, LedgerVerificationError
from modelguard.safeio import MAX_KEY_BYTES, open_regular, read_all

__all__ = ["export_tile_tree", "mapped_errors", "read_text_file", "verify_tile_tree"]


@contextmanager
def mapped_errors() -> Iterator[None]:
    """Ledger library errors -> modelguard's typed errors (exit 2 / exit 1)."""
    try:
        yield
    except LedgerInputError as error:
        raise BadInputError(str(error)) from None
    except LedgerIntegrityError as error:
        raise LedgerVerificationError(str(error)) from None


def read_text_file(path: Path, *, max_size: int = MAX_KEY_BYTES, what: str = "file") -> str:
    """An untrusted UTF-8 text file (checkpoint, proof, request), size-bounded."""
    with open_regular(path, max_size=max_size, what=what) as handle:
        data = read_all(handle, max_size=max_size)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInputError(f"{what} is not UTF-8 text", path=str(path)) from None


def export_tile_tree(
    directory: Path,
    ledger_url: str | None = None,
    key_path: str | Path | None = None,
    *,
    checkpoint_note: str | None = None,
) -> ExportReport:
    """Write the ledger as C2SP tlog-tiles under ``directory`` (only new tiles are written)."""
    signer = load_note_signer(ledger_url, key_path)
    with open_audit_ledger(ledger_url, create=False) as log, mapped_errors():
        return export_tiles(log, Path(directory), signer, checkpoint_note=checkpoint_note)


def verify_tile_tree(
    directory: Path,
    public_keys: Sequence[str | Path],
    *,
    old_checkpoint_note: str | None = None,
) -> TilesReport:
    """Offline audit of a tile tree against the log's public note key(s)."""
    if not public_keys:
        raise BadInputError("verifying tiles needs the log's public note key (--key)")
    verifiers = [load_note_verifier(p) for p in public_keys]
    if not Path(directory).is_dir():
        raise BadInputError("not a directory", path=str(directory))
    with mapped_errors():
        return verify_tiles(Path(directory), verifiers, old_checkpoint=old_checkpoint_note)
