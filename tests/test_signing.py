"""Signing and verification: tampering anywhere is caught and named; malformed input is refused."""

from __future__ import annotations

import base64
import json
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelguard.errors import BadInputError, FormatError, ModelGuardError, SignatureError
from modelguard.keys import generate_key, key_id, oms_hint, sign_bytes
from modelguard.signing import dsse, sign_statement, verify_bundle
from modelguard.signing.bundle import dump_bundle, make_bundle
from modelguard.signing.files import cosign_dir
from modelguard.signing.report import VerificationReport
from modelguard.signing.sign import sign_model
from modelguard.signing.statement import model_statement, parse_statement, subject_digest
from modelguard.signing.verify import verify_model
from tests.tinymodels import model_dir, tiny_safetensors

KEY = generate_key("ecdsa-p256")
OTHER = generate_key("ed25519")


@pytest.fixture(scope="module")
def signed_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory model (ONNX + safetensors + JSON card) signed once; tests copy it."""
    path = model_dir(tmp_path_factory.mktemp("signed") / "model")
    sign_model(path, KEY, name="tiny", version="1.0", record=False)
    return path


def fresh_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def failures(report: VerificationReport) -> str:
    return "\n".join(report.failures)


def test_roundtrip_directory_and_report(signed_model: Path) -> None:
    report = verify_model(signed_model, keys=[KEY.public_key()])
    assert report.ok, report.failures
    assert report.layer_detail and report.manifest is not None
    assert report.manifest.tensor_count == 8  # 4 in ONNX, 4 in safetensors
    [signer] = report.signers
    assert signer.status == "verified" and signer.key_id == key_id(KEY.public_key())
    assert signer.model_name == "tiny" and signer.model_version == "1.0"
    document = report.to_dict()
    assert document["ok"] is True and document["failures"] == []
    json.dumps(document)
    # every byte was checked through the signed tensor/gap layout (the parallel path)
    assert any("every byte hashed" in c.detail for c in report.checks)


def test_layout_tiles_every_model_file(signed_model: Path) -> None:
    bundle = json.loads((signed_model / "model.sig").read_bytes())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    layout = parse_statement(statement).modelguard["layout"]  # type: ignore[index]
    assert set(layout) == {"model.onnx", "model.safetensors", "modelguard.json"}  # the card too
    for path, segments in layout.items():
        assert segments[0][0] == 0
        assert sum(s[1] for s in segments) == (signed_model / path).stat().st_size
        assert {s[2] for s in segments if s[2]} == (
            set()
            if path == "modelguard.json"
            else {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
        )


def test_single_file_model_signature_sits_next_to_it(tmp_path: Path) -> None:
    tiny_safetensors(tmp_path / "w.safetensors", {"w": np.ones((3, 3), np.float32)})
    result = sign_model(tmp_path / "w.safetensors", KEY, record=False)
    assert result.signature_path == tmp_path / "model.sig"
    statement = result.statement
    assert [r["name"] for r in statement["predicate"]["resources"]] == ["."]
    assert verify_model(tmp_path / "w.safetensors", keys=[KEY.public_key()]).ok


def _tensor_ranges(path: Path) -> dict[str, tuple[int, int]]:
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    return {
        name: (8 + size + info["data_offsets"][0], 8 + size + info["data_offsets"][1])
        for name, info in header.items()
        if name != "__metadata__"
    }


@settings(max_examples=25)
@given(
    which=st.sampled_from(["model.safetensors", "model.onnx", "modelguard.json"]),
    position=st.floats(0, 1, exclude_max=True),
    flip=st.integers(1, 255),
)
def test_flipping_any_model_byte_fails_and_names_the_part(
    signed_model: Path,
    tmp_path_factory: pytest.TempPathFactory,
    which: str,
    position: float,
    flip: int,
) -> None:
    model = fresh_copy(signed_model, tmp_path_factory.mktemp("flip") / "model")
    target = model / which
    data = bytearray(target.read_bytes())
    index = int(position * len(data))
    data[index] ^= flip
    target.write_bytes(bytes(data))
    report = verify_model(model, keys=[KEY.public_key()])
    assert not report.ok
    text = failures(report)
    assert which in text
    error = report.error()
    assert error is not None and error.exit_code == 1
    if which == "model.safetensors":
        for name, (start, end) in _tensor_ranges(signed_model / which).items():
            if start <= index < end:
                assert f"tensor {name!r}" in text


def test_swapping_two_equal_shape_tensors_is_caught(tmp_path: Path) -> None:
    a, b = (
        np.arange(16, dtype=np.float32).reshape(4, 4),
        -np.arange(16, dtype=np.float32).reshape(4, 4),
    )
    tiny_safetensors(tmp_path / "m.safetensors", {"a": a, "b": b})
    sign_model(tmp_path, KEY, record=False)
    tiny_safetensors(tmp_path / "m.safetensors", {"a": b, "b": a})
    report = verify_model(tmp_path, keys=[KEY.public_key()])
    text = failures(report)
    assert not report.ok and "tensor 'a'" in text and "tensor 'b'" in text
    assert "differs" in str(report.error())


def test_file_order_on_disk_does_not_matter(tmp_path: Path) -> None:
    names = ["b.bin", "a.bin", "sub/c.bin", "a.b", "sub.x"]
    first, second = tmp_path / "first", tmp_path / "second"
    for root, order in ((first, names), (second, list(reversed(names)))):
        for name in order:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(name.encode() * 3)
    one = sign_model(first, KEY, record=False)
    two = sign_model(second, KEY, record=False)
    assert one.subject_digest == two.subject_digest
    assert one.statement["predicate"]["resources"] == two.statement["predicate"]["resources"]
    # a signature moved to an identical model created in another order still verifies
    shutil.copy(first / "model.sig", second / "model.sig")
    assert verify_model(second, keys=[KEY.public_key()]).ok


def _bundle(path: Path) -> dict[str, Any]:
    return json.loads(path.read_bytes())


@settings(max_examples=40)
@given(position=st.floats(0, 1, exclude_max=True), flip=st.integers(1, 255))
def test_flipping_any_signature_byte_fails(
    signed_model: Path, tmp_path_factory: pytest.TempPathFactory, position: float, flip: int
) -> None:
    model = fresh_copy(signed_model, tmp_path_factory.mktemp("sigflip") / "model")
    sig = model / "model.sig"
    data = bytearray(sig.read_bytes())
    index = int(position * len(data))
    data[index] ^= flip
    sig.write_bytes(bytes(data))
    try:
        report = verify_model(model, keys=[KEY.public_key()])
    except ModelGuardError as error:
        assert "model.sig" in str(error)
    else:
        assert not report.ok
        assert "signature" in failures(report)


@settings(max_examples=20)
@given(position=st.floats(0, 1, exclude_max=True), flip=st.integers(1, 255))
def test_flipping_any_payload_or_signature_value_byte_fails(
    signed_model: Path, tmp_path_factory: pytest.TempPathFactory, position: float, flip: int
) -> None:
    for field in ("payload", "sig"):
        model = fresh_copy(signed_model, tmp_path_factory.mktemp(field) / "model")
        bundle = _bundle(model / "model.sig")
        holder = (
            bundle["dsseEnvelope"]
            if field == "payload"
            else bundle["dsseEnvelope"]["signatures"][0]
        )
        raw = bytearray(base64.b64decode(holder[field]))
        raw[int(position * len(raw))] ^= flip
        holder[field] = base64.b64encode(bytes(raw)).decode()
        (model / "model.sig").write_bytes(dump_bundle(bundle))
        report = verify_model(model, keys=[KEY.public_key()])
        assert not report.ok
        assert "does not verify" in failures(report)
        assert isinstance(report.error(), SignatureError)


def test_untrusted_key_and_missing_signature(signed_model: Path, tmp_path: Path) -> None:
    report = verify_model(signed_model, keys=[OTHER.public_key()])
    assert not report.ok and report.signers[0].status == "untrusted"
    assert isinstance(report.error(), SignatureError)
    plain = model_dir(tmp_path / "unsigned")
    report = verify_model(plain, keys=[KEY.public_key()])
    assert not report.ok and "no signature file" in failures(report)


def test_cosigning_adds_a_signature_without_invalidating_the_first(
    signed_model: Path, tmp_path: Path
) -> None:
    model = fresh_copy(signed_model, tmp_path / "model")
    before = (model / "model.sig").read_bytes()
    result = sign_model(model, OTHER, record=False)
    assert result.cosigned
    assert (
        result.signature_path
        == cosign_dir(model / "model.sig") / f"{key_id(OTHER.public_key())}.sig"
    )
    assert (model / "model.sig").read_bytes() == before
    assert verify_model(model, keys=[KEY.public_key()]).ok
    both = verify_model(model, keys=[KEY.public_key(), OTHER.public_key()])
    assert both.ok and {s.status for s in both.signers} == {"verified"}


def test_cosigning_a_changed_model_is_refused(signed_model: Path, tmp_path: Path) -> None:
    model = fresh_copy(signed_model, tmp_path / "model")
    (model / "modelguard.json").write_text("{}")
    with pytest.raises(BadInputError, match="changed since it was signed"):
        sign_model(model, OTHER, record=False)


def test_added_and_removed_files_are_named(signed_model: Path, tmp_path: Path) -> None:
    model = fresh_copy(signed_model, tmp_path / "model")
    (model / "extra.txt").write_text("sneaky")
    (model / "modelguard.json").unlink()
    text = failures(verify_model(model, keys=[KEY.public_key()]))
    assert "unexpected file 'extra.txt'" in text and "file 'modelguard.json' is missing" in text
    # git metadata and the signature files are not part of the model
    (model / "extra.txt").unlink()
    shutil.copy(signed_model / "modelguard.json", model / "modelguard.json")
    (model / ".git").mkdir()
    (model / ".git" / "HEAD").write_text("ref")
    assert verify_model(model, keys=[KEY.public_key()]).ok


# ---- malformed bundles and statements -----------------------------------------------------


def _write_and_verify(model: Path, bundle: Any) -> VerificationReport:
    (model / "model.sig").write_bytes(dump_bundle(bundle) if isinstance(bundle, dict) else bundle)
    return verify_model(model, keys=[KEY.public_key()])


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b'{"mediaType": ', "not valid JSON"),
        (lambda b: b"[1, 2]", "not a JSON object"),
        (
            lambda b: {**b, "mediaType": "application/vnd.dev.sigstore.bundle.v0.2+json"},
            "mediaType",
        ),
        (lambda b: {**b, "extra": 1}, "unknown fields"),
        (lambda b: {k: v for k, v in b.items() if k != "dsseEnvelope"}, "dsseEnvelope"),
        (
            lambda b: {**b, "dsseEnvelope": {**b["dsseEnvelope"], "payloadType": "text/plain"}},
            "payloadType",
        ),
        (
            lambda b: {**b, "dsseEnvelope": {**b["dsseEnvelope"], "payload": "!!notbase64"}},
            "base64",
        ),
        (lambda b: {**b, "dsseEnvelope": {**b["dsseEnvelope"], "signatures": []}}, "signatures"),
    ],
)
def test_malformed_bundles_are_format_errors(
    signed_model: Path, tmp_path: Path, mutate: Any, reason: str
) -> None:
    model = fresh_copy(signed_model, tmp_path / "model")
    with pytest.raises(FormatError, match=reason) as caught:
        _write_and_verify(model, mutate(_bundle(model / "model.sig")))
    assert caught.value.exit_code == 2
    assert "model.sig" in str(caught.value) and "\n" not in str(caught.value)


def _statement(**changes: Any) -> dict[str, Any]:
    statement = model_statement("m", [("w.bin", "00" * 32)])
    statement.update(changes)
    return statement


@pytest.mark.parametrize(
    ("statement", "reason"),
    [
        (_statement(_type="https://in-toto.io/Statement/v0.1"), "not an in-toto"),
        (_statement(predicateType="https://slsa.dev/provenance/v1"), "predicateType"),
        (_statement(subject=[]), "exactly one subject"),
    ],
)
def test_statements_that_are_not_oms_v1_are_refused(
    signed_model: Path, tmp_path: Path, statement: dict[str, Any], reason: str
) -> None:
    model = fresh_copy(signed_model, tmp_path / "model")
    with pytest.raises(FormatError, match=reason):
        _write_and_verify(model, sign_statement(statement, KEY))


@pytest.mark.parametrize(
    ("names", "reason"),
    [
        (["../escape.bin"], "'..'"),
        (["/etc/passwd"], "not a relative POSIX path"),
        (["a/./b"], "'.'"),
        (["w.bin", "w.bin"], "duplicate"),
        ([".", "w.bin"], "only resource"),
    ],
)
def test_bad_resource_names_are_refused(
    signed_model: Path, tmp_path: Path, names: list[str], reason: str
) -> None:
    statement = model_statement("m", [("w.bin", "11" * 32)])
    statement["predicate"]["resources"] = [
        {"name": n, "algorithm": "sha256", "digest": "11" * 32} for n in names
    ]
    statement["subject"][0]["digest"]["sha256"] = subject_digest(["11" * 32] * len(names))
    with pytest.raises(FormatError, match=reason):
        parse_statement(statement)
    model = fresh_copy(signed_model, tmp_path / "model")
    with pytest.raises(FormatError, match=reason):
        _write_and_verify(model, sign_statement(statement, KEY))


def test_subject_digest_must_cover_the_resources() -> None:
    statement = model_statement("m", [("w.bin", "11" * 32)])
    statement["predicate"]["resources"][0]["digest"] = "22" * 32
    with pytest.raises(FormatError, match="subject digest"):
        parse_statement(statement)


def test_oversized_payload_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = sign_statement(_statement(), KEY)
    monkeypatch.setattr(dsse, "MAX_PAYLOAD_BYTES", 64)
    with pytest.raises(FormatError, match="bound"):
        verify_bundle(bundle, [KEY.public_key()])


def test_oversized_signature_file_is_refused(
    signed_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import modelguard.signing.bundle as bundle_module

    monkeypatch.setattr(bundle_module, "MAX_BUNDLE_BYTES", 100)
    model = fresh_copy(signed_model, tmp_path / "model")
    with pytest.raises(BadInputError, match="more than the 100 allowed"):
        verify_model(model, keys=[KEY.public_key()])


def test_duplicate_json_keys_in_the_signed_payload_are_refused() -> None:
    payload = b'{"_type": "https://in-toto.io/Statement/v1", "_type": "x"}'
    signature = sign_bytes(KEY, dsse.pae(dsse.PAYLOAD_TYPE_INTOTO, payload))
    envelope = dsse.Envelope(payload, dsse.PAYLOAD_TYPE_INTOTO, (dsse.Signature(signature),))
    with pytest.raises(FormatError, match="duplicate"):
        verify_bundle(make_bundle(envelope, oms_hint(KEY.public_key())), [KEY.public_key()])


def test_generic_bundles_verify_any_statement_and_reject_wrong_keys() -> None:
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [],
        "predicateType": "cert",
        "predicate": {"x": 1},
    }
    bundle = sign_statement(statement, OTHER)
    verified = verify_bundle(bundle, [KEY.public_key(), OTHER.public_key()])
    assert verified.statement == statement and verified.key_ids == (key_id(OTHER.public_key()),)
    with pytest.raises(SignatureError, match="not signed by a trusted key"):
        verify_bundle(bundle, [KEY.public_key()])


def test_keys_and_policy_are_exclusive_and_one_is_needed(signed_model: Path) -> None:
    with pytest.raises(BadInputError):
        verify_model(signed_model)


def test_shards_with_repeated_tensor_names_use_the_parallel_path(tmp_path: Path) -> None:
    for shard in range(2):
        tiny_safetensors(
            tmp_path / f"s{shard}.safetensors", {"layer.weight": np.full((8,), shard, np.float32)}
        )
    sign_model(tmp_path, KEY, record=False)
    report = verify_model(tmp_path, keys=[KEY.public_key()])
    assert report.ok and any("every byte hashed" in c.detail for c in report.checks)
    data = bytearray((tmp_path / "s1.safetensors").read_bytes())
    data[-1] ^= 1
    (tmp_path / "s1.safetensors").write_bytes(bytes(data))
    assert "tensor 'layer.weight' in 's1.safetensors' differs" in failures(
        verify_model(tmp_path, keys=[KEY.public_key()])
    )
