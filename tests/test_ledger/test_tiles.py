"""C2SP tlog-tiles export and offline verification.

The tile tree is read here with an independent reading of the spec (paths, tiles, bundles,
signed note, RFC 9162 hashing written out again below), never with ledger.tiles, so that
an exporter that misreads the layout cannot agree with itself.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given
from hypothesis import strategies as st

from ledger import EventSpec, Ledger, LedgerInputError, NoteSigner, open_ledger
from ledger.note import Checkpoint, sign_note
from ledger.tiles import TileRef, encode_bundle, export_tiles, tile_path, verify_tiles
from modelguard.cli import main as cli_main

# --- an independent reader ------------------------------------------------------------------


def spec_index(n: int) -> str:
    digits = str(n)
    digits = "0" * (-len(digits) % 3) + digits
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    return "/".join("x" + g for g in groups[:-1]) + ("/" if len(groups) > 1 else "") + groups[-1]


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def mth(hashes: list[bytes]) -> bytes:
    """RFC 9162 MTH over already-hashed leaves, by the recursive definition."""
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return sha(b"\x01" + mth(hashes[:k]) + mth(hashes[k:]))


def open_signed_checkpoint(note: bytes, vkey: str) -> tuple[str, int, bytes]:
    name, key_hex, blob = vkey.strip().split("+", 2)
    raw = base64.b64decode(blob)
    assert raw[0] == 1
    text, sigs = note.split(b"\n\n", 1)
    text += b"\n"
    for line in sigs.decode().splitlines():
        dash, signer, sig = line.split(" ")
        sig_raw = base64.b64decode(sig)
        if signer == name and sig_raw[:4].hex() == key_hex:
            Ed25519PublicKey.from_public_bytes(raw[1:]).verify(sig_raw[4:], text)
            origin, size, root = text.decode().splitlines()[:3]
            return origin, int(size), base64.b64decode(root)
    raise AssertionError("no signature by the log key")


def read_tree(directory: Path, vkey: str) -> list[bytes]:
    """Every entry of a tile tree, checked the way a spec-reading client would."""
    origin, size, root = open_signed_checkpoint((directory / "checkpoint").read_bytes(), vkey)
    leaves: list[bytes] = []
    entries: list[bytes] = []
    for n in range((size + 255) // 256):
        width = min(256, size - n * 256)
        suffix = "" if width == 256 else f".p/{width}"
        tile = (directory / f"tile/0/{spec_index(n)}{suffix}").read_bytes()
        bundle = (directory / f"tile/entries/{spec_index(n)}{suffix}").read_bytes()
        assert len(tile) == 32 * width
        pos = 0
        for i in range(width):
            length = int.from_bytes(bundle[pos : pos + 2], "big")
            entry = bundle[pos + 2 : pos + 2 + length]
            pos += 2 + length
            assert sha(b"\x00" + entry) == tile[32 * i : 32 * i + 32]
            entries.append(entry)
            leaves.append(tile[32 * i : 32 * i + 32])
        assert pos == len(bundle)
    level, below = 1, leaves
    while len(below) >= 256:
        full = len(below) // 256
        upper = [mth(below[i * 256 : (i + 1) * 256]) for i in range(full)]
        for n in range((full + 255) // 256):
            w = min(256, full - n * 256)
            suffix = "" if w == 256 else f".p/{w}"
            tile = (directory / f"tile/{level}/{spec_index(n)}{suffix}").read_bytes()
            assert tile == b"".join(upper[n * 256 : n * 256 + w])
        level, below = level + 1, upper
    assert mth(leaves) == root
    return entries


# --- fixtures -------------------------------------------------------------------------------


def fill(log: Ledger, count: int, tag: str = "e") -> None:
    specs = [
        EventSpec("sign", {"name": f"{tag}{i}"}, f"sha256:{i:064x}", "key") for i in range(count)
    ]
    for start in range(0, count, 250):
        log.append_many(specs[start : start + 250])


@pytest.fixture
def log(tmp_path: Path) -> Ledger:
    return open_ledger(f"sqlite:///{tmp_path / 'l.db'}", origin="example.org/log")


@pytest.fixture
def signer() -> NoteSigner:
    return NoteSigner.generate("example.org/log")


@pytest.fixture
def tree(tmp_path: Path, log: Ledger, signer: NoteSigner) -> Path:
    fill(log, 600)
    out = tmp_path / "tiles"
    export_tiles(log, out, signer)
    return out


def files_of(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


# --- tests ----------------------------------------------------------------------------------


def test_spec_reader_agrees(tree: Path, log: Ledger, signer: NoteSigner) -> None:
    entries = read_tree(tree, signer.verifier().to_key_string())
    assert [json.loads(e)["index"] for e in entries] == list(range(600))
    assert entries == [e.canonical() for e in log.entries()]
    # 600 = 2 full level-0 tiles + one of width 88; level 1 holds 2 hashes.
    assert files_of(tree) == [
        "checkpoint",
        "tile/0/000",
        "tile/0/001",
        "tile/0/002.p/88",
        "tile/1/000.p/2",
        "tile/entries/000",
        "tile/entries/001",
        "tile/entries/002.p/88",
    ]
    report = verify_tiles(tree, [signer.verifier()])
    assert report.ok, report.audit.problems
    assert report.tiles_checked == 7 and report.audit.size == 600


def test_level_two_tiles_agree_with_spec_reader(tmp_path: Path, signer: NoteSigner) -> None:
    """Level-1 and level-2 tiles over 65,793 leaves, computed from leaf hashes alone."""
    from ledger.tiles import hash_tiles

    leaves = [sha(b"\x00" + i.to_bytes(4, "big")) for i in range(256 * 256 + 257)]
    tiles = {ref.path: data for ref, data in hash_tiles(leaves).items()}
    level1 = [mth(leaves[i * 256 : (i + 1) * 256]) for i in range(257)]
    assert tiles["tile/1/000"] == b"".join(level1[:256])
    assert tiles["tile/1/001.p/1"] == level1[256]
    assert tiles["tile/2/000.p/1"] == mth(level1[:256])
    assert tiles["tile/0/257.p/1"] == leaves[-1]
    assert tiles["tile/0/256"] == b"".join(leaves[256 * 256 : 256 * 257])


def test_incremental_export_writes_only_new_tiles(
    tmp_path: Path, log: Ledger, signer: NoteSigner
) -> None:
    fill(log, 300)
    out = tmp_path / "tiles"
    first = export_tiles(log, out, signer)
    assert "tile/0/000" in first.written
    kept = (out / "checkpoint").read_text()
    stamp = (out / "tile/0/000").stat().st_ino, (out / "tile/entries/000").stat().st_mtime_ns
    fill(log, 300, tag="f")
    second = export_tiles(log, out, signer)
    assert "tile/0/000" not in second.written and "tile/entries/000" not in second.written
    assert "tile/0/001" in second.written and "tile/0/002.p/88" in second.written
    assert second.unchanged == 2
    assert (
        (out / "tile/0/000").stat().st_ino,
        (out / "tile/entries/000").stat().st_mtime_ns,
    ) == stamp
    # The partial tiles of the first export stay for clients holding that checkpoint.
    assert (out / "tile/0/001.p/44").exists()
    report = verify_tiles(out, [signer.verifier()], old_checkpoint=kept)
    assert report.ok, report.audit.problems
    read_tree(out, signer.verifier().to_key_string())
    third = export_tiles(log, out, signer)
    assert third.written == ["checkpoint"]


def tamper_targets() -> list[str]:
    return [
        "checkpoint",
        "tile/0/000",
        "tile/0/001",
        "tile/0/002.p/88",
        "tile/1/000.p/2",
        "tile/entries/000",
        "tile/entries/001",
        "tile/entries/002.p/88",
    ]


@pytest.mark.parametrize("name", tamper_targets())
@pytest.mark.parametrize("where", [0, 0.5, -1])
def test_one_changed_byte_fails(tree: Path, signer: NoteSigner, name: str, where: float) -> None:
    path = tree / name
    data = bytearray(path.read_bytes())
    pos = -1 if where == -1 else int(len(data) * where)
    if name == "checkpoint" and where == -1:
        pos = data.index(b"\n") - 1  # the last byte is a newline in a signature line
    data[pos] ^= 0x01
    path.write_bytes(bytes(data))
    assert not verify_tiles(tree, [signer.verifier()]).ok


@pytest.mark.parametrize("name", tamper_targets())
def test_missing_file_fails(tree: Path, signer: NoteSigner, name: str) -> None:
    (tree / name).unlink()
    report = verify_tiles(tree, [signer.verifier()])
    assert not report.ok
    assert name in report.summary() or name == "checkpoint"


def test_forged_checkpoint_fails(tree: Path, log: Ledger, signer: NoteSigner) -> None:
    """A checkpoint signed by any key but the trusted one, even over the true tree, fails."""
    forger = NoteSigner.generate("example.org/log")
    true = Checkpoint("example.org/log", 600, log.root())
    (tree / "checkpoint").write_text(sign_note(true.to_text(), [forger]))
    report = verify_tiles(tree, [signer.verifier()])
    assert not report.ok and "not signed by a trusted key" in report.summary()


def test_rewritten_tree_resigned_by_attacker_fails(
    tmp_path: Path, signer: NoteSigner, tree: Path
) -> None:
    """An attacker rebuilds every tile over an edited history: only their key signs it."""
    forger = NoteSigner.generate("example.org/log")
    other = open_ledger(f"sqlite:///{tmp_path / 'other.db'}", origin="example.org/log")
    fill(other, 600, tag="evil")
    forged = tmp_path / "forged"
    export_tiles(other, forged, forger)
    assert verify_tiles(forged, [forger.verifier()]).ok
    assert not verify_tiles(forged, [signer.verifier()]).ok


def test_older_checkpoint_consistency(tmp_path: Path, log: Ledger, signer: NoteSigner) -> None:
    fill(log, 10)
    kept = log.checkpoint(signer)
    fill(log, 10, tag="g")
    out = tmp_path / "tiles"
    export_tiles(log, out, signer)
    assert verify_tiles(out, [signer.verifier()], old_checkpoint=kept).ok
    # A fork: same origin and key, a different history of the first 10 entries.
    fork = open_ledger(f"sqlite:///{tmp_path / 'fork.db'}", origin="example.org/log")
    fill(fork, 10, tag="fork")
    forked = fork.checkpoint(signer)
    report = verify_tiles(out, [signer.verifier()], old_checkpoint=forked)
    assert not report.ok and "history rewritten" in report.summary()
    # A stale mirror: the kept checkpoint is newer than the tiles.
    fill(log, 5, tag="h")
    newer = log.checkpoint(signer)
    assert not verify_tiles(out, [signer.verifier()], old_checkpoint=newer).ok


def test_export_refuses_a_rewritten_history(tmp_path: Path, tree: Path, signer: NoteSigner) -> None:
    other = open_ledger(f"sqlite:///{tmp_path / 'other.db'}", origin="example.org/log")
    fill(other, 700, tag="rewritten")
    before = {name: (tree / name).read_bytes() for name in files_of(tree)}
    with pytest.raises(Exception, match="rewritten"):
        export_tiles(other, tree, signer)
    assert {name: (tree / name).read_bytes() for name in files_of(tree)} == before


def test_stray_and_future_files_are_reported(tree: Path, signer: NoteSigner) -> None:
    (tree / "tile/0/003").write_bytes(bytes(8192))
    report = verify_tiles(tree, [signer.verifier()])
    assert not report.ok and "beyond the checkpoint" in report.summary()
    (tree / "tile/0/003").unlink()
    (tree / "tile/0/notatile").write_bytes(b"x")
    assert not verify_tiles(tree, [signer.verifier()]).ok


def test_empty_log_exports_only_a_checkpoint(
    tmp_path: Path, log: Ledger, signer: NoteSigner
) -> None:
    out = tmp_path / "tiles"
    assert export_tiles(log, out, signer).written == ["checkpoint"]
    assert verify_tiles(out, [signer.verifier()]).ok


def test_entry_too_large_for_a_bundle() -> None:
    with pytest.raises(LedgerInputError, match="does not fit"):
        encode_bundle([b"x" * 70_000])


@given(st.integers(0, 63), st.integers(0, 10**12), st.integers(1, 256))
def test_tile_paths_round_trip(level: int, index: int, width: int) -> None:
    path = tile_path(level, index, width)
    assert path.startswith(f"tile/{level}/{spec_index(index)}")
    assert TileRef.parse(path) == TileRef(level, index, width)


@given(st.text(max_size=40))
def test_tile_path_parser_never_crashes(text: str) -> None:
    with contextlib.suppress(LedgerInputError):
        TileRef.parse(text)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    with pytest.raises(SystemExit) as done:
        cli_main.main([*args, "--json"])
    out, _ = capsys.readouterr()
    return int(done.value.code or 0), json.loads(out)


def test_cli_export_and_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    open_ledger(url, origin="example.org/cli").close()
    with open_ledger(url) as log:
        fill(log, 3)
    out = tmp_path / "public"
    rc, doc = run_cli(capsys, "ledger", "export-tiles", str(out), "--ledger", url)
    assert rc == 0 and doc["size"] == 3 and "tile/0/000.p/3" in doc["written"]
    pub = tmp_path / "l.db.note.pub"
    rc, doc = run_cli(capsys, "ledger", "verify", "--tiles", str(out), "--key", str(pub))
    assert rc == 0 and doc["ok"] and doc["tiles_checked"] == 2
    bundle = out / "tile/entries/000.p/3"
    os.chmod(bundle, 0o644)
    bundle.write_bytes(bundle.read_bytes().replace(b"e1", b"e9"))
    rc, doc = run_cli(capsys, "ledger", "verify", "--tiles", str(out), "--key", str(pub))
    assert rc == 1 and not doc["ok"]
    rc, doc = run_cli(capsys, "ledger", "verify", "--tiles", str(out))
    assert rc == 2


def test_export_never_publishes_an_older_checkpoint(
    tmp_path: Path, log: Ledger, signer: NoteSigner
) -> None:
    fill(log, 3)
    old = log.checkpoint(signer)
    fill(log, 3, tag="n")
    out = tmp_path / "tiles"
    export_tiles(log, out, signer)
    with pytest.raises(LedgerInputError, match="newer than the one to publish"):
        export_tiles(log, out, signer, checkpoint_note=old)
    assert verify_tiles(out, [signer.verifier()]).audit.size == 6
