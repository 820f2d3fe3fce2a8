"""One scan per model (issue 15): each byte hashed once per function, verify on the signed layout.

Signing hashes every file once with SHA-256 (the OMS resource digests) and every tensor, gap
and structure once with BLAKE3 (the layout); verification hashes every byte once, with BLAKE3
alone when the policy accepts it, and still names the tensor that changed.
"""

from __future__ import annotations

import functools
import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import modelguard.manifest as manifest_module
from modelguard.cli import main as cli_main
from modelguard.errors import BadInputError, DigestMismatchError, FormatError
from modelguard.keys import generate_key, write_keypair
from modelguard.manifest import (
    Manifest,
    ScanCancelled,
    TensorProof,
    build_manifest,
    open_model,
    prove_tensor,
    scan_model,
    start_scan,
)
from modelguard.policy import policy_from_keys
from modelguard.signing.files import signed_manifest
from modelguard.signing.sign import sign_model
from modelguard.signing.verify import verify_model
from tests.tinymodels import tiny_safetensors

KEY = generate_key()


def sharded(path: Path) -> Path:
    """A Hugging Face style model: two safetensors shards, their index and a config file."""
    path.mkdir()
    rng = np.random.default_rng(15)
    first = {f"a{i}": rng.standard_normal(64 + i).astype(np.float32) for i in range(3)}
    second = {f"b{i}": rng.standard_normal(32 + i).astype(np.float32) for i in range(2)}
    tiny_safetensors(path / "model-00001-of-00002.safetensors", first)
    tiny_safetensors(path / "model-00002-of-00002.safetensors", second)
    weight_map = {**dict.fromkeys(first, "model-00001-of-00002.safetensors")}
    weight_map |= dict.fromkeys(second, "model-00002-of-00002.safetensors")
    (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (path / "config.json").write_text('{"layers": 5}')
    return path


class Counting:
    """A hasher that counts the bytes it is fed, per algorithm."""

    def __init__(self, inner: Any, algorithm: str, fed: Counter[str]) -> None:
        self.inner, self.algorithm, self.fed = inner, algorithm, fed

    def update(self, data: bytes | memoryview) -> None:
        self.fed[self.algorithm] += memoryview(data).nbytes
        self.inner.update(data)

    def digest(self) -> bytes:
        return bytes(self.inner.digest())

    def hexdigest(self) -> str:
        return str(self.inner.hexdigest())


@pytest.fixture
def fed(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Bytes fed to every manifest, layout and file hasher, by algorithm."""
    counts: Counter[str] = Counter()
    real = manifest_module.new_hasher

    def counting(algorithm: str) -> Counting:
        return Counting(real(algorithm), algorithm, counts)

    monkeypatch.setattr(manifest_module, "new_hasher", counting)
    return counts


def sizes(model: Path) -> tuple[int, int, int]:
    """(all file bytes, bytes of files holding tensors, structure bytes of those files)."""
    files = open_model(model)
    tiled = [rel for rel in files.members if rel.endswith(".safetensors")]
    from modelguard.formats import parse_model_file

    structure = 0
    for rel in tiled:
        parsed = parse_model_file(files.root / rel, root=files.root, files=files)
        assert parsed is not None
        structure += len(parsed.structure)
    return sum(files.size(r) for r in files.members), sum(files.size(r) for r in tiled), structure


def test_sign_hashes_each_byte_once_per_function(tmp_path: Path, fed: Counter[str]) -> None:
    model = sharded(tmp_path / "m")
    total, tiled, structure = sizes(model)
    result = sign_model(model, KEY, record=False)
    # SHA-256: every byte of every file once (the OMS resources); nothing else
    assert fed["sha256"] == total
    # BLAKE3: every byte of every file once (tensors + gaps; files without tensors are all
    # gaps), plus the structures
    assert tiled < total  # config.json and the index hold no tensors
    assert fed["blake3"] == total + structure
    assert set(fed) == {"sha256", "blake3"}
    signed = result.manifest
    assert signed.scheme == ("blake3", "sha256")
    resources = {r["name"]: r["digest"] for r in result.statement["predicate"]["resources"]}
    assert resources == {f.path: f.digest for f in signed.files}  # one SHA-256 pass, shared


def test_verify_runs_on_the_layout_alone(tmp_path: Path, fed: Counter[str]) -> None:
    model = sharded(tmp_path / "m")
    total, tiled, _ = sizes(model)
    sign_model(model, KEY, record=False)
    fed.clear()
    report = verify_model(model, keys=[KEY.public_key()])
    assert report.ok, report.failures
    assert fed["blake3"] == total  # every tensor and gap byte once, in every file
    assert fed["sha256"] == 0  # files without tensors (config, index) are gap segments too
    assert any("every byte hashed" in c.detail for c in report.checks)


def test_a_sha256_only_policy_checks_every_file_with_sha256(
    tmp_path: Path, fed: Counter[str]
) -> None:
    model = sharded(tmp_path / "m")
    total, _, _ = sizes(model)
    sign_model(model, KEY, record=False)
    fed.clear()
    policy = policy_from_keys([KEY.public_key()])
    strict = type(policy)(**{**policy.__dict__, "allowed_hash_algorithms": ("sha256",)})
    report = verify_model(model, policy=strict)
    assert report.ok, report.failures
    assert fed["sha256"] == total  # the verdict rests on SHA-256 of every byte
    assert not any("every byte hashed" in c.detail for c in report.checks)


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def tensor_offset(path: Path, name: str) -> int:
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8 : 8 + header_len])
    return 8 + header_len + int(header[name]["data_offsets"][0])


SHARD1 = "model-00001-of-00002.safetensors"
SHARD2 = "model-00002-of-00002.safetensors"


def _tamper(model: Path, how: str) -> str | None:
    """Change the model one way; the tensor name a report must mention, if any."""
    shard = model / SHARD1
    if how == "tensor":
        flip(shard, tensor_offset(shard, "a1") + 3)
        return "a1"
    if how == "last tensor":
        flip(model / SHARD2, tensor_offset(model / SHARD2, "b1") + 5)
        return "b1"
    if how == "header":
        flip(shard, 20)
    elif how == "append":
        with shard.open("ab") as handle:
            handle.write(b"\0")
    elif how == "truncate":
        shard.write_bytes(shard.read_bytes()[:-4])
    elif how == "config":
        (model / "config.json").write_text('{"layers": 6}')
    elif how == "config grows":  # a file without tensors is gap segments: its size is signed too
        (model / "config.json").write_text('{"layers": 5} ')
    elif how == "config emptied":
        (model / "config.json").write_bytes(b"")
    elif how == "remove":
        (model / SHARD2).unlink()
    elif how == "add":
        (model / "extra.bin").write_bytes(b"unsigned")
    elif how == "swap":
        one, two = (model / SHARD1).read_bytes(), (model / SHARD2).read_bytes()
        (model / SHARD1).write_bytes(two)
        (model / SHARD2).write_bytes(one)
    return None


TAMPERS = [
    "tensor",
    "last tensor",
    "header",
    "append",
    "truncate",
    "config",
    "config grows",
    "config emptied",
    "remove",
    "add",
    "swap",
]


@pytest.mark.parametrize("strict", [False, True], ids=["layout", "sha256-policy"])
@pytest.mark.parametrize("how", TAMPERS)
def test_every_tamper_is_refused_on_both_paths(tmp_path: Path, how: str, strict: bool) -> None:
    model = sharded(tmp_path / "m")
    sign_model(model, KEY, record=False)
    named = _tamper(model, how)
    policy = policy_from_keys([KEY.public_key()])
    if strict:
        policy = type(policy)(**{**policy.__dict__, "allowed_hash_algorithms": ("sha256",)})
    report = verify_model(model, policy=policy)
    assert not report.ok
    if named is not None:
        assert any(f"tensor {named!r}" in f for f in report.failures), report.failures


def test_signatures_from_before_issue_15_still_verify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SHA-256 manifest and SHA-256 layout (what modelguard signed before) keeps verifying."""
    model = sharded(tmp_path / "m")
    old = functools.partial(scan_model, hash_algorithm="sha256", file_hash_algorithm=None)
    monkeypatch.setattr(  # the scan signing starts (modelguard.manifest.start_scan)
        manifest_module, "scan_model", lambda files, **kw: old(files, threads=kw.get("threads"))
    )
    signed = sign_model(model, KEY, record=False)
    monkeypatch.undo()
    assert signed.manifest.scheme == ("sha256", "sha256")
    assert "file_hash_algorithm" not in signed.manifest.to_dict()
    assert verify_model(model, keys=[KEY.public_key()]).ok
    flip(model / SHARD1, tensor_offset(model / SHARD1, "a2"))
    report = verify_model(model, keys=[KEY.public_key()])
    assert not report.ok and any("tensor 'a2'" in f for f in report.failures)


def test_mixed_manifest_round_trip_and_validation(tmp_path: Path) -> None:
    model = sharded(tmp_path / "m")
    mixed = build_manifest(model, hash_algorithm="blake3", file_hash_algorithm="sha256")
    assert Manifest.from_dict(mixed.to_dict()) == mixed
    pure = build_manifest(model)
    assert "file_hash_algorithm" not in pure.to_dict()
    # the file leaves say which function made them; the files' digests are the pure manifest's
    assert [f.digest for f in mixed.files] == [f.digest for f in pure.files]
    assert mixed.layer_root != pure.layer_root
    bad = {**mixed.to_dict(), "file_hash_algorithm": "blake3"}
    with pytest.raises(FormatError, match="file_hash_algorithm"):
        Manifest.from_dict(bad)
    with pytest.raises(FormatError, match="layer_root"):
        Manifest.from_dict({**mixed.to_dict(), "file_hash_algorithm": "blake2b"})


def test_the_scan_layout_tiles_every_file(tmp_path: Path) -> None:
    model = sharded(tmp_path / "m")
    scan = scan_model(open_model(model))
    assert scan.layout is not None and set(scan.layout) == {
        SHARD1,
        SHARD2,
        "config.json",
        "model.safetensors.index.json",
    }
    assert all(s[2] is None for s in scan.layout["config.json"])  # no tensors: gaps only
    for path, segments in scan.layout.items():
        cursor = 0
        for offset, length, _, _ in segments:
            assert offset == cursor
            cursor += length
        assert cursor == (model / path).stat().st_size


@pytest.mark.parametrize("private", [False, True])
def test_released_pages_read_back_the_same_bytes(tmp_path: Path, private: bool) -> None:
    """Dropping a mapping's pages changes only residency; a private copy is never dropped."""
    model = sharded(tmp_path / "m")
    files = open_model(model, private=private)
    before = bytes(files.view(SHARD1))
    files.drop_pages(SHARD1, 1, 5000)
    files.drop_pages(SHARD1)
    assert bytes(files.view(SHARD1)) == before
    assert scan_model(files).manifest == scan_model(open_model(model)).manifest


def test_partial_verification_checks_named_tensors_and_every_non_tensor_byte(
    tmp_path: Path, fed: Counter[str]
) -> None:
    model = sharded(tmp_path / "m")
    total, tiled, _ = sizes(model)
    sign_model(model, KEY, record=False)
    fed.clear()
    report = verify_model(model, keys=[KEY.public_key()], tensors=["a1", "b0"])
    assert report.ok and report.partial == ["a1", "b0"], report.failures
    assert any("3 other tensor(s) NOT checked" in c.detail for c in report.checks)
    assert report.manifest is not None
    left_out = [t for f in report.manifest.files for t in f.tensors if t.name not in ("a1", "b0")]
    skipped = sum(t.nbytes for t in left_out)
    assert fed["blake3"] == total - skipped  # only the named tensors and the gaps
    # a change in a tensor left out goes unnoticed, and the report said so; in a named one or
    # in a header it is caught
    flip(model / SHARD1, tensor_offset(model / SHARD1, "a2"))
    assert verify_model(model, keys=[KEY.public_key()], tensors=["a1"]).ok
    report = verify_model(model, keys=[KEY.public_key()], tensors=["a2"])
    assert not report.ok and any("tensor 'a2'" in f for f in report.failures)
    flip(model / SHARD1, 20)
    assert not verify_model(model, keys=[KEY.public_key()], tensors=["a1"]).ok


def test_partial_verification_refuses_unknown_tensor_names(tmp_path: Path) -> None:
    model = sharded(tmp_path / "m")
    sign_model(model, KEY, record=False)
    with pytest.raises(BadInputError, match="no tensor 'nope'"):
        verify_model(model, keys=[KEY.public_key()], tensors=["a1", "nope"])


def test_tensor_inclusion_proof_against_the_signed_root(tmp_path: Path) -> None:
    model = sharded(tmp_path / "m")
    signed = sign_model(model, KEY, record=False).manifest
    assert signed_manifest(model) == signed
    proof = prove_tensor(signed, "b1")
    data = open_model(model).view(SHARD2)
    start = tensor_offset(model / SHARD2, "b1")
    tensor = data[start : start + proof.leaf["nbytes"]]
    again = TensorProof.from_dict(json.loads(json.dumps(proof.to_dict())))
    again.check(signed.layer_root, tensor)
    with pytest.raises(DigestMismatchError, match="bytes differ"):
        again.check(signed.layer_root, bytes(tensor[:-1]) + b"\x00")
    with pytest.raises(DigestMismatchError, match="does not lead"):
        again.check("00" * 32, tensor)
    forged = TensorProof.from_dict({**proof.to_dict(), "leaf": {**proof.leaf, "digest": "11" * 32}})
    with pytest.raises(DigestMismatchError, match="does not lead"):
        forged.check(signed.layer_root)
    with pytest.raises(DigestMismatchError):
        TensorProof.from_dict({**proof.to_dict(), "leaf_index": proof.leaf_index + 1}).check(
            signed.layer_root
        )


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    with pytest.raises(SystemExit) as done:
        cli_main.main(list(args))
    out = capsys.readouterr().out
    return int(done.value.code or 0), json.loads(out) if out.strip().startswith("{") else out


def test_cli_verify_tensors_and_manifest_prove(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = sharded(tmp_path / "m")
    _, pub = write_keypair(tmp_path / "keys", "k", KEY, None)
    signed = sign_model(model, KEY, record=False).manifest
    code, report = run_cli(
        capsys, "verify", str(model), "--trust-key", str(pub), "--tensors", "a0,b1", "--json"
    )
    assert code == 0 and report["partial_tensors"] == ["a0", "b1"]
    code, report = run_cli(capsys, "verify", str(model), "--trust-key", str(pub), "--json")
    assert code == 0 and report["partial_tensors"] is None
    code, _ = run_cli(capsys, "verify", str(model), "--trust-key", str(pub), "--tensors", "zz")
    assert code == 2
    out = tmp_path / "a0.proof.json"
    code, proof = run_cli(capsys, "manifest", str(model), "--prove", "a0", "-o", str(out), "--json")
    assert code == 0 and proof == json.loads(out.read_text())
    assert proof["layer_root"] == signed.layer_root
    TensorProof.from_dict(proof).check(signed.layer_root)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_one_read_for_both_functions_gives_the_same_digests(tmp_path: Path, threads: int) -> None:
    """Fused (a thread per file, both functions in one read) and split jobs agree exactly."""
    model = sharded(tmp_path / "m")
    split = scan_model(open_model(model), threads=8)  # fewer files than threads: split jobs
    assert scan_model(open_model(model), threads=threads) == split
    assert scan_model(open_model(model), threads=threads, chunk_size=7) == split


def test_a_started_scan_gives_the_same_scan_and_its_errors(tmp_path: Path) -> None:
    model = sharded(tmp_path / "m")
    started = start_scan(open_model(model), file_hash_algorithm="blake3")
    assert started.result() == scan_model(open_model(model), file_hash_algorithm="blake3")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\xff" * 8 + b"{}")  # header length far beyond the file
    with pytest.raises(FormatError):
        start_scan(open_model(bad)).result()


def test_a_cancelled_scan_stops_hashing(tmp_path: Path) -> None:
    model = sharded(tmp_path / "m")
    stop = threading.Event()
    stop.set()
    with pytest.raises(ScanCancelled):
        scan_model(open_model(model), stop=stop)
    started = start_scan(open_model(model))
    started.cancel()  # finished or stopped: either way nothing runs afterwards
    assert not any(t.name.startswith("modelguard-hash") for t in threading.enumerate())


def test_cli_sign_stops_its_scan_when_the_key_does_not_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sign` starts hashing before it loads the key: a wrong passphrase still ends the command
    with exit 2, writes no signature and leaves no hashing thread behind."""
    model = sharded(tmp_path / "m")
    priv, _ = write_keypair(tmp_path / "keys", "k", KEY, b"right passphrase")
    monkeypatch.setenv("MG_PASS", "wrong passphrase")
    code, document = run_cli(
        capsys, "sign", str(model), "--sign-key", str(priv), "--sign-passphrase-env", "MG_PASS",
        "--no-ledger", "--json",
    )  # fmt: skip
    assert code == 2 and document["error"]["type"] == "KeyFileError"
    assert not (model / "model.sig").exists()
    assert not [t for t in threading.enumerate() if t.name.startswith("modelguard-")]


def test_a_file_without_tensors_verifies_on_the_layout(tmp_path: Path, fed: Counter[str]) -> None:
    """An encrypted container, a tokenizer, any raw file: BLAKE3 gap segments, no SHA-256 pass."""
    blob = tmp_path / "weights.mgenc"
    blob.write_bytes(np.random.default_rng(5).bytes(300_000))
    sign_model(blob, KEY, record=False)
    fed.clear()
    report = verify_model(blob, keys=[KEY.public_key()])
    assert report.ok, report.failures
    assert fed == Counter({"blake3": 300_000})
    flip(blob, 299_999)
    assert not verify_model(blob, keys=[KEY.public_key()]).ok
