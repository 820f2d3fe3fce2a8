"""Hashing throughput: modelguard manifests vs single-thread hashlib vs model_signing, side by side.

    $ .venv/bin/python bench/hashing.py                 # 1 GiB ONNX model: 8 x 128 MiB initializers
    $ .venv/bin/python bench/hashing.py --size-mib 256 --repeats 1   # quick look

Writes one ONNX file (initializers inline as raw_data, streamed to disk so the model is never
held in memory), warms the page cache, then times every method on the same file, interleaved,
``--repeats`` times, and prints the median of each plus its ratio to single-thread hashlib sha256.
The file is deleted at the end. Needs model-signing (dev extra) for its columns.

What the rows measure:
- ``hashlib sha256, 1 thread``: the baseline, mmap + 32 MiB updates on one thread.
- ``blake3, 1 thread``: context: how much faster the hash function alone is.
- ``modelguard manifest sha256/blake3``: ``build_manifest`` (what ``modelguard manifest`` runs):
  parse + whole-file digest + one digest per tensor, thread pool over all of them.
- ``modelguard tensor digests only``: the per-layer part alone (thread pool over tensors).
- ``model_signing ...``: ``model_signing.hashing.Config`` file and shard serialization.
"""

from __future__ import annotations

import argparse
import mmap
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from modelguard.formats import parse_model_file
from modelguard.manifest import build_manifest, hash_view


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, length: int) -> bytes:
    return _varint(number << 3 | 2) + _varint(length)


def write_big_onnx(path: Path, *, tensors: int, tensor_mib: int, seed: int = 0) -> int:
    """Stream an ONNX model with ``tensors`` float32 initializers of ``tensor_mib`` MiB each."""
    elements = tensor_mib * 1024 * 1024 // 4
    nodes = [
        helper.make_node("Add", ["x" if i == 0 else f"h{i}", f"w{i}"], [f"h{i + 1}"])
        for i in range(tensors)
    ]
    graph = helper.make_graph(
        nodes,
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [elements])],
        [helper.make_tensor_value_info(f"h{tensors}", TensorProto.FLOAT, [elements])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    graph_bytes = model.graph.SerializeToString()
    model.ClearField("graph")
    heads = []
    for i in range(tensors):
        head = TensorProto(
            name=f"w{i}", data_type=TensorProto.FLOAT, dims=[elements]
        ).SerializeToString()
        head += _field(9, elements * 4)  # raw_data follows
        heads.append(head)
    graph_len = len(graph_bytes) + sum(
        len(_field(5, len(h) + elements * 4)) + len(h) + elements * 4 for h in heads
    )
    rng = np.random.default_rng(seed)
    with open(path, "wb") as out:
        out.write(model.SerializeToString())
        out.write(_field(7, graph_len) + graph_bytes)
        for head in heads:
            out.write(_field(5, len(head) + elements * 4) + head)
            left = elements * 4
            while left:
                step = min(left, 16 * 1024 * 1024)
                out.write(rng.integers(0, 256, step, dtype=np.uint8).tobytes())
                left -= step
    return path.stat().st_size


def hashlib_single(path: Path) -> str:
    with (
        open(path, "rb") as handle,
        mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped,
    ):
        return hash_view(memoryview(mapped), "sha256")


def blake3_single(path: Path) -> str:
    with (
        open(path, "rb") as handle,
        mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped,
    ):
        return hash_view(memoryview(mapped), "blake3")


def tensor_digests_only(path: Path, threads: int) -> None:
    parsed = parse_model_file(path, root=path.parent)
    assert parsed is not None
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda t: hash_view(t.read(), "sha256"), parsed.tensors))


def methods(path: Path, threads: int) -> dict[str, Callable[[], object]]:
    found: dict[str, Callable[[], object]] = {
        "hashlib sha256, 1 thread (baseline)": lambda: hashlib_single(path),
        "blake3, 1 thread (context)": lambda: blake3_single(path),
        "modelguard manifest sha256 (1 thread)": lambda: build_manifest(
            path, hash_algorithm="sha256", threads=1
        ),
        f"modelguard manifest sha256 ({threads} threads)": lambda: build_manifest(
            path, hash_algorithm="sha256", threads=threads
        ),
        f"modelguard manifest blake3 ({threads} threads)": lambda: build_manifest(
            path, hash_algorithm="blake3", threads=threads
        ),
        f"modelguard tensor digests only, sha256 ({threads} threads)": lambda: tensor_digests_only(
            path, threads
        ),
    }
    try:
        from model_signing import hashing as oms
    except ImportError:
        print("model_signing not installed: its rows are skipped (pip install -e '.[dev]')")
        return found
    found["model_signing files sha256"] = lambda: (
        oms.Config().use_file_serialization(hashing_algorithm="sha256").hash(path)
    )
    found["model_signing shards sha256 (128 MiB shards)"] = lambda: (
        oms.Config()
        .use_shard_serialization(hashing_algorithm="sha256", shard_size=128 * 1024 * 1024)
        .hash(path)
    )
    found["model_signing files blake3"] = lambda: (
        oms.Config().use_file_serialization(hashing_algorithm="blake3").hash(path)
    )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--size-mib", type=int, default=1024, help="model size (default 1024 = 1 GiB)"
    )
    parser.add_argument("--tensors", type=int, default=8, help="number of initializers")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to write the model (default: a temp dir)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "big.onnx"
        size = write_big_onnx(path, tensors=args.tensors, tensor_mib=args.size_mib // args.tensors)
        onnx.checker.check_model(str(path))  # the file really is a valid ONNX model
        hashlib_single(path)  # warm the page cache
        timings: dict[str, list[float]] = {}
        table = methods(path, args.threads)
        for _ in range(args.repeats):
            for name, run in table.items():
                start = time.perf_counter()
                run()
                timings.setdefault(name, []).append(time.perf_counter() - start)
        print(
            f"model: {size / 2**30:.2f} GiB ONNX, {args.tensors} initializers (raw_data inline); "
            f"{os.cpu_count()} CPUs; median of {args.repeats} runs"
        )
        base = statistics.median(timings["hashlib sha256, 1 thread (baseline)"])
        print(f"{'method':58s} {'seconds':>8s} {'MiB/s':>8s} {'x hashlib':>10s}")
        for name, values in timings.items():
            median = statistics.median(values)
            print(f"{name:58s} {median:8.3f} {size / 2**20 / median:8.0f} {base / median:10.2f}")


if __name__ == "__main__":
    main()
