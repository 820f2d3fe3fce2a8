"""Tensor-wise encryption of models: versioned containers, per-recipient key wrapping.

>>> import os, tempfile, pathlib
>>> from modelguard.encryption import encrypt_model, decrypt_model
>>> d = pathlib.Path(tempfile.mkdtemp()); (d / "card.json").write_text("{}")
2
>>> key = os.urandom(32)
>>> encrypt_model(d / "card.json", d / "card.json.mgenc", key=key).files
('card.json.mgenc',)
>>> decrypt_model(d / "card.json.mgenc", d / "out.json", key=key).files
('card.json',)

See docs/format.md for the container format and :mod:`modelguard.runtime` for verified,
in-memory inference on encrypted models.
"""

from __future__ import annotations

from modelguard.encryption.container import SUFFIX, ContainerReader
from modelguard.encryption.keywrap import (
    load_x25519_private_key,
    load_x25519_public_key,
    read_raw_key,
)
from modelguard.encryption.model import (
    DecryptResult,
    EncryptResult,
    decrypt_model,
    encrypt_model,
    is_encrypted,
)

__all__ = [
    "SUFFIX",
    "ContainerReader",
    "DecryptResult",
    "EncryptResult",
    "decrypt_model",
    "encrypt_model",
    "is_encrypted",
    "load_x25519_private_key",
    "load_x25519_public_key",
    "read_raw_key",
]
