"""``modelguard sign`` and ``modelguard verify``: OMS-compatible per-layer signatures.

$ modelguard sign build/model --sign-key keys/modelguard.priv --sign-passphrase-env MG_PASS
$ modelguard verify build/model --trust-key keys/modelguard.pub
$ modelguard verify build/model --policy policy.toml --require-ledger --json
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from modelguard.cli.options import load_sign_key, sign_key_options, trust_key_option
from modelguard.cli.output import emit, json_option, progress
from modelguard.gates import STANDARD_CHECKS
from modelguard.keys import load_public_key
from modelguard.policy import load_policy, policy_from_keys, with_ledger_trust
from modelguard.signing.shards import DEFAULT_SHARD_SIZE, METHODS, OMS_HASHES, Serialization
from modelguard.signing.sign import sign_model
from modelguard.signing.verify import verify_model
from modelguard.transparency import check_signature_proof, write_entry_proof

_PATH = click.Path(path_type=Path, exists=False)
F = TypeVar("F", bound=Callable[..., Any])


@click.command(
    epilog="""\b
Examples:
  modelguard sign model_dir --sign-key keys/modelguard.priv --sign-passphrase-env MG_PASS
  modelguard sign model.onnx --sign-key k.priv --sign-passphrase-file pass.txt --name digits --version 1.2
  modelguard sign model_dir --sign-key second.priv --no-ledger   # adds model.sig.d/<keyid>.sig
  modelguard sign model_dir --sign-key k.priv --serialization shards --shard-size 1000000000
"""
)
@click.argument("path", type=_PATH)
@sign_key_options(required=True, help="Private key (PEM) to sign with.", legacy=True)
@click.option(
    "--signature",
    "signature_path",
    type=_PATH,
    help="Bundle to write (default: model.sig inside/next to the model).",
)
@click.option("--name", help="Model name (default: the file or directory name).")
@click.option(
    "--version", "model_version", help="Model version, recorded in the signature and ledger."
)
@click.option("--parent", help="sha256 layer root of the model this one was derived from.")
@click.option(
    "--ledger",
    "ledger_url",
    help="Ledger URL (default: $MODELGUARD_LEDGER or .modelguard/ledger.db).",
)
@click.option("--no-ledger", is_flag=True, help="Do not record the signature in the ledger.")
@click.option(
    "--serialization",
    type=click.Choice(METHODS),
    default="files",
    show_default=True,
    help="OMS resources: whole files, or fixed-size byte ranges (path:start:end).",
)
@click.option(
    "--shard-size",
    type=click.IntRange(min=1),
    help=f"Bytes per shard with --serialization shards (default {DEFAULT_SHARD_SIZE}).",
)
@click.option(
    "--hash",
    "hash_type",
    type=click.Choice(OMS_HASHES),
    default="sha256",
    show_default=True,
    help="OMS resource digest (the model_signing CLI verifies sha256 files only).",
)
@click.option(
    "--ledger-proof",
    type=_PATH,
    help="Also write the ledger entry's C2SP tlog-proof here (for `verify --ledger-proof`).",
)
@json_option
def sign(
    path: Path,
    sign_key: Path,
    sign_passphrase_env: str | None,
    sign_passphrase_file: Path | None,
    signature_path: Path | None,
    name: str | None,
    model_version: str | None,
    parent: str | None,
    ledger_url: str | None,
    no_ledger: bool,
    serialization: str,
    shard_size: int | None,
    hash_type: str,
    ledger_proof: Path | None,
    as_json: bool,
) -> None:
    """Sign a model file or directory (a Sigstore bundle that OpenSSF Model Signing accepts)."""
    if no_ledger and (ledger_url or ledger_proof):
        raise click.UsageError("--ledger/--ledger-proof and --no-ledger contradict each other")
    if shard_size is not None and serialization != "shards":
        raise click.UsageError("--shard-size needs --serialization shards")
    if serialization == "shards" and shard_size is None:
        shard_size = DEFAULT_SHARD_SIZE
    key = load_sign_key(sign_key, sign_passphrase_env, sign_passphrase_file)
    with progress("sign: hashing") as hashed:
        result = sign_model(
            path,
            key,
            signature_path=signature_path,
            name=name,
            version=model_version,
            parent=parent,
            ledger_url=ledger_url,
            record=not no_ledger,
            serialization=Serialization(serialization, hash_type, shard_size),
            progress=hashed,
        )
    document = result.to_dict()
    if ledger_proof is not None and result.ledger_entry:
        index = int(result.ledger_entry["index"])
        document["ledger_proof"] = write_entry_proof(index, ledger_proof, ledger_url)

    def human(console: Console) -> None:
        what = "co-signature" if result.cosigned else "signature"
        console.print(f"[green]signed[/] {path}: {what} written to {result.signature_path}")
        console.print(
            f"  key {result.key_id}\n  {document['files']} file(s), {document['tensors']} tensor(s), "
            f"layer root {result.manifest.layer_root}"
        )
        if result.ledger_entry:
            console.print(
                f"  ledger entry {result.ledger_entry.get('index')} ({result.payload_digest})"
            )

    emit(document, as_json, human)


_VERIFICATION_OPTIONS = [
    click.option(
        "--signature",
        "signature_path",
        type=_PATH,
        help="Bundle to check (default: model.sig inside/next to the model).",
    ),
    trust_key_option(dest="key_paths", legacy_key_alias=True),
    click.option(
        "--policy",
        "policy_path",
        type=_PATH,
        help="TOML policy: trusted signers, threshold, revocations, age (docs/policy.md).",
    ),
    click.option("--ledger", "ledger_url", help="Ledger URL for --require-ledger."),
    click.option(
        "--require-ledger",
        is_flag=True,
        help="Demand a ledgered, unrevoked, non-rollback sign entry.",
    ),
    click.option(
        "--allow-rollback",
        is_flag=True,
        help="Accept a version older than the newest in the ledger.",
    ),
    click.option(
        "--ledger-key",
        "ledger_keys",
        multiple=True,
        help="The ledger's checkpoint public key (file or one-line key) that --require-ledger"
        " trusts; else the policy's [ledger] key, else $MODELGUARD_LEDGER_KEY.",
    ),
    click.option(
        "--ledger-state",
        type=click.Path(path_type=Path, file_okay=False),
        help="Directory of the ledger gate's trust state (default: the policy's [ledger] state,"
        " else $MODELGUARD_LEDGER_STATE, else ~/.config/modelguard/ledger-state).",
    ),
]


def verification_options(func: F) -> F:
    """--signature, --key, --policy, --ledger, --require-ledger, --allow-rollback: shared by
    every command that verifies before it acts (verify, run)."""
    for option in reversed(_VERIFICATION_OPTIONS):
        func = option(func)
    return func


@click.command(
    epilog="""\b
Examples:
  modelguard verify model_dir --trust-key keys/modelguard.pub
  modelguard verify model_dir --trust-key alice.pub --trust-key bob.pub   # both must have signed
  modelguard verify model_dir --policy policy.toml --json         # the CI deployment gate
  modelguard verify model_dir --policy policy.toml --ledger postgresql://... --require-ledger
Exit codes: 0 verified; 1 a signature, digest, policy or ledger check failed; 2 bad input.
"""
)
@click.argument("path", type=_PATH)
@verification_options
@click.option(
    "--ignore-unsigned-files",
    is_flag=True,
    help="Skip files no signature lists (default: they fail, OMS spec 8.5).",
)
@click.option(
    "--ledger-proof",
    type=_PATH,
    help="Offline: a tlog-proof file (from `sign --ledger-proof`) showing the signature is"
    " ledgered; checked against --ledger-key, no ledger access needed.",
)
@click.option(
    "--tensors",
    default=None,
    metavar="NAME[,NAME...]",
    help="Partial: check only these tensors (each proven in the signed layer root) and every"
    " non-tensor byte; the report lists what was not checked.",
)
@json_option
@click.pass_context
def verify(
    ctx: click.Context,
    path: Path,
    signature_path: Path | None,
    key_paths: tuple[Path, ...],
    policy_path: Path | None,
    ledger_url: str | None,
    require_ledger: bool,
    allow_rollback: bool,
    ignore_unsigned_files: bool,
    ledger_proof: Path | None,
    ledger_keys: tuple[str, ...],
    ledger_state: Path | None,
    tensors: str | None,
    as_json: bool,
) -> None:
    """Verify signatures, then every file, tensor and structure digest of a model."""
    if bool(key_paths) == bool(policy_path):
        raise click.UsageError(
            "give trusted keys with --trust-key, or a --policy file (one of the two)"
        )
    keys = [load_public_key(p) for p in key_paths]
    policy = with_ledger_trust(
        load_policy(policy_path) if policy_path else policy_from_keys(keys),
        ledger_keys,
        ledger_state,
    )
    with progress("verify: hashing") as hashed:
        report = verify_model(
            path,
            signature_path,
            keys=(),
            policy=policy,
            ledger_url=ledger_url,
            require_ledger=require_ledger,
            allow_rollback=allow_rollback,
            ignore_unsigned_files=ignore_unsigned_files,
            checks=STANDARD_CHECKS,
            tensors=[n for n in tensors.split(",") if n] if tensors is not None else None,
            progress=hashed,
        )
    if ledger_proof is not None:  # the gate's ledger keys and the policy's witness quorum
        check_signature_proof(report, ledger_proof, policy)
    error = report.error()

    def human(console: Console) -> None:
        signers = Table(title="Signatures", show_lines=False)
        for column in ("signature", "signer", "status", "signed at", "layers"):
            signers.add_column(column)
        for s in report.signers:
            style = (
                "green"
                if s.status == "verified"
                else "red"
                if s.status in ("invalid", "revoked")
                else "yellow"
            )
            signers.add_row(
                Path(s.signature).name,
                s.name or (s.key_id or "?")[:16],
                f"[{style}]{s.status}[/]",
                s.signed_at or "-",
                "yes" if s.layer_detail else "no detail",
            )
        console.print(signers)
        checks = Table(title=f"Checks for {path}")
        for column in ("check", "result", "detail"):
            checks.add_column(column)
        for c in report.checks:
            checks.add_row(c.name, "[green]ok[/]" if c.ok else "[red]FAIL[/]", c.detail)
        console.print(checks)
        verdict = "[green bold]VERIFIED[/]" if error is None else "[red bold]VERIFICATION FAILED[/]"
        console.print(verdict)

    emit(report.to_dict(), as_json, human)
    if error is not None:
        click.echo(f"modelguard: verification failed: {error}", err=True)
        ctx.exit(error.exit_code)
