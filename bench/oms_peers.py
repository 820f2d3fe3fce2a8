"""modelguard vs model_signing 1.1.1, whole processes side by side: sign, verify, peak memory.

    $ .venv/bin/python bench/oms_peers.py                        # 1 GiB file + 4 GiB in 4 shards
    $ .venv/bin/python bench/oms_peers.py --size-mib 256 --repeats 1   # quick look
    $ .venv/bin/python bench/oms_peers.py --scaling               # also 1 core vs 2 cores

Writes two models under ``--tmp`` (deleted at the end): one safetensors file of ``--size-mib``
MiB, and a Hugging Face style sharded model (``model-0000i-of-0000N.safetensors`` plus
``model.safetensors.index.json`` and ``config.json``) of ``--multi-factor`` times that size
in ``--shards`` files. The page cache is warmed, then every command runs as a whole process
(CLI start-up included), interleaved A/B/A/B ``--repeats`` times; the table gives medians and
the ratio peer time / modelguard time (> 1: modelguard is faster).

Commands (same ECDSA P-256 key, signatures written outside the model, no ledger):
- ``model_signing sign key MODEL --private_key K --signature S`` / ``verify key ... --public_key``
  (default: whole-file SHA-256 resources);
- ``modelguard sign MODEL --key K --signature S --no-ledger`` / ``verify MODEL --key P
  --signature S``, default (SHA-256 OMS resources) and ``--hash blake3``.

CPU: user + system seconds of each command (``%U + %S``), the figure that decides on a machine
whose cores are taken by other jobs. Memory: peak RSS as GNU ``/usr/bin/time`` reports it
(``%M``), and the peaks of anonymous and
file-backed resident memory sampled every 10 ms from ``/proc/PID/status`` (RssAnon, RssFile).
``--scaling`` reruns every command under ``taskset -c 0`` (one core) to give the 1 -> 2 core slope.

Bytecode: modelguard's ``.pyc`` files are written first (``compileall``), as ``pip install``
does, so no run pays for compiling the sources (the peer's installed package has its own);
``PYTHONDONTWRITEBYTECODE`` in a development shell would otherwise make every modelguard run
compile its modules again.

Each row prints the issue 15 target for its ratio and memory and whether it was met.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent
MIB = 1024 * 1024


def write_safetensors(
    path: Path, names: list[str], tensor_bytes: int, rng: np.random.Generator
) -> None:
    """Stream a safetensors file of float32 tensors of ``tensor_bytes`` each (random bytes)."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    for i, name in enumerate(names):
        header[name] = {
            "dtype": "F32",
            "shape": [tensor_bytes // 4],
            "data_offsets": [i * tensor_bytes, (i + 1) * tensor_bytes],
        }
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(text)) + text)
        for _ in names:
            left = tensor_bytes
            while left:
                step = min(left, 16 * MIB)
                handle.write(rng.bytes(step))
                left -= step


def write_models(base: Path, size_mib: int, factor: int, shards: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(15)
    single = base / "single"
    single.mkdir()
    tensors = 8
    write_safetensors(
        single / "model.safetensors",
        [f"layer{i}.weight" for i in range(tensors)],
        size_mib * MIB // tensors,
        rng,
    )
    multi = base / "multi"
    multi.mkdir()
    per_shard = size_mib * factor * MIB // shards
    weight_map: dict[str, str] = {}
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        layers = [f"model.layers.{s * tensors + i}.weight" for i in range(tensors)]
        write_safetensors(multi / name, layers, per_shard // tensors, rng)
        weight_map.update(dict.fromkeys(layers, name))
    index = {"metadata": {"total_size": per_shard * shards}, "weight_map": weight_map}
    (multi / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    (multi / "config.json").write_text(
        json.dumps({"architectures": ["Bench"], "layers": shards * tensors})
    )
    return single / "model.safetensors", multi


def warm(paths: list[Path]) -> None:
    for path in paths:
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in files:
            if file.is_file():
                with file.open("rb") as handle:
                    while handle.read(64 * MIB):
                        pass


@dataclass
class Run:
    wall: float
    cpu: float  # user + system seconds of the command (what a busy machine charges)
    maxrss_mib: float
    anon_mib: float
    file_mib: float


@dataclass
class Row:
    label: str
    argv: list[str]
    before: list[str] = field(default_factory=list)  # files to delete before each run
    runs: list[Run] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in self.runs)


def _sample(pid: int, peaks: dict[str, int], done: threading.Event) -> None:
    """Peak RssAnon/RssFile of the command, the child of ``/usr/bin/time`` (pid ``pid``)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    while not done.is_set():
        try:
            found = children.read_text().split()
        except OSError:
            return
        if found:
            pid = int(found[0])
            break
        done.wait(0.002)
    status = Path(f"/proc/{pid}/status")
    while not done.is_set():
        try:
            text = status.read_text()
        except OSError:
            return
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                peaks[key] = max(peaks.get(key, 0), int(value.split()[0]))
        done.wait(0.01)


def run_once(row: Row) -> Run:
    for name in row.before:
        Path(name).unlink(missing_ok=True)
    start = time.perf_counter()
    # GNU time's own child is forked from a small process: its maxrss is the command's alone
    # (a child forked from this Python would count this process's pages until it execs)
    argv = ["/usr/bin/time", "-f", "maxrss_kib=%M cpu=%U+%S", *row.argv]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peaks: dict[str, int] = {}
    done = threading.Event()
    sampler = threading.Thread(target=_sample, args=(child.pid, peaks, done))
    sampler.start()
    _, status, _ = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    out, err = child.communicate()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(
            f"{row.label} failed ({status}): {' '.join(row.argv)}\n{out.decode()}{err.decode()}"
        )
    maxrss_text, cpu_text = err.decode().rsplit("maxrss_kib=", 1)[1].split()[:2]
    user, system = cpu_text.removeprefix("cpu=").split("+")
    return Run(
        wall,
        float(user) + float(system),
        int(maxrss_text) / 1024,
        peaks.get("RssAnon", 0) / 1024,
        peaks.get("RssFile", 0) / 1024,
    )


def commands(model: Path, keys: Path, sigs: Path, case: str, pin: list[str]) -> list[list[Row]]:
    """Groups of rows to interleave; the first row of each group is the peer."""
    priv, pub = keys / "bench.priv", keys / "bench.pub"
    ms, mg = str(BIN / "model_signing"), str(BIN / "modelguard")
    tag = case.replace(" ", "_")
    ms_sig, mg_sig, b3_sig = (str(sigs / f"{tag}-{t}.sig") for t in ("ms", "mg", "b3"))
    sign = [
        Row(
            f"{case} sign: model_signing",
            [
                *pin,
                ms,
                "sign",
                "key",
                str(model),
                "--private_key",
                str(priv),
                "--signature",
                ms_sig,
            ],
            [ms_sig],
        ),
        Row(
            f"{case} sign: modelguard",
            [
                *pin,
                mg,
                "sign",
                str(model),
                "--sign-key",
                str(priv),
                "--signature",
                mg_sig,
                "--no-ledger",
            ],
            [mg_sig],
        ),
        Row(
            f"{case} sign: modelguard --hash blake3",
            [
                *pin,
                mg,
                "sign",
                str(model),
                "--sign-key",
                str(priv),
                "--signature",
                b3_sig,
                "--no-ledger",
                "--hash",
                "blake3",
            ],
            [b3_sig],
        ),
    ]
    verify = [
        Row(
            f"{case} verify: model_signing",
            [
                *pin,
                ms,
                "verify",
                "key",
                str(model),
                "--public_key",
                str(pub),
                "--signature",
                ms_sig,
            ],
        ),
        Row(
            f"{case} verify: modelguard",
            [*pin, mg, "verify", str(model), "--trust-key", str(pub), "--signature", mg_sig],
        ),
        Row(
            f"{case} verify: modelguard --hash blake3",
            [
                *pin,
                mg,
                "verify",
                str(model),
                "--policy",
                str(keys / "blake3.toml"),
                "--signature",
                b3_sig,
            ],
        ),
    ]
    return [sign, verify]


# issue 15's targets: (minimum ratio to model_signing, for rows whose label ends so)
TARGETS: dict[str, float] = {
    "1 file sign: modelguard": 1.4,
    "1 file verify: modelguard": 2.5,
    "1 file sign: modelguard --hash blake3": 3.0,
    "1 file verify: modelguard --hash blake3": 4.0,
    "files sign: modelguard": 1.0,
    "files verify: modelguard": 2.5,
    "files sign: modelguard --hash blake3": 3.0,
    "files verify: modelguard --hash blake3": 4.0,
}
MAX_ANON_MIB = 64
RSS_MARGIN_MIB = 128  # peak RSS <= the largest model file + this


def target_for(label: str) -> float | None:
    """The ratio target of a 2-core modelguard row (1-core rows measure the slope only)."""
    if "1 core" in label or "modelguard" not in label:
        return None
    command = label.split(" MiB ", 1)[-1]  # labels read "<case> <size> MiB <command>"
    kind = "1 file" if label.startswith("1 file") else "files"
    return TARGETS.get(f"{kind} {command}")


def verdict(row: Row, ratio: float, largest_mib: float) -> str:
    """ "met" / "MISSED: why" against the ratio and memory targets ("" where none applies)."""
    target = target_for(row.label)
    if target is None:
        return ""
    missed = []
    if ratio < target:
        missed.append(f"ratio {ratio:.2f} < {target}")
    if row.median("maxrss_mib") > largest_mib + RSS_MARGIN_MIB:
        missed.append(f"RSS > {largest_mib:.0f}+{RSS_MARGIN_MIB} MiB")
    if row.median("anon_mib") > MAX_ANON_MIB:
        missed.append(f"anon > {MAX_ANON_MIB} MiB")
    return f">= {target}x: " + ("MISSED (" + "; ".join(missed) + ")" if missed else "met")


def compile_bytecode() -> None:
    """Write modelguard's and ledger's .pyc files (what ``pip install`` does)."""
    import ledger
    import modelguard

    for package in (modelguard, ledger):
        compileall.compile_dir(Path(package.__file__).parent, quiet=1)


def uptime() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=1024, help="single-file model size (MiB)")
    parser.add_argument(
        "--multi-factor", type=int, default=4, help="multi-file model = factor x size"
    )
    parser.add_argument("--shards", type=int, default=4, help="files of the multi-file model")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--scaling", action="store_true", help="also modelguard on one core (taskset -c 0)"
    )
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    from modelguard.keys import generate_key, write_keypair

    compile_bytecode()
    base = Path(tempfile.mkdtemp(prefix="mg-bench-", dir=args.tmp))
    load_before = uptime()
    try:
        keys, sigs = base / "keys", base / "sigs"
        sigs.mkdir()
        write_keypair(keys, "bench", generate_key("ecdsa-p256"), None)
        (keys / "blake3.toml").write_text(  # the default policy accepts sha256 only
            'allowed_hash_algorithms = ["sha256", "blake3"]\n'
            'threshold = 1\n[[signers]]\nname = "bench"\npublic_key = "bench.pub"\n'
        )
        single, multi = write_models(base, args.size_mib, args.multi_factor, args.shards)
        per_file_mib = args.size_mib * args.multi_factor / args.shards
        warm([single, multi])
        groups: list[list[Row]] = []
        cases = [
            (f"1 file {args.size_mib} MiB", single),
            (f"{args.shards} files {args.size_mib * args.multi_factor} MiB", multi),
        ]
        for case, model in cases:
            groups += commands(model, keys, sigs, case, [])
            if args.scaling:
                for group in commands(model, keys, sigs, case + " 1 core", ["taskset", "-c", "0"]):
                    groups.append(group)
        for group in groups:  # signatures first, so every verify has its bundle
            if "sign" in group[0].label:
                for row in group:
                    run_once(row)
        for _ in range(args.repeats):
            for group in groups:
                for row in group:
                    row.runs.append(run_once(row))
        load_after = uptime()
        print(f"load average before {load_before}, after {load_after}; {os.cpu_count()} CPUs")
        print(
            f"{'command':58} {'median s':>9} {'x peer':>7} {'CPU s':>6} {'maxRSS MiB':>11} {'anon':>6} "
            f"{'file':>6}  target"
        )
        figures = []
        for group in groups:
            peer = group[0] if "model_signing" in group[0].label else None
            largest = args.size_mib if group[0].label.startswith("1 file") else per_file_mib
            for row in group:
                ratio = (
                    peer.median("wall") / row.median("wall") if peer else float("nan")
                )  # nan: no peer row
                status = verdict(row, ratio, largest)
                print(
                    f"{row.label:58} {row.median('wall'):9.2f} {ratio:7.2f} {row.median('cpu'):6.2f} "
                    f"{row.median('maxrss_mib'):11.0f} {row.median('anon_mib'):6.0f} "
                    f"{row.median('file_mib'):6.0f}  {status}"
                )
                figures.append(
                    {
                        "command": row.label,
                        "median_s": row.median("wall"),
                        "cpu_s": row.median("cpu"),
                        "ratio_to_model_signing": ratio if peer else None,
                        "max_rss_mib": row.median("maxrss_mib"),
                        "anon_mib": row.median("anon_mib"),
                        "file_mib": row.median("file_mib"),
                        "runs_s": [r.wall for r in row.runs],
                        "target": status or None,
                    }
                )
        if args.json:
            args.json.write_text(
                json.dumps(
                    {"load_before": load_before, "load_after": load_after, "figures": figures},
                    indent=2,
                )
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
