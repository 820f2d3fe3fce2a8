"""Verified inference: check signature, policy and ledger first, then decrypt into ONNX Runtime.

>>> from modelguard.runtime import choose_providers
>>> choose_providers("cpu")
['CPUExecutionProvider']

Typical use (``keys`` trusted signer public keys, ``identity`` an X25519 private key)::

    session = open_session("model.onnx.mgenc", signature="model.sig", keys=[signer_pub],
                           identity=identity)
    logits = session.run(None, {session.get_inputs()[0].name: x})[0]

Order of operations, never relaxed (docs/runtime.md): (1)
:func:`modelguard.signing.verify.verify_and_hold` reads every file once into private memory
and verifies those buffers (signatures bound to this target, every file, tensor and structure
digest, the policy and, when asked, ledger inclusion, revocation and rollback), (2)
:func:`session_from_verified` builds the session from the held buffers only: containers are
unlocked (data key, header root recomputed from the index) and every tensor decrypted straight
into memory and checked against its signed digest; a plaintext graph is rebuilt with no file
reference left, (3) the graph goes to ``InferenceSession`` as bytes and the weights as
OrtValues through ``SessionOptions.add_external_initializers``. No path reaches ONNX Runtime
and no model path is opened after verification. Nothing plaintext is written anywhere: no
optimized-model file, no engine cache.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import io
import math
import mmap
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelguard.errors import BadInputError, FormatError, UnsafeModelError, VerificationError
from modelguard.hashing import new_hasher

CPU = "CPUExecutionProvider"
_ALIGNMENT = 64  # bytes; a tensor handed to ONNX Runtime in place starts on a cache line
CUDA = "CUDAExecutionProvider"

# canonical dtype -> numpy dtype; types numpy lacks: (same-width holder, ONNX element type)
_NUMPY_DTYPES: dict[str, str] = {
    "float64": "<f8", "float32": "<f4", "float16": "<f2", "int64": "<i8", "int32": "<i4",
    "int16": "<i2", "int8": "i1", "uint64": "<u8", "uint32": "<u4", "uint16": "<u2",
    "uint8": "u1", "bool": "?", "complex64": "<c8", "complex128": "<c16",
}  # fmt: skip
_ONNX_ONLY: dict[str, tuple[str, int]] = {
    "bfloat16": ("<u2", 16), "float8_e4m3fn": ("u1", 17), "float8_e4m3fnuz": ("u1", 18),
    "float8_e5m2": ("u1", 19), "float8_e5m2fnuz": ("u1", 20),
}  # fmt: skip


# ---------------------------------------------------------------------------- providers


def cuda_usable() -> bool:
    """CUDA EP listed by ONNX Runtime *and* its provider library loads (CUDA, cuBLAS, cuDNN found).

    Loading the provider library with ctypes is silent on CPU-only machines, unlike asking ONNX
    Runtime for a CUDA session, which logs errors before falling back.
    """
    import onnxruntime as ort

    if CUDA not in ort.get_available_providers():
        return False
    capi = Path(ort.__file__).parent / "capi"
    if importlib.util.find_spec("nvidia") is not None:  # CUDA/cuDNN from pip's nvidia-* wheels
        quiet = io.StringIO()
        with (
            contextlib.suppress(AttributeError, OSError, RuntimeError),
            contextlib.redirect_stdout(quiet),
            contextlib.redirect_stderr(quiet),
        ):
            ort.preload_dlls(directory="")
    try:
        ctypes.CDLL(str(capi / "libonnxruntime_providers_shared.so"), mode=ctypes.RTLD_GLOBAL)
        ctypes.CDLL(str(capi / "libonnxruntime_providers_cuda.so"))
    except OSError:
        return False
    return True


def choose_providers(providers: str | Sequence[str] = "auto") -> list[str]:
    """``auto``: CUDA when usable, else CPU; ``cpu``; ``cuda`` (refused if unusable); or a list."""
    if not isinstance(providers, str):
        return list(providers)
    if providers == "cpu":
        return [CPU]
    if providers == "cuda":
        if not cuda_usable():
            raise BadInputError(
                "--provider cuda: CUDAExecutionProvider is not usable on this machine"
            )
        return [CUDA, CPU]
    if providers == "auto":
        return [CUDA, CPU] if cuda_usable() else [CPU]
    raise BadInputError(f"unknown provider {providers!r} (auto, cuda or cpu)")


def session_options() -> Any:
    """Options that never write plaintext: no optimized model file, no profiling output."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = ""
    options.enable_profiling = False
    options.log_severity_level = 3
    return options


# ---------------------------------------------------------------------------- verified session


@dataclass
class VerifiedSession:
    """An InferenceSession plus what was checked to get it."""

    session: Any  # onnxruntime.InferenceSession
    provider: str
    encrypted: bool
    model: str
    layer_root: str | None
    tensors_verified: int
    verification: Any = None  # modelguard.signing.report.VerificationReport
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase
    _buffers: list[Any] = field(default_factory=list, repr=False)  # keep OrtValue memory alive

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "provider": self.provider,
            "encrypted": self.encrypted,
            "layer_root": self.layer_root,
            "tensors_verified": self.tensors_verified,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "verification": self.verification.to_dict() if self.verification is not None else None,
        }


def _onnx_member(files: Any, path: Path, encrypted: bool) -> str:
    """The verified file holding the ONNX graph (container or plaintext), by its relative path."""
    from modelguard.encryption.container import SUFFIX

    suffix = ".onnx" + SUFFIX if encrypted else ".onnx"
    if files.single:
        return str(files.members[0])
    found = [rel for rel in files.members if rel.endswith(suffix)]
    if len(found) != 1:
        raise BadInputError(f"{path}: expected exactly one {suffix} file, found {len(found)}")
    return str(found[0])


def _verify(
    path: Path,
    signature: Path | str | None,
    keys: Sequence[Any],
    policy: Any,
    ledger_url: str | None,
    require_ledger: bool,
    allow_rollback: bool,
    checks: Any = None,
    progress: Any = None,
) -> Any:
    """Verify and hold: the returned VerifiedModel's buffers are the only bytes used afterwards."""
    from modelguard.formats import onnx_runtime_reads
    from modelguard.policy import NO_CHECKS
    from modelguard.signing.verify import verify_and_hold

    if signature is None and policy is None and not keys:
        raise BadInputError(
            "open_session verifies first: give a signature and trusted keys or a policy"
        )
    return verify_and_hold(
        path,
        Path(signature) if signature is not None else None,
        keys=keys,
        policy=policy,
        ledger_url=ledger_url,
        require_ledger=require_ledger,
        allow_rollback=allow_rollback,
        private=onnx_runtime_reads,  # a safetensors copy beside the ONNX file is only hashed
        checks=NO_CHECKS if checks is None else checks,
        progress=progress,
    )


def _ort_value(array: np.ndarray, dtype: str) -> Any:
    import onnxruntime as ort

    if dtype in _ONNX_ONLY:
        return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(array, _ONNX_ONLY[dtype][1])
    return ort.OrtValue.ortvalue_from_numpy(array)


def _holder_dtype(dtype: str) -> str:
    if dtype in _NUMPY_DTYPES:
        return _NUMPY_DTYPES[dtype]
    if dtype in _ONNX_ONLY:
        return _ONNX_ONLY[dtype][0]
    raise FormatError(f"tensor dtype {dtype} cannot be handed to ONNX Runtime from memory")


def _holder(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.empty(shape, dtype=_holder_dtype(dtype))


def _holders(tensors: Sequence[Any]) -> list[np.ndarray]:
    """Arrays for the decrypted tensors, all in one private anonymous mapping, 64-byte aligned.

    Not numpy's allocator: it asks for transparent huge pages, and where free memory is
    fragmented the kernel then compacts memory on first touch (measured on the bench VM:
    1.4-1.8 s of CPU per GiB to decrypt and check instead of 0.7-0.9 s with ordinary pages).
    """
    offsets, total = [], 0
    for tensor in tensors:
        offsets.append(total)
        total += -(-tensor.length // _ALIGNMENT) * _ALIGNMENT
    # the arrays keep it alive; faulted in by the kernel in one call where it can (Linux):
    # about 15 % less CPU than a page fault per 4 KiB while decrypting
    populate = getattr(mmap, "MAP_POPULATE", 0)
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | populate if populate else None
    arena = mmap.mmap(-1, max(total, 1), flags=flags) if flags else mmap.mmap(-1, max(total, 1))
    arrays = []
    for tensor, offset in zip(tensors, offsets, strict=True):
        dtype = np.dtype(_holder_dtype(tensor.dtype))
        count = math.prod(tensor.shape)
        if count * dtype.itemsize != tensor.length:
            raise FormatError(f"tensor {tensor.name!r}: its length does not match its shape")
        array = np.frombuffer(arena, dtype=dtype, count=count, offset=offset)
        arrays.append(array.reshape(tensor.shape))
    return arrays


def in_memory_dtype(dtype: str) -> bool:
    """True when ONNX Runtime can take a tensor of ``dtype`` from memory (an OrtValue)."""
    return dtype in _NUMPY_DTYPES or dtype in _ONNX_ONLY


def _verified_array(data: memoryview, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """The tensor over its verified private bytes; copied (from them) only when misaligned."""
    holder_dtype = _NUMPY_DTYPES.get(dtype) or _ONNX_ONLY[dtype][0]
    array = np.frombuffer(data, dtype=holder_dtype).reshape(shape)
    if array.ctypes.data % _ALIGNMENT == 0:
        return array
    copy = _holder(dtype, shape)
    np.copyto(copy, array)
    return copy


def _open_encrypted(
    path: Path,
    identities: Sequence[Any],
    verified: Any,
    providers: list[str],
    threads: int | None,
    started: float,
) -> VerifiedSession:
    import onnx
    import onnxruntime as ort

    from modelguard.encryption.container import SUFFIX, ContainerReader, default_threads
    from modelguard.encryption.model import TensorChecker, checked_manifest
    from modelguard.formats.onnx import MEMORY_LOCATION

    verified_at = time.perf_counter()
    files = verified.files
    target = _onnx_member(files, path, encrypted=True)
    onnx_rel = target.removesuffix(SUFFIX)
    containers = [rel for rel in files.members if files.single or rel.endswith(SUFFIX)]
    shared = [rel for rel in containers if not files.is_private(rel)]
    if shared:  # a mapping could change after verification: decrypt only private copies
        raise UnsafeModelError(
            "not held in private memory: load only what verify_and_hold returned",
            path=str(files.root / shared[0]),
        )
    with contextlib.ExitStack() as stack:
        # (3) the containers' bytes are the verified private buffers: nothing is re-opened
        readers = [
            stack.enter_context(ContainerReader(files.root / rel, files.view(rel)))
            for rel in containers
        ]
        root: str | None = None
        graph = b""
        jobs = []
        manifests = []
        for reader in readers:
            reader.unlock(identities)
            manifests.append(checked_manifest(reader))
            if files.single:  # one container: the file it holds, whatever it is called now
                onnx_rel = reader.index.path
            if root is not None and reader.layer_root != root:
                raise VerificationError(
                    "containers of different models are mixed", path=str(reader.path)
                )
            root = reader.layer_root
            if reader.index.path == onnx_rel:
                graph = reader.read_stream("graph")
        if not graph:
            raise FormatError(
                f"no ONNX graph for {onnx_rel!r} in the encrypted model", path=str(path)
            )
        wanted = {
            t.name
            for t in onnx.ModelProto.FromString(graph).graph.initializer
            if any(e.key == "location" and e.value == MEMORY_LOCATION for e in t.external_data)
        }
        for reader, manifest in zip(readers, manifests, strict=True):
            mine = [t for t in reader.index.tensors if t.record == onnx_rel and t.name in wanted]
            if mine:
                checker = TensorChecker(manifest, reader.index, str(reader.path))
                jobs += [
                    (reader, checker, t, array)
                    for t, array in zip(mine, _holders(mine), strict=True)
                ]
        missing = wanted - {job[2].name for job in jobs}
        if missing:
            raise FormatError(
                f"the graph expects tensor {sorted(missing)[0]!r}, which no container holds",
                path=str(path),
            )

        def decrypt(job: tuple[Any, Any, Any, np.ndarray]) -> None:
            reader, checker, tensor, array = job
            hasher = new_hasher(checker.algorithm)
            reader.decrypt_tensor_into(tensor, array.reshape(-1).view(np.uint8).data, hasher)
            checker.check(tensor, hasher.hexdigest())

        jobs.sort(key=lambda j: -j[2].length)
        with ThreadPoolExecutor(max_workers=threads or default_threads()) as pool:
            list(pool.map(decrypt, jobs))
        for _, checker, _, _ in jobs:
            checker.raise_if_failed()
    decrypted_at = time.perf_counter()
    options = session_options()
    values = [_ort_value(array, tensor.dtype) for _, _, tensor, array in jobs]
    if jobs:
        options.add_external_initializers([tensor.name for _, _, tensor, _ in jobs], values)
    session = ort.InferenceSession(graph, options, providers=providers)
    return VerifiedSession(
        session=session,
        provider=session.get_providers()[0],
        encrypted=True,
        model=str(path),
        layer_root=root,
        tensors_verified=len(jobs),
        verification=verified.report,
        timings={
            "verify_s": verified_at - started,
            "decrypt_and_check_s": decrypted_at - verified_at,
            "session_s": time.perf_counter() - decrypted_at,
        },
        _buffers=[values, [j[3] for j in jobs]],
    )


def _graph_from_files(files: Any, rel: str, options: Any) -> tuple[bytes, list[Any], list[Any]]:
    """Graph bytes for the ONNX file ``rel`` of verified private buffers; its weights are added
    to ``options`` as OrtValues over that memory. Returns (graph, OrtValues, arrays): keep the
    last two alive as long as the session."""
    from modelguard.formats.onnx import runtime_graph

    graph, memory = runtime_graph(
        files.root / rel, root=files.root, files=files, keep=lambda t: in_memory_dtype(t.dtype)
    )
    arrays = [_verified_array(t.read(), t.dtype, t.shape) for t in memory]
    values = [_ort_value(array, t.dtype) for array, t in zip(arrays, memory, strict=True)]
    if memory:
        options.add_external_initializers([t.name for t in memory], values)
    return graph, values, arrays


def session_from_files(
    files: Any, rel: str, *, options: Any = None, providers: Sequence[str] = (CPU,)
) -> Any:
    """An ``InferenceSession`` for the ONNX file ``rel`` of a verified model's private buffers
    (``VerifiedModel.files``): graph as bytes, weights in place; no path is opened."""
    import onnxruntime as ort

    options = options if options is not None else session_options()
    graph, values, arrays = _graph_from_files(files, rel, options)
    session = ort.InferenceSession(graph, options, providers=list(providers))
    session._modelguard = [values, arrays, files]  # the weights' memory lives with the session
    return session


def _open_plaintext(
    path: Path, verified: Any, providers: list[str], started: float
) -> VerifiedSession:
    """ONNX Runtime gets the graph as bytes and every tensor from the verified buffers."""
    import onnxruntime as ort

    verified_at = time.perf_counter()
    files = verified.files
    options = session_options()
    graph, values, arrays = _graph_from_files(files, _onnx_member(files, path, False), options)
    loaded_at = time.perf_counter()
    session = ort.InferenceSession(graph, options, providers=providers)
    manifest = verified.manifest
    return VerifiedSession(
        session=session,
        provider=session.get_providers()[0],
        encrypted=False,
        model=str(path),
        layer_root=manifest.layer_root if manifest is not None else None,
        tensors_verified=manifest.tensor_count if manifest is not None else 0,
        verification=verified.report,
        timings={
            "verify_s": verified_at - started,
            "graph_s": loaded_at - verified_at,
            "session_s": time.perf_counter() - loaded_at,
        },
        # the session reads its weights from these verified private buffers
        _buffers=[values, arrays, files],
    )


def open_verified(
    path: Path | str,
    *,
    signature: Path | str | None = None,
    keys: Sequence[Any] = (),
    policy: Any = None,
    identity: Any = None,
    passphrase: bytes | str | None = None,
    key: bytes | None = None,
    providers: str | Sequence[str] = "auto",
    ledger_url: str | None = None,
    require_ledger: bool = False,
    allow_rollback: bool = False,
    threads: int | None = None,
    checks: Any = None,
    progress: Any = None,
) -> VerifiedSession:
    """Like :func:`open_session`, returning the session with what was verified.

    ``progress(n, total)``: bytes hashed while verifying (``modelguard.manifest.ProgressCallback``).
    """
    from modelguard.encryption.model import identities_from, is_encrypted

    model = Path(path)
    if not model.exists():
        raise BadInputError(f"no such model file or directory: {model}")
    chosen = choose_providers(providers)
    if is_encrypted(model):  # fail early, before verifying, when no identity was given
        identities_from(identity, passphrase, key)
    started = time.perf_counter()
    # (2) every file is read once into private memory and verified there; nothing after this
    # line opens a model path again
    verified = _verify(
        model, signature, keys, policy, ledger_url, require_ledger, allow_rollback, checks, progress
    )
    return session_from_verified(
        verified,
        identity=identity,
        passphrase=passphrase,
        key=key,
        providers=chosen,
        threads=threads,
        started=started,
    )


def holds_containers(files: Any) -> bool:
    """True when the verified buffers are encrypted containers (decided from the bytes held)."""
    from modelguard.encryption.container import MAGIC, SUFFIX

    if files.single:
        return bytes(files.view(files.members[0])[: len(MAGIC)]) == MAGIC
    return any(rel.endswith(SUFFIX) for rel in files.members)


def session_from_verified(
    verified: Any,
    *,
    identity: Any = None,
    passphrase: bytes | str | None = None,
    key: bytes | None = None,
    providers: str | Sequence[str] = "auto",
    threads: int | None = None,
    started: float | None = None,
) -> VerifiedSession:
    """An ONNX Runtime session built only from a :class:`~modelguard.signing.report.VerifiedModel`.

    The model's files are not touched again: they may have been renamed, rewritten or removed
    since verification, the session still runs exactly the bytes that verified.
    """
    from modelguard.encryption.model import identities_from

    chosen = choose_providers(providers)
    begun = time.perf_counter() if started is None else started
    if holds_containers(verified.files):
        identities = identities_from(identity, passphrase, key)
        return _open_encrypted(verified.path, identities, verified, chosen, threads, begun)
    return _open_plaintext(verified.path, verified, chosen, begun)


def open_session(
    path: Path | str,
    *,
    signature: Path | str | None = None,
    keys: Sequence[Any] = (),
    policy: Any = None,
    identity: Any = None,
    passphrase: bytes | str | None = None,
    key: bytes | None = None,
    providers: str | Sequence[str] = "auto",
    ledger_url: str | None = None,
    require_ledger: bool = False,
    allow_rollback: bool = False,
    checks: Any = None,
    progress: Any = None,
) -> Any:
    """An ``onnxruntime.InferenceSession`` for a verified (and, if encrypted, decrypted) model.

    Raises a :class:`~modelguard.errors.VerificationError` (exit 1) before any decryption when
    the signature, policy or ledger check fails, and on any tampered segment or tensor.
    ``checks``: a :class:`~modelguard.policy.PolicyChecks` for the policy's ``[certificate]``
    and ``[audit.*]`` tables (``modelguard.gates.STANDARD_CHECKS``); without one they fail closed.
    ``progress(n, total)``: bytes hashed while verifying, for a progress display.
    """
    verified = open_verified(
        path,
        signature=signature,
        keys=keys,
        policy=policy,
        identity=identity,
        passphrase=passphrase,
        key=key,
        providers=providers,
        ledger_url=ledger_url,
        require_ledger=require_ledger,
        allow_rollback=allow_rollback,
        checks=checks,
        progress=progress,
    )
    session = verified.session
    session._modelguard = verified  # the OrtValues' memory lives as long as the session
    return session
