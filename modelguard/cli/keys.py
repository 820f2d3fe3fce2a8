"""``modelguard keygen``: make a signing key pair.

$ MG_PASS=... modelguard keygen --out keys --passphrase-env MG_PASS
$ modelguard keygen --out /tmp/throwaway --no-passphrase --json
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from rich.console import Console

from modelguard.cli.output import emit, json_option
from modelguard.errors import BadInputError
from modelguard.keys import (
    ALGORITHMS,
    DEFAULT_ALGORITHM,
    DEFAULT_KEY_NAME,
    PrivateKey,
    generate_encryption_key,
    generate_key,
    key_id,
    read_passphrase,
    write_keypair,
)

PURPOSES = ("signing", "encryption")


def passphrase_options(func: Any) -> Any:
    """``--passphrase-env VAR`` / ``--passphrase-file FILE`` (shared by keygen and sign)."""
    func = click.option(
        "--passphrase-file",
        type=click.Path(path_type=Path, dir_okay=False),
        help="Read the key passphrase from the first line of this file.",
    )(func)
    return click.option(
        "--passphrase-env",
        metavar="VAR",
        help="Read the key passphrase from environment variable VAR.",
    )(func)


def _new_passphrase(env: str | None, file: Path | None, no_passphrase: bool) -> bytes | None:
    if no_passphrase:
        if env is not None or file is not None:
            raise BadInputError("--no-passphrase contradicts --passphrase-env/--passphrase-file")
        return None
    given = read_passphrase(env=env, file=file)
    if given is not None:
        return given
    if not sys.stdin.isatty():
        raise BadInputError(
            "no passphrase: give --passphrase-env VAR or --passphrase-file F, or say --no-passphrase"
        )
    typed = click.prompt(
        "Passphrase for the new private key", hide_input=True, confirmation_prompt=True, err=True
    )
    return str(typed).encode()


@click.command(
    epilog="""\b
Examples:
  MG_PASS=s3cret modelguard keygen --out keys --passphrase-env MG_PASS
  modelguard keygen --out /tmp/k --name ci --no-passphrase --json
"""
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory for NAME.priv (mode 0600) and NAME.pub.",
)
@click.option(
    "--algorithm",
    type=click.Choice(ALGORITHMS),
    default=DEFAULT_ALGORITHM,
    show_default=True,
    help="ecdsa-p256 works with OpenSSF Model Signing verifiers; ed25519 is modelguard-only.",
)
@click.option(
    "--name", default=DEFAULT_KEY_NAME, show_default=True, help="Base name of the key files."
)
@click.option(
    "--purpose",
    type=click.Choice(PURPOSES),
    default="signing",
    show_default=True,
    help="signing: a signature key; encryption: an X25519 recipient key.",
)
@passphrase_options
@click.option(
    "--no-passphrase", is_flag=True, help="Store the private key unencrypted (tests only)."
)
@json_option
def keygen(
    out_dir: Path,
    algorithm: str,
    name: str,
    purpose: str,
    passphrase_env: str | None,
    passphrase_file: Path | None,
    no_passphrase: bool,
    as_json: bool,
) -> None:
    """Generate a key pair; the private key is encrypted at rest unless --no-passphrase."""
    passphrase = _new_passphrase(passphrase_env, passphrase_file, no_passphrase)
    key: PrivateKey | X25519PrivateKey
    if purpose == "encryption":
        key, algorithm = generate_encryption_key(), "x25519"
    else:
        key = generate_key(algorithm)
    priv_path, pub_path = write_keypair(out_dir, name, key, passphrase)
    document = {
        "ok": True,
        "purpose": purpose,
        "algorithm": algorithm,
        "key_id": key_id(key.public_key()),
        "private_key": str(priv_path),
        "public_key": str(pub_path),
        "encrypted": passphrase is not None,
    }

    def human(console: Console) -> None:
        console.print(
            f"[green]wrote[/] {priv_path} (private, 0600{', encrypted' if passphrase else ', UNENCRYPTED'})"
        )
        console.print(f"[green]wrote[/] {pub_path} (public)")
        console.print(f"key id {document['key_id']} ({algorithm})")

    emit(document, as_json, human)
