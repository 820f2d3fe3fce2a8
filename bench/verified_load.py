"""Verified loading vs plain ONNX Runtime: what "verify what you load" costs, side by side.

    $ .venv/bin/python -P bench/verified_load.py              # 256 MiB model, 3 interleaved repeats
    $ .venv/bin/python -P bench/verified_load.py --mib 1024 --repeats 5

Builds an ONNX model (a chain of 1024x1024 float32 MatMuls) whose weights lie in one external
data file, signs it as a directory, then runs each variant in a fresh process, interleaved
(plain, verified, plain, verified ...), and prints the median wall time, the peak RSS and the
ratio verified/plain:

- ``plain``: ``onnxruntime.InferenceSession("model.onnx")``: no verification; ONNX Runtime
  reads the graph and maps the external data by path itself.
- ``verified``: ``modelguard.runtime.open_verified``: every file read once into private
  memory, verified there (signature, binding, layout digests, external references), then the
  session built from those buffers (graph as bytes, weights as OrtValues in place).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, time
from pathlib import Path
variant, model, pub = sys.argv[1:4]
started = time.perf_counter()
if variant == "plain":
    import onnxruntime as ort
    session = ort.InferenceSession(str(Path(model) / "model.onnx"), providers=["CPUExecutionProvider"])
    timings = {}
else:
    from modelguard.keys import load_public_key
    from modelguard.runtime import open_verified
    verified = open_verified(model, keys=[load_public_key(Path(pub))], providers="cpu")
    timings = verified.timings
seconds = time.perf_counter() - started
# VmHWM restarts at exec (ru_maxrss would include the parent's memory at fork)
status = Path("/proc/self/status").read_text()
rss = int(status.split("VmHWM:")[1].split()[0]) // 1024
print(json.dumps({"seconds": seconds, "rss_mib": rss, "timings": timings}))
"""


def build(directory: Path, mib: int) -> tuple[Path, Path]:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from modelguard.keys import generate_key, write_keypair
    from modelguard.signing.sign import sign_model

    n, rng = 1024, np.random.default_rng(0)
    count = max(1, mib // 4)  # 4 MiB per 1024x1024 float32 weight
    inits, nodes, previous = [], [], "x"
    for i in range(count):
        inits.append(
            numpy_helper.from_array(rng.standard_normal((n, n)).astype(np.float32), f"w{i}")
        )
        nodes.append(helper.make_node("MatMul", [previous, f"w{i}"], [f"h{i}"]))
        previous = f"h{i}"
    nodes.append(helper.make_node("Identity", [previous], ["y"]))
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    target = directory / "model"
    target.mkdir()
    onnx.save(model, target / "model.onnx", save_as_external_data=True, location="w.bin")
    key = generate_key()
    _, pub = write_keypair(directory, "bench", key, None)
    sign_model(target, key, record=False)
    return target, pub


def run(variant: str, model: Path, pub: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, variant, str(model), str(pub)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="model size in MiB")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print("load average before:", os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        model, pub = build(Path(tmp), args.mib)
        results: dict[str, list[dict]] = {"plain": [], "verified": []}
        for _ in range(args.repeats):
            for variant in results:
                results[variant].append(run(variant, model, pub))
    print(f"model: {args.mib} MiB of external data; median of {args.repeats}, interleaved")
    print("| variant | seconds | peak RSS MiB |")
    print("|---|---|---|")
    medians = {}
    for variant, rows in results.items():
        medians[variant] = statistics.median(r["seconds"] for r in rows)
        rss = statistics.median(r["rss_mib"] for r in rows)
        print(f"| {variant} | {medians[variant]:.2f} | {rss:.0f} |")
    phases = results["verified"][0]["timings"]
    print("verified phases (first run):", {k: round(v, 2) for k, v in phases.items()})
    print(f"ratio verified/plain: {medians['verified'] / medians['plain']:.2f}x")
    print("load average after:", os.getloadavg())


if __name__ == "__main__":
    main()
