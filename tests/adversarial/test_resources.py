"""Class 5 (resources): a FIFO, a socket or ``/dev/zero`` wherever a file is read.

Each must be refused by type before any read: exit 2, one line naming the file, no hang
(a FIFO with no writer would block ``open``; ``/dev/zero`` would fill memory). A SIGALRM
guard turns a hang into a test failure instead of a stuck CI job.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modelguard.cli import main as cli_main
from modelguard.encryption import encrypt_model
from modelguard.keys import generate_encryption_key, generate_key, write_keypair
from modelguard.signing.sign import sign_model
from tests.tinymodels import model_dir

KINDS = ["fifo", "socket", "dev-zero"]


@pytest.fixture(autouse=True)
def no_hang() -> Iterator[None]:
    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError("the reader hung on a special file")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture()
def sockets() -> Iterator[list[socket.socket]]:
    held: list[socket.socket] = []
    yield held
    for s in held:
        s.close()


def make_special(path: Path, kind: str, held: list[socket.socket]) -> Path:
    """Replace ``path`` with a FIFO, a listening Unix socket, or a symlink to /dev/zero."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        if len(str(path)) > 100:  # AF_UNIX path limit
            pytest.skip("socket path too long for AF_UNIX on this tmp dir")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(path))
        s.listen(1)
        held.append(s)
    else:
        path.symlink_to("/dev/zero")
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        cli_main.main(list(args))
    err = capsys.readouterr().err
    return int(done.value.code or 0), err


def refused(code: int, err: str, name: str, *, also: tuple[str, ...] = ()) -> None:
    """Exit 2, one line naming the file and why (its type, or another refusal in ``also``)."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and name in lines[0], err
    reasons = ("a FIFO", "a socket", "a character device", *also)
    assert any(reason in lines[0] for reason in reasons), err


class World:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        key = generate_key()
        self.priv, self.pub = write_keypair(tmp / "keys", "signer", key, None)
        self.model = model_dir(tmp / "model")
        sign_model(self.model, key, record=False)
        enc_priv, enc_pub = write_keypair(tmp / "keys", "alice", generate_encryption_key(), None)
        self.identity, self.recipient = enc_priv, enc_pub
        from modelguard.encryption import load_x25519_public_key

        self.container = tmp / "model.mgenc"
        encrypt_model(
            self.model / "model.safetensors",
            self.container,
            recipients=[load_x25519_public_key(enc_pub)],
        )


@pytest.fixture()
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def verify(world: World, *extra: str) -> list[str]:
    return ["verify", str(world.model), "--key", str(world.pub), *extra]


@pytest.mark.parametrize("kind", KINDS)
def test_signature(world: World, kind: str, sockets: Any, capsys: Any) -> None:
    """A FIFO, device or socket where the bundle should be is bad input (exit 2, named by its
    type), never read and never mistaken for a missing signature."""
    make_special(world.model / "model.sig", kind, sockets)
    refused(*run(capsys, *verify(world)), "model.sig")


@pytest.mark.parametrize("kind", KINDS)
def test_cosignature_in_the_sig_d_directory(
    world: World, kind: str, sockets: Any, capsys: Any
) -> None:
    make_special(world.model / "model.sig.d" / "other.sig", kind, sockets)
    refused(*run(capsys, *verify(world)), "other.sig")


@pytest.mark.parametrize("kind", KINDS)
def test_policy(world: World, kind: str, sockets: Any, capsys: Any) -> None:
    policy = make_special(world.tmp / "policy.toml", kind, sockets)
    code, err = run(capsys, "verify", str(world.model), "--policy", str(policy))
    refused(code, err, "policy.toml")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("which", ["public", "private", "passphrase", "ledger"])
def test_keys(world: World, kind: str, which: str, sockets: Any, capsys: Any) -> None:
    special = make_special(world.tmp / f"special-{which}", kind, sockets)
    if which == "public":
        args = ["verify", str(world.model), "--key", str(special)]
    elif which == "private":
        args = ["sign", str(world.model), "--key", str(special), "--no-ledger"]
    elif which == "passphrase":
        args = ["sign", str(world.model), "--key", str(world.priv), "--no-ledger",
                "--passphrase-file", str(special)]  # fmt: skip
    else:
        args = [*verify(world), "--require-ledger", "--ledger-key", str(special)]
    refused(*run(capsys, *args), special.name)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("which", ["identity", "key-file"])
def test_decryption_keys(world: World, kind: str, which: str, sockets: Any, capsys: Any) -> None:
    special = make_special(world.tmp / f"special-{which}", kind, sockets)
    flag = "--identity" if which == "identity" else "--key-file"
    args = ["decrypt", str(world.container), "--out", str(world.tmp / "o"), flag, str(special)]
    refused(*run(capsys, *args), special.name)


@pytest.mark.parametrize("kind", KINDS)
def test_container(world: World, kind: str, sockets: Any, capsys: Any) -> None:
    container = make_special(world.tmp / "special.mgenc", kind, sockets)
    args = ["decrypt", str(container), "--out", str(world.tmp / "o"),
            "--identity", str(world.identity)]  # fmt: skip
    refused(*run(capsys, *args), "special.mgenc", also=("no such file or directory",))
    from modelguard.encryption.container import ContainerReader
    from modelguard.errors import BadInputError

    with pytest.raises(BadInputError, match="not a regular file"):
        ContainerReader(container)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["model.safetensors", "model.pt", "model.onnx"])
def test_model_file(world: World, kind: str, name: str, sockets: Any, capsys: Any) -> None:
    special = make_special(world.tmp / name, kind, sockets)
    refused(
        *run(capsys, "manifest", str(special)), name, also=("is a symlink", "not a regular file")
    )
    from modelguard.errors import BadInputError
    from modelguard.formats import map_file

    with pytest.raises(BadInputError, match="not a regular file"):
        map_file(special)


@pytest.mark.parametrize("kind", KINDS)
def test_run_input_array(world: World, kind: str, sockets: Any, capsys: Any) -> None:
    from modelguard.cli.run import load_inputs
    from modelguard.errors import BadInputError

    special = make_special(world.tmp / "x.npy", kind, sockets)
    with pytest.raises(BadInputError, match="x.npy"):
        load_inputs(special, ["x"])


@pytest.mark.parametrize("kind", KINDS)
def test_data_set(world: World, kind: str, sockets: Any) -> None:
    from modelguard.errors import BadInputError
    from modelguard.robustness.data import load_dataset

    special = make_special(world.tmp / "data.npz", kind, sockets)
    with pytest.raises(BadInputError, match="data.npz"):
        load_dataset(str(special))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("which", ["proof", "checkpoint"])
def test_ledger_documents(world: World, kind: str, which: str, sockets: Any, capsys: Any) -> None:
    special = make_special(world.tmp / f"special.{which}", kind, sockets)
    pub = world.tmp / "note.pub"
    pub.write_text("x+00000000+" + "A" * 44 + "\n")
    if which == "proof":
        args = ["ledger", "check-proof", str(special), "--key", str(pub)]
    else:
        args = ["ledger", "consistency", str(special), "--key", str(pub),
                "--ledger", f"sqlite:///{world.tmp / 'l.db'}"]  # fmt: skip
    refused(*run(capsys, *args), special.name)


def test_a_growing_signature_is_cut_at_its_cap(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The size is checked on the descriptor and again while reading (a file that grows)."""
    from modelguard import safeio
    from modelguard.errors import BadInputError

    sig = world.model / "model.sig"
    real_open: Callable[..., Any] = safeio.os.fdopen

    def grow_after_fstat(fd: int, *args: Any, **kwargs: Any) -> Any:
        with open(sig, "ab") as handle:
            handle.write(b" " * 200)
        return real_open(fd, *args, **kwargs)

    monkeypatch.setattr(safeio.os, "fdopen", grow_after_fstat)
    limit = sig.stat().st_size + 10
    with pytest.raises(BadInputError, match="grew past"):
        safeio.read_regular(sig, max_size=limit)


@pytest.mark.parametrize("kind", KINDS)
def test_ledger_export_file(world: World, kind: str, sockets: Any, capsys: Any) -> None:
    special = make_special(world.tmp / "ledger.jsonl", kind, sockets)
    code, err = run(capsys, "ledger", "verify", "--file", str(special))
    refused(code, err, "ledger.jsonl", also=("not a regular file", "cannot read"))
