"""Encrypted containers: byte-exact round trips and every attack of issue 5 refused, nothing written."""

from __future__ import annotations

import base64
import hmac
import json
import os
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file
from tinymodels import mlp_onnx, model_dir, tensors_onnx, tiny_safetensors

from modelguard.cli.main import main
from modelguard.encryption import ContainerReader, decrypt_model, encrypt_model
from modelguard.encryption.container import (
    MAC_SIZE,
    PREAMBLE,
    TAG_SIZE,
    ContainerWriter,
    write_container,
)
from modelguard.encryption.keywrap import RawKeyIdentity, RawKeyRecipient, read_raw_key
from modelguard.encryption.model import plan_model
from modelguard.errors import (
    DecryptionError,
    DigestMismatchError,
    FormatError,
    InternalError,
    KeyFileError,
    ModelGuardError,
)
from modelguard.manifest import build_manifest

KEY = bytes(range(32))


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def segment_spans(container: Path, key: bytes = KEY) -> list[tuple[int, int]]:
    """(file offset, ciphertext length) of every segment, from the decrypted index."""
    with ContainerReader(container) as reader:
        reader.unlock([RawKeyIdentity(key)])
        spans, cursor = [], reader.payload_start
        for segment in reader.index.segments:
            spans.append((cursor, segment.length + TAG_SIZE))
            cursor += segment.length + TAG_SIZE
    return spans


def patched(container: Path, out: Path, edit: dict[int, bytes]) -> Path:
    data = bytearray(container.read_bytes())
    for offset, chunk in edit.items():
        data[offset : offset + len(chunk)] = chunk
    out.write_bytes(bytes(data))
    return out


@pytest.fixture
def onnx_model(tmp_path: Path) -> Path:
    path = tmp_path / "src" / "m.onnx"
    path.parent.mkdir()
    mlp_onnx(path)
    return path


@pytest.fixture
def twin_model(tmp_path: Path) -> Path:
    """Two tensors of equal length, for swapping and duplicating segments."""
    path = tmp_path / "src" / "twins.onnx"
    path.parent.mkdir(exist_ok=True)
    rng = np.random.default_rng(3)
    tensors_onnx(path, {f"t{i}": rng.standard_normal((4, 4)).astype(np.float32) for i in range(3)})
    return path


# ---------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("chunk_size", [64 << 20, 7])
def test_onnx_round_trip_is_byte_exact(onnx_model: Path, tmp_path: Path, chunk_size: int) -> None:
    enc = tmp_path / "m.onnx.mgenc"
    result = encrypt_model(onnx_model, enc, key=KEY, chunk_size=chunk_size)
    assert result.files == ("m.onnx.mgenc",)
    assert onnx_model.read_bytes()[200:264] not in enc.read_bytes()
    out = decrypt_model(enc, tmp_path / "plain.onnx", key=KEY)
    assert (tmp_path / "plain.onnx").read_bytes() == onnx_model.read_bytes()
    assert len(out.tensors) == 4 and out.layer_root == result.layer_root


def test_header_reveals_no_architecture(onnx_model: Path, tmp_path: Path) -> None:
    enc = tmp_path / "m.mgenc"
    encrypt_model(onnx_model, enc, key=KEY)
    data = enc.read_bytes()
    for secret in (b"fc1.weight", b"MatMul", b"Relu", b"mlp"):
        assert secret not in data


def test_directory_round_trip(tmp_path: Path) -> None:
    src = model_dir(tmp_path / "model")
    encrypt_model(src, tmp_path / "enc", key=KEY, chunk_size=100)
    assert sorted(p.name for p in (tmp_path / "enc").iterdir()) == [
        "model.onnx.mgenc",
        "model.safetensors.mgenc",
        "modelguard.json.mgenc",
    ]
    decrypt_model(tmp_path / "enc", tmp_path / "dec", key=KEY)
    for name in ("model.onnx", "model.safetensors", "modelguard.json"):
        assert (tmp_path / "dec" / name).read_bytes() == (src / name).read_bytes()


def test_missing_file_in_encrypted_directory_is_refused(tmp_path: Path) -> None:
    src = model_dir(tmp_path / "model")
    encrypt_model(src, tmp_path / "enc", key=KEY)
    (tmp_path / "enc" / "model.safetensors.mgenc").unlink()
    with pytest.raises(DigestMismatchError, match="incomplete"):
        decrypt_model(tmp_path / "enc", tmp_path / "dec", key=KEY)
    assert not (tmp_path / "dec").exists()


def test_several_x25519_recipients_each_decrypt(onnx_model: Path, tmp_path: Path) -> None:
    alice, bob, eve = (X25519PrivateKey.generate() for _ in range(3))
    enc = tmp_path / "m.mgenc"
    encrypt_model(onnx_model, enc, recipients=[alice.public_key(), bob.public_key()])
    for who in (alice, bob):
        target = tmp_path / f"out-{id(who)}.onnx"
        decrypt_model(enc, target, identity=who)
        assert target.read_bytes() == onnx_model.read_bytes()
    with pytest.raises(DecryptionError, match="no recipient stanza"):
        decrypt_model(enc, tmp_path / "eve.onnx", identity=eve)
    assert not (tmp_path / "eve.onnx").exists()


def test_passphrase_scrypt_params_in_header(onnx_model: Path, tmp_path: Path) -> None:
    enc = tmp_path / "m.mgenc"
    encrypt_model(onnx_model, enc, passphrase="correct horse", scrypt_log_n=10)
    with ContainerReader(enc) as reader:
        (stanza,) = reader.recipients
    assert stanza["type"] == "scrypt" and (stanza["log_n"], stanza["r"], stanza["p"]) == (10, 8, 1)
    decrypt_model(enc, tmp_path / "ok.onnx", passphrase="correct horse")
    with pytest.raises(DecryptionError):
        decrypt_model(enc, tmp_path / "bad.onnx", passphrase="battery staple")
    assert not (tmp_path / "bad.onnx").exists()


def test_scrypt_bounds_refuse_hostile_parameters(onnx_model: Path, tmp_path: Path) -> None:
    enc = tmp_path / "m.mgenc"
    encrypt_model(onnx_model, enc, passphrase="pw", scrypt_log_n=10)
    data = enc.read_bytes()
    hostile = tmp_path / "hostile.mgenc"
    hostile.write_bytes(data.replace(b'"log_n":10', b'"log_n":40'))
    with pytest.raises(FormatError, match="log_n=40"):
        decrypt_model(hostile, tmp_path / "x.onnx", passphrase="pw")


@pytest.mark.parametrize("encoding", ["raw", "hex", "base64"])
def test_key_file_encodings(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "k"
    text = {"raw": KEY, "hex": KEY.hex().encode() + b"\n", "base64": base64.b64encode(KEY) + b"\n"}
    path.write_bytes(text[encoding])
    assert read_raw_key(path) == KEY


def test_short_key_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "k").write_bytes(b"0123456789abcdef\n")
    with pytest.raises(KeyFileError, match="256-bit"):
        read_raw_key(tmp_path / "k")


def test_decrypt_selected_tensors(tmp_path: Path) -> None:
    src = tmp_path / "w.safetensors"
    weights = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4, np.int64)}
    tiny_safetensors(src, weights)
    encrypt_model(src, tmp_path / "w.mgenc", key=KEY)
    decrypt_model(tmp_path / "w.mgenc", tmp_path / "b.safetensors", key=KEY, tensors=["b"])
    loaded = load_file(tmp_path / "b.safetensors")
    assert list(loaded) == ["b"] and np.array_equal(loaded["b"], weights["b"])


def test_decrypted_model_still_verifies_against_plaintext_signature(
    onnx_model: Path, tmp_path: Path
) -> None:
    from modelguard.keys import generate_key
    from modelguard.signing.sign import sign_model
    from modelguard.signing.verify import verify_model

    signer = generate_key()
    signature = tmp_path / "plain.sig"
    sign_model(onnx_model, signer, signature_path=signature, record=False)
    encrypt_model(onnx_model, tmp_path / "m.mgenc", key=KEY)
    (tmp_path / "dec").mkdir()
    decrypt_model(tmp_path / "m.mgenc", tmp_path / "dec" / "m.onnx", key=KEY)
    report = verify_model(tmp_path / "dec" / "m.onnx", signature, keys=[signer.public_key()])
    assert report.ok, report.failures


# ---------------------------------------------------------------------------- attacks


def test_truncated_container(onnx_model: Path, tmp_path: Path) -> None:
    enc = tmp_path / "m.mgenc"
    encrypt_model(onnx_model, enc, key=KEY)
    short = tmp_path / "short.mgenc"
    short.write_bytes(enc.read_bytes()[:-1])
    with pytest.raises(FormatError, match="truncated"):
        decrypt_model(short, tmp_path / "out.onnx", key=KEY)
    assert not (tmp_path / "out.onnx").exists()


def test_flipped_bit_in_every_segment_and_the_header(twin_model: Path, tmp_path: Path) -> None:
    enc = tmp_path / "m.mgenc"
    encrypt_model(twin_model, enc, key=KEY)
    data = enc.read_bytes()
    header_len = PREAMBLE.unpack(data[: PREAMBLE.size])[3]
    targets = [PREAMBLE.size + header_len // 2, PREAMBLE.size + header_len + MAC_SIZE - 1]
    targets += [offset + length // 2 for offset, length in segment_spans(enc)]
    for position in targets:
        bad = patched(enc, tmp_path / "bad.mgenc", {position: bytes([data[position] ^ 0x01])})
        with pytest.raises((DecryptionError, FormatError)):
            decrypt_model(bad, tmp_path / "out.onnx", key=KEY)
        assert not (tmp_path / "out.onnx").exists()


def test_reordered_and_duplicated_segments(twin_model: Path, tmp_path: Path) -> None:
    enc = tmp_path / "m.mgenc"
    encrypt_model(twin_model, enc, key=KEY)
    data = enc.read_bytes()
    spans = segment_spans(enc)[-3:]  # the three equal-length tensor segments
    (a, la), (b, lb) = spans[0], spans[1]
    assert la == lb
    swapped = patched(enc, tmp_path / "swap.mgenc", {a: data[b : b + lb], b: data[a : a + la]})
    duplicated = patched(enc, tmp_path / "dup.mgenc", {b: data[a : a + la]})
    for bad in (swapped, duplicated):
        with pytest.raises(DecryptionError, match="failed authentication"):
            decrypt_model(bad, tmp_path / "out.onnx", key=KEY)
    assert not (tmp_path / "out.onnx").exists()


def test_segment_transplanted_from_another_container_under_the_same_key(
    twin_model: Path, tmp_path: Path
) -> None:
    first, second = tmp_path / "1.mgenc", tmp_path / "2.mgenc"
    encrypt_model(twin_model, first, key=KEY)
    encrypt_model(twin_model, second, key=KEY)
    (a, length), (b, length_b) = segment_spans(first)[-1], segment_spans(second)[-1]
    assert length == length_b
    donor = second.read_bytes()[b : b + length]
    bad = patched(first, tmp_path / "bad.mgenc", {a: donor})
    with pytest.raises(DecryptionError, match="failed authentication"):
        decrypt_model(bad, tmp_path / "out.onnx", key=KEY)


def test_whole_container_swapped_into_a_directory_is_refused(tmp_path: Path) -> None:
    one = model_dir(tmp_path / "one", seed=1)
    two = model_dir(tmp_path / "two", seed=2)
    encrypt_model(one, tmp_path / "e1", key=KEY)
    encrypt_model(two, tmp_path / "e2", key=KEY)
    os.replace(tmp_path / "e2" / "model.onnx.mgenc", tmp_path / "e1" / "model.onnx.mgenc")
    with pytest.raises(DecryptionError, match="different models"):
        decrypt_model(tmp_path / "e1", tmp_path / "dec", key=KEY)
    assert not (tmp_path / "dec").exists()


def test_unknown_future_version_exit_2(
    onnx_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    enc = tmp_path / "m.mgenc"
    encrypt_model(onnx_model, enc, key=KEY)
    future = patched(enc, tmp_path / "future.mgenc", {8: struct.pack(">H", 3)})
    (tmp_path / "k").write_bytes(KEY)
    code, _, err = run_cli(
        capsys,
        "decrypt",
        str(future),
        "--out",
        str(tmp_path / "o.onnx"),
        "--key-file",
        str(tmp_path / "k"),
    )
    assert code == 2
    assert "unsupported container version 3" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.onnx").exists()


def test_header_field_edit_fails_authentication(onnx_model: Path, tmp_path: Path) -> None:
    enc = tmp_path / "m.mgenc"
    result = encrypt_model(onnx_model, enc, key=KEY)
    other_root = ("0" if result.layer_root[0] != "0" else "1") + result.layer_root[1:]
    bad = tmp_path / "bad.mgenc"
    bad.write_bytes(enc.read_bytes().replace(result.layer_root.encode(), other_root.encode()))
    with pytest.raises(DecryptionError, match="header"):
        decrypt_model(bad, tmp_path / "out.onnx", key=KEY)


def test_key_commitment_is_checked_first(onnx_model: Path, tmp_path: Path) -> None:
    enc = tmp_path / "m.mgenc"
    encrypt_model(onnx_model, enc, key=KEY)
    with ContainerReader(enc) as reader:
        commitment = reader.header["key_commitment"]
    bad = tmp_path / "bad.mgenc"
    bad.write_bytes(enc.read_bytes().replace(commitment.encode(), ("f" * 64).encode()))
    with pytest.raises(DecryptionError, match="key commitment"):
        decrypt_model(bad, tmp_path / "out.onnx", key=KEY)


def test_cli_wrong_key_exit_1_nothing_written(
    onnx_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "k").write_bytes(KEY)
    (tmp_path / "wrong").write_bytes(os.urandom(32))
    enc = tmp_path / "m.mgenc"
    code, out, _ = run_cli(
        capsys,
        "encrypt",
        str(onnx_model),
        "--out",
        str(enc),
        "--key-file",
        str(tmp_path / "k"),
        "--json",
    )
    assert code == 0 and json.loads(out)["ok"] is True
    code, out, err = run_cli(
        capsys,
        "decrypt",
        str(enc),
        "--out",
        str(tmp_path / "o.onnx"),
        "--key-file",
        str(tmp_path / "wrong"),
        "--json",
    )
    assert code == 1
    assert err.startswith("modelguard: error:") and len(err.strip().splitlines()) == 1
    assert json.loads(out)["ok"] is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k", "m.mgenc", "src", "wrong"]


# ---------------------------------------------------------------------------- properties

DTYPES = [np.float32, np.float16, np.int64, np.int8, np.uint8, np.float64]


@st.composite
def random_tensors(draw: st.DrawFn) -> dict[str, np.ndarray]:
    count = draw(st.integers(1, 4))
    out = {}
    for i in range(count):
        dtype = draw(st.sampled_from(DTYPES))
        shape = tuple(draw(st.lists(st.integers(0, 5), min_size=0, max_size=3)))
        seed = draw(st.integers(0, 2**16))
        data = np.random.default_rng(seed).integers(-100, 100, size=shape).astype(dtype)
        out[f"layer{i}.w"] = data
    return out


@settings(max_examples=15, deadline=None)
@given(tensors=random_tensors(), as_onnx=st.booleans(), chunk=st.sampled_from([5, 64 << 20]))
def test_random_models_round_trip_bit_exactly(
    tmp_path_factory: pytest.TempPathFactory,
    tensors: dict[str, np.ndarray],
    as_onnx: bool,
    chunk: int,
) -> None:
    d = tmp_path_factory.mktemp("rt")
    src = d / ("m.onnx" if as_onnx else "m.safetensors")
    (tensors_onnx if as_onnx else tiny_safetensors)(src, tensors)
    encrypt_model(src, d / "m.mgenc", key=KEY, chunk_size=chunk)
    decrypt_model(d / "m.mgenc", d / "out", key=KEY)
    assert (d / "out").read_bytes() == src.read_bytes()


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_any_single_byte_change_is_detected(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    d = tmp_path_factory.mktemp("flip")
    src = d / "m.safetensors"
    tiny_safetensors(src, {"w": np.arange(12, dtype=np.float32), "b": np.ones(3, np.int8)})
    encrypt_model(src, d / "m.mgenc", key=KEY, chunk_size=16)
    blob = (d / "m.mgenc").read_bytes()
    position = data.draw(st.integers(0, len(blob) - 1), label="position")
    delta = data.draw(st.integers(1, 255), label="xor")
    bad = patched(d / "m.mgenc", d / "bad.mgenc", {position: bytes([blob[position] ^ delta])})
    with pytest.raises(ModelGuardError):
        decrypt_model(bad, d / "out", key=KEY)
    assert not (d / "out").exists()


def test_encrypting_a_signed_directory_ledgers_it_under_its_signed_root(tmp_path: Path) -> None:
    from modelguard import audit
    from modelguard.keys import generate_key
    from modelguard.signing.sign import sign_model

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    model = model_dir(tmp_path / "model")
    key = generate_key()
    signed = sign_model(model, key, name="tiny", version="1", ledger_url=url)
    result = encrypt_model(
        model,
        tmp_path / "enc",
        recipients=[X25519PrivateKey.generate().public_key()],
        sign_key=key,
        name="tiny",
        version="1",
        ledger_url=url,
    )
    _, entries = audit.list_entries(url, kind="encrypt")
    (encrypt_entry,) = entries
    # model.sig travels inside the container, so its plaintext root differs from the signed root;
    # the ledger still names the model by the root its signature records.
    assert result.layer_root != signed.manifest.layer_root
    assert encrypt_entry.subject["root"] == signed.manifest.layer_root
    assert encrypt_entry.details["plaintext_root"] == result.layer_root
    # and the container's own signature names the model it was made from as its parent
    _, signs = audit.list_entries(url, kind="sign")
    assert signs[-1].subject["parent"] == signed.manifest.layer_root


# ---------------------------------------------------------------------------- one root, one scan

V1 = Path(__file__).parent / "testdata" / "containers-v1"


@pytest.mark.parametrize("name", ["mlp.onnx", "w.safetensors"])
def test_version_1_containers_still_decrypt(tmp_path: Path, name: str) -> None:
    # written by the format-1 writer: SHA-256 for tensors and files, header digest in every AAD
    container = V1 / f"{name}.mgenc"
    with ContainerReader(container) as reader:
        assert reader.version == 1 and "file_hash_algorithm" not in reader.header["plaintext"]
        assert (reader.hash_algorithm, reader.file_hash_algorithm) == ("sha256", "sha256")
    out = decrypt_model(container, tmp_path / name, key=KEY)
    assert (tmp_path / name).read_bytes() == (V1 / name).read_bytes()
    assert out.tensors and out.layer_root == build_manifest(V1 / name).layer_root


def remac_with_another_root(container: Path, out: Path) -> Path:
    """What someone holding the key can do: change the header's root and make a new MAC."""
    from modelguard.encryption.container import _derive
    from modelguard.encryption.keywrap import unwrap_data_key

    with ContainerReader(container) as reader:
        data_key = unwrap_data_key(reader.recipients, reader.file_id, [RawKeyIdentity(KEY)])
        salt, file_id, root = reader.salt, reader.file_id, reader.layer_root
        head_length = reader.payload_start - MAC_SIZE
    assert root is not None
    other = ("0" if root[0] != "0" else "1") + root[1:]
    data = bytearray(container.read_bytes())
    head = bytes(data[:head_length]).replace(root.encode(), other.encode())
    mac = hmac.new(_derive(data_key, salt, "header-mac", file_id), head, "sha256").digest()
    data[: head_length + MAC_SIZE] = head + mac
    out.write_bytes(bytes(data))
    return out


def test_version_1_segments_still_bind_the_header_digest(tmp_path: Path) -> None:
    # every version-1 segment's associated data names the old header's SHA-256: the index fails
    bad = remac_with_another_root(V1 / "mlp.onnx.mgenc", tmp_path / "bad.mgenc")
    with pytest.raises(DecryptionError, match="segment 0 .index"):
        decrypt_model(bad, tmp_path / "out", key=KEY)
    assert not (tmp_path / "out").exists()


def test_version_2_header_rewritten_by_a_key_holder_fails_the_root_check(
    onnx_model: Path, tmp_path: Path
) -> None:
    # version 2 segments do not bind the header digest (they are sealed before it exists);
    # a re-MACed header with another root still fails: the root is recomputed from the index
    encrypt_model(onnx_model, tmp_path / "m.mgenc", key=KEY)
    bad = remac_with_another_root(tmp_path / "m.mgenc", tmp_path / "bad.mgenc")
    with pytest.raises(DigestMismatchError, match="recomputed layer root"):
        decrypt_model(bad, tmp_path / "out", key=KEY)
    assert not (tmp_path / "out").exists()


def test_container_records_the_root_a_signature_records(onnx_model: Path, tmp_path: Path) -> None:
    from modelguard.signing.files import signed_manifest

    result = encrypt_model(onnx_model, tmp_path / "m.mgenc", key=KEY)
    signed = signed_manifest(onnx_model)
    assert result.layer_root == signed.layer_root
    assert (result.hash_algorithm, result.file_hash_algorithm) == ("blake3", "sha256")
    with ContainerReader(tmp_path / "m.mgenc") as reader:
        assert reader.version == 2 and reader.layer_root == signed.layer_root
        plaintext = reader.header["plaintext"]
        assert plaintext == {
            "layer_root": signed.layer_root,
            "hash_algorithm": "blake3",
            "file_hash_algorithm": "sha256",
        }


def test_legacy_sha256_scheme_is_recorded_as_such(onnx_model: Path, tmp_path: Path) -> None:
    result = encrypt_model(
        onnx_model,
        tmp_path / "m.mgenc",
        key=KEY,
        hash_algorithm="sha256",
        file_hash_algorithm="sha256",
    )
    assert result.layer_root == build_manifest(onnx_model).layer_root
    with ContainerReader(tmp_path / "m.mgenc") as reader:
        assert reader.header["plaintext"]["file_hash_algorithm"] == "sha256"
    decrypt_model(tmp_path / "m.mgenc", tmp_path / "out.onnx", key=KEY)
    assert (tmp_path / "out.onnx").read_bytes() == onnx_model.read_bytes()


def test_header_hash_function_edit_fails_authentication(onnx_model: Path, tmp_path: Path) -> None:
    enc = tmp_path / "m.mgenc"
    encrypt_model(onnx_model, enc, key=KEY)
    before = b'"file_hash_algorithm":"sha256"'
    assert before in enc.read_bytes()
    bad = tmp_path / "bad.mgenc"
    bad.write_bytes(enc.read_bytes().replace(before, b'"file_hash_algorithm":"blake3"'))
    with pytest.raises(DecryptionError, match="header authentication failed"):
        decrypt_model(bad, tmp_path / "out", key=KEY)
    assert not (tmp_path / "out").exists()


def test_header_naming_other_hash_functions_than_the_index_is_refused(
    onnx_model: Path, tmp_path: Path
) -> None:
    # a writer holding the key says "sha256 tensors" in the header over a BLAKE3 manifest
    manifest = build_manifest(onnx_model, hash_algorithm="blake3", file_hash_algorithm="sha256")
    plan = plan_model(onnx_model).plans[0]
    lying = replace(
        plan,
        manifest=manifest.to_dict(),
        layer_root=manifest.layer_root,
        hash_algorithm="sha256",
        file_hash_algorithm="sha256",
    )
    write_container(lying, tmp_path / "lie.mgenc", [RawKeyRecipient(KEY)])
    with pytest.raises(DigestMismatchError, match="header says sha256/sha256"):
        decrypt_model(tmp_path / "lie.mgenc", tmp_path / "out", key=KEY)
    assert not (tmp_path / "out").exists()


def test_final_manifest_of_another_length_is_an_internal_error(
    onnx_model: Path, tmp_path: Path
) -> None:
    plan = plan_model(onnx_model)
    file_plan = plan.plans[0]
    writer = ContainerWriter(
        file_plan, tmp_path / "w.mgenc", [RawKeyRecipient(KEY)], plan.files.view(file_plan.path)
    )
    writer.seal_payload()
    longer = {**dict(file_plan.manifest or {}), "extra": "x"}
    with pytest.raises(InternalError, match="planned length"):
        writer.finish(longer, file_plan.layer_root)
    writer.close()


def test_encrypt_parses_once_and_hashes_each_byte_once_per_function(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import modelguard.formats as formats_module
    import modelguard.manifest as manifest_module

    src = model_dir(tmp_path / "model")
    sizes = {p.name: p.stat().st_size for p in src.iterdir()}
    fed: dict[str, int] = {}
    parses: list[str] = []
    real_hasher, real_parse = manifest_module.new_hasher, formats_module.parse_model_file

    class Counting:
        def __init__(self, algorithm: str) -> None:
            self.inner, self.algorithm = real_hasher(algorithm), algorithm

        def update(self, data: bytes | memoryview) -> None:
            fed[self.algorithm] = fed.get(self.algorithm, 0) + memoryview(data).nbytes
            self.inner.update(data)

        def hexdigest(self) -> str:
            return str(self.inner.hexdigest())

    def parse(path: Path, **kwargs: object) -> object:
        parses.append(path.name)
        return real_parse(path, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(manifest_module, "new_hasher", Counting)
    monkeypatch.setattr(manifest_module, "parse_model_file", parse)
    monkeypatch.setattr(formats_module, "parse_model_file", parse)
    result = encrypt_model(src, tmp_path / "enc", key=KEY)
    assert sorted(parses) == sorted(sizes)  # each file parsed once
    assert fed["sha256"] == sum(sizes.values())  # every byte once, for the file digests
    # tensors and structures once with BLAKE3: never more bytes than the model files hold
    assert 0 < fed["blake3"] <= sum(sizes.values()) and set(fed) == {"sha256", "blake3"}
    decrypt_model(tmp_path / "enc", tmp_path / "dec", key=KEY)
    assert (
        result.layer_root
        == build_manifest(src, hash_algorithm="blake3", file_hash_algorithm="sha256").layer_root
    )
