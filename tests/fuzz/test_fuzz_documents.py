"""Fuzzing the document parsers: bundle/DSSE/statement JSON, container header, checkpoint
notes and proofs, the gate's trust state, policy TOML.

The invariant (:mod:`tests.fuzz.typed`): a result or a typed error, never an unhandled
exception or a hang, on mutated real documents and on generated ones.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import Checkpoint, InclusionProof, NoteSigner, open_checkpoint
from ledger.client import TrustedHead
from ledger.note import split_note
from modelguard.encryption import decrypt_model, encrypt_model
from modelguard.keys import generate_key
from modelguard.policy import parse_policy, parse_policy_toml
from modelguard.signing import ledger_check
from modelguard.signing.bundle import load_bundle_bytes, parse_bundle
from modelguard.signing.envelope import verify_bundle
from modelguard.signing.sign import sign_model
from modelguard.signing.statement import parse_statement
from tests.fuzz.typed import json_values, mutated, typed_outcome
from tests.tinymodels import tiny_safetensors

WORK = Path(tempfile.mkdtemp(prefix="mg-fuzz-documents-"))
KEY = generate_key()
RAW_KEY = bytes(range(32))


def _bundle() -> bytes:
    model = WORK / "model"
    model.mkdir()
    tiny_safetensors(model / "w.safetensors", {"a": np.ones(3, dtype=np.float32)})
    return sign_model(model, KEY, record=False).signature_path.read_bytes()


def _container() -> bytes:
    source = WORK / "plain.safetensors"
    tiny_safetensors(source, {"a": np.ones(4, dtype=np.float32), "b": np.zeros(2, np.int8)})
    out = WORK / "c.mgenc"
    encrypt_model(source, out, key=RAW_KEY)
    return out.read_bytes()


BUNDLE, CONTAINER = _bundle(), _container()
NOTE_KEY = NoteSigner.generate("example.org/log")
NOTE = (
    "example.org/log\n5\n"
    + "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
    + "\n"
    + "\u2014 example.org/log "
)
POLICY = b"""version = 1
threshold = 1
max_signature_age = "30d"
model_name = "^m-[a-z]+$"
revoked_key_ids = []
[[signers]]
name = "a"
public_key_pem = "-----BEGIN PUBLIC KEY-----\\nMCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\\n-----END PUBLIC KEY-----\\n"
[certificate]
min_robust_accuracy = 0.5
epsilon = 0.1
[ledger]
key = "example.org/log+00000000+AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
state = "state"
"""


def _signed_note() -> str:
    from ledger import sign_note

    return sign_note(Checkpoint("example.org/log", 3, bytes(32)).to_text(), [NOTE_KEY])


SIGNED_NOTE = _signed_note()


def _verify_bundle_bytes(data: bytes) -> None:
    document = load_bundle_bytes(data, source="model.sig")
    parse_bundle(document)
    verified = verify_bundle(document, [KEY.public_key()])
    parse_statement(verified.statement)


@settings(max_examples=150)
@given(st.one_of(mutated(BUNDLE, max_edits=3), st.binary(max_size=200)))
def test_bundle_dsse_statement_bytes(data: bytes) -> None:
    typed_outcome(lambda: _verify_bundle_bytes(data))


@settings(max_examples=150)
@given(json_values)
def test_bundle_and_statement_shapes(document: object) -> None:
    typed_outcome(lambda: parse_bundle(document))
    typed_outcome(lambda: parse_statement(document))
    bundle = json.loads(BUNDLE)
    bundle["dsseEnvelope"]["signatures"] = document
    typed_outcome(lambda: verify_bundle(bundle, [KEY.public_key()]))


@settings(max_examples=80)
@given(mutated(CONTAINER[:4096], max_edits=3))
def test_container_header(data: bytes) -> None:
    path = WORK / "f.mgenc"
    path.write_bytes(data + CONTAINER[4096:])
    typed_outcome(lambda: decrypt_model(path, WORK / "out.safetensors", key=RAW_KEY))


@settings(max_examples=200)
@given(st.one_of(st.text(max_size=120), mutated(SIGNED_NOTE.encode()).map(
    lambda b: b.decode("utf-8", "replace")), st.just(NOTE)))  # fmt: skip
def test_checkpoint_notes(text: str) -> None:
    typed_outcome(lambda: Checkpoint.from_text(text))
    typed_outcome(lambda: split_note(text))
    typed_outcome(lambda: open_checkpoint(text, [NOTE_KEY.verifier()]))


@settings(max_examples=150)
@given(json_values)
def test_proof_and_trust_state_documents(document: object) -> None:
    def proof() -> None:
        if isinstance(document, dict):
            InclusionProof.from_dict({"type": "inclusion", **document}).verify()

    typed_outcome(proof)
    typed_outcome(lambda: TrustedHead.from_dict(document) if isinstance(document, dict) else None)
    typed_outcome(
        lambda: ledger_check.TrustState.loads(json.dumps(document).encode(), "state.json")
    )


@settings(max_examples=150)
@given(st.one_of(mutated(POLICY, max_edits=3), st.binary(max_size=200)))
def test_policy_toml(data: bytes) -> None:
    def parse() -> None:
        parse_policy(parse_policy_toml(data, "p.toml"), source="p.toml", base=WORK)

    typed_outcome(parse)
