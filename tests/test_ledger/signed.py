"""A model signed into a fresh SQLite ledger, for the gate tests of this folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ledger import open_ledger


@dataclass(frozen=True)
class SignedModel:
    model: Path
    public_key: Path  # the signer's public key file
    url: str  # the ledger, sqlite:///<tmp>/ledger/l.db
    note_pub: Path  # the ledger's checkpoint (note) public key
    note_key: Path  # ... and its private key


def signed_model(tmp_path: Path, entries_before: int = 0) -> SignedModel:
    """Append ``entries_before`` evaluate entries, then sign a tiny model (name m, version 1)
    into the ledger, which also signs a checkpoint covering it."""
    from modelguard.keys import generate_key, write_keypair
    from modelguard.signing.sign import sign_model
    from tests.tinymodels import model_dir

    key = generate_key()
    _, pub = write_keypair(tmp_path / "keys", "signer", key, None)
    url = f"sqlite:///{tmp_path / 'ledger' / 'l.db'}"
    if entries_before:
        with open_ledger(url, origin="ex/gate") as log:
            for i in range(entries_before):
                log.append(
                    "evaluate", subject={"name": f"x{i}"}, payload_digest=f"sha256:{i}", actor="k"
                )
    model = model_dir(tmp_path / "model")
    sign_model(model, key, name="m", version="1", ledger_url=url)
    ledger = tmp_path / "ledger"
    return SignedModel(model, pub, url, ledger / "l.db.note.pub", ledger / "l.db.note.key")
