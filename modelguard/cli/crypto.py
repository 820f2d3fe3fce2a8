"""``modelguard encrypt`` / ``modelguard decrypt``: tensor-wise encrypted containers.

$ modelguard keygen --purpose encryption --out keys --name alice --no-passphrase
$ modelguard encrypt model.onnx --out model.onnx.mgenc --recipient keys/alice.pub --json
$ modelguard decrypt model.onnx.mgenc --out plain.onnx --identity keys/alice.priv
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console

from modelguard.cli.options import load_sign_key, sign_key_options
from modelguard.cli.output import emit, json_option
from modelguard.errors import BadInputError


def read_env_secret(var: str | None, what: str) -> bytes | None:
    """A secret from environment variable ``var`` (never from the command line)."""
    import os

    if var is None:
        return None
    value = os.environ.get(var)
    if value is None:
        raise BadInputError(f"environment variable {var} ({what}) is not set")
    if not value:
        raise BadInputError(f"environment variable {var} ({what}) is empty")
    return value.encode()


def decryption_options(func: Any) -> Any:
    """``--identity`` / ``--identity-passphrase-env|-file`` / ``--passphrase-env`` / ``--key-file``."""
    for option in reversed(
        [
            click.option(
                "--identity",
                type=click.Path(path_type=Path, dir_okay=False, exists=True),
                multiple=True,
                help="X25519 private key (keygen --purpose encryption); repeatable.",
            ),
            click.option(
                "--identity-passphrase-env",
                metavar="VAR",
                help="Environment variable holding the passphrase of the --identity key file.",
            ),
            click.option(
                "--identity-passphrase-file",
                type=click.Path(path_type=Path, dir_okay=False),
                help="File whose first line is the passphrase of the --identity key file.",
            ),
            click.option(
                "--passphrase-env",
                metavar="VAR",
                help="Environment variable holding the container passphrase.",
            ),
            click.option(
                "--key-file",
                type=click.Path(path_type=Path, dir_okay=False, exists=True),
                help="Raw 256-bit key (32 bytes, 64 hex digits or base64), e.g. a KMS data key.",
            ),
        ]
    ):
        func = option(func)
    return func


def decryption_secrets(
    identity: tuple[Path, ...],
    identity_passphrase_env: str | None,
    identity_passphrase_file: Path | None,
    passphrase_env: str | None,
    key_file: Path | None,
) -> dict[str, Any]:
    """Keyword arguments for decrypt_model/open_session from the CLI options."""
    from modelguard.encryption import load_x25519_private_key, read_raw_key
    from modelguard.keys import read_passphrase

    if identity_passphrase_env is not None and identity_passphrase_file is not None:
        raise click.UsageError(
            "give the identity passphrase one way: --identity-passphrase-env or -file"
        )
    secret = read_env_secret(identity_passphrase_env, "identity passphrase") or read_passphrase(
        file=identity_passphrase_file
    )
    hint = "--identity-passphrase-env VAR or --identity-passphrase-file FILE"
    return {
        "identity": [load_x25519_private_key(p, secret, passphrase_hint=hint) for p in identity]
        or None,
        "passphrase": read_env_secret(passphrase_env, "container passphrase"),
        "key": read_raw_key(key_file) if key_file is not None else None,
    }


@click.command(
    epilog="""\b
Examples:
  modelguard encrypt model.onnx --out model.onnx.mgenc --recipient alice.pub --recipient bob.pub
  MG_PASS=... modelguard encrypt models/digits --out digits.enc --passphrase-env MG_PASS
  modelguard encrypt model.onnx --out m.mgenc --key-file kms.key --sign-key signer.priv \\
      --sign-passphrase-env MG_PASS --json
"""
)
@click.argument("path", type=click.Path(path_type=Path, exists=True))
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="Container file (or directory for a directory model).",
)
@click.option(
    "--recipient",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    multiple=True,
    help="X25519 public key (keygen --purpose encryption); repeat for several recipients.",
)
@click.option(
    "--passphrase-env",
    metavar="VAR",
    help="Environment variable holding a passphrase (scrypt, N=2^17, r=8, p=1).",
)
@click.option(
    "--key-file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Raw 256-bit key (32 bytes, 64 hex digits or base64), e.g. a KMS data key.",
)
@sign_key_options(required=False, help="Also sign the container with this private key.")
@click.option("--name", help="Model name recorded with the signature (with --sign-key).")
@click.option(
    "--version",
    "model_version",
    help="Model version recorded with the signature (with --sign-key).",
)
@click.option("--ledger", "ledger_url", help="Ledger URL for the signing event (with --sign-key).")
@json_option
def encrypt(
    path: Path,
    out: Path,
    recipient: tuple[Path, ...],
    passphrase_env: str | None,
    key_file: Path | None,
    sign_key: Path | None,
    sign_passphrase_env: str | None,
    sign_passphrase_file: Path | None,
    name: str | None,
    model_version: str | None,
    ledger_url: str | None,
    as_json: bool,
) -> None:
    """Encrypt a model file or directory, tensor by tensor, for one or more recipients."""
    from modelguard.encryption import encrypt_model, load_x25519_public_key, read_raw_key

    if not recipient and passphrase_env is None and key_file is None:
        raise BadInputError("give --recipient KEY.pub, --passphrase-env VAR or --key-file FILE")
    signer = None
    if sign_key is not None:
        signer = load_sign_key(sign_key, sign_passphrase_env, sign_passphrase_file)
    result = encrypt_model(
        path,
        out,
        recipients=[load_x25519_public_key(p) for p in recipient],
        passphrase=read_env_secret(passphrase_env, "passphrase"),
        key=read_raw_key(key_file) if key_file is not None else None,
        sign_key=signer,
        name=name,
        version=model_version,
        ledger_url=ledger_url,
    )
    document = {"ok": True, **result.to_dict()}

    def human(console: Console) -> None:
        console.print(
            f"[green]encrypted[/] {path} -> {out} ({len(result.files)} file(s), {result.bytes_in} bytes)"
        )
        console.print(f"plaintext layer root {result.layer_root}")
        if result.signature is not None:
            console.print(f"[green]signed[/] {result.signature}")

    emit(document, as_json, human)


@click.command(
    epilog="""\b
Examples:
  modelguard decrypt model.onnx.mgenc --out model.onnx --identity alice.priv
  modelguard decrypt m.mgenc --out two.safetensors --key-file kms.key --tensors fc1.weight,fc1.bias
"""
)
@click.argument("path", type=click.Path(path_type=Path, exists=True))
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="Where to write plaintext (atomically).",
)
@decryption_options
@click.option(
    "--tensors", help="Comma-separated tensor names: decrypt only these, into one safetensors file."
)
@json_option
def decrypt(
    path: Path,
    out: Path,
    identity: tuple[Path, ...],
    identity_passphrase_env: str | None,
    identity_passphrase_file: Path | None,
    passphrase_env: str | None,
    key_file: Path | None,
    tensors: str | None,
    as_json: bool,
) -> None:
    """Decrypt a container, checking every tensor against the signed digests inside it."""
    from modelguard.encryption import decrypt_model

    if not identity and passphrase_env is None and key_file is None:
        raise BadInputError(
            "give --identity KEY.priv, --passphrase-env VAR or --key-file FILE to decrypt"
        )
    names = [n.strip() for n in tensors.split(",") if n.strip()] if tensors is not None else None
    if names is not None and not names:
        raise BadInputError("--tensors needs at least one tensor name")
    result = decrypt_model(
        path,
        out,
        tensors=names,
        **decryption_secrets(
            identity, identity_passphrase_env, identity_passphrase_file, passphrase_env, key_file
        ),
    )
    document = {"ok": True, **result.to_dict()}

    def human(console: Console) -> None:
        console.print(f"[green]decrypted[/] {path} -> {out} ({result.bytes_out} bytes)")
        console.print(
            f"{len(result.tensors)} tensor(s) match their signed digests; layer root {result.layer_root}"
        )

    emit(document, as_json, human)
