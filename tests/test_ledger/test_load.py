"""The load test (bench/ledger_load.py), small: concurrent writers leave one linear history.

Writers are separate processes appending one entry at a time to the same ledger; afterwards
the ledger must hold exactly the acknowledged appends, each at its acknowledged index, in one
hash chain (no fork, nothing lost). The audit is repeated here on the ledger itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ledger import open_ledger
from tests.test_ledger.conftest import postgres_base_url

BENCH = Path(__file__).resolve().parents[2] / "bench" / "ledger_load.py"


def run_bench(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--processes", "3", "--appends", "15", "--json", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def check(result: dict[str, Any]) -> None:
    assert result["acknowledged"] == 45 and result["entries"] == 45
    assert result["forks"] == 0 and result["lost"] == 0 and result["duplicate_indices"] == 0
    assert result["verify_ok"] and result["linear_history"]
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"] <= result["max_ms"]


def test_sqlite_load_is_one_linear_history(tmp_path: Path) -> None:
    document = run_bench("--dir", str(tmp_path))
    [result] = document["results"]
    assert result["backend"] == "sqlite"
    check(result)
    assert len(document["loadavg"]) == 3


@pytest.mark.postgres
def test_postgres_load_is_one_linear_history() -> None:
    base = postgres_base_url()
    [result] = run_bench("--postgres", base, "--no-sqlite")["results"]
    assert result["backend"] == "postgresql"
    check(result)


def test_the_audit_is_not_vacuous(tmp_path: Path) -> None:
    """An entry no writer acknowledged (here: written before the run) breaks 'linear'."""
    url = f"sqlite:///{tmp_path / 'l.db'}"
    with open_ledger(url) as log:
        log.append("test", subject={"name": "w0"}, payload_digest="w0:0", actor="w0")
    import importlib.util

    spec = importlib.util.spec_from_file_location("ledger_load", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ledger_load"] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["ledger_load"]
    result = module.run_load(url, "sqlite", 1, 2, 60.0)
    assert result.acknowledged == 2 and result.entries == 3
    assert not result.linear  # an entry nobody acknowledged: entries != acknowledged
