"""Encrypt and decrypt whole models (a file or a directory), file by file, atomically.

>>> import os, tempfile, pathlib, numpy as np
>>> from safetensors.numpy import save_file
>>> from modelguard.encryption import encrypt_model, decrypt_model
>>> d = pathlib.Path(tempfile.mkdtemp()); key = os.urandom(32)
>>> save_file({"w": np.ones((2, 2), np.float32)}, d / "m.safetensors")
>>> _ = encrypt_model(d / "m.safetensors", d / "m.safetensors.mgenc", key=key)
>>> _ = decrypt_model(d / "m.safetensors.mgenc", d / "plain.safetensors", key=key)
>>> (d / "plain.safetensors").read_bytes() == (d / "m.safetensors").read_bytes()
True

A model file becomes ``<name>.mgenc``; a directory becomes a directory of ``.mgenc`` files
(every file encrypted, model or not). Each container carries the plaintext manifest's layer
root in its header and the manifest itself, encrypted, in its index: decryption recomputes the
root, checks every tensor against its digest, and only then moves the output into place.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelguard.manifest import Manifest

from modelguard.encryption.container import (
    DEFAULT_CHUNK,
    SUFFIX,
    ContainerIndex,
    ContainerReader,
    FilePlan,
    TensorEntry,
    write_container,
)
from modelguard.encryption.keywrap import (
    Identity,
    PassphraseIdentity,
    PassphraseRecipient,
    RawKeyIdentity,
    RawKeyRecipient,
    Recipient,
    X25519Identity,
    X25519Recipient,
)
from modelguard.errors import BadInputError, DecryptionError, DigestMismatchError, FormatError
from modelguard.hashing import new_hasher

# ---------------------------------------------------------------------------- results


@dataclass(frozen=True)
class EncryptResult:
    source: Path
    out: Path
    files: tuple[str, ...]  # container paths, relative to ``out`` (or its name)
    layer_root: str
    hash_algorithm: str
    recipients: tuple[str, ...]  # stanza types
    bytes_in: int
    signature: Path | None = None
    signature_result: Any = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": str(self.source),
            "out": str(self.out),
            "files": list(self.files),
            "layer_root": self.layer_root,
            "hash_algorithm": self.hash_algorithm,
            "recipients": list(self.recipients),
            "bytes": self.bytes_in,
            "signature": str(self.signature) if self.signature else None,
        }
        return out


@dataclass(frozen=True)
class DecryptResult:
    source: Path
    out: Path
    files: tuple[str, ...]
    tensors: tuple[str, ...]  # tensors checked against their signed digests
    layer_root: str | None
    bytes_out: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "out": str(self.out),
            "files": list(self.files),
            "tensors_verified": len(self.tensors),
            "layer_root": self.layer_root,
            "bytes": self.bytes_out,
        }


# ---------------------------------------------------------------------------- key options


def recipients_from(
    recipients: Sequence[Any] = (),
    passphrase: bytes | str | None = None,
    key: bytes | None = None,
    scrypt_log_n: int | None = None,
) -> list[Recipient]:
    """Turn the user's options into recipients (X25519 public keys, a passphrase, a raw key)."""
    out: list[Recipient] = [
        r if isinstance(r, X25519Recipient) else X25519Recipient(r) for r in recipients
    ]
    if passphrase is not None:
        secret = passphrase.encode() if isinstance(passphrase, str) else passphrase
        if not secret:
            raise BadInputError("empty passphrase")
        out.append(
            PassphraseRecipient(secret)
            if scrypt_log_n is None
            else PassphraseRecipient(secret, scrypt_log_n)
        )
    if key is not None:
        if len(key) != 32:
            raise BadInputError("a raw key must be 32 bytes (256 bits)")
        out.append(RawKeyRecipient(key))
    if not out:
        raise BadInputError("give at least one recipient, a passphrase or a key file")
    return out


def identities_from(
    identity: Any = None, passphrase: bytes | str | None = None, key: bytes | None = None
) -> list[Identity]:
    out: list[Identity] = []
    if identity is not None:
        for item in identity if isinstance(identity, list | tuple) else [identity]:
            out.append(item if isinstance(item, X25519Identity) else X25519Identity(item))
    if passphrase is not None:
        out.append(
            PassphraseIdentity(passphrase.encode() if isinstance(passphrase, str) else passphrase)
        )
    if key is not None:
        out.append(RawKeyIdentity(key))
    if not out:
        raise BadInputError("give an identity, a passphrase or a key file to decrypt")
    return out


# ---------------------------------------------------------------------------- plans


def plan_model(
    path: Path, *, hash_algorithm: str = "sha256", chunk_size: int = DEFAULT_CHUNK
) -> tuple[list[FilePlan], Any]:
    """One :class:`FilePlan` per file of the model, and the plaintext manifest."""
    from modelguard.formats import parse_model_file
    from modelguard.formats.onnx import runtime_graph
    from modelguard.manifest import build_manifest, open_model
    from modelguard.runtime import in_memory_dtype

    files = open_model(path)  # each file read once: manifest, tensor plan and graph share it
    manifest = build_manifest(path, hash_algorithm=hash_algorithm, files=files)
    root = files.root
    manifest_doc = manifest.to_dict()
    by_file: dict[str, dict[int, TensorEntry]] = {}
    for record in manifest.files:
        if record.format not in ("onnx", "safetensors", "pytorch"):
            continue
        parsed = parse_model_file(root / record.path, root=root, files=files)
        if parsed is None:
            continue
        for tensor in parsed.tensors:
            if tensor.location is None or tensor.nbytes == 0:
                continue  # decoded (typed ONNX fields, pickles) or empty: stays in the structure
            file, offset, length = tensor.location
            entries = by_file.setdefault(file, {})
            if offset in entries:
                raise FormatError(
                    f"tensors {entries[offset].name!r} and {tensor.name!r} share bytes", path=file
                )
            entries[offset] = TensorEntry(
                tensor.name, tensor.dtype, tensor.shape, offset, length, record.path
            )
    outside = sorted(set(by_file) - {record.path for record in manifest.files})
    if outside:
        raise BadInputError(
            f"tensors live in {outside[0]!r}, outside what is being encrypted: encrypt the model directory",
            path=str(path),
        )
    plans = []
    for record in manifest.files:
        graph = b""
        if record.format == "onnx":
            # the graph ONNX Runtime will get: no file reference left, weights from memory
            graph, _ = runtime_graph(
                root / record.path,
                root=root,
                files=files,
                keep=lambda t: in_memory_dtype(t.dtype),
                loading=False,  # written into the container; loaded only after verification
            )
        plans.append(
            FilePlan(
                source=root / record.path,
                path=record.path,
                tensors=tuple(
                    sorted(by_file.get(record.path, {}).values(), key=lambda t: t.offset)
                ),
                graph=graph,
                manifest=manifest_doc,
                layer_root=manifest.layer_root,
                hash_algorithm=manifest.hash_algorithm,
                format=record.format,
                chunk_size=chunk_size,
            )
        )
    return plans, manifest


# ---------------------------------------------------------------------------- atomic output


@contextlib.contextmanager
def _staging(out: Path, directory: bool) -> Iterator[Path]:
    """A temporary sibling of ``out``; renamed onto ``out`` only if the block succeeds."""
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise BadInputError(f"output directory {parent} does not exist")
    if directory and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BadInputError(f"output {out} exists and is not an empty directory")
    if not directory and out.is_dir():
        raise BadInputError(f"output {out} is a directory")
    if directory:
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent)
        os.close(fd)
        stage = Path(name)
    try:
        yield stage
        if directory:
            if out.is_dir():
                out.rmdir()
            os.rename(stage, out)
        else:
            os.replace(stage, out)
    except BaseException:
        if stage.is_dir():
            shutil.rmtree(stage, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                stage.unlink()
        raise


# ---------------------------------------------------------------------------- encrypt


def signed_model_root(model: Path, manifest: Manifest) -> str:
    """The layer root a signature over ``model`` records: its manifest without signature files.

    Encrypting a signed directory carries its ``model.sig`` along (so decryption restores a
    verifiable model), but the model's identity in the ledger is the root it was signed under.
    """
    from modelguard.manifest import SIGNING_FILE_HASH, SIGNING_LAYER_HASH, build_manifest
    from modelguard.signing.files import default_signature_path, signing_ignore_paths

    if manifest.hash_algorithm != "sha256" or not model.is_dir():
        return manifest.layer_root
    # signatures hash tensors with BLAKE3 and files with SHA-256 (docs/signature.md)
    ignore = signing_ignore_paths(model, default_signature_path(model))
    return build_manifest(
        model,
        hash_algorithm=SIGNING_LAYER_HASH,
        file_hash_algorithm=SIGNING_FILE_HASH,
        ignore_paths=ignore,
    ).layer_root


def encrypt_model(
    path: Path | str,
    out: Path | str,
    *,
    recipients: Sequence[Any] = (),
    passphrase: bytes | str | None = None,
    key: bytes | None = None,
    sign_key: Any = None,
    signature_path: Path | None = None,
    name: str | None = None,
    version: str | None = None,
    ledger_url: str | None = None,
    record: bool = True,
    hash_algorithm: str = "sha256",
    threads: int | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    scrypt_log_n: int | None = None,
) -> EncryptResult:
    """Encrypt a model file or directory to ``out`` for every recipient given.

    ``recipients``: X25519 public keys; ``passphrase``: scrypt-wrapped; ``key``: a raw 256-bit
    key. With ``sign_key`` the container is signed at once (``modelguard.signing.sign_model``).
    """
    source, target = Path(path), Path(out)
    if not source.exists():
        raise BadInputError(f"no such file or directory: {source}")
    wrapped = recipients_from(recipients, passphrase, key, scrypt_log_n)
    plans, manifest = plan_model(source, hash_algorithm=hash_algorithm, chunk_size=chunk_size)
    directory = source.is_dir()
    files: list[str] = []
    with _staging(target, directory) as stage:
        for plan in plans:
            rel = plan.path + SUFFIX
            destination = stage / rel if directory else stage
            destination.parent.mkdir(parents=True, exist_ok=True)
            write_container(plan, destination, wrapped, threads=threads)
            files.append(rel if directory else target.name)
    signature = None
    signed = None
    if sign_key is not None:
        from modelguard.signing.sign import sign_model

        model_root = signed_model_root(source, manifest)
        signed = sign_model(
            target,
            sign_key,
            signature_path=signature_path,
            name=name,
            version=version,
            parent=model_root if manifest.hash_algorithm == "sha256" else None,
            ledger_url=ledger_url,
            record=record,
        )
        signature = Path(signed.signature_path)
        if record:
            from modelguard.audit import record_event, signed_name

            # Links the plaintext model, under the root its own signature records (signature
            # files left out, as sign_model does), to the signed container in the ledger; the
            # model keeps the name it was signed with unless --name renames it.
            root = signed_model_root(source, manifest)
            subject = {
                "name": name or signed_name(root, ledger_url) or target.resolve().name,
                "root": root,
            }
            if version is not None:
                subject["version"] = version
            record_event(
                "encrypt",
                subject=subject,
                payload_digest=signed.payload_digest,
                actor=signed.key_id,
                details={
                    "container_root": signed.manifest.layer_root,
                    "plaintext_root": manifest.layer_root,
                    "recipients": sorted({type(r).__name__ for r in wrapped}),
                },
                ledger_url=ledger_url,
            )
    return EncryptResult(
        source=source,
        out=target,
        files=tuple(files),
        layer_root=manifest.layer_root,
        hash_algorithm=manifest.hash_algorithm,
        recipients=tuple(sorted({type(r).__name__ for r in wrapped})),
        bytes_in=sum(f.size for f in manifest.files),
        signature=signature,
        signature_result=signed,
    )


# ---------------------------------------------------------------------------- open / check


def container_files(path: Path) -> list[tuple[str, Path]]:
    """(plaintext relative path, container path) for a container file or directory."""
    if not path.is_dir():
        if not path.exists():
            raise BadInputError(f"no such file or directory: {path}")
        return [(path.name.removesuffix(SUFFIX), path)]  # its type is checked when opened
    found = []
    for item in sorted(path.rglob("*")):
        if item.is_symlink():
            raise BadInputError(f"{item}: symlinks are not followed in encrypted models")
        if item.is_dir() or not item.name.endswith(SUFFIX):
            continue  # e.g. the signature next to the containers
        if not item.is_file():
            raise BadInputError("container is not a regular file", path=str(item))
        found.append((item.relative_to(path).as_posix().removesuffix(SUFFIX), item))
    if not found:
        raise FormatError(f"no {SUFFIX} containers in {path}")
    return found


def is_encrypted(path: Path) -> bool:
    """True when ``path`` is a container or a directory holding containers."""
    if path.is_file():
        from modelguard.encryption.container import MAGIC
        from modelguard.safeio import open_regular

        with open_regular(path, what="model file") as handle:
            return handle.read(len(MAGIC)) == MAGIC
    return path.is_dir() and any(p.name.endswith(SUFFIX) for p in path.rglob("*"))


def checked_manifest(reader: ContainerReader) -> Any:
    """The plaintext manifest in the index, its recomputed root equal to the header's root."""
    from modelguard.manifest import Manifest

    index = reader.index
    if index.manifest is None or reader.layer_root is None:
        raise DigestMismatchError(
            "container carries no plaintext manifest to check against", path=str(reader.path)
        )
    manifest = Manifest.from_dict(index.manifest)
    if not hmac.compare_digest(manifest.layer_root, reader.layer_root):
        raise DigestMismatchError(
            f"recomputed layer root {manifest.layer_root[:16]}... differs from the header's {reader.layer_root[:16]}...",
            path=str(reader.path),
        )
    return manifest


def expected_digests(manifest: Any, index: ContainerIndex) -> dict[tuple[str, str], str]:
    """(record, tensor name) -> signed digest for the tensors this container holds."""
    digests: dict[tuple[str, str], str] = {}
    for tensor in index.tensors:
        record = manifest.file(tensor.record)
        signed = record.tensor(tensor.name) if record is not None else None
        if signed is None or (signed.dtype, signed.shape, signed.nbytes) != (
            tensor.dtype,
            tensor.shape,
            tensor.length,
        ):
            raise DigestMismatchError(
                f"tensor {tensor.name!r} has no matching signed record", path=index.path
            )
        digests[(tensor.record, tensor.name)] = signed.digest
    return digests


class TensorChecker:
    """Hashes decrypted tensors (in worker threads) and remembers the first mismatch."""

    def __init__(self, manifest: Any, index: ContainerIndex, where: str) -> None:
        self.algorithm = manifest.hash_algorithm
        self.digests = expected_digests(manifest, index)
        self.where = where
        self.checked: list[str] = []
        self.failure: str | None = None
        self._lock = threading.Lock()

    def __call__(self, tensor: TensorEntry, data: memoryview | bytearray) -> None:
        hasher = new_hasher(self.algorithm)
        hasher.update(memoryview(data))
        self.check(tensor, hasher.hexdigest())

    def check(self, tensor: TensorEntry, digest: str) -> None:
        ok = hmac.compare_digest(digest, self.digests[(tensor.record, tensor.name)])
        with self._lock:
            self.checked.append(tensor.name)
            if not ok and self.failure is None:
                self.failure = tensor.name

    def raise_if_failed(self) -> None:
        if self.failure is not None:
            raise DigestMismatchError(
                f"decrypted tensor {self.failure!r} does not match its signed digest",
                path=self.where,
            )


# ---------------------------------------------------------------------------- decrypt


def _write_file(reader: ContainerReader, destination: Path, threads: int | None) -> list[str]:
    manifest = checked_manifest(reader)
    index = reader.index
    checker = TensorChecker(manifest, index, str(reader.path))
    with open(destination, "wb") as sink:
        sink.truncate(index.size)
        reader.write_to(
            sink.fileno(),
            threads=threads,
            hash_algorithm=checker.algorithm,
            on_digest=checker.check,
        )
    checker.raise_if_failed()
    return checker.checked


def _safetensors_bytes(entries: list[tuple[TensorEntry, bytearray]]) -> list[bytes | bytearray]:
    """A safetensors file of the given tensors (header JSON + data, 8-byte aligned)."""
    names = {
        "float64": "F64",
        "float32": "F32",
        "float16": "F16",
        "bfloat16": "BF16",
        "int64": "I64",
        "int32": "I32",
        "int16": "I16",
        "int8": "I8",
        "uint64": "U64",
        "uint32": "U32",
        "uint16": "U16",
        "uint8": "U8",
        "bool": "BOOL",
        "float8_e4m3fn": "F8_E4M3",
        "float8_e5m2": "F8_E5M2",
    }
    header: dict[str, Any] = {}
    cursor = 0
    for tensor, data in entries:
        if tensor.dtype not in names:
            raise BadInputError(
                f"tensor {tensor.name!r}: dtype {tensor.dtype} has no safetensors name"
            )
        header[tensor.name] = {
            "dtype": names[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [cursor, cursor + len(data)],
        }
        cursor += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return [len(text).to_bytes(8, "little"), text, *(data for _, data in entries)]


def decrypt_model(
    path: Path | str,
    out: Path | str,
    *,
    identity: Any = None,
    passphrase: bytes | str | None = None,
    key: bytes | None = None,
    tensors: Sequence[str] | None = None,
    threads: int | None = None,
) -> DecryptResult:
    """Decrypt a container (or directory of them) to ``out``, checked and atomically.

    With ``tensors``, only those tensors are decrypted and written as one safetensors file.
    Nothing is written unless every check passes.
    """
    source, target = Path(path), Path(out)
    keys = identities_from(identity, passphrase, key)
    containers = container_files(source)
    directory = source.is_dir()
    written: list[str] = []
    verified: list[str] = []
    expected_files: set[str] = set()
    root: str | None = None
    total = 0
    if tensors is not None:
        wanted = list(dict.fromkeys(tensors))
        found: dict[str, tuple[TensorEntry, bytearray]] = {}
        for _, container in containers:
            with ContainerReader(container) as reader:
                reader.unlock(keys)
                manifest = checked_manifest(reader)
                root = reader.layer_root
                checker = TensorChecker(manifest, reader.index, str(container))
                for tensor in reader.index.tensors:
                    if tensor.name in wanted and tensor.name not in found:
                        data = bytearray(tensor.length)
                        reader.decrypt_tensor_into(tensor, memoryview(data))
                        checker(tensor, memoryview(data))
                        found[tensor.name] = (tensor, data)
                checker.raise_if_failed()
        missing = [n for n in wanted if n not in found]
        if missing:
            raise BadInputError(f"no tensor named {missing[0]!r} in {source}")
        with _staging(target, False) as stage, open(stage, "wb") as sink:
            for part in _safetensors_bytes([found[n] for n in wanted]):
                sink.write(part)
        return DecryptResult(
            source, target, (target.name,), tuple(wanted), root, target.stat().st_size
        )

    with _staging(target, directory) as stage:
        for rel, container in containers:
            with ContainerReader(container) as reader:
                reader.unlock(keys)
                if directory:
                    destination = stage / PurePosixPath(reader.index.path)
                    if reader.index.path != rel:
                        raise DecryptionError(
                            f"container holds {reader.index.path!r}, not {rel!r}",
                            path=str(container),
                        )
                    destination.parent.mkdir(parents=True, exist_ok=True)
                else:
                    destination = stage
                verified += _write_file(reader, destination, threads)
                expected_files = {f.path for f in checked_manifest(reader).files}
                if root is not None and root != reader.layer_root:
                    raise DecryptionError(
                        "containers of different models are mixed", path=str(container)
                    )
                root = reader.layer_root
                total += reader.index.size
                written.append(reader.index.path)
        if set(written) != expected_files and directory:
            missing = sorted(expected_files ^ set(written))
            raise DigestMismatchError(
                f"encrypted model is incomplete or has extra files: {missing[0]!r}",
                path=str(source),
            )
    return DecryptResult(source, target, tuple(written), tuple(verified), root, total)
