"""``modelguard eval`` on 1 process vs 2 (torchrun, gloo on CPU), side by side in one run.

    $ .venv/bin/python bench/distributed.py                          # 360 digits, full portfolio
    $ .venv/bin/python bench/distributed.py --limit 120 --attacks fgsm,pgd,square --repeats 1

Trains the demo CNN (``zoo.digits_cnn``, seeded), exports it, then runs the same ``modelguard
eval`` command ``--repeats`` times as one process and as ``torchrun --nproc-per-node N``,
interleaved, and prints the median wall time of each (process start-up included: that is what
a user waits for), their ratio, and whether the two reports are identical apart from timing
(they must be: the distributed path only shares out the batches). Every process runs one
intra-op thread (``OMP_NUM_THREADS=1``), so N processes use N cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# bench/ledger.py would shadow the ledger package when this file runs as a script.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import torch  # noqa: E402

from modelguard.modelcard import export_model_dir, train_classifier  # noqa: E402
from modelguard.robustness.data import digits_split  # noqa: E402
from modelguard.zoo import digits_cnn  # noqa: E402


def comparable(report: dict[str, Any]) -> dict[str, Any]:
    report = {k: v for k, v in report.items() if k not in ("timing", "environment")}
    for row in report["results"]["attacks"]:
        row.pop("seconds", None)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attacks", default="fgsm,pgd,pgd-margin,cw,square")
    parser.add_argument("--eps", default="0.1")
    parser.add_argument("--limit", type=int, default=360)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "digits-cnn"
        train, _ = digits_split()
        export_model_dir(
            train_classifier(digits_cnn(), train, epochs=8, seed=0),
            model,
            factory="digits_cnn",
            kwargs={},
            input_shape=(1, 8, 8),
            classes=[str(i) for i in range(10)],
            name="digits-cnn",
            version="1",
        )
        command = [
            "-m", "modelguard", "eval", str(model), "--attacks", args.attacks, "--eps", args.eps,
            "--limit", str(args.limit), "--no-ledger", "--json",
        ]  # fmt: skip
        runs: dict[str, list[float]] = {"1 process": [], f"{args.processes} processes": []}
        reports: dict[str, dict[str, Any]] = {}
        for repeat in range(args.repeats):
            for label, prefix in (
                ("1 process", [sys.executable]),
                (
                    f"{args.processes} processes",
                    [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
                     str(args.processes)],
                ),
            ):  # fmt: skip
                out = Path(tmp) / f"{label}-{repeat}"
                started = time.perf_counter()
                subprocess.run(
                    [*prefix, *command, "--out", str(out)], env=env, check=True,
                    capture_output=True, text=True,
                )  # fmt: skip
                runs[label].append(time.perf_counter() - started)
                reports[label] = json.loads((out / "report.json").read_text())
    one, many = (statistics.median(v) for v in runs.values())
    same = comparable(reports["1 process"]) == comparable(reports[f"{args.processes} processes"])
    print(
        f"modelguard eval, {args.limit} examples, attacks {args.attacks}, eps {args.eps};"
        f" load average {os.getloadavg()}"
    )
    for label, times in runs.items():
        print(f"{label:<12} median {statistics.median(times):7.1f} s  ({len(times)} runs)")
    print(f"speed-up {one / many:.2f}x; reports identical apart from timing: {same}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
