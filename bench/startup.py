"""Start-up time of the CLI: the gate's commands, whole, on a tiny model, against the peer.

    $ .venv/bin/python bench/startup.py                # 15 interleaved runs of each
    $ .venv/bin/python bench/startup.py --repeats 5

Each row starts a fresh process (what a CI step pays) and prints the median wall time over
``--repeats`` interleaved runs, which heavy modules the process imported (from ``-X
importtime``), and the ratio to ``modelguard --help``. ``modelguard sign`` and ``modelguard
verify`` run whole on a 1 KiB safetensors model (no ledger), so their time is start-up:
imports, parsing, key handling; ``model_signing`` 1.1.1's ``sign key`` / ``verify key`` on the
same model and key are the peer's. ``eval --help`` is the control: it imports torch, which
the gate's commands must not. modelguard's ``.pyc`` files are written first, as ``pip
install`` does (see bench/oms_peers.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent
HEAVY = ("torch", "onnxruntime", "sklearn", "matplotlib", "numpy", "onnx", "rich", "ledger")


def commands(model: Path, keys: Path, sigs: Path) -> dict[str, list[str]]:
    mg = [sys.executable, "-m", "modelguard"]
    ms = [str(BIN / "model_signing")]
    priv, pub = str(keys / "bench.priv"), str(keys / "bench.pub")
    verify = [*mg, "verify", str(model), "--trust-key", pub, "--signature", str(sigs / "mg.sig")]
    return {
        "modelguard --help": [*mg, "--help"],
        "modelguard verify --help": [*mg, "verify", "--help"],
        "modelguard ledger --help": [*mg, "ledger", "--help"],
        "modelguard sign (tiny model)": [
            *mg,
            "sign",
            str(model),
            "--sign-key",
            priv,
            "--signature",
            str(sigs / "again.sig"),
            "--no-ledger",
        ],
        "modelguard verify (tiny model)": verify,
        "modelguard verify --json (tiny model)": [*verify, "--json"],
        "model_signing sign key (tiny model)": [
            *ms,
            "sign",
            "key",
            str(model),
            "--private_key",
            priv,
            "--signature",
            str(sigs / "ms-again.sig"),
        ],
        "model_signing verify key (tiny model)": [
            *ms,
            "verify",
            "key",
            str(model),
            "--public_key",
            pub,
            "--signature",
            str(sigs / "ms.sig"),
        ],
        "modelguard eval --help (imports torch)": [*mg, "eval", "--help"],
    }


def run_once(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - start


def heavy_imports(argv: list[str]) -> str:
    if argv[0] != sys.executable:
        return ""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *argv[1:]], check=True, capture_output=True, text=True
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    return ", ".join(name for name in HEAVY if name in imported) or "-"


def setup(base: Path) -> tuple[Path, Path, Path]:
    from safetensors.numpy import save_file

    import ledger
    import modelguard
    from modelguard.keys import generate_key, write_keypair
    from modelguard.signing.sign import sign_model

    packages = [str(Path(p.__file__).parent) for p in (modelguard, ledger)]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *packages], check=True)
    model, keys, sigs = base / "model", base / "keys", base / "sigs"
    model.mkdir()
    sigs.mkdir()
    save_file({"w": np.arange(256, dtype=np.float32)}, str(model / "model.safetensors"))
    key = generate_key("ecdsa-p256")
    write_keypair(keys, "bench", key, None)
    sign_model(model, key, signature_path=sigs / "mg.sig", record=False)
    subprocess.run(
        commands(model, keys, sigs)["model_signing sign key (tiny model)"][:-1]
        + [str(sigs / "ms.sig")],
        check=True,
        capture_output=True,
    )
    return model, keys, sigs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    options = parser.parse_args()
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="mg-startup-") as tmp:
        rows = commands(*setup(Path(tmp)))
        for argv in rows.values():  # warm the page cache
            run_once(argv)
        times: dict[str, list[float]] = {name: [] for name in rows}
        for _ in range(options.repeats):
            for name, argv in rows.items():
                times[name].append(run_once(argv))
        base = statistics.median(times["modelguard --help"])
        peer = {
            "sign": statistics.median(times["model_signing sign key (tiny model)"]),
            "verify": statistics.median(times["model_signing verify key (tiny model)"]),
        }
        print(f"load average before {load_before}")
        print(f"{'command':42} {'median s':>9} {'x --help':>9} {'x peer':>7}  heavy modules")
        for name, argv in rows.items():
            median = statistics.median(times[name])
            ratio = ""
            if name.startswith("modelguard") and "tiny" in name:
                ratio = f"{peer['sign' if ' sign ' in name else 'verify'] / median:7.2f}"
            print(f"{name:42} {median:9.3f} {median / base:9.2f} {ratio:>7}  {heavy_imports(argv)}")
    print(f"load average after {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
