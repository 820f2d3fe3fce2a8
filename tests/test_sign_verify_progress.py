"""Progress of `sign` and `verify` on large models (issue 11, "Output for logs"): a plain line
with stage, done/total, rate and ETA outside a terminal; nothing with -q; never on --json's stdout."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from modelguard.keys import generate_key, write_keypair
from modelguard.signing.sign import sign_model
from modelguard.signing.verify import verify_model

KEY = generate_key("ecdsa-p256")
LINE = re.compile(
    r"^(sign|verify): hashing: \d+/(\d+) MiB \(\d+\.\d%\), [\d.]+ MiB/s, ETA \S+$", re.M
)


def big_model(where: Path) -> Path:
    """Two files, 12 MiB in all: several 1 MiB chunks per pass."""
    where.mkdir()
    rng = np.random.default_rng(3)
    for i in range(2):
        tensors = {f"w{j}": rng.standard_normal((512, 1024)).astype(np.float32) for j in range(3)}
        save_file(tensors, where / f"part-{i}.safetensors")
    return where


class Counter:
    def __init__(self) -> None:
        self.passes: dict[int, int] = {}

    def __call__(self, n: int, total: int) -> None:
        assert n > 0 and total > 0
        self.passes[total] = self.passes.get(total, 0) + n


def test_sign_and_verify_report_every_byte_hashed(tmp_path: Path) -> None:
    model = big_model(tmp_path / "m")
    size = sum(f.stat().st_size for f in model.iterdir())
    signing = Counter()
    sign_model(model, KEY, record=False, progress=signing)
    # each pass reports exactly the bytes it planned; signing hashes every byte with SHA-256
    # (OMS resources) and BLAKE3 (tensor/gap layout)
    assert signing.passes and all(done == total for total, done in signing.passes.items())
    assert sum(signing.passes) == 2 * size
    checking = Counter()
    assert verify_model(model, keys=[KEY.public_key()], progress=checking).ok
    assert checking.passes == {size: size}  # the layout alone: every byte once
    partial = Counter()
    verify_model(model, keys=[KEY.public_key()], tensors=["w0"], progress=partial)
    assert sum(partial.passes) < size  # named tensors and non-tensor bytes only


def mg(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelguard", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **env},
        check=False,
    )


@pytest.fixture
def cli_model(tmp_path: Path) -> Path:
    big_model(tmp_path / "model")
    write_keypair(tmp_path, "k", KEY, None)
    return tmp_path


def test_cli_prints_progress_lines_outside_a_terminal(cli_model: Path) -> None:
    env = {"MODELGUARD_PROGRESS_INTERVAL": "0"}
    signed = mg("sign", "model", "--sign-key", "k.priv", "--no-ledger", cwd=cli_model, env=env)
    assert signed.returncode == 0, signed.stderr
    lines = LINE.findall(signed.stderr)
    assert lines and all(stage == "sign" for stage, _ in lines), signed.stderr
    assert "sign: hashing: done in " in signed.stderr
    checked = mg("verify", "model", "--trust-key", "k.pub", cwd=cli_model, env=env)
    assert checked.returncode == 0, checked.stderr
    assert LINE.search(checked.stderr) and "VERIFIED" in checked.stdout
    assert "hashing" not in checked.stdout


@pytest.mark.parametrize("flag", ["-q", "--json"])
def test_quiet_and_json_print_no_progress(cli_model: Path, flag: str) -> None:
    env = {"MODELGUARD_PROGRESS_INTERVAL": "0"}
    signed = mg(
        "sign", "model", "--sign-key", "k.priv", "--no-ledger", flag, cwd=cli_model, env=env
    )
    checked = mg("verify", "model", "--trust-key", "k.pub", flag, cwd=cli_model, env=env)
    for done in (signed, checked):
        assert done.returncode == 0, done.stderr
        assert "hashing" not in done.stderr + done.stdout
    if flag == "--json":
        assert json.loads(checked.stdout)["ok"] is True


def test_run_prints_verification_progress(tmp_path: Path) -> None:
    from tests.tinymodels import mlp_onnx

    mlp_onnx(tmp_path / "model.onnx", inputs=1024, hidden=1024)  # 4 MiB of weights
    write_keypair(tmp_path, "k", KEY, None)
    sign_model(tmp_path / "model.onnx", KEY, record=False)
    np.save(tmp_path / "x.npy", np.ones((2, 1024), dtype=np.float32))
    args = ["run", "model.onnx", "--trust-key", "k.pub", "--input", "x.npy"]
    env = {"MODELGUARD_PROGRESS_INTERVAL": "0"}
    done = mg(*args, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert re.search(r"^run: verifying: \d+/\d+ MiB \(", done.stderr, re.M), done.stderr
    quiet = mg(*args, "--json", cwd=tmp_path, env=env)
    assert quiet.returncode == 0 and "verifying" not in quiet.stderr
    assert json.loads(quiet.stdout)["ok"] is True
