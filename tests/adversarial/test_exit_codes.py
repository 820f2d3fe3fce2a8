"""Class 6: malformed, deeply nested or non-UTF-8 input is exit 2 with one line, never 3.

(Non-UTF-8 file names in manifests and ``run`` input shapes are covered with the binding
tests of classes 1-3.)
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from modelguard import audit
from modelguard.cli import main as cli_main
from modelguard.encryption import encrypt_model
from modelguard.encryption.container import MAGIC, PREAMBLE
from modelguard.keys import generate_key, key_id, oms_hint, public_pem, sign_bytes
from modelguard.signing.bundle import dump_bundle, make_bundle
from modelguard.signing.dsse import PAYLOAD_TYPE_INTOTO, Envelope, Signature, pae
from modelguard.signing.sign import sign_model
from tests.tinymodels import model_dir

DEEP = 100_000


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        cli_main.main([*args])
    out = capsys.readouterr()
    return int(done.value.code or 0), out.out, out.err


def bad_input(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code, _, err = run(capsys, *args)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "internal error" not in err, err
    code, out, _ = run(capsys, *args, "--json")
    assert code == 2 and json.loads(out)["exit_code"] == 2
    return err


@pytest.fixture()
def signed(tmp_path: Path) -> dict[str, Any]:
    key = generate_key()
    pub = tmp_path / "k.pub"
    pub.write_bytes(public_pem(key.public_key()))
    model = model_dir(tmp_path / "model")
    sign_model(model, key, record=False)
    return {"key": key, "pub": str(pub), "model": model, "tmp": tmp_path}


@pytest.mark.parametrize(
    "content",
    [b"[" * DEEP, b'{"a":' * DEEP, b"\xff\xfe{}", b'{"mediaType": "\xc3\x28"}', b""],
    ids=["deep-array", "deep-object", "bad-bom", "bad-utf8", "empty"],
)
def test_malformed_bundle(signed: dict[str, Any], capsys: Any, content: bytes) -> None:
    (signed["model"] / "model.sig").write_bytes(content)
    err = bad_input(capsys, "verify", str(signed["model"]), "--key", signed["pub"])
    assert "model.sig" in err


def test_deeply_nested_statement_under_a_trusted_signature(
    signed: dict[str, Any], capsys: Any
) -> None:
    """Even a payload the trusted key signed is parsed with bounds: exit 2, not 3."""
    payload = b"[" * DEEP + b"]" * DEEP
    key = signed["key"]
    envelope = Envelope(
        payload, PAYLOAD_TYPE_INTOTO,
        (Signature(sign_bytes(key, pae(PAYLOAD_TYPE_INTOTO, payload)), key_id(key.public_key())),),
    )  # fmt: skip
    bundle = make_bundle(envelope, oms_hint(key.public_key()))
    (signed["model"] / "model.sig").write_bytes(dump_bundle(bundle))
    bad_input(capsys, "verify", str(signed["model"]), "--key", signed["pub"])


@pytest.mark.parametrize(
    "content",
    [b"a = " + b"[" * DEEP + b"]" * DEEP, b"a = " + b"{b = " * 2000, b"threshold = 1\n\xff\xfe"],
    ids=["deep-array", "deep-table", "not-utf8"],
)
def test_malformed_policy(signed: dict[str, Any], capsys: Any, content: bytes) -> None:
    policy = signed["tmp"] / "policy.toml"
    policy.write_bytes(content)
    err = bad_input(capsys, "verify", str(signed["model"]), "--policy", str(policy))
    assert "policy.toml" in err


@pytest.mark.parametrize("what", ["deep", "not-utf8", "wrong-types"])
def test_malformed_ledger_documents(tmp_path: Path, capsys: Any, what: str) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    audit.record_event("t", subject={}, payload_digest="d", actor="a", ledger_url=url)
    pub = str(tmp_path / "l.db.note.pub")
    proof = tmp_path / "proof.json"
    proof.write_bytes(
        {"deep": b"[" * DEEP, "not-utf8": b'{"\xff": 1}', "wrong-types": b'{"proof": 5}'}[what]
    )
    bad_input(capsys, "ledger", "check-proof", str(proof), "--key", pub)
    checkpoint = tmp_path / "cp.txt"
    checkpoint.write_bytes(b"origin\n\xff\n\n\xe2\x80\x94 x AAAA\n")
    bad_input(capsys, "ledger", "consistency", str(checkpoint), "--key", pub, "--ledger", url)


def test_malformed_ledger_key(signed: dict[str, Any], capsys: Any) -> None:
    key = signed["tmp"] / "ledger.pub"
    key.write_bytes(b"\xff\xfe not a key")
    bad_input(capsys, "verify", str(signed["model"]), "--key", signed["pub"],
              "--require-ledger", "--ledger-key", str(key))  # fmt: skip


def test_malformed_ledger_trust_state(signed: dict[str, Any], capsys: Any) -> None:
    tmp = signed["tmp"]
    url = f"sqlite:///{tmp / 'l.db'}"
    sign_model(signed["model"], signed["key"], ledger_url=url)
    state = tmp / "state"
    args = ["verify", str(signed["model"]), "--key", signed["pub"], "--require-ledger",
            "--ledger", url, "--ledger-key", str(tmp / "l.db.note.pub"),
            "--ledger-state", str(state)]  # fmt: skip
    assert run(capsys, *args)[0] == 0
    (file,) = state.glob("*.json")
    file.write_bytes(b"[" * DEEP)
    assert "delete it" in bad_input(capsys, *args)


@pytest.mark.parametrize("what", ["deep", "not-utf8"])
def test_malformed_container_header(tmp_path: Path, capsys: Any, what: str) -> None:
    container = tmp_path / "m.mgenc"
    encrypt_model(model_dir(tmp_path / "m") / "model.safetensors", container, passphrase=b"pw",
                  scrypt_log_n=10)  # fmt: skip
    header = b"[" * 10_000 if what == "deep" else b'{"format": "\xff"}'
    rest = container.read_bytes()
    (_, _, _, length) = PREAMBLE.unpack(rest[: PREAMBLE.size])
    container.write_bytes(
        PREAMBLE.pack(MAGIC, 1, 0, len(header)) + header + rest[PREAMBLE.size + length :]
    )
    err = bad_input(capsys, "decrypt", str(container), "--out", str(tmp_path / "o"),
                    "--key-file", str(container))  # fmt: skip
    assert "m.mgenc" in err


def test_malformed_safetensors_header(tmp_path: Path, capsys: Any) -> None:
    header = b"[" * DEEP
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    assert "x.safetensors" in bad_input(capsys, "manifest", str(path))
