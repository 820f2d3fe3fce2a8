"""C2SP signed notes and checkpoints, including the Go note package's published example."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import Checkpoint, LedgerInputError, NoteSigner, NoteVerificationError, NoteVerifier
from ledger.note import key_id, open_checkpoint, open_note, sign_note

# From the documentation of golang.org/x/mod/sumdb/note (Ed25519 signatures are
# deterministic, so signing the text again must give exactly this note).
GO_SIGNER = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VERIFIER = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2"
    "pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def test_go_note_package_example_interoperates() -> None:
    signer = NoteSigner.from_key_string(GO_SIGNER)
    verifier = NoteVerifier.from_key_string(GO_VERIFIER)
    assert signer.verifier() == verifier
    assert signer.to_key_string() == GO_SIGNER and verifier.to_key_string() == GO_VERIFIER
    assert sign_note(GO_TEXT, [signer]) == GO_NOTE
    assert open_note(GO_NOTE, [verifier]).verified_by == ("PeterNeumann",)


def test_key_id_is_sha256_of_name_newline_type_and_key() -> None:
    verifier = NoteVerifier.from_key_string(GO_VERIFIER)
    expected = hashlib.sha256(b"PeterNeumann\n\x01" + verifier.public_key).digest()[:4]
    assert key_id("PeterNeumann", verifier.public_key) == expected == bytes.fromhex("c74f20a3")


def test_altered_note_or_untrusted_signer_is_refused() -> None:
    verifier = NoteVerifier.from_key_string(GO_VERIFIER)
    with pytest.raises(NoteVerificationError, match="does not verify"):
        open_note(GO_NOTE.replace("cryptography", "cryptograph!"), [verifier])
    stranger = NoteSigner.generate("PeterNeumann")  # same name, other key: another key id
    with pytest.raises(NoteVerificationError, match="not signed by a trusted key"):
        open_note(GO_NOTE, [stranger.verifier()])
    with pytest.raises(NoteVerificationError):
        open_note(GO_NOTE, [])


def test_extra_signatures_from_unknown_keys_are_ignored() -> None:
    a, b = NoteSigner.generate("log.example/a"), NoteSigner.generate("witness.example/b")
    note = sign_note("hello\n", [a, b])
    assert open_note(note, [b.verifier()]).verified_by == ("witness.example/b",)


@pytest.mark.parametrize(
    "bad",
    [
        "no newline",
        "text\n",  # no signature block
        "text\n\n— name notbase64!\n",
        "text\n\n- name AAAAAAAA\n",  # a hyphen, not the em dash
        "text\n\n— name AAA=\n",  # too short for key id + signature
    ],
)
def test_malformed_notes_are_input_errors(bad: str) -> None:
    with pytest.raises(LedgerInputError):
        open_note(bad, [NoteSigner.generate("name").verifier()])


def test_checkpoint_text_round_trips_and_is_validated() -> None:
    cp = Checkpoint("example.com/log", 12, bytes(range(32)), ("ext one",))
    text = cp.to_text()
    assert text == f"example.com/log\n12\n{base64.b64encode(bytes(range(32))).decode()}\next one\n"
    assert Checkpoint.from_text(text) == cp
    for bad in ("o\n12\n\n", "o\n-1\nAAAA\n", "o\n012\n" + text.split("\n")[2] + "\n", "o\n1\n"):
        with pytest.raises(LedgerInputError):
            Checkpoint.from_text(bad)


@given(
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1).filter(
        lambda s: "+" not in s
    ),
    st.integers(0, 2**63 - 1),
    st.binary(min_size=32, max_size=32),
)
def test_signed_checkpoints_round_trip(name: str, size: int, root: bytes) -> None:
    signer = NoteSigner.generate(name)
    note = sign_note(Checkpoint(name, size, root).to_text(), [signer])
    assert open_checkpoint(note, [signer.verifier()]) == Checkpoint(name, size, root)
    assert NoteSigner.from_key_string(signer.to_key_string()) == signer
    assert NoteVerifier.from_key_string(signer.verifier().to_key_string()) == signer.verifier()
