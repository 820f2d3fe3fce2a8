"""torchrun with 2 CPU processes (gloo, loopback): eval equals one process; harden with DDP.

Each test starts real torchrun jobs (``python -m torch.distributed.run``), so budgets stay
tiny: a few dozen examples, one or two epochs, few attack steps.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ledger import open_ledger
from modelguard.keys import generate_key, write_keypair
from modelguard.robustness import distributed
from modelguard.robustness.attacks import build_attack
from modelguard.signing.sign import sign_model
from modelguard.zoo import digits_mlp

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MG_PASS": "pw"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
MODELGUARD = [sys.executable, "-m", "modelguard"]


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600, check=False
    )


def without_timing(report: dict[str, Any]) -> dict[str, Any]:
    report = json.loads(json.dumps(report))
    report.pop("timing", None)
    report.pop("environment", None)
    for row in report["results"]["attacks"]:
        row.pop("seconds", None)
    return report


@pytest.mark.slow
def test_eval_on_two_processes_equals_one(tmp_path: Path, digits_model_dir: Path) -> None:
    args = [
        "eval",
        str(digits_model_dir),
        "--attacks",
        "fgsm,pgd,square",
        "--eps",
        "0.1",
        "--limit",
        "40",
        "--batch-size",
        "16",  # 3 batches: rank 0 attacks two, rank 1 one
        "--param",
        "pgd.steps=5",
        "--param",
        "square.n_queries=50",
        "--no-ledger",
        "--json",
    ]
    one = run([*MODELGUARD, *args, "--out", str(tmp_path / "one")], tmp_path)
    assert one.returncode == 0, one.stderr
    two = run([*TORCHRUN, "-m", "modelguard", *args, "--out", str(tmp_path / "two")], tmp_path)
    assert two.returncode == 0, two.stderr
    assert two.stdout.count('"robust_accuracy"') == one.stdout.count('"robust_accuracy"')
    first = json.loads((tmp_path / "one" / "report.json").read_text())
    second = json.loads((tmp_path / "two" / "report.json").read_text())
    assert without_timing(first) == without_timing(second)
    assert first["results"]["attacks"][1]["queries"] == second["results"]["attacks"][1]["queries"]
    assert {row["attack"] for row in first["results"]["attacks"]} == {"fgsm", "pgd", "square"}


@pytest.mark.slow
def test_harden_with_ddp_on_two_processes(tmp_path: Path, digits_model_dir: Path) -> None:
    parent = tmp_path / "parent"
    shutil.copytree(digits_model_dir, parent)
    key = generate_key()
    priv, _ = write_keypair(tmp_path / "keys", "mg", key, b"pw")
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    sign_model(parent, key, name="digits", version="1", ledger_url=url)
    args = [
        "harden",
        str(parent),
        "--method",
        "pgd-at",
        "--key",
        str(priv),
        "--passphrase-env",
        "MG_PASS",
        "--epochs",
        "2",
        "--steps",
        "3",
        "--eps",
        "0.1",
        "--attacks",
        "fgsm,pgd",
        "--eval-eps",
        "0.1",
        "--limit",
        "60",
        "--ledger",
        url,
        "--json",
    ]
    one = run([*MODELGUARD, *args, "--out", str(tmp_path / "child1")], tmp_path)
    assert one.returncode == 0, one.stderr
    before = open_ledger(url).size()
    two = run([*TORCHRUN, "-m", "modelguard", *args, "--out", str(tmp_path / "child2")], tmp_path)
    assert two.returncode == 0, two.stderr
    single, double = json.loads(one.stdout), json.loads(two.stdout)  # rank 0 alone prints
    # Rank 0 alone signed, certified and recorded: the same entries one process writes.
    with open_ledger(url) as log:
        kinds = [e.kind for e in log.entries()]
    assert "harden" in kinds[before:] and kinds[before:] == kinds[1:before]
    # The same certificate bar: the stated tolerance is 0.1 worst-case robust accuracy.
    w1 = single["comparison"]["worst_case"][0]
    w2 = double["comparison"]["worst_case"][0]
    assert w2["child_worst_case"] > w2["parent_worst_case"]
    assert abs(w1["child_worst_case"] - w2["child_worst_case"]) <= 0.1
    assert (tmp_path / "child2" / "model.sig").exists()


@pytest.mark.slow
def test_a_failing_rank_stops_the_job(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(
        "import numpy as np\n"
        "from modelguard.robustness import distributed\n"
        "from modelguard.robustness.attacks import build_attack\n"
        "from modelguard.zoo import digits_mlp\n"
        "distributed.init_from_env()\n"
        "if distributed.rank() == 1:\n"
        "    raise RuntimeError('rank one broke on purpose')\n"
        "x = np.zeros((32, 1, 8, 8), dtype=np.float32)\n"
        "distributed.craft(build_attack('fgsm', digits_mlp(), eps=0.1), x, np.zeros(32, 'int64'), 8)\n"
    )
    done = run([*TORCHRUN, str(script)], tmp_path)
    assert done.returncode != 0
    assert "rank one broke on purpose" in done.stderr
    assert "another rank of this torchrun job failed" in done.stderr


def test_craft_is_seeded_per_batch() -> None:
    """The property the 2-process equality rests on: a batch's result depends on its index
    and the attack seed, not on what the attack's generator did before (one process here)."""
    model = digits_mlp()
    x = np.random.default_rng(0).random((24, 1, 8, 8), dtype=np.float32)
    y = np.arange(24) % 10
    whole = distributed.craft(build_attack("pgd", model, eps=0.1, steps=2, seed=3), x, y, 8)
    used = build_attack("pgd", model, eps=0.1, steps=2, seed=3)
    distributed.craft(used, x[::-1].copy(), y[::-1].copy(), 5)  # consume its randomness
    assert np.array_equal(distributed.craft(used, x, y, 8), whole)
    other_seed = distributed.craft(build_attack("pgd", model, eps=0.1, steps=2, seed=4), x, y, 8)
    assert not np.array_equal(other_seed, whole)  # the random start does use the generator
    assert not distributed.active() and distributed.world_size() == 1


def test_without_torchrun_nothing_is_initialised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    distributed.init_from_env()
    assert not distributed.active() and distributed.is_primary()
    distributed.leave()  # a no-op: the one process carries on
