"""Start-up time of the CLI: the gate's commands against a command that needs torch, side by side.

    $ .venv/bin/python -P bench/startup.py               # 15 interleaved runs of each
    $ .venv/bin/python -P bench/startup.py --repeats 5

Each row starts a fresh ``python -m modelguard ...`` process (what a CI step pays) and
prints the median wall time over ``--repeats`` interleaved runs, which heavy modules the
process imported (from ``-X importtime``), and the ratio to ``modelguard --help``.
``eval --help`` is the control: it imports torch, which the gate's commands must not.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

COMMANDS: dict[str, list[str]] = {
    "modelguard --help": ["--help"],
    "modelguard verify --help": ["verify", "--help"],
    "modelguard ledger --help": ["ledger", "--help"],
    "modelguard eval --help (imports torch)": ["eval", "--help"],
}
HEAVY = ("torch", "onnxruntime", "sklearn", "matplotlib", "numpy", "onnx")


def run_once(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "modelguard", *args], check=True, capture_output=True)
    return time.perf_counter() - start


def heavy_imports(args: list[str]) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "modelguard", *args],
        check=True,
        capture_output=True,
        text=True,
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    return [name for name in HEAVY if name in imported]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    options = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    for args in COMMANDS.values():  # warm the page cache and .pyc files
        run_once(args)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(options.repeats):
        for name, args in COMMANDS.items():
            times[name].append(run_once(args))
    base = statistics.median(times["modelguard --help"])
    print(f"{'command':42} {'median s':>9} {'x --help':>9}  heavy modules imported")
    for name, args in COMMANDS.items():
        median = statistics.median(times[name])
        heavy = ", ".join(heavy_imports(args)) or "-"
        print(f"{name:42} {median:9.3f} {median / base:9.2f}  {heavy}")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
