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
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelguard.formats import ModelFiles, ParsedModel
    from modelguard.manifest import Manifest

from modelguard.encryption.container import (
    DEFAULT_CHUNK,
    SUFFIX,
    ContainerIndex,
    ContainerReader,
    ContainerWriter,
    FilePlan,
    TensorEntry,
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
from modelguard.hashing import check_algorithm, new_hasher
from modelguard.manifest import SIGNING_FILE_HASH, SIGNING_LAYER_HASH

# ---------------------------------------------------------------------------- results


@dataclass(frozen=True)
class EncryptResult:
    source: Path
    out: Path
    files: tuple[str, ...]  # container paths, relative to ``out`` (or its name)
    layer_root: str
    hash_algorithm: str  # tensor and structure digests of the plaintext manifest
    file_hash_algorithm: str  # its whole-file digests
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
            "file_hash_algorithm": self.file_hash_algorithm,
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


@dataclass
class ModelPlan:
    """A model opened and parsed once: what each container holds, before any digest exists."""

    files: ModelFiles  # every reader takes its bytes from here (one descriptor per file)
    parsed: dict[str, ParsedModel | None]  # handed to the scan, so nothing is parsed twice
    plans: list[FilePlan]  # one per file; manifest and root are same-length placeholders
    hash_algorithm: str
    file_hash_algorithm: str


def _placeholder_manifest(
    files: ModelFiles,
    parsed: Mapping[str, ParsedModel | None],
    hash_algorithm: str,
    file_hash_algorithm: str,
) -> Manifest:
    """The manifest the scan will produce, with zero digests: the same JSON length."""
    from modelguard.manifest import FileRecord, Manifest, TensorRecord

    zero, file_zero = (
        "0" * len(new_hasher(a).hexdigest()) for a in (hash_algorithm, file_hash_algorithm)
    )
    records = [
        FileRecord(
            rel,
            files.size(rel),
            file_zero,
            model.format if model is not None else "raw",
            zero if model is not None else None,
            tuple(
                TensorRecord(t.name, t.dtype, t.shape, t.nbytes, zero)
                for t in (model.tensors if model is not None else ())
            ),
        )
        for rel, model in parsed.items()
    ]
    return Manifest.create(hash_algorithm, records, file_hash_algorithm)


def plan_model(
    path: Path,
    *,
    hash_algorithm: str = SIGNING_LAYER_HASH,
    file_hash_algorithm: str = SIGNING_FILE_HASH,
    chunk_size: int = DEFAULT_CHUNK,
) -> ModelPlan:
    """Open and parse every file of the model once; one :class:`FilePlan` per file.

    The default hash functions are a signature's (BLAKE3 tensors, SHA-256 files: the
    container records the same layer root as ``modelguard sign`` of the plaintext model).
    """
    from modelguard.formats import parse_model_file
    from modelguard.formats.onnx import runtime_graph
    from modelguard.manifest import open_model
    from modelguard.runtime import in_memory_dtype

    check_algorithm(hash_algorithm)
    check_algorithm(file_hash_algorithm)
    files = open_model(path)  # each file read once: tensor plan, graph and digests share it
    root = files.root
    parsed = {rel: parse_model_file(root / rel, root=root, files=files) for rel in files.members}
    by_file: dict[str, dict[int, TensorEntry]] = {}
    for rel, model in parsed.items():
        for tensor in model.tensors if model is not None else ():
            if tensor.location is None or tensor.nbytes == 0:
                continue  # decoded (typed ONNX fields, pickles) or empty: stays in the structure
            file, offset, length = tensor.location
            entries = by_file.setdefault(file, {})
            if offset in entries:
                raise FormatError(
                    f"tensors {entries[offset].name!r} and {tensor.name!r} share bytes", path=file
                )
            entries[offset] = TensorEntry(
                tensor.name, tensor.dtype, tensor.shape, offset, length, rel
            )
    outside = sorted(set(by_file) - set(files.members))
    if outside:
        raise BadInputError(
            f"tensors live in {outside[0]!r}, outside what is being encrypted: encrypt the model directory",
            path=str(path),
        )
    placeholder = _placeholder_manifest(files, parsed, hash_algorithm, file_hash_algorithm)
    plans = []
    for rel, model in parsed.items():
        graph = b""
        if model is not None and model.format == "onnx":
            # the graph ONNX Runtime will get: no file reference left, weights from memory
            graph, _ = runtime_graph(
                root / rel,
                root=root,
                files=files,
                keep=lambda t: in_memory_dtype(t.dtype),
                loading=False,  # written into the container; loaded only after verification
            )
        plans.append(
            FilePlan(
                source=root / rel,
                path=rel,
                tensors=tuple(sorted(by_file.get(rel, {}).values(), key=lambda t: t.offset)),
                graph=graph,
                manifest=placeholder.to_dict(),
                layer_root=placeholder.layer_root,
                hash_algorithm=hash_algorithm,
                file_hash_algorithm=file_hash_algorithm,
                format=model.format if model is not None else "raw",
                chunk_size=chunk_size,
            )
        )
    return ModelPlan(files, parsed, plans, hash_algorithm, file_hash_algorithm)


def write_containers(
    plan: ModelPlan,
    destinations: Sequence[Path],
    recipients: Sequence[Recipient],
    *,
    threads: int | None = None,
) -> Manifest:
    """Encrypt every file of ``plan`` while the one scan of the model hashes it; the manifest.

    The scan (whole-file and tensor digests, :func:`modelguard.manifest.scan_model`) and the
    AES-GCM sealing read the same buffers at the same time; the index and header, which hold
    the digests, are written last.
    """
    from modelguard.manifest import scan_model

    files = plan.files
    with contextlib.ExitStack() as stack:
        writers = []
        for file_plan, destination in zip(plan.plans, destinations, strict=True):
            writer = ContainerWriter(file_plan, destination, recipients, files.view(file_plan.path))
            stack.callback(writer.close)
            writers.append(writer)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelguard-scan") as side:
            scanning = side.submit(
                scan_model,
                files,
                hash_algorithm=plan.hash_algorithm,
                file_hash_algorithm=plan.file_hash_algorithm,
                layout=False,
                threads=threads,
                parsed_files=plan.parsed,
            )
            for writer in writers:
                writer.seal_payload(threads)
        manifest = scanning.result().manifest
        document = manifest.to_dict()
        for writer in writers:
            writer.finish(document, manifest.layer_root)
    return manifest


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
    In a signature's hash functions the root is derived from ``manifest``'s records (nothing
    is hashed again); another scheme needs one more scan in the signature's functions.
    """
    from modelguard.manifest import Manifest, build_manifest
    from modelguard.signing.files import default_signature_path, is_ignored, signing_ignore_paths

    ignore = signing_ignore_paths(model, default_signature_path(model))
    if manifest.scheme == (SIGNING_LAYER_HASH, SIGNING_FILE_HASH):
        kept = [f for f in manifest.files if not (model.is_dir() and is_ignored(f.path, ignore))]
        if len(kept) == len(manifest.files):
            return manifest.layer_root
        return Manifest.create(
            manifest.hash_algorithm, kept, manifest.file_hash_algorithm
        ).layer_root
    return build_manifest(
        model,
        hash_algorithm=SIGNING_LAYER_HASH,
        file_hash_algorithm=SIGNING_FILE_HASH,
        ignore_paths=ignore if model.is_dir() else (),
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
    hash_algorithm: str = SIGNING_LAYER_HASH,
    file_hash_algorithm: str = SIGNING_FILE_HASH,
    threads: int | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    scrypt_log_n: int | None = None,
) -> EncryptResult:
    """Encrypt a model file or directory to ``out`` for every recipient given.

    ``recipients``: X25519 public keys; ``passphrase``: scrypt-wrapped; ``key``: a raw 256-bit
    key. With ``sign_key`` the container is signed at once (``modelguard.signing.sign_model``).
    ``hash_algorithm`` / ``file_hash_algorithm``: the plaintext manifest's tensor and whole-file
    hash functions (default a signature's, so the recorded root is the signature's root).
    """
    source, target = Path(path), Path(out)
    if not source.exists():
        raise BadInputError(f"no such file or directory: {source}")
    wrapped = recipients_from(recipients, passphrase, key, scrypt_log_n)
    plan = plan_model(
        source,
        hash_algorithm=hash_algorithm,
        file_hash_algorithm=file_hash_algorithm,
        chunk_size=chunk_size,
    )
    directory = source.is_dir()
    files = [p.path + SUFFIX if directory else target.name for p in plan.plans]
    try:
        with _staging(target, directory) as stage:
            destinations = [stage / rel if directory else stage for rel in files]
            for destination in destinations:
                destination.parent.mkdir(parents=True, exist_ok=True)
            manifest = write_containers(plan, destinations, wrapped, threads=threads)
    finally:
        plan.files.close()
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
            parent=model_root,
            ledger_url=ledger_url,
            record=record,
        )
        signature = Path(signed.signature_path)
        if record:
            from modelguard.audit import record_event, signed_name

            # Links the plaintext model, under the root its own signature records (signature
            # files left out, as sign_model does), to the signed container in the ledger; the
            # model keeps the name it was signed with unless --name renames it.
            subject = {
                "name": name or signed_name(model_root, ledger_url) or target.resolve().name,
                "root": model_root,
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
        file_hash_algorithm=manifest.file_algorithm,
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
    if manifest.scheme != (reader.hash_algorithm, reader.file_hash_algorithm):
        raise DigestMismatchError(
            f"the index's manifest hashes with {'/'.join(manifest.scheme)}, the header says "
            f"{reader.hash_algorithm}/{reader.file_hash_algorithm}",
            path=str(reader.path),
        )
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
