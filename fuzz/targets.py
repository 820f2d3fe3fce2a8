"""Fuzz targets: one function per parser of untrusted bytes, shared by every harness.

Each target takes raw bytes and must return or raise a typed error (:func:`typed`):
a :class:`~modelguard.errors.ModelGuardError` with exit code 1 or 2, or a
:class:`ledger.LedgerError`. Anything else propagates, and the fuzzer reports it as a crash.
"""

from __future__ import annotations

import io
import json
import os
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

from ledger import Checkpoint, InclusionProof, LedgerError, NoteSigner, open_checkpoint
from modelguard.encryption import decrypt_model
from modelguard.errors import ModelGuardError
from modelguard.formats.onnx import parse_onnx
from modelguard.formats.pytorch import parse_pytorch, scan_pickle
from modelguard.formats.safetensors import parse_safetensors
from modelguard.keys import generate_key
from modelguard.policy import parse_policy, parse_policy_toml
from modelguard.signing.bundle import load_bundle_bytes, parse_bundle
from modelguard.signing.envelope import verify_bundle
from modelguard.signing.statement import parse_statement

WORK = Path(tempfile.mkdtemp(prefix="mg-atheris-"))
NOTE_KEY = NoteSigner.generate("fuzz.example/log")
RAW_KEY = bytes(range(32))
BUNDLE_KEY = generate_key("ed25519").public_key()


def typed(call: Callable[[], object]) -> None:
    try:
        call()
    except ModelGuardError as error:
        if error.exit_code not in (1, 2):
            raise
    except LedgerError:
        pass


def _file(name: str, data: bytes) -> Path:
    path = WORK / f"{os.getpid()}-{name}"
    path.write_bytes(data)
    return path


def safetensors(data: bytes) -> None:
    typed(lambda: parse_safetensors(_file("f.safetensors", data), root=WORK))


def safetensors_header(data: bytes) -> None:
    blob = struct.pack("<Q", len(data)) + data
    typed(lambda: parse_safetensors(_file("h.safetensors", blob), root=WORK))


def onnx(data: bytes) -> None:
    typed(lambda: parse_onnx(_file("f.onnx", data), root=WORK))


def pickle_scan(data: bytes) -> None:
    typed(lambda: scan_pickle(io.BytesIO(data), "p"))


def torch_checkpoint(data: bytes) -> None:
    typed(lambda: parse_pytorch(_file("f.pt", data), root=WORK))


def bundle(data: bytes) -> None:
    def run() -> None:
        document = load_bundle_bytes(data, source="model.sig")
        parse_bundle(document)
        parse_statement(document)
        verify_bundle(document, [BUNDLE_KEY])

    typed(run)


def container(data: bytes) -> None:
    path = _file("f.mgenc", data)
    typed(lambda: decrypt_model(path, WORK / f"{os.getpid()}-out", key=RAW_KEY))


def checkpoint_note(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    typed(lambda: Checkpoint.from_text(text))
    typed(lambda: open_checkpoint(text, [NOTE_KEY.verifier()]))


def proof(data: bytes) -> None:
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        return  # not JSON: the CLI's reader maps this to exit 2 before a proof is built
    if isinstance(document, dict):
        typed(lambda: InclusionProof.from_dict(document).verify())


def policy(data: bytes) -> None:
    typed(lambda: parse_policy(parse_policy_toml(data, "p.toml"), source="p.toml", base=WORK))


TARGETS: dict[str, Callable[[bytes], None]] = {
    "safetensors": safetensors,
    "safetensors_header": safetensors_header,
    "onnx": onnx,
    "pickle": pickle_scan,
    "torch": torch_checkpoint,
    "bundle": bundle,
    "container": container,
    "checkpoint": checkpoint_note,
    "proof": proof,
    "policy": policy,
}
