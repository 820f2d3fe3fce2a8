"""Bad input on the verify/run path exits 2 with one line, never 3 and never hangs.

Non-UTF-8 file names, inputs of the wrong rank, size or type for ``run``, and non-regular
files (FIFO, socket, a symlink to ``/dev/zero``) inside a model directory (test_resources.py
covers single model files, containers and input arrays).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
from gatebind_models import X, key_files, one_line, plain_mlp, run_cli

from modelguard.keys import generate_key
from modelguard.signing.sign import sign_model


@pytest.fixture
def signed(tmp_path: Path) -> dict:
    key = generate_key()
    model = plain_mlp(tmp_path / "X" / "model.onnx", np.eye(4, dtype=np.float32))
    sign_model(tmp_path / "X", key, record=False)
    _, pub = key_files(tmp_path / "keys", key)
    return {"model": model, "dir": tmp_path / "X", "pub": pub, "tmp": tmp_path}


def _bytes_path(path: Path, raw_name: bytes) -> bytes:
    return os.fsencode(path) + b"/" + raw_name


@pytest.mark.parametrize("command", ["verify", "manifest"])
def test_non_utf8_file_name_in_a_model_directory(
    signed: dict, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    with open(_bytes_path(signed["dir"], b"w\xff.bin"), "wb") as handle:
        handle.write(b"x")
    args = [command, str(signed["dir"])]
    if command == "verify":
        args += ["--key", str(signed["pub"])]
    code, out, err = run_cli(capsys, *args)
    assert code == 2 and out == ""
    assert "not valid UTF-8" in one_line(err) and len(err.strip().splitlines()) == 1


def test_non_utf8_single_file_name(signed: dict, capsys: pytest.CaptureFixture[str]) -> None:
    raw = _bytes_path(signed["tmp"], b"m\xfe.onnx")
    with open(raw, "wb") as handle:
        handle.write(signed["model"].read_bytes())
    code, _, err = run_cli(capsys, "manifest", os.fsdecode(raw))
    assert code == 2 and "not valid UTF-8" in one_line(err)


@pytest.mark.parametrize(
    ("array", "shown"),
    [
        (np.zeros((2, 5), np.float32), "float32[2, 5]"),
        (np.zeros((2, 4, 1), np.float32), "float32[2, 4, 1]"),
        (np.zeros(4, np.float32), "float32[4]"),
        (np.zeros((2, 4), np.float64), "float64[2, 4]"),
    ],
)
def test_run_input_of_the_wrong_shape_or_type(
    signed: dict, capsys: pytest.CaptureFixture[str], array: np.ndarray, shown: str
) -> None:
    np.save(signed["tmp"] / "bad.npy", array)
    code, out, err = run_cli(
        capsys,
        "run",
        str(signed["dir"]),
        "--key",
        str(signed["pub"]),
        "--input",
        str(signed["tmp"] / "bad.npy"),
    )
    assert code == 2 and out == ""
    line = one_line(err)
    assert shown in line and "expects float32[?, 4]" in line, line


def test_run_accepts_the_right_shape(signed: dict, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(signed["tmp"] / "x.npy", X)
    code, _, _ = run_cli(
        capsys,
        "run",
        str(signed["dir"]),
        "--key",
        str(signed["pub"]),
        "--input",
        str(signed["tmp"] / "x.npy"),
    )
    assert code == 0


@pytest.mark.parametrize("kind", ["fifo", "socket", "devzero"])
def test_non_regular_file_in_a_model_directory(
    signed: dict, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    target = signed["dir"] / "extra.bin"
    holder = None
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "socket":
        holder = socket.socket(socket.AF_UNIX)
        holder.bind(str(target))
    else:
        target.symlink_to("/dev/zero")
    try:
        for command in (["verify"], ["run", "--input", str(signed["tmp"] / "x.npy")]):
            np.save(signed["tmp"] / "x.npy", X)
            code, _, err = run_cli(
                capsys, command[0], str(signed["dir"]), "--key", str(signed["pub"]), *command[1:]
            )
            assert code == 2 and len(err.strip().splitlines()) == 1, err
    finally:
        if holder is not None:
            holder.close()


def test_sign_a_directory_whose_name_is_not_utf8(
    signed: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = _bytes_path(signed["tmp"], b"d\xfd")
    os.mkdir(raw)
    plain_mlp(Path(os.fsdecode(raw)) / "model.onnx", np.eye(4, dtype=np.float32))
    priv, _ = key_files(signed["tmp"] / "k2", generate_key())
    code, _, err = run_cli(capsys, "sign", os.fsdecode(raw), "--key", str(priv), "--no-ledger")
    assert code == 2 and "--name" in one_line(err)
    key = generate_key()
    assert sign_model(Path(os.fsdecode(raw)), key, name="d", record=False).manifest.files
