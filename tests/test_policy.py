"""Policies: parsing, k-of-n thresholds, revocation, age, names, hash algorithms, certificate hook."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from modelguard.errors import BadInputError, PolicyError, RevokedError, SignatureError
from modelguard.keys import PrivateKey, generate_key, key_id, public_pem, write_keypair
from modelguard.policy import (
    CertificateRequirement,
    Policy,
    PolicyChecks,
    load_policy,
    parse_age,
)
from modelguard.signing.files import cosign_dir
from modelguard.signing.sign import sign_model
from modelguard.signing.verify import verify_model
from tests.tinymodels import tiny_safetensors

A, B, C, D = (generate_key() for _ in range(4))


def write_policy(tmp_path: Path, body: str, keys: dict[str, PrivateKey] | None = None) -> Path:
    keys = {"alice": A, "bob": B, "carol": C} if keys is None else keys
    lines = []
    for name, key in keys.items():
        (tmp_path / f"{name}.pub").write_bytes(public_pem(key.public_key()))
        lines.append(f'[[signers]]\nname = "{name}"\npublic_key = "{name}.pub"\n')
    path = tmp_path / "policy.toml"
    path.write_text(body + "\n" + "\n".join(lines))
    return path


def model(tmp_path: Path, *signers: PrivateKey) -> Path:
    path = tmp_path / "model"
    path.mkdir()
    tiny_safetensors(path / "model.safetensors", {"w": np.ones((2, 3), np.float32)})
    for key in signers:
        sign_model(path, key, name="digits-small", version="2", record=False)
    return path


def test_two_of_three_passes_with_two_trusted_signatures(tmp_path: Path) -> None:
    policy = load_policy(write_policy(tmp_path, "threshold = 2"))
    report = verify_model(model(tmp_path, A, C), policy=policy)
    assert report.ok, report.failures
    assert sorted(s.name or "" for s in report.signers) == ["alice", "carol"]


def test_two_of_three_fails_with_one_signature(tmp_path: Path) -> None:
    policy = load_policy(write_policy(tmp_path, "threshold = 2"))
    report = verify_model(model(tmp_path, B), policy=policy)
    assert not report.ok
    assert "1 of the required 2" in "\n".join(report.failures)
    assert isinstance(report.error(), SignatureError)


def test_two_of_three_fails_with_two_signatures_by_the_same_key(tmp_path: Path) -> None:
    policy = load_policy(write_policy(tmp_path, "threshold = 2"))
    path = model(tmp_path, A)
    cosign_dir(path / "model.sig").mkdir()
    shutil.copy(path / "model.sig", cosign_dir(path / "model.sig") / "copy.sig")
    report = verify_model(path, policy=policy)
    assert len([s for s in report.signers if s.status == "verified"]) == 2
    assert not report.ok and "1 of the required 2" in "\n".join(report.failures)


def test_untrusted_signers_do_not_count(tmp_path: Path) -> None:
    policy = load_policy(write_policy(tmp_path, "threshold = 2"))
    report = verify_model(model(tmp_path, A, D), policy=policy)
    assert not report.ok
    assert {s.status for s in report.signers} == {"verified", "untrusted"}


def test_revoked_key_fails_verification(tmp_path: Path) -> None:
    policy = load_policy(
        write_policy(tmp_path, f'threshold = 1\nrevoked_key_ids = ["{key_id(A.public_key())}"]')
    )
    report = verify_model(model(tmp_path, A, B), policy=policy)
    assert not report.ok
    assert "revoked" in "\n".join(report.failures)
    assert isinstance(report.error(), RevokedError)


def test_signature_age_model_name_and_hash_algorithms(tmp_path: Path) -> None:
    body = 'max_signature_age = "1h"\nmodel_name = "^digits-[a-z]+$"\nallowed_hash_algorithms = ["sha256"]'
    policy = load_policy(write_policy(tmp_path, body))
    path = model(tmp_path, A)
    assert verify_model(path, policy=policy).ok
    later = datetime.now(UTC) + timedelta(hours=2)
    old = verify_model(path, policy=policy, now=later)
    assert not old.ok and "old" in "\n".join(old.failures)
    assert isinstance(old.error(), PolicyError)
    strict = load_policy(write_policy(tmp_path, 'model_name = "^resnet$"'))
    named = verify_model(path, policy=strict)
    assert not named.ok and "does not match" in "\n".join(named.failures)
    blake = load_policy(write_policy(tmp_path, 'allowed_hash_algorithms = ["blake3"]'))
    assert "not allowed" in "\n".join(verify_model(path, policy=blake).failures)


def test_certificate_section_is_parsed_and_fails_closed_until_checked(tmp_path: Path) -> None:
    body = "[certificate]\nmin_robust_accuracy = 0.8\nepsilon = 0.1\n"
    policy = load_policy(write_policy(tmp_path, body))
    assert policy.certificate == CertificateRequirement(0.8, 0.1, "linf", True)
    path = model(tmp_path, A)
    report = verify_model(path, policy=policy)  # no certificate check given: fails closed
    assert not report.ok and "certificate" in "\n".join(report.failures)
    seen: list[CertificateRequirement] = []

    def check(
        requirement: CertificateRequirement,
        model_path: Path,
        signature: Path,
        trusted: object,
        *,
        model_root: str | None = None,
    ) -> list[str]:
        seen.append(requirement)
        return []

    assert verify_model(path, policy=policy, checks=PolicyChecks(certificate=check)).ok
    assert seen == [policy.certificate]

    def refuse(*args: object, model_root: str | None = None) -> list[str]:
        return ["robust accuracy 0.5 < 0.8 at eps 0.1"]

    refused = verify_model(path, policy=policy, checks=PolicyChecks(certificate=refuse))
    assert "0.5 < 0.8" in "\n".join(refused.failures)


def test_audit_table_fails_closed_without_a_check(tmp_path: Path) -> None:
    """A policy's ``[audit.NAME]`` table is refused when the caller gave no audit check, and
    decided by the check when one is given (with the root of the bytes that verified)."""
    policy = load_policy(write_policy(tmp_path, "[audit.membership]\nmax_auc = 0.6\n"))
    path = model(tmp_path, A)
    failures = "\n".join(verify_model(path, policy=policy).failures)
    assert "no audit check was given" in failures
    roots: list[str | None] = []

    def check(*args: object, model_root: str | None = None) -> list[str]:
        roots.append(model_root)
        return []

    report = verify_model(path, policy=policy, checks=PolicyChecks(audit=check))
    assert report.ok and roots == [report.manifest.layer_root if report.manifest else None]
    assert roots[0] is not None


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("threshold = 4", "exceeds"),
        ("threshold = 0", ">= 1"),
        ("unknown_key = 1", "unknown policy keys"),
        ('max_signature_age = "soon"', "max_signature_age"),
        ('model_name = "(["', "not a valid regex"),
        ('allowed_hash_algorithms = ["md5"]', "allowed_hash_algorithms"),
        ('revoked_key_ids = ["abc"]', "revoked_key_ids"),
        ("version = 2", "version"),
        ("[certificate]\nepsilon = 0.1\n", "min_robust_accuracy"),
        ("threshold = [", "not valid TOML"),
    ],
)
def test_bad_policies_are_one_line_bad_input(tmp_path: Path, body: str, reason: str) -> None:
    with pytest.raises(BadInputError, match=reason) as caught:
        load_policy(write_policy(tmp_path, body))
    assert caught.value.exit_code == 2 and "\n" not in str(caught.value)


def test_inline_pem_signers_and_duplicate_keys(tmp_path: Path) -> None:
    pem = public_pem(A.public_key()).decode()
    path = tmp_path / "p.toml"
    path.write_text(f'[[signers]]\nname = "alice"\npublic_key_pem = """{pem}"""\n')
    policy = load_policy(path)
    assert isinstance(policy, Policy) and policy.signers[0].key_id == key_id(A.public_key())
    path.write_text(
        path.read_text() + f'[[signers]]\nname = "again"\npublic_key_pem = """{pem}"""\n'
    )
    with pytest.raises(BadInputError, match="same public key"):
        load_policy(path)


def test_parse_age_units() -> None:
    assert (
        parse_age("90d", "x") == 90 * 86400
        and parse_age("15m", "x") == 900
        and parse_age(30, "x") == 30
    )


def test_example_policy_in_keys_example_parses(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parent.parent / "keys.example"
    for name in ("release-bot", "alice"):
        write_keypair(tmp_path, name, generate_key(), None)
    text = (example / "policy.toml").read_text().replace("keys/", f"{tmp_path}/")
    (tmp_path / "policy.toml").write_text(text)
    policy = load_policy(tmp_path / "policy.toml")
    assert policy.threshold >= 1 and len(policy.signers) >= 2
