"""Sign and verify a >= 1 GiB model with modelguard and with model_signing (key mode), side by side.

    $ .venv/bin/python -P bench/signing.py                       # 1 GiB safetensors, 8 x 128 MiB tensors
    $ .venv/bin/python -P bench/signing.py --shards 4            # the same 1 GiB as 4 shard files
    $ .venv/bin/python -P bench/signing.py --size-mib 256 --repeats 1   # quick look

Writes the model (random float32 bytes, streamed), warms the page cache, then runs every
method on the same files, interleaved, ``--repeats`` times, and prints medians and the ratio
model_signing time / modelguard time (> 1 means modelguard is faster). Both sides use the
same ECDSA P-256 key and write a Sigstore bundle; modelguard additionally parses the model and
hashes every tensor and the structure (and verifies all of them). Ledger recording is off (it
is not part of the comparison). Files are deleted at the end.

What the rows measure:
- ``hashlib sha256, 1 thread``: the floor for one whole-file SHA-256 pass over the bytes.
- ``modelguard sign/verify``: ``sign_model`` / ``verify_model`` with the default thread pool
  (whole-file SHA-256 overlapped with per-tensor SHA-256 on the other cores).
- ``modelguard ... threads=1``: the same on one thread (the overlap switched off).
- ``model_signing sign/verify key``: ``model_signing.signing.Config().use_elliptic_key_signer``
  and ``verifying.Config().use_elliptic_key_verifier``, default file serialization.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import mmap
import os
import shutil
import statistics
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import model_signing
import numpy as np

from modelguard.keys import generate_key, write_keypair
from modelguard.signing.sign import sign_model
from modelguard.signing.verify import verify_model


def write_safetensors(path: Path, *, tensors: int, tensor_mib: int, seed: int) -> int:
    """Stream a safetensors file of ``tensors`` float32 tensors of ``tensor_mib`` MiB each."""
    nbytes = tensor_mib * 1024 * 1024
    header: dict[str, object] = {}
    for i in range(tensors):
        header[f"layer{i}.weight"] = {
            "dtype": "F32",
            "shape": [nbytes // 4],
            "data_offsets": [i * nbytes, (i + 1) * nbytes],
        }
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    rng = np.random.default_rng(seed)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(text)) + text)
        for _ in range(tensors):
            for _ in range(tensor_mib // 16):
                handle.write(rng.bytes(16 * 1024 * 1024))
            if tensor_mib % 16:
                handle.write(rng.bytes((tensor_mib % 16) * 1024 * 1024))
    return path.stat().st_size


def sha256_file(path: Path) -> str:
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
        hasher = hashlib.sha256()
        memory = memoryview(view)
        for start in range(0, len(memory), 32 * 1024 * 1024):
            hasher.update(memory[start : start + 32 * 1024 * 1024])
        memory.release()
        return hasher.hexdigest()


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="total model size (MiB)")
    parser.add_argument("--tensor-mib", type=int, default=128, help="size of each tensor (MiB)")
    parser.add_argument("--shards", type=int, default=1, help="number of safetensors files")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="mg-bench-signing-", dir=args.workdir))
    try:
        model = base / "model"
        model.mkdir()
        per_shard = args.size_mib // args.shards
        total = 0
        for shard in range(args.shards):
            total += write_safetensors(
                model / f"model-{shard:05d}-of-{args.shards:05d}.safetensors",
                tensors=max(1, per_shard // args.tensor_mib),
                tensor_mib=min(args.tensor_mib, per_shard),
                seed=shard,
            )
        key = generate_key("ecdsa-p256")
        priv, pub = write_keypair(base / "keys", "bench", key, None)
        mg_sig, oms_sig = base / "mg.sig", base / "oms.sig"
        files = sorted(model.iterdir())
        for path in files:  # warm the page cache
            sha256_file(path)

        def oms_sign() -> None:
            model_signing.signing.Config().use_elliptic_key_signer(private_key=priv).sign(
                model, oms_sig
            )

        def oms_verify() -> None:
            model_signing.verifying.Config().use_elliptic_key_verifier(public_key=pub).verify(
                model, oms_sig
            )

        def mg_verify(threads: int | None) -> None:
            verify_model(model, mg_sig, keys=[key.public_key()], threads=threads).raise_if_failed()

        def mg_sign(threads: int | None) -> None:
            sign_model(model, key, signature_path=mg_sig, record=False, threads=threads)

        methods: dict[str, Callable[[], object]] = {
            "hashlib sha256, 1 thread": lambda: [sha256_file(p) for p in files],
            "modelguard sign": lambda: mg_sign(None),
            "modelguard sign, threads=1": lambda: mg_sign(1),
            "model_signing sign key": oms_sign,
            "modelguard verify": lambda: mg_verify(None),
            "modelguard verify, threads=1": lambda: mg_verify(1),
            "model_signing verify key": oms_verify,
        }
        times: dict[str, list[float]] = {name: [] for name in methods}
        for _ in range(args.repeats):
            for name, run in methods.items():
                times[name].append(timed(run))
        median = {name: statistics.median(values) for name, values in times.items()}
        gib = total / 2**30
        print(
            f"model: {total / 2**20:.0f} MiB in {args.shards} file(s), "
            f"{max(1, per_shard // args.tensor_mib) * args.shards} tensors; "
            f"cores: {os.cpu_count()}; repeats: {args.repeats} (median)"
        )
        print(f"{'method':34s} {'seconds':>8s} {'GiB/s':>7s}")
        for name, value in median.items():
            print(f"{name:34s} {value:8.3f} {gib / value:7.2f}")
        sign_ratio = median["model_signing sign key"] / median["modelguard sign"]
        verify_ratio = median["model_signing verify key"] / median["modelguard verify"]
        print(f"sign:   model_signing / modelguard = {sign_ratio:.2f}x")
        print(f"verify: model_signing / modelguard = {verify_ratio:.2f}x")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
