"""Encryption targets of issue 15, side by side in one run: encrypt, decrypt into memory, verified open.

    $ .venv/bin/python bench/crypto.py                    # 1 GiB ONNX: 16 MatMul layers, 4096x4096 fp32
    $ .venv/bin/python bench/crypto.py --layers 4 --repeats 1   # quick look (256 MiB)

Writes one ONNX model, encrypts it once (X25519 recipient) and signs the container, then
times every row below in each of ``--repeats`` rounds, interleaved (medians reported):

- primitives (the floors): AES-256-GCM ``encrypt_into`` on one thread (64 MiB) and one
  SHA-256 pass over the model on one thread (encrypt must hash every byte once with SHA-256
  for the whole-file digest a signature records, so this is encrypt's serial floor).
- ``encrypt_model``, end to end (open, parse, one scan: SHA-256 files + BLAKE3 tensors, the
  ONNX runtime graph, AES-GCM of every segment, container written): target >= 1.8 GB/s.
- decrypt into memory, the ``decrypt_and_check_s`` phase of ``open_session`` (unlock, every
  tensor decrypted into its array and checked against its signed digest): target >= 2.5 GB/s.
- plain ``onnxruntime.InferenceSession(path)`` + 1 run against ``open_session`` of the signed
  container (verify the signature over the container, unlock, decrypt, check every tensor,
  session from OrtValues) + 1 run: target verified / plain <= 1.2x.

Files sit in the page cache (warm), as on a serving host after the first load; by default in
/dev/shm, so writes measure the work, not this VM's disk (``--workdir`` to change). Everything
the script writes is deleted at the end. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from onnx import TensorProto, helper, numpy_helper

from modelguard.encryption import encrypt_model
from modelguard.encryption.container import default_threads
from modelguard.keys import generate_key
from modelguard.runtime import open_verified

ENCRYPT_TARGET = 1.8  # GB/s
DECRYPT_TARGET = 2.5  # GB/s
OPEN_TARGET = 1.2  # verified encrypted open / plain open


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


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


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
    load_before = os.getloadavg()

    work = Path(tempfile.mkdtemp(prefix="modelguard-bench-crypto-", dir=args.workdir))
    try:
        src = work / "big.onnx"
        size = write_model(src, args.layers, args.width)
        signer, identity = generate_key(), X25519PrivateKey.generate()
        enc = work / "enc" / "big.onnx.mgenc"
        enc.parent.mkdir()
        made = encrypt_model(
            src, enc, recipients=[identity.public_key()], sign_key=signer, record=False
        )
        assert made.signature is not None
        x = np.random.default_rng(1).standard_normal((1, args.width), dtype=np.float32)
        block = os.urandom(64 << 20)
        aead = AESGCM(os.urandom(32))
        out_block = bytearray(len(block) + 16)
        model_bytes = memoryview(src.read_bytes())  # held in memory: the primitive alone
        threads = default_threads()

        def aes_one_thread() -> None:
            aead.encrypt_into(bytes(12), block, b"", out_block)

        def sha256_one_thread() -> None:
            hashlib.sha256(model_bytes).digest()

        def encrypt() -> None:
            encrypt_model(src, work / "e2e.mgenc", recipients=[identity.public_key()])
            (work / "e2e.mgenc").unlink()

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
            "aes": aes_one_thread,
            "sha": sha256_one_thread,
            "encrypt": encrypt,
            "plain": plain_open,
            "verified": verified_open,
        }
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, fn in runs.items():
                times[name].append(timed(fn))
        median = {name: statistics.median(samples) for name, samples in times.items()}
        decrypt_s = statistics.median(p["decrypt_and_check_s"] for p in phases)
        load_after = os.getloadavg()

        def rate(seconds: float, nbytes: int = size) -> float:
            return nbytes / seconds / 1e9

        print(f"bench/crypto.py: {size / 2**30:.3f} GiB ONNX model ({args.layers} x "
              f"{args.width}x{args.width} fp32) in {args.workdir or tempfile.gettempdir()}, "
              f"{os.cpu_count()} CPUs, {threads} worker threads, median of {args.repeats} "
              "interleaved rounds")  # fmt: skip
        print(f"load average (1/5/15 min) before: {load_before[0]:.2f} {load_before[1]:.2f} "
              f"{load_before[2]:.2f}, after: {load_after[0]:.2f} {load_after[1]:.2f} "
              f"{load_after[2]:.2f}")  # fmt: skip
        busiest = max(load_before[0], load_after[0])
        cpus = os.cpu_count() or 1
        print("machine: quiet" if busiest <= 0.5 * cpus else
              f"machine: BUSY (1-min load {busiest:.2f} on {cpus} CPUs): other work shared the "
              "cores, so MET/MISSED below is not the quiet-machine verdict; rerun when idle")  # fmt: skip
        print()
        print(f"{'row':62s} {'seconds':>8s} {'GB/s':>6s}  target")
        rows = [
            ("primitive: AES-256-GCM encrypt_into, 1 thread, 64 MiB", median["aes"],
             rate(median["aes"], len(block)), ""),
            ("primitive: SHA-256 of the model, 1 thread (encrypt's floor)", median["sha"],
             rate(median["sha"]), ""),
            ("encrypt_model end to end (X25519, not signed)", median["encrypt"],
             rate(median["encrypt"]),
             f">= {ENCRYPT_TARGET} GB/s: {verdict(rate(median['encrypt']) >= ENCRYPT_TARGET)}"),
            ("decrypt into memory (open_session decrypt + digest phase)", decrypt_s,
             rate(decrypt_s),
             f">= {DECRYPT_TARGET} GB/s: {verdict(rate(decrypt_s) >= DECRYPT_TARGET)}"),
            ("plain InferenceSession(path) + 1 run", median["plain"], None, ""),
            ("open_session verified encrypted + 1 run", median["verified"], None, ""),
        ]  # fmt: skip
        for name, seconds, gbps, target in rows:
            shown = f"{gbps:6.2f}" if gbps is not None else f"{'':6s}"
            print(f"{name:62s} {seconds:8.3f} {shown}  {target}")
        ratio = median["verified"] / median["plain"]
        print()
        print(f"verified encrypted open / plain open = {ratio:.2f}x "
              f"(target <= {OPEN_TARGET}x: {verdict(ratio <= OPEN_TARGET)})")  # fmt: skip
        print("open_session phases (median): " + ", ".join(
            f"{phase} {statistics.median(p[phase] for p in phases):.3f} s" for phase in phases[0]
        ))  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
