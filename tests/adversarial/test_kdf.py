"""Class 5 (key derivation): a hostile container header must not buy minutes of scrypt.

The adversary edits a container header (it is only authenticated after the data key is
unwrapped) to hold many passphrase stanzas with expensive parameters. Every bound is
checked before any KDF runs; the tests count derivations instead of timing them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from modelguard.cli import main as cli_main
from modelguard.encryption import encrypt_model, keywrap
from modelguard.encryption.container import MAGIC, PREAMBLE
from modelguard.encryption.keywrap import (
    MAX_SCRYPT_DERIVATIONS,
    MAX_SCRYPT_STANZAS,
    PassphraseIdentity,
    PassphraseRecipient,
    unwrap_data_key,
)
from modelguard.errors import BadInputError, DecryptionError, FormatError
from tests.tinymodels import model_dir


@pytest.fixture()
def derivations(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    """Every scrypt derivation attempted (the real one still runs, with cheap parameters)."""
    calls: list[tuple[int, int, int]] = []
    real = keywrap._scrypt

    def counting(passphrase: bytes, salt: bytes, log_n: int, r: int, p: int) -> bytes:
        calls.append((log_n, r, p))
        return real(passphrase, salt, log_n, r, p)

    monkeypatch.setattr(keywrap, "_scrypt", counting)
    return calls


def hostile(count: int, log_n: int = 22, r: int = 8, p: int = 16) -> list[dict[str, Any]]:
    return [
        {
            "type": "scrypt",
            "salt": os.urandom(16).hex(),
            "log_n": log_n,
            "r": r,
            "p": p,
            "nonce": "00" * 12,
            "wrapped": "00" * 48,
        }  # fmt: skip
        for _ in range(count)
    ]


def rewrite_recipients(container: Path, stanzas: list[dict[str, Any]]) -> None:
    data = container.read_bytes()
    magic, version, reserved, length = PREAMBLE.unpack(data[: PREAMBLE.size])
    assert magic == MAGIC
    header = json.loads(data[PREAMBLE.size : PREAMBLE.size + length])
    header["recipients"] = stanzas
    raw = json.dumps(header).encode()
    rest = data[PREAMBLE.size + length :]
    container.write_bytes(PREAMBLE.pack(magic, version, reserved, len(raw)) + raw + rest)


def test_many_expensive_stanzas_fail_before_any_kdf(derivations: list[Any]) -> None:
    with pytest.raises(FormatError, match="passphrase"):
        unwrap_data_key(hostile(50), bytes(16), [PassphraseIdentity(b"pw")])
    assert derivations == []


@pytest.mark.parametrize(
    ("log_n", "r", "p"), [(22, 8, 1), (20, 8, 16), (20, 32, 1), (21, 1, 1), (18, 8, 8)]
)
def test_out_of_bounds_parameters_fail_before_any_kdf(
    derivations: list[Any], log_n: int, r: int, p: int
) -> None:
    stanzas = [*hostile(1, 10, 1, 1), *hostile(1, log_n, r, p)]
    with pytest.raises(FormatError, match="scrypt"):
        unwrap_data_key(stanzas, bytes(16), [PassphraseIdentity(b"pw")])
    assert derivations == []  # the cheap first stanza was not tried either


def test_derivations_per_identity_are_capped(derivations: list[Any]) -> None:
    identity = PassphraseIdentity(b"pw")
    for _ in range(MAX_SCRYPT_DERIVATIONS):
        with pytest.raises(DecryptionError):
            unwrap_data_key(hostile(1, 10, 1, 1), bytes(16), [identity])
    with pytest.raises(FormatError, match="derivations"):
        unwrap_data_key(hostile(1, 10, 1, 1), bytes(16), [identity])
    assert len(derivations) == MAX_SCRYPT_DERIVATIONS


def test_writers_stay_inside_the_reader_bounds() -> None:
    with pytest.raises(BadInputError, match="log_n"):
        PassphraseRecipient(b"pw", log_n=22).wrap(bytes(32), bytes(16))
    stanza = PassphraseRecipient(b"pw", log_n=10).wrap(bytes(32), bytes(16))
    key = unwrap_data_key([stanza], bytes(16), [PassphraseIdentity(b"pw")])
    assert key == bytes(32) and MAX_SCRYPT_STANZAS >= 1


def test_hostile_container_header_on_the_command_line(
    tmp_path: Path, derivations: list[Any], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    model = model_dir(tmp_path / "m")
    container = tmp_path / "m.mgenc"
    encrypt_model(model / "model.safetensors", container, passphrase=b"pw", scrypt_log_n=10)
    derivations.clear()
    rewrite_recipients(container, hostile(40))
    monkeypatch.setenv("MG_PW", "pw")
    with pytest.raises(SystemExit) as done:
        cli_main.main(["decrypt", str(container), "--out", str(tmp_path / "o.safetensors"),
                       "--passphrase-env", "MG_PW"])  # fmt: skip
    err = capsys.readouterr().err
    assert done.value.code == 2 and "scrypt" in err and len(err.strip().splitlines()) == 1
    assert derivations == []
