"""`modelguard audit ...`: JSON output, exit codes, and untrusted attestation bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from modelguard.audits.attestation import build_statement, load_attestation
from modelguard.cli import main as cli_main
from modelguard.cli.main import cli
from modelguard.errors import FormatError, SignatureError
from modelguard.keys import PrivateKey, generate_key, write_keypair
from modelguard.signing import sign_statement
from modelguard.signing.bundle import dump_bundle


def _exit_code(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run the real entry point (errors mapped to exit codes there); (code, stderr)."""
    with pytest.raises(SystemExit) as info:
        cli_main.main(args)
    return int(info.value.code or 0), capsys.readouterr().err


def test_poisoning_cli_writes_reports_and_signs(tmp_path: Path) -> None:
    priv, pub = write_keypair(tmp_path / "keys", "k", generate_key(), None)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli,
        [
            "audit",
            "poisoning",
            "--data",
            "digits:train",
            "--arch",
            "digits_mlp",
            "--limit",
            "200",
            "--folds",
            "2",
            "--epochs",
            "3",
            "--simulate-flip",
            "0.1",
            "--out",
            str(out),
            "--key",
            str(priv),
            "--ledger",
            f"sqlite:///{tmp_path / 'l.db'}",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["summary"]["examples"] == 200
    assert {"precision", "recall", "issue_rate"} <= set(document["summary"])
    report = json.loads((out / "report.json").read_text())
    assert report["results"]["flagged"] and report["model"] is None
    assert "<table>" in (out / "report.html").read_text()
    assert document["attestation"]["ledger_index"] == 0
    from modelguard.keys import load_public_key

    attestation = load_attestation(out / "poisoning.sig", [load_public_key(pub)])
    assert attestation.manifest_root is None  # a data-only audit: bound to the data set
    assert attestation.dataset_digests["data"] == report["data"]["digest"]


@pytest.mark.parametrize(
    "args",
    [
        ["audit", "poisoning", "--data", "no-such-data", "--arch", "digits_mlp"],
        ["audit", "poisoning", "--data", "digits:train"],  # neither --model nor --arch
        ["audit", "poisoning", "--data", "digits:train", "--arch", "digits_mlp", "--retrain"],
        ["audit", "poisoning", "--data", "digits:train", "--arch", "nope:nothing"],
        [
            "audit",
            "membership",
            "--model",
            "no-such-model",
            "--members",
            "digits",
            "--nonmembers",
            "digits",
        ],
    ],
)
def test_bad_input_exits_2(
    args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _exit_code([*args, "--out", str(tmp_path / "o"), "--no-ledger"], capsys)
    assert code == 2, err
    assert err.startswith("modelguard: error:") and len(err.strip().splitlines()) == 1


def test_membership_cli_on_an_onnx_file_without_arch_runs_the_loss_attack(
    mlp_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "audit",
            "membership",
            "--model",
            str(mlp_dir / "model.onnx"),
            "--members",
            "digits:train",
            "--nonmembers",
            "digits",
            "--reference-models",
            "0",
            "--limit",
            "150",
            "--out",
            str(tmp_path / "o"),
            "--no-ledger",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)["summary"]
    assert summary["strongest_attack"] == "loss" and summary["members"] == 150
    code, err = _exit_code(
        [
            "audit",
            "membership",
            "--model",
            str(mlp_dir / "model.onnx"),
            "--members",
            "digits:train",
            "--nonmembers",
            "digits",
            "--out",
            str(tmp_path / "p"),
            "--no-ledger",
        ],
        capsys,
    )
    assert code == 2 and "--arch" in err


@given(st.binary(max_size=400))
def test_arbitrary_bytes_are_refused_cleanly(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "a.sig"
    path.write_bytes(data)
    with pytest.raises((FormatError, SignatureError)):
        load_attestation(path, [generate_key().public_key()])


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(
    predicate=st.dictionaries(
        st.sampled_from(["version", "audit", "model", "data", "summary", "x"]), _json
    )
)
def test_signed_but_malformed_predicates_are_format_errors(
    tmp_path_factory: pytest.TempPathFactory, key: PrivateKey, predicate: dict[str, object]
) -> None:
    statement = build_statement(
        "membership",
        model=None,
        datasets={"members": {"name": "d", "digest": "ab" * 32}},
        config={},
        results={},
        summary={},
    )
    statement["predicate"] = predicate
    path = tmp_path_factory.mktemp("signed") / "a.sig"
    path.write_bytes(dump_bundle(sign_statement(statement, key)))
    with pytest.raises(FormatError):
        load_attestation(path, [key.public_key()])
