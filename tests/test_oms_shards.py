"""Shard serialization, the hash registry, annotations and --ignore-unsigned-files: attacks."""

from __future__ import annotations

import base64
import dataclasses
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelguard.errors import BadInputError, FormatError
from modelguard.keys import generate_key, write_keypair
from modelguard.policy import Policy, policy_from_keys
from modelguard.signing import sign_statement
from modelguard.signing.bundle import dump_bundle
from modelguard.signing.shards import (
    Serialization,
    compute_resources,
    parse_shard_name,
    shard_name,
    shard_ranges,
)
from modelguard.signing.sign import sign_model
from modelguard.signing.statement import parse_statement, subject_digest
from modelguard.signing.verify import verify_model
from tests.tinymodels import model_dir

KEY = generate_key("ecdsa-p256")
SHARDS = Serialization("shards", "sha256", 300)
ALL_HASHES = dataclasses.replace(
    policy_from_keys([KEY.public_key()]), allowed_hash_algorithms=("sha256", "blake2b", "blake3")
)


def signed(tmp_path: Path, spec: Serialization = SHARDS) -> Path:
    model = model_dir(tmp_path / "model")
    sign_model(model, KEY, record=False, serialization=spec)
    return model


def verify(model: Path, policy: Policy = ALL_HASHES, **options: Any) -> list[str]:
    report = verify_model(model, policy=policy, **options)
    assert report.ok == (not report.failures)
    return report.failures


def flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def statement_of(model: Path) -> dict[str, Any]:
    bundle = json.loads((model / "model.sig").read_bytes())
    return json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))  # type: ignore[no-any-return]


def resign(model: Path, statement: dict[str, Any]) -> None:
    """A statement the trusted key really signed: only the parser stands in the way."""
    (model / "model.sig").write_bytes(dump_bundle(sign_statement(statement, KEY)))


def test_shards_follow_model_signings_cut() -> None:
    assert shard_ranges(0, 10) == []
    assert shard_ranges(10, 10) == [(0, 10)]
    assert shard_ranges(11, 10) == [(0, 10), (10, 11)]
    assert parse_shard_name("a:b/c.bin:0:10") == ("a:b/c.bin", 0, 10)
    for bad in ("x.bin", "x.bin:10:10", "x.bin:01:10", "x.bin:-1:3", "x.bin:3:2", "x.bin:0:0"):
        with pytest.raises(FormatError):
            parse_shard_name(bad)


@settings(max_examples=200, deadline=None)
@given(
    path=st.text(alphabet="ab:/._0", min_size=1, max_size=12),
    start=st.integers(min_value=0, max_value=1 << 40),
    length=st.integers(min_value=1, max_value=1 << 40),
)
def test_shard_names_round_trip_even_with_colons(path: str, start: int, length: int) -> None:
    assert parse_shard_name(shard_name(path, start, start + length)) == (
        path,
        start,
        start + length,
    )


@pytest.mark.parametrize(
    "spec",
    [SHARDS, Serialization("shards", "blake2b", 500), Serialization("files", "blake3")],
    ids=str,
)
def test_a_changed_byte_names_the_byte_range_and_the_tensor(
    tmp_path: Path, spec: Serialization
) -> None:
    model = signed(tmp_path, spec)
    assert verify(model) == []
    size = (model / "model.safetensors").stat().st_size
    flip(model / "model.safetensors", size - 5)
    failures = "\n".join(verify(model))
    assert "tensor 'fc2.weight' in 'model.safetensors' differs" in failures
    if spec.method == "shards":
        last = (size - 1) // spec.shard_size * spec.shard_size  # type: ignore[operator]
        assert f"bytes {last}..{size} of file 'model.safetensors' differs" in failures
    else:
        assert "file 'model.safetensors' differs" in failures


def test_growing_truncating_and_adding_files_fail(tmp_path: Path) -> None:
    model = signed(tmp_path)
    original = (model / "model.onnx").read_bytes()
    (model / "model.onnx").write_bytes(original + b"\0" * 10)
    assert any("unexpected bytes" in f and "model.onnx" in f for f in verify(model))
    # a signed file that grew is not "unsigned": the opt-in does not excuse it
    assert any("unexpected bytes" in f for f in verify(model, ignore_unsigned_files=True))
    (model / "model.onnx").write_bytes(original[:-1])
    assert any("model.onnx" in f for f in verify(model, ignore_unsigned_files=True))
    (model / "model.onnx").write_bytes(original)
    assert verify(model) == []
    (model / "notes.txt").write_text("hello")
    assert any("notes.txt" in f and "not signed" in f for f in verify(model))


def test_ignore_unsigned_files_is_an_explicit_opt_in(tmp_path: Path) -> None:
    for spec in (Serialization(), SHARDS):
        model = signed(tmp_path / spec.method, spec)
        (model / "extra.safetensors").write_bytes((model / "model.safetensors").read_bytes())
        assert any("extra.safetensors" in f for f in verify(model))
        report = verify_model(model, policy=ALL_HASHES, ignore_unsigned_files=True)
        assert report.ok, report.failures
        assert any("ignoring 1 unsigned file(s)" in c.detail for c in report.checks)
        # ... but never a missing or changed signed file
        (model / "modelguard.json").unlink()
        assert any("modelguard.json" in f for f in verify(model, ignore_unsigned_files=True))


def test_empty_files_cannot_be_shard_signed_and_fail_as_unsigned(tmp_path: Path) -> None:
    model = model_dir(tmp_path / "model")
    (model / "empty.txt").write_bytes(b"")
    with pytest.raises(BadInputError, match="empty file has no shard"):
        sign_model(model, KEY, record=False, serialization=SHARDS)
    (model / "empty.txt").unlink()
    sign_model(model, KEY, record=False, serialization=SHARDS)
    (model / "empty.txt").write_bytes(b"")
    assert any("'empty.txt' (empty, no shard)" in f for f in verify(model))
    assert verify(model, ignore_unsigned_files=True) == []


def test_colons_in_file_names_are_refused_for_shard_signing(tmp_path: Path) -> None:
    model = model_dir(tmp_path / "model")
    (model / "a:0:1").write_bytes(b"x")
    with pytest.raises(BadInputError, match="':' in a file name"):
        sign_model(model, KEY, record=False, serialization=SHARDS)


def test_default_policy_allows_sha256_only(tmp_path: Path) -> None:
    model = signed(tmp_path, Serialization("files", "blake2b"))
    failures = verify(model, policy=policy_from_keys([KEY.public_key()]))
    assert failures == ["signer key " + failures[0].split("signer key ")[1]]
    assert "hash algorithm(s) ['blake2b'] not allowed by policy" in failures[0]


def _retile(statement: dict[str, Any]) -> None:
    resources = statement["predicate"]["resources"]
    statement["subject"][0]["digest"]["sha256"] = subject_digest(r["digest"] for r in resources)


def _drop_a_shard(statement: dict[str, Any]) -> None:
    del statement["predicate"]["resources"][1]


def _wrong_size(statement: dict[str, Any]) -> None:
    statement["predicate"]["serialization"]["shard_size"] = 299


def _legacy_label_of_another_size(statement: dict[str, Any]) -> None:
    statement["predicate"]["resources"][0]["algorithm"] = "sha256-sharded-400"


def _algorithm_mix(statement: dict[str, Any]) -> None:
    statement["predicate"]["resources"][0]["algorithm"] = "blake3"


def _record_moved(statement: dict[str, Any]) -> None:
    first, *_ = (r for r in statement["predicate"]["resources"] if "annotations" in r)
    target = next(r for r in statement["predicate"]["resources"] if "annotations" not in r)
    target["annotations"] = first.pop("annotations")


def _record_dropped(statement: dict[str, Any]) -> None:
    next(r for r in statement["predicate"]["resources"] if "annotations" in r).pop("annotations")


def _subject_note_dropped(statement: dict[str, Any]) -> None:
    statement["subject"][0].pop("annotations")


def _size_lie(statement: dict[str, Any]) -> None:
    note = next(r for r in statement["predicate"]["resources"] if "annotations" in r)
    note["annotations"]["modelguard"]["file"]["size"] += 1


def _extra_predicate_field(statement: dict[str, Any]) -> None:
    statement["predicate"]["comment"] = "hi"


def _shard_size_in_files_mode(statement: dict[str, Any]) -> None:
    statement["predicate"]["serialization"]["method"] = "files"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (_drop_a_shard, "do not cut the file"),
        (_wrong_size, "do not cut the file"),
        (_legacy_label_of_another_size, "is not the serialization's hash_type"),
        (_algorithm_mix, "is not the serialization's hash_type"),
        (_record_moved, "another file"),
        (_record_dropped, "not every signed file has a manifest record"),
        (_subject_note_dropped, "without the subject's modelguard annotation"),
        (_size_lie, "disagrees with its shards' extent"),
        (_extra_predicate_field, "unknown fields"),
        (_shard_size_in_files_mode, "shard"),
    ],
)
def test_inconsistent_signed_statements_are_refused(
    tmp_path: Path, mutate: Callable[[dict[str, Any]], None], reason: str
) -> None:
    model = signed(tmp_path)
    statement = statement_of(model)
    mutate(statement)
    _retile(statement)
    resign(model, statement)
    with pytest.raises(FormatError, match=reason) as caught:
        verify_model(model, policy=ALL_HASHES)
    assert caught.value.exit_code == 2


def test_annotation_file_digest_must_equal_the_resource(tmp_path: Path) -> None:
    model = signed(tmp_path, Serialization())
    statement = statement_of(model)
    note = next(r for r in statement["predicate"]["resources"] if r["name"] == "model.onnx")
    note["annotations"]["modelguard"]["file"]["digest"] = "00" * 32
    with pytest.raises(FormatError, match="disagrees with its resource digest"):
        parse_statement(statement)


def test_model_signing_labels_and_float_shard_size_are_accepted(tmp_path: Path) -> None:
    """What model_signing 1.1.1 writes (spec section on backward compatibility)."""
    model = signed(tmp_path)
    statement = statement_of(model)
    statement["predicate"]["serialization"]["shard_size"] = 300.0
    for resource in statement["predicate"]["resources"]:
        resource["algorithm"] = "sha256-sharded-300"
    resign(model, statement)
    assert verify(model) == []
    assert {r.algorithm for r in parse_statement(statement).resources} == {"sha256"}


def test_co_signing_a_shard_signed_model_checks_the_first_signers_shards(tmp_path: Path) -> None:
    model = signed(tmp_path)
    other = generate_key("ecdsa-p256")
    sign_model(model, other, record=False)  # files/sha256 beside a shard signature
    flip(model / "model.safetensors", (model / "model.safetensors").stat().st_size - 5)
    with pytest.raises(BadInputError, match="changed since it was signed"):
        sign_model(model, generate_key("ecdsa-p256"), record=False)


def test_compute_resources_reads_each_file_once_per_shard_set(tmp_path: Path) -> None:
    model = model_dir(tmp_path / "model")
    resources = compute_resources(model, SHARDS)
    size = (model / "model.onnx").stat().st_size
    names = [n for n in resources if n.startswith("model.onnx:")]
    assert len(names) == len(shard_ranges(size, 300))


@settings(max_examples=150, deadline=None)
@given(
    position=st.floats(min_value=0, max_value=0.9999),
    replacement=st.sampled_from(['"', "0", "9", ":", "x", "{", "-", "."]),
)
def test_mutated_shard_statements_parse_or_are_refused(position: float, replacement: str) -> None:
    statement = _SHARD_STATEMENT_TEXT
    at = int(position * len(statement))
    text = statement[:at] + replacement + statement[at + 1 :]
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        return
    try:
        parsed = parse_statement(document)
    except FormatError:
        return
    # whatever parses is internally consistent: digests bind the subject, shards tile files
    assert subject_digest(r.digest for r in parsed.resources) == parsed.subject_digest
    if parsed.modelguard is not None:
        assert parsed.modelguard["manifest"]["files"]


def _shard_statement_text() -> str:
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        model = signed(Path(directory))
        return json.dumps(statement_of(model))


_SHARD_STATEMENT_TEXT = _shard_statement_text()


def test_sign_cli_shards_and_verify_cli_ignore_unsigned(tmp_path: Path) -> None:
    model = model_dir(tmp_path / "model")
    priv, pub = write_keypair(tmp_path / "keys", "ecdsa-p256", KEY, None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "modelguard", *args],
            capture_output=True,
            text=True,
            check=False,
        )

    done = cli("sign", str(model), "--key", str(priv), "--no-ledger", "--shard-size", "10")
    assert done.returncode == 2 and "--serialization shards" in done.stderr
    done = cli(
        "sign", str(model), "--key", str(priv), "--no-ledger", "--json",
        "--serialization", "shards", "--shard-size", "400",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert statement_of(model)["predicate"]["serialization"]["shard_size"] == 400
    (model / "unsigned.txt").write_text("x")
    done = cli("verify", str(model), "--key", str(pub), "--json")
    assert done.returncode == 1 and "unsigned.txt" in done.stdout
    done = cli("verify", str(model), "--key", str(pub), "--ignore-unsigned-files", "--json")
    assert done.returncode == 0, done.stdout


def test_signing_refuses_a_statement_a_reader_would_refuse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resources that disagree with the manifest (a shard's extent off by one) are never signed.

    Signing hashes one buffer per file, so the file cannot change between the two passes; the
    statement is still parsed before it is signed, as a reader would parse it.
    """
    import modelguard.signing.files as signing_model

    real = signing_model.resources_from_views

    def grown(*args: Any, **kwargs: Any) -> dict[str, str]:
        resources = real(*args, **kwargs)
        last = max(
            (n for n in resources if n.startswith("modelguard.json:")),
            key=lambda n: int(n.rsplit(":", 1)[1]),
        )
        path, start, end = last.rsplit(":", 2)
        resources[f"{path}:{start}:{int(end) + 1}"] = resources.pop(last)
        return resources

    monkeypatch.setattr(signing_model, "resources_from_views", grown)
    model = model_dir(tmp_path / "model")
    with pytest.raises(FormatError, match="disagrees with its shards' extent"):
        sign_model(model, KEY, record=False, serialization=SHARDS)
    assert not (model / "model.sig").exists()
