"""``modelguard run``: verified inference on a (possibly encrypted) ONNX model.

$ modelguard run model.onnx.mgenc --signature model.sig --trust-key signer.pub \\
      --identity alice.priv --input x.npy --output y.npy --json
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np
from rich.console import Console

from modelguard.cli.crypto import decryption_options, decryption_secrets
from modelguard.cli.output import emit, json_option, progress
from modelguard.cli.signing import verification_options
from modelguard.errors import BadInputError

MAX_REPORTED = 32  # predictions listed in the output document


def load_inputs(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    """Feeds from ``.npy`` (the first graph input) or ``.npz`` (arrays named like the inputs)."""
    from modelguard.safeio import open_regular

    with open_regular(path, what="input array") as handle:  # a FIFO or device is refused
        try:
            loaded = np.load(handle, allow_pickle=False)
            if not isinstance(loaded, np.ndarray):
                with loaded:
                    arrays = {k: loaded[k] for k in loaded.files}
        except (OSError, ValueError, EOFError) as error:
            raise BadInputError(f"cannot read input array: {error}", path=str(path)) from None
    if isinstance(loaded, np.ndarray):
        if len(names) != 1:
            raise BadInputError(
                f"the model takes {len(names)} inputs {names}: give an .npz", path=str(path)
            )
        return {names[0]: loaded}
    if len(arrays) == 1 and len(names) == 1:
        return {names[0]: next(iter(arrays.values()))}
    missing = [n for n in names if n not in arrays]
    if missing:
        raise BadInputError(
            f"input {missing[0]!r} is not in the .npz (has {sorted(arrays)})", path=str(path)
        )
    return {n: arrays[n] for n in names}


_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32", "tensor(uint64)": "uint64", "tensor(bool)": "bool",
}  # fmt: skip


def check_feeds(inputs: list[Any], feeds: dict[str, np.ndarray], source: Path) -> None:
    """Refuse (exit 2, one line naming the expected shape) an input of the wrong rank, size or type."""
    for spec in inputs:
        array = feeds[spec.name]
        expected = [d if isinstance(d, int) else (d or "?") for d in spec.shape]
        shown = "[" + ", ".join(str(d) for d in expected) + "]"
        want = _ORT_TYPES.get(spec.type)
        fits = len(array.shape) == len(expected) and all(
            not isinstance(d, int) or d == n for d, n in zip(expected, array.shape, strict=True)
        )
        if not fits or (want is not None and array.dtype != np.dtype(want)):
            raise BadInputError(
                f"input {spec.name!r} is {array.dtype}{list(array.shape)}, the model expects "
                f"{want or spec.type}{shown}",
                path=str(source),
            )


def save_outputs(path: Path, names: list[str], outputs: list[Any]) -> None:
    """``.npy``: the first output; ``.npz``: every output by name. Written atomically."""
    import os
    import tempfile

    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent or Path(".")
    )
    try:
        with os.fdopen(fd, "wb") as handle:
            if path.suffix == ".npz":
                np.savez(handle, **dict(zip(names, outputs, strict=True)))
            else:
                np.save(handle, outputs[0], allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@click.command(
    epilog="""\b
Examples:
  modelguard run model.onnx.mgenc --signature model.sig --trust-key signer.pub \\
      --identity alice.priv --input digits.npy --json
  modelguard run models/digits --signature models/digits/model.sig --policy policy.toml \\
      --ledger sqlite:///ledger.db --require-ledger --input x.npz --output y.npz
"""
)
@click.argument("path", type=click.Path(path_type=Path, exists=True))
@verification_options
@decryption_options
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Input array: .npy (first input) or .npz (by input name).",
)
@click.option(
    "--output",
    "output_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write outputs: .npy (first output) or .npz (all).",
)
@click.option(
    "--provider",
    type=click.Choice(["auto", "cuda", "cpu"]),
    default="auto",
    show_default=True,
    help="auto: CUDA only when its libraries load, else CPU.",
)
@json_option
def run(
    path: Path,
    signature_path: Path | None,
    key_paths: tuple[Path, ...],
    policy_path: Path | None,
    ledger_url: str | None,
    require_ledger: bool,
    allow_rollback: bool,
    ledger_keys: tuple[str, ...],
    ledger_state: Path | None,
    identity: tuple[Path, ...],
    identity_passphrase_env: str | None,
    identity_passphrase_file: Path | None,
    passphrase_env: str | None,
    key_file: Path | None,
    input_path: Path,
    output_path: Path | None,
    provider: str,
    as_json: bool,
) -> None:
    """Verify the model, decrypt it in memory if encrypted, and run it on --input."""
    import importlib

    from modelguard.gates import STANDARD_CHECKS
    from modelguard.keys import load_public_key
    from modelguard.policy import load_policy, policy_from_keys, with_ledger_trust
    from modelguard.runtime import open_verified

    importlib.import_module("onnxruntime")  # the [runtime] extra: say so before anything else

    if bool(key_paths) == bool(policy_path):
        raise click.UsageError(
            "give trusted keys with --trust-key, or a --policy file (one of the two)"
        )
    secrets = decryption_secrets(
        identity, identity_passphrase_env, identity_passphrase_file, passphrase_env, key_file
    )
    with progress("run: verifying") as hashed:
        verified = open_verified(
            path,
            signature=signature_path,
            policy=with_ledger_trust(
                load_policy(policy_path)
                if policy_path
                else policy_from_keys([load_public_key(p) for p in key_paths]),
                ledger_keys,
                ledger_state,
            ),
            ledger_url=ledger_url,
            require_ledger=require_ledger,
            allow_rollback=allow_rollback,
            providers=provider,
            checks=STANDARD_CHECKS,
            progress=hashed,
            **{k: v for k, v in secrets.items() if v is not None},
        )
    session = verified.session
    feeds = load_inputs(input_path, [i.name for i in session.get_inputs()])
    check_feeds(list(session.get_inputs()), feeds, input_path)
    names = [o.name for o in session.get_outputs()]
    outputs = session.run(None, feeds)
    if output_path is not None:
        save_outputs(output_path, names, outputs)
    first = np.asarray(outputs[0])
    predictions = first.argmax(axis=-1).tolist()[:MAX_REPORTED] if first.ndim == 2 else None
    document = {
        "ok": True,
        **verified.to_dict(),
        "outputs": {
            n: {"shape": list(np.asarray(o).shape), "dtype": str(np.asarray(o).dtype)}
            for n, o in zip(names, outputs, strict=True)
        },
        "predictions": predictions,
        "output": str(output_path) if output_path else None,
    }
    document.pop("verification", None)

    def human(console: Console) -> None:
        kind = "encrypted, decrypted in memory" if verified.encrypted else "plaintext"
        console.print(
            f"[green]verified[/] {path} ({kind}); {verified.tensors_verified} tensors match signed digests"
        )
        console.print(f"provider {verified.provider}")
        for n, info in document["outputs"].items():
            console.print(f"output {n}: shape {info['shape']} {info['dtype']}")
        if predictions is not None:
            console.print(f"predictions (argmax): {predictions}")
        if output_path is not None:
            console.print(f"[green]wrote[/] {output_path}")

    emit(document, as_json, human)
