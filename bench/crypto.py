"""Encryption throughput and verified encrypted open vs plain open, side by side in one run.

    $ .venv/bin/python bench/crypto.py                    # 1 GiB ONNX: 16 MatMul layers, 4096x4096 fp32
    $ .venv/bin/python bench/crypto.py --layers 4 --repeats 1   # quick look (256 MiB)

Writes one ONNX model, signs nothing of it in plaintext, encrypts it (X25519 recipient) and
signs the container, then times, interleaved, ``--repeats`` times (median reported):

- ``AES-256-GCM, 1 thread``: the primitive alone on one 64 MiB buffer (the hardware ceiling).
- ``encrypt (container only)``: ``write_container`` from a ready plan: AES-GCM over every
  segment with the thread pool, straight from the mmap'd model into the mmap'd container.
- ``encrypt_model (end to end)``: plus parsing, the sha256 manifest and the ONNX runtime graph.
- ``decrypt (container only)``: unlock + every segment into one preallocated buffer.
- ``decrypt_model (end to end)``: plus every tensor checked against its sha256 digest, file write.
- ``plain InferenceSession(path)``: ONNX Runtime opening the plaintext file (CPU provider).
- ``open_session (verified, encrypted)``: verify signature + container digest, unwrap, decrypt
  into memory, check every tensor digest, build the session from OrtValues.
All files sit in the page cache (warm), as they would on a serving host after the first load;
by default in /dev/shm, so writes measure the work, not this VM's disk (``--workdir`` to change).
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/ledger.py would shadow the ``ledger`` package: drop this script's folder from the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from modelguard.encryption import ContainerReader, decrypt_model, encrypt_model  # noqa: E402
from modelguard.encryption.container import default_threads, write_container  # noqa: E402
from modelguard.encryption.keywrap import X25519Identity, X25519Recipient  # noqa: E402
from modelguard.encryption.model import plan_model  # noqa: E402
from modelguard.keys import generate_key  # noqa: E402
from modelguard.runtime import open_verified  # noqa: E402


def write_model(path: Path, layers: int, width: int) -> int:
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(
            (rng.standard_normal((width, width), dtype=np.float32) * 0.02), f"w{i}"
        )
        for i in range(layers)
    ]
    nodes = [
        helper.make_node("MatMul", ["x" if i == 0 else f"h{i}", f"w{i}"], [f"h{i + 1}"])
        for i in range(layers)
    ]
    graph = helper.make_graph(
        nodes,
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info(f"h{layers}", TensorProto.FLOAT, ["N", width])],
        weights,
    )
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path
    )
    return path.stat().st_size


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--layers", type=int, default=16, help="4096x4096 fp32 layers (16 = 1 GiB)")
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("/dev/shm") if Path("/dev/shm").is_dir() else None,
        help="where the model and containers go (default /dev/shm: CPU work, not disk speed)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        src = work / "big.onnx"
        size = write_model(src, args.layers, args.width)
        signer, identity = generate_key(), X25519PrivateKey.generate()
        enc = work / "enc" / "big.onnx.mgenc"
        enc.parent.mkdir()
        made = encrypt_model(
            src, enc, recipients=[identity.public_key()], sign_key=signer, record=False
        )
        assert made.signature is not None
        plans, _ = plan_model(src)
        x = np.random.default_rng(1).standard_normal((1, args.width), dtype=np.float32)
        buffer = bytearray(size)
        block = os.urandom(64 << 20)
        aead = AESGCM(os.urandom(32))
        out_block = bytearray(len(block) + 16)
        threads = default_threads()

        def aes_one_thread() -> None:
            aead.encrypt_into(bytes(12), block, b"", out_block)

        def container_encrypt() -> None:
            write_container(
                plans[0], work / "again.mgenc", [X25519Recipient(identity.public_key())]
            )

        def container_decrypt() -> None:
            with ContainerReader(enc) as reader:
                reader.unlock([X25519Identity(identity)]).decrypt_into(memoryview(buffer))

        def end_to_end_encrypt() -> None:
            encrypt_model(src, work / "e2e.mgenc", recipients=[identity.public_key()])

        def end_to_end_decrypt() -> None:
            decrypt_model(enc, work / "plain.onnx", identity=identity)

        def plain_open() -> None:
            ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"x": x})

        phases: list[dict[str, float]] = []

        def verified_open() -> None:
            v = open_verified(
                enc,
                signature=made.signature,
                keys=[signer.public_key()],
                identity=identity,
                providers="cpu",
            )
            v.session.run(None, {"x": x})
            phases.append(v.timings)

        runs: dict[str, Callable[[], None]] = {
            "AES-256-GCM encrypt_into, 1 thread, 64 MiB": aes_one_thread,
            f"encrypt (container only, {threads} threads)": container_encrypt,
            "encrypt_model (end to end)": end_to_end_encrypt,
            f"decrypt (container only, {threads} threads)": container_decrypt,
            "decrypt_model (end to end, digests checked)": end_to_end_decrypt,
            "plain InferenceSession(path) + 1 run": plain_open,
            "open_session verified encrypted + 1 run": verified_open,
        }
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, fn in runs.items():
                times[name].append(timed(fn))
        print(f"workdir: {args.workdir}, load average (1/5/15 min): {os.getloadavg()}")
        print(
            f"model: {size / 2**30:.3f} GiB ({args.layers} x {args.width}x{args.width} fp32), "
            f"{os.cpu_count()} CPUs, {threads} threads, median of {args.repeats}"
        )
        print(f"{'what':48s} {'seconds':>9s} {'GB/s':>7s}")
        for name, samples in times.items():
            median = statistics.median(samples)
            nbytes = len(block) if name.startswith("AES") else size
            print(f"{name:48s} {median:9.3f} {nbytes / median / 1e9:7.2f}")
        plain = statistics.median(times["plain InferenceSession(path) + 1 run"])
        verified = statistics.median(times["open_session verified encrypted + 1 run"])
        print(f"verified encrypted open / plain open = {verified / plain:.2f}x (target <= 1.5x)")
        for phase in phases[0]:
            print(
                f"  open_session phase {phase}: {statistics.median(p[phase] for p in phases):.3f} s"
            )


if __name__ == "__main__":
    main()
