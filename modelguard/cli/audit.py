"""``modelguard audit``: label-flip poisoning and membership-inference audits, signed and ledgered.

$ modelguard audit poisoning --data digits:train --arch digits_mlp --simulate-flip 0.1 --retrain --test digits
$ modelguard audit membership --model build/digits --members digits:train --nonmembers digits --sign-key k.priv
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from modelguard.cli.options import json_object, load_sign_key, sign_key_options
from modelguard.cli.output import emit, json_option
from modelguard.keys import PrivateKey


def _common(func: Any) -> Any:
    """Options every audit shares: the architecture recipe, output, key and ledger."""
    options: list[Callable[[Any], Any]] = [
        click.option(
            "--arch",
            help="Trusted architecture factory (a zoo name or pkg.module:function); "
            "overrides the model card's.",
        ),
        click.option("--arch-kwargs", default=None, help="JSON keyword arguments for --arch."),
        click.option(
            "--epochs",
            type=click.IntRange(min=1),
            default=30,
            show_default=True,
            help="Epochs of every model the audit trains.",
        ),
        click.option(
            "--lr",
            type=click.FloatRange(min=0, min_open=True),
            default=2e-3,
            show_default=True,
            help="Adam learning rate of those models.",
        ),
        click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True),
        click.option(
            "--seed",
            type=int,
            default=0,
            show_default=True,
            help="Seed of every random choice.",
        ),
        click.option(
            "--out",
            "out_dir",
            type=click.Path(path_type=Path),
            default=None,
            help="Output directory (default: MODEL.audits beside the model, where "
            "the policy gate looks, else audit-report).",
        ),
        sign_key_options(
            required=False,
            legacy=True,
            help="Private key: sign an attestation and record an audit ledger entry.",
        ),
        click.option(
            "--ledger",
            "ledger_url",
            help="Ledger URL (default: $MODELGUARD_LEDGER or .modelguard/ledger.db).",
        ),
        click.option("--no-ledger", is_flag=True, help="Do not append the audit entry."),
        json_option,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _key(path: Path | None, env: str | None, file: Path | None) -> PrivateKey | None:
    return load_sign_key(path, env, file) if path else None


def _out(out_dir: Path | None, model: Path | None) -> Path:
    from modelguard.audits.attestation import audits_dir_for

    if out_dir is not None:
        return out_dir
    return audits_dir_for(model) if model is not None else Path("audit-report")


def _render(document: dict[str, Any], console: Console) -> None:
    table = Table(title=f"{document['audit']} audit", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for name, value in document["summary"].items():
        table.add_row(name, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    for kind, path in document["outputs"].items():
        console.print(f"{kind}: {path}", markup=False)
    attestation = document.get("attestation")
    if attestation and attestation.get("ledger_index") is not None:
        console.print(f"ledger: audit entry #{attestation['ledger_index']}")


@click.group("audit")
def audit() -> None:
    """Audit a model's training data (label-flip poisoning) or its privacy (membership inference).

    Each audit writes report.json and report.html; with --key it signs an in-toto attestation
    bound to the model's manifest root and the data sets' digests, and appends an `audit`
    entry to the ledger. The policy gate reads it ([audit.poisoning], [audit.membership]).
    """


@audit.command(
    "poisoning",
    epilog="""\b
Examples:
  modelguard audit poisoning --data train.npz --model build/digits --sign-key k.priv
  modelguard audit poisoning --data digits:train --arch digits_mlp --simulate-flip 0.1 --seed 1
  modelguard audit poisoning --data digits:train --arch digits_mlp --simulate-flip 0.1 \\
      --retrain --test digits --retrain-epochs 100
""",
)
@click.option(
    "--data",
    "data_spec",
    required=True,
    help="Training data: digits:train | file.npz | image folder.",
)
@click.option(
    "--model",
    "model_dir",
    type=click.Path(path_type=Path),
    help="Model directory trained on --data (its card names the architecture).",
)
@click.option(
    "--folds",
    type=click.IntRange(min=2),
    default=5,
    show_default=True,
    help="Cross-validation folds.",
)
@click.option(
    "--simulate-flip",
    type=float,
    help="First flip this fraction of labels (known), then report precision/recall.",
)
@click.option(
    "--retrain",
    is_flag=True,
    help="Compare test accuracy trained on the poisoned, cleaned and clean labels.",
)
@click.option("--test", "test_spec", help="Test data for --retrain.")
@click.option(
    "--retrain-epochs",
    type=click.IntRange(min=1),
    help="Epochs of the --retrain models (default: --epochs).",
)
@click.option("--limit", type=click.IntRange(min=1), help="Audit the first N examples only.")
@_common
def poisoning(
    data_spec: str,
    model_dir: Path | None,
    folds: int,
    simulate_flip: float | None,
    retrain: bool,
    test_spec: str | None,
    retrain_epochs: int | None,
    limit: int | None,
    arch: str | None,
    arch_kwargs: str | None,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    out_dir: Path | None,
    sign_key: Path | None,
    sign_passphrase_env: str | None,
    sign_passphrase_file: Path | None,
    ledger_url: str | None,
    no_ledger: bool,
    as_json: bool,
) -> None:
    """Flag training examples whose labels are likely wrong (confident learning, cleanlab).

    Out-of-fold predicted probabilities of the architecture trained on the other folds feed
    confident learning; the flagged indices, their labels and the predicted ones go into the
    report. Exit 0 when the audit ran (the policy gate judges the issue rate).
    """
    from modelguard.audits.poisoning import PoisoningConfig, run_poisoning_audit

    if no_ledger and ledger_url:
        raise click.UsageError("--ledger and --no-ledger contradict each other")
    config = PoisoningConfig(
        folds=folds,
        seed=seed,
        simulate_flip=simulate_flip,
        retrain=retrain,
        test=test_spec,
        retrain_epochs=retrain_epochs,
        limit=limit,
    )
    run = run_poisoning_audit(
        data_spec,
        config,
        _out(out_dir, model_dir),
        model_dir=model_dir,
        arch=arch,
        arch_kwargs=json_object(arch_kwargs, "--arch-kwargs") if arch_kwargs is not None else None,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        key=_key(sign_key, sign_passphrase_env, sign_passphrase_file),
        ledger_url=ledger_url,
        record=not no_ledger,
    )
    document = run.to_dict()
    emit(document, as_json, lambda console: _render(document, console))


@audit.command(
    "membership",
    epilog="""\b
Examples:
  modelguard audit membership --model build/digits --members digits:train --nonmembers digits
  modelguard audit membership --model model.onnx --arch digits_cnn --members in.npz \\
      --nonmembers out.npz --reference pool.npz --reference-models 8 --sign-key k.priv
""",
)
@click.option(
    "--model",
    "model_path",
    required=True,
    type=click.Path(path_type=Path),
    help="Model directory or .onnx file.",
)
@click.option("--members", "members_spec", required=True, help="Data the model was trained on.")
@click.option(
    "--nonmembers",
    "nonmembers_spec",
    required=True,
    help="Data from the same distribution it never saw.",
)
@click.option(
    "--reference",
    "reference_spec",
    help="Reference population for the reference models (default: half of --nonmembers).",
)
@click.option(
    "--reference-models",
    type=click.IntRange(min=0),
    default=4,
    show_default=True,
    help="k reference models (0: loss attack only).",
)
@click.option(
    "--limit", type=click.IntRange(min=1), help="Audit the first N members and non-members only."
)
@_common
def membership(
    model_path: Path,
    members_spec: str,
    nonmembers_spec: str,
    reference_spec: str | None,
    reference_models: int,
    limit: int | None,
    arch: str | None,
    arch_kwargs: str | None,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    out_dir: Path | None,
    sign_key: Path | None,
    sign_passphrase_env: str | None,
    sign_passphrase_file: Path | None,
    ledger_url: str | None,
    no_ledger: bool,
    as_json: bool,
) -> None:
    """Measure how well an attacker tells training members from non-members.

    A loss-threshold attack and a reference-model attack (offline LiRA with k reference
    models on a disjoint population); ROC AUC and TPR at 1% and 0.1% FPR. Exit 0 when the
    audit ran (the policy gate judges the AUC).
    """
    from modelguard.audits.membership import MembershipConfig, run_membership_audit

    if no_ledger and ledger_url:
        raise click.UsageError("--ledger and --no-ledger contradict each other")
    config = MembershipConfig(reference_models=reference_models, seed=seed, limit=limit)
    run = run_membership_audit(
        model_path,
        members_spec,
        nonmembers_spec,
        config,
        _out(out_dir, model_path),
        reference_spec=reference_spec,
        arch=arch,
        arch_kwargs=json_object(arch_kwargs, "--arch-kwargs") if arch_kwargs is not None else None,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        key=_key(sign_key, sign_passphrase_env, sign_passphrase_file),
        ledger_url=ledger_url,
        record=not no_ledger,
    )
    document = run.to_dict()
    emit(document, as_json, lambda console: _render(document, console))
