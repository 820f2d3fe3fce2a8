"""Class 1, signature-to-target binding: a signature verifies only the target it names.

The adversary can write next to a signed model (no trusted key). Each test is an attack that
must fail with exit 1 and a message naming what was signed and what was given.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from gatebind_models import (
    X,
    key_files,
    one_line,
    plain_mlp,
    run_cli,
    signed_and_unsigned_containers,
)

from modelguard.errors import SignatureError, VerificationError
from modelguard.keys import generate_key
from modelguard.policy import policy_from_keys, with_ledger_trust
from modelguard.runtime import open_session
from modelguard.signing.sign import sign_model
from modelguard.signing.verify import verify_model

GOOD = np.eye(4, dtype=np.float32)
EVIL = -7 * np.ones((4, 4), dtype=np.float32)


@pytest.fixture
def signed_plain(tmp_path: Path) -> dict:
    key = generate_key()
    model = plain_mlp(tmp_path / "X" / "model.onnx", GOOD)
    sign_model(model, key, record=False)
    evil = plain_mlp(tmp_path / "X" / "evil.onnx", EVIL)  # copied in by the adversary
    priv, pub = key_files(tmp_path / "keys", key)
    np.save(tmp_path / "x.npy", X)
    return {"key": key, "model": model, "evil": evil, "pub": pub, "dir": tmp_path}


def test_sibling_file_is_not_covered_by_a_single_file_signature(signed_plain: dict) -> None:
    s = signed_plain
    assert verify_model(s["model"], keys=[s["key"].public_key()]).ok
    report = verify_model(s["evil"], keys=[s["key"].public_key()])
    assert not report.ok
    error = report.error()
    assert isinstance(error, SignatureError)
    assert "'model.onnx'" in str(error) and "'evil.onnx'" in str(error)


def test_sibling_refused_by_verify_and_run_cli(
    signed_plain: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    s = signed_plain
    code, _, err = run_cli(capsys, "verify", str(s["evil"]), "--key", str(s["pub"]))
    assert code == 1 and "'model.onnx'" in err and "'evil.onnx'" in err
    code, out, err = run_cli(
        capsys, "run", str(s["evil"]), "--key", str(s["pub"]), "--input", str(s["dir"] / "x.npy")
    )
    assert code == 1 and out == "" and "not for 'evil.onnx'" in one_line(err)


def test_sibling_refused_with_a_policy(
    signed_plain: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    s = signed_plain
    policy = s["dir"] / "policy.toml"
    policy.write_text(f'threshold = 1\n[[signers]]\nname = "alice"\npublic_key = "{s["pub"]}"\n')
    code, _, _ = run_cli(capsys, "verify", str(s["model"]), "--policy", str(policy))
    assert code == 0
    code, _, err = run_cli(capsys, "verify", str(s["evil"]), "--policy", str(policy))
    assert code == 1 and "not for 'evil.onnx'" in err


def test_sibling_refused_with_require_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = generate_key()
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv("MODELGUARD_LEDGER_KEY", str(tmp_path / "ledger.db.note.pub"))
    model = plain_mlp(tmp_path / "X" / "model.onnx", GOOD)
    sign_model(model, key, ledger_url=ledger, version="1")
    evil = plain_mlp(tmp_path / "X" / "evil.onnx", EVIL)
    policy = with_ledger_trust(
        policy_from_keys([key.public_key()]),
        (str(tmp_path / "ledger.db.note.pub"),),
        tmp_path / "state",
    )
    good = verify_model(model, policy=policy, ledger_url=ledger, require_ledger=True)
    assert good.ok, good.failures
    bad = verify_model(evil, policy=policy, ledger_url=ledger, require_ledger=True)
    assert not bad.ok and any("not for 'evil.onnx'" in f for f in bad.failures)


def test_renamed_copy_with_the_same_bytes_is_refused(signed_plain: dict) -> None:
    s = signed_plain
    copy = s["model"].with_name("copy.onnx")
    shutil.copyfile(s["model"], copy)
    report = verify_model(copy, keys=[s["key"].public_key()])
    assert not report.ok and "signature is for 'model.onnx', not for 'copy.onnx'" in str(
        report.error()
    )


def test_sibling_refused_by_open_session(signed_plain: dict) -> None:
    s = signed_plain
    with pytest.raises(SignatureError, match="not for 'evil.onnx'"):
        open_session(s["evil"], keys=[s["key"].public_key()], providers="cpu")
    session = open_session(s["model"], keys=[s["key"].public_key()], providers="cpu")
    assert np.array_equal(session.run(None, {"x": X})[0], X @ GOOD)


def test_unsigned_container_beside_a_signed_one(tmp_path: Path) -> None:
    key, identity = generate_key(), X25519PrivateKey.generate()
    good, unsigned = signed_and_unsigned_containers(tmp_path, GOOD, EVIL, key, identity)
    evil = good.with_name("evil.onnx.mgenc")  # dropped next to the signed container
    os.replace(unsigned, evil)
    report = verify_model(evil, keys=[key.public_key()])
    assert not report.ok and "not for 'evil.onnx.mgenc'" in str(report.error())
    with pytest.raises(SignatureError, match="'model.onnx.mgenc'"):
        open_session(evil, keys=[key.public_key()], identity=identity, providers="cpu")
    session = open_session(good, keys=[key.public_key()], identity=identity, providers="cpu")
    assert np.array_equal(session.run(None, {"x": X})[0], X @ GOOD)


def test_directory_signature_does_not_cover_a_file_inside(tmp_path: Path) -> None:
    key = generate_key()
    model_dir = tmp_path / "X"
    plain_mlp(model_dir / "model.onnx", GOOD)
    sign_model(model_dir, key, record=False)
    report = verify_model(
        model_dir / "model.onnx", model_dir / "model.sig", keys=[key.public_key()]
    )
    assert not report.ok and "signs a directory" in str(report.error())


def test_file_signature_does_not_cover_its_directory(tmp_path: Path) -> None:
    key = generate_key()
    model = plain_mlp(tmp_path / "X" / "model.onnx", GOOD)
    sign_model(model, key, record=False)
    report = verify_model(tmp_path / "X", tmp_path / "X" / "model.sig", keys=[key.public_key()])
    assert not report.ok and "signs a single file" in str(report.error())


def test_unsigned_file_added_to_a_signed_directory(tmp_path: Path) -> None:
    key = generate_key()
    model_dir = tmp_path / "X"
    plain_mlp(model_dir / "model.onnx", GOOD)
    sign_model(model_dir, key, record=False)
    plain_mlp(model_dir / "evil.onnx", EVIL)
    report = verify_model(model_dir, keys=[key.public_key()])
    assert not report.ok
    assert any("'evil.onnx'" in f and "not signed" in f for f in report.failures)
    with pytest.raises(VerificationError):
        open_session(model_dir, keys=[key.public_key()], providers="cpu")
