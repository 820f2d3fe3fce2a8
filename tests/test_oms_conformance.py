"""OpenSSF Model Signing v1.0 conformance: the spec's JSON Schemas and test vectors.

The schemas and vectors in tests/testdata/oms-v1.0 are a verbatim copy of
ossf/model-signing-spec (Apache-2.0, README and LICENSE beside them). Every bundle modelguard
writes must validate; the spec's valid vectors must parse and its invalid ones be refused
(exit 2 through the CLI).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource

from modelguard.encryption.model import encrypt_model
from modelguard.errors import FormatError
from modelguard.keys import generate_key, load_public_key, write_keypair
from modelguard.signing import sign_statement
from modelguard.signing.bundle import dump_bundle, load_bundle_bytes
from modelguard.signing.shards import Serialization
from modelguard.signing.sign import sign_model
from modelguard.signing.statement import parse_oms_bundle, parse_statement
from modelguard.signing.verify import verify_model
from tests.tinymodels import model_dir

OMS = Path(__file__).parent / "testdata" / "oms-v1.0"
VECTORS = OMS / "test-vectors"
KEY = generate_key("ecdsa-p256")
OTHER = generate_key("ecdsa-p256")


def _registry() -> Registry:
    registry: Registry = Registry()
    for path in sorted((OMS / "schemas").glob("*.schema.json")):
        schema = json.loads(path.read_text())
        registry = registry.with_resource(schema["$id"], Resource.from_contents(schema))
    return registry


REGISTRY = _registry()


def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = REGISTRY.contents(f"https://model_signing/{name}/v1.0/schema")
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, registry=REGISTRY)


BUNDLE_SCHEMA = validator("bundle")
STATEMENT_SCHEMA = validator("statement")


def payload(bundle: dict[str, Any]) -> dict[str, Any]:
    return json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))  # type: ignore[no-any-return]


def schema_errors(bundle: dict[str, Any], *, oms: bool = True) -> list[str]:
    errors = [e.message for e in BUNDLE_SCHEMA.iter_errors(bundle)]
    if oms and not errors:
        errors += [e.message for e in STATEMENT_SCHEMA.iter_errors(payload(bundle))]
    return errors


def read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_bytes())  # type: ignore[no-any-return]


# ---- modelguard's bundles validate ----------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        Serialization(),
        Serialization("shards", "sha256", 300),
        Serialization("shards", "blake2b", 1000),
        Serialization("files", "blake2b"),
        Serialization("files", "blake3"),
        Serialization("shards", "blake3", 512),
    ],
    ids=str,
)
def test_directory_bundles_validate_against_the_oms_schema(
    tmp_path: Path, spec: Serialization
) -> None:
    model = model_dir(tmp_path / "model")
    result = sign_model(model, KEY, name="tiny", version="1", record=False, serialization=spec)
    bundle = read(result.signature_path)
    assert schema_errors(bundle) == []
    predicate = payload(bundle)["predicate"]
    assert sorted(predicate) == ["resources", "serialization"]
    assert predicate["serialization"]["method"] == spec.method
    assert {r["algorithm"] for r in predicate["resources"]} == {spec.hash_type}
    # the per-layer manifest is still there, now in the annotations
    parsed = parse_statement(payload(bundle))
    assert parsed.modelguard is not None and not parsed.legacy_extension
    assert parsed.modelguard["name"] == "tiny" and parsed.modelguard["version"] == "1"
    assert parsed.modelguard["manifest"]["layer_root"] == result.manifest.layer_root
    assert verify_model(model, keys=[KEY.public_key()]).layer_detail


def test_single_file_and_co_signer_bundles_validate(tmp_path: Path) -> None:
    model = model_dir(tmp_path / "model")
    sign_model(model, KEY, record=False)
    cosig = sign_model(model, OTHER, record=False)
    assert cosig.cosigned
    single = sign_model(
        model / "model.safetensors", KEY, signature_path=tmp_path / "one.sig", record=False
    )
    shards = sign_model(
        model / "model.onnx",
        KEY,
        signature_path=tmp_path / "onnx.sig",
        record=False,
        serialization=Serialization("shards", "sha256", 256),
    )
    for path in (model / "model.sig", cosig.signature_path, single.signature_path):
        assert schema_errors(read(path)) == [], path
    onnx_statement = payload(read(shards.signature_path))
    assert [r["name"] for r in onnx_statement["predicate"]["resources"]][:2] == [
        ".:0:256",
        ".:256:512",
    ]
    assert parse_statement(onnx_statement).paths == (".",)
    assert schema_errors(read(shards.signature_path)) == []
    assert verify_model(model / "model.onnx", tmp_path / "onnx.sig", keys=[KEY.public_key()]).ok


def test_encrypted_container_bundles_validate(tmp_path: Path) -> None:
    model = model_dir(tmp_path / "model")
    result = encrypt_model(model, tmp_path / "enc", key=os.urandom(32), sign_key=KEY, record=False)
    assert result.signature is not None
    assert schema_errors(read(result.signature)) == []


def test_generic_bundles_for_other_predicates_validate_at_bundle_level() -> None:
    # Robustness certificates use their own predicate type (not OMS): the bundle and DSSE
    # envelope schemas apply to them, the OMS statement schema does not.
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "m", "digest": {"sha256": "00" * 32}}],
        "predicateType": "https://modelguard.dev/robustness-certificate/v1",
        "predicate": {"version": 1},
    }
    assert schema_errors(sign_statement(statement, KEY), oms=False) == []


def test_the_schema_tooling_rejects_the_pre_v1_placement(tmp_path: Path) -> None:
    """What issue 16 found: a top-level predicate field fails the v1.0 schema."""
    model = model_dir(tmp_path / "model")
    sign_model(model, KEY, record=False)
    bundle = read(model / "model.sig")
    statement = legacy_statement(payload(bundle))
    legacy = sign_statement(statement, KEY)
    assert any("'modelguard' was unexpected" in e for e in schema_errors(legacy))


# ---- bundles of earlier modelguard versions still verify (deprecation window) ----------------


def legacy_statement(statement: dict[str, Any]) -> dict[str, Any]:
    """The same statement in the layout modelguard wrote before OMS v1.0 conformance."""
    parsed = parse_statement(statement)
    assert parsed.modelguard is not None
    old = json.loads(json.dumps(statement))
    old["subject"][0].pop("annotations")
    for resource in old["predicate"]["resources"]:
        resource.pop("annotations", None)
    old["predicate"]["modelguard"] = {**parsed.modelguard, "schema": 1}
    return old  # type: ignore[no-any-return]


def test_legacy_bundles_verify_and_still_name_the_changed_tensor(tmp_path: Path) -> None:
    model = model_dir(tmp_path / "model")
    sign_model(model, KEY, name="tiny", version="3", record=False)
    statement = legacy_statement(payload(read(model / "model.sig")))
    (model / "model.sig").write_bytes(dump_bundle(sign_statement(statement, KEY)))
    report = verify_model(model, keys=[KEY.public_key()])
    assert report.ok, report.failures
    assert report.layer_detail and report.signers[0].model_version == "3"
    assert parse_statement(statement).legacy_extension
    data = bytearray((model / "model.safetensors").read_bytes())
    data[-5] ^= 1
    (model / "model.safetensors").write_bytes(bytes(data))
    report = verify_model(model, keys=[KEY.public_key()])
    assert not report.ok
    assert "tensor 'fc2.weight' in 'model.safetensors' differs" in "\n".join(report.failures)


LEGACY = Path(__file__).parent / "testdata" / "legacy-predicate"


def test_a_bundle_written_by_modelguard_0_1_still_verifies(tmp_path: Path) -> None:
    """A real artifact of the old writer (tests/testdata/legacy-predicate/README.md)."""
    model = tmp_path / "model"
    shutil.copytree(LEGACY / "model", model)
    bundle = read(model / "model.sig")
    assert any("'modelguard' was unexpected" in e for e in schema_errors(bundle))
    assert parse_statement(payload(bundle)).legacy_extension
    key = load_public_key(LEGACY / "signer.pub")
    report = verify_model(model, keys=[key])
    assert report.ok, report.failures
    assert report.layer_detail and report.signers[0].model_version == "0.9"
    data = bytearray((model / "model.onnx").read_bytes())
    at = data.index(bytes((model / "model.safetensors").read_bytes()[-16:]))
    data[at] ^= 1  # a byte of the last tensor's raw_data in the ONNX file
    (model / "model.onnx").write_bytes(bytes(data))
    failures = "\n".join(verify_model(model, keys=[key]).failures)
    assert "tensor 'fc2.weight' in 'model.onnx' differs" in failures


def test_data_in_both_placements_is_refused(tmp_path: Path) -> None:
    model = model_dir(tmp_path / "model")
    sign_model(model, KEY, record=False)
    statement = payload(read(model / "model.sig"))
    statement["predicate"]["modelguard"] = legacy_statement(statement)["predicate"]["modelguard"]
    with pytest.raises(FormatError, match="both in annotations and predicate"):
        parse_statement(statement)


# ---- the spec's vectors through modelguard's bundle parser ---------------------------------


def test_the_valid_key_vector_parses() -> None:
    document = read(VECTORS / "valid" / "key.bundle.json")
    assert schema_errors(document) == []
    parsed, statement = parse_oms_bundle(document)
    assert parsed.hint == "e8450dec4eb99dae995da9af1bc2cc9f76ed669ee2e744f57abba763df3e3f8e"
    assert [r.name for r in statement.resources] == ["signme-1", "signme-2"]
    assert statement.modelguard is None and statement.method == "files"
    assert "ignore-me" in statement.ignore_paths


@pytest.mark.parametrize("name", ["certificate", "sigstore"])
def test_valid_certificate_and_keyless_vectors_stop_as_not_supported(name: str) -> None:
    document = read(VECTORS / "valid" / f"{name}.bundle.json")
    assert schema_errors(document) == []
    with pytest.raises(FormatError, match="not supported") as caught:
        parse_oms_bundle(document)
    assert caught.value.exit_code == 2


INVALID = sorted(
    [*(VECTORS / "invalid").glob("*.json"), *(VECTORS / "invalid-payload").glob("*.json")]
)


@pytest.mark.parametrize("vector", INVALID, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_invalid_vectors_fail_the_schema_and_are_refused(vector: Path) -> None:
    data = vector.read_bytes()
    if data.strip():
        assert schema_errors(json.loads(data)) != []
    with pytest.raises(FormatError) as caught:
        parse_oms_bundle(load_bundle_bytes(data, source=vector.name))
    assert caught.value.exit_code == 2


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelguard", *args], capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize(
    ("vector", "code", "reason"),
    [
        ("valid/key.bundle.json", 1, "no valid signature by the given key"),
        ("valid/certificate.bundle.json", 2, "not supported"),
        ("valid/sigstore.bundle.json", 2, "not supported"),
        ("invalid/empty.bundle.json", 2, "not valid JSON"),
        ("invalid/missing-envelope.bundle.json", 2, "no dsseEnvelope"),
        ("invalid/missing-tlog-entries.bundle.json", 2, "without transparency-log entries"),
        ("invalid/missing-verification-material.bundle.json", 2, "no verificationMaterial"),
        ("invalid-payload/wrong-predicate.bundle.json", 2, "predicateType"),
    ],
)
def test_verify_cli_on_the_spec_vectors(
    tmp_path: Path, vector: str, code: int, reason: str
) -> None:
    """The key vector parses (its signer is simply not trusted here); the rest exit 2."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "signme-1").write_bytes(b"1")
    _, pub = write_keypair(tmp_path / "keys", "ecdsa-p256", KEY, None)
    done = run_cli("verify", str(model), "--signature", str(VECTORS / vector), "--key", str(pub))
    assert done.returncode == code, done.stderr
    assert reason in done.stderr
    if code == 2:
        assert Path(vector).name in done.stderr and done.stderr.count("\n") == 1
