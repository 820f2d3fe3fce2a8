"""``modelguard harden`` and ``modelguard recertify``: defend a verified model, re-sign, re-check.

$ modelguard harden build/digits --method pgd-at --eps 0.1 --epochs 10 --sign-key keys/mg.priv \\
      --sign-passphrase-env MG_PASS --trust-key keys/mg.pub --out build/digits-pgd
$ modelguard recertify build/digits-pgd --trust-key keys/mg.pub --json
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from modelguard.cli.options import (
    arch_option,
    float_list,
    ledger_trust_options,
    load_sign_key,
    sign_key_options,
    trust_arch,
    trust_key_option,
)
from modelguard.cli.output import ProgressReporter, emit, json_option, percent
from modelguard.keys import PublicKey, load_public_key
from modelguard.policy import Policy, load_policy, policy_from_keys, with_ledger_trust
from modelguard.robustness.defenses import METHODS

_PATH = click.Path(path_type=Path)


def _trust(
    key_paths: tuple[Path, ...], policy_path: Path | None
) -> tuple[list[PublicKey], Policy | None]:
    if key_paths and policy_path:
        raise click.UsageError("give trusted keys with --trust-key, or a --policy file, not both")
    return [load_public_key(p) for p in key_paths], load_policy(
        policy_path
    ) if policy_path else None


def _with_ledger_trust(
    keys: list[PublicKey],
    policy: Policy | None,
    ledger_keys: tuple[str, ...],
    ledger_state: Path | None,
) -> tuple[list[PublicKey], Policy | None]:
    """``--ledger-key``/``--ledger-state`` ride on the policy (keys alone become the implicit
    every-key-must-sign policy, as in ``verify``)."""
    if not ledger_keys and ledger_state is None:
        return keys, policy
    return [], with_ledger_trust(policy or policy_from_keys(keys), ledger_keys, ledger_state)


def render_comparison(console: Console, comparison: dict[str, Any], title: str) -> None:
    table = Table(title=title)
    for column in ("", "parent", "child", "change"):
        table.add_column(column, justify="right")
    clean = comparison["clean"]
    change = None if clean["parent"] is None else clean["child"] - clean["parent"]
    table.add_row("clean", percent(clean["parent"]), percent(clean["child"]), _signed(change))
    for row in comparison["worst_case"]:
        table.add_row(
            f"worst case eps={row['eps']}",
            percent(row["parent_worst_case"]),
            percent(row["child_worst_case"]),
            _signed(row["change"]),
        )
    console.print(table)
    warnings = comparison.get("child_soundness_warnings") or []
    if warnings:
        console.print(
            f"[yellow bold]soundness warnings on the child:[/] {', '.join(warnings)} "
            "(the numbers may overstate robustness; see the report)"
        )


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.1f} pts"


@click.command(
    epilog="""\b
Methods: pgd-at, fgsm-at, fast-at, trades, distill, augment, squeeze, detector, ensemble.
Examples:
  modelguard harden build/digits --method pgd-at --eps 0.1 --epochs 10 --sign-key k.priv \\
      --sign-passphrase-env MG_PASS --trust-key k.pub --out build/digits-pgd
  modelguard harden build/digits --method distill --temperature 50 --sign-key k.priv \\
      --policy policy.toml --out build/digits-distilled --json
  modelguard harden build/digits --method ensemble --members 2 --sign-key k.priv --out build/ens
Exit codes: 0 hardened; 1 the parent (or a member) failed verification; 2 bad input.
"""
)
@click.argument("model_dir", type=_PATH)
@click.option("--method", required=True, type=click.Choice(sorted(METHODS)), help="Defense.")
@click.option("--out", "out_dir", required=True, type=_PATH, help="New model directory.")
@sign_key_options(required=True, help="Private key to sign the child.", legacy=True)
@trust_key_option(
    dest="trust_keys",
    help="Public key that must have signed the parent (default: --sign-key's own public key).",
)
@click.option("--policy", "policy_path", type=_PATH, help="TOML policy the parent must satisfy.")
@click.option(
    "--signature", "signature_path", type=_PATH, help="Parent's bundle (default model.sig)."
)
@click.option(
    "--data",
    default="digits",
    show_default=True,
    help="Training data (digits trains on its train split).",
)
@click.option("--eps", type=float, help="Training perturbation budget (Linf).")
@click.option("--epochs", type=int, help="Training epochs.")
@click.option("--steps", type=int, help="PGD / TRADES inner steps.")
@click.option("--alpha", type=float, help="Inner step size.")
@click.option("--warmup", type=int, help="Epochs of linear eps ramp-up.")
@click.option("--lr", type=float, help="Adam learning rate.")
@click.option("--batch-size", type=int, help="Training batch size.")
@click.option("--seed", type=int, help="Training seed.")
@click.option(
    "--schedule", type=click.Choice(["constant", "onecycle"]), help="Learning-rate schedule."
)
@click.option(
    "--init",
    type=click.Choice(["parent", "scratch"]),
    help="Fine-tune the parent (default) or train anew.",
)
@click.option("--temperature", type=float, help="distill: softmax temperature T.")
@click.option("--beta", type=float, help="trades: weight of the robustness term.")
@click.option("--mix", type=float, help="fgsm-at: weight of the clean loss.")
@click.option("--bits", type=int, help="squeeze/detector: bit depth.")
@click.option("--median", type=int, help="squeeze/detector: median window (odd).")
@click.option("--fpr", type=float, help="detector: clean false-positive rate for the threshold.")
@click.option("--noise-std", type=float, help="augment: Gaussian noise sigma.")
@click.option("--max-shift", type=float, help="augment: max shift in pixels.")
@click.option("--scale", type=float, help="augment: zoom range (1 +- scale).")
@click.option("--members", help="ensemble: N new members to train, or comma-separated model dirs.")
@click.option(
    "--attacks", help="Evaluation portfolio (default: the parent certificate's, else all)."
)
@click.option("--eval-eps", help="Evaluation eps list, e.g. 0.05,0.1,0.2.")
@click.option("--limit", type=int, help="Evaluate on the first N test examples only.")
@click.option(
    "--parent-certificate",
    type=_PATH,
    help="Parent certificate (default MODEL.robustness/certificate.sig).",
)
@click.option("--name", help="Child model name (default: <parent>-<method>).")
@click.option("--version", "model_version", help="Child model version (default: the parent's).")
@click.option(
    "--ledger",
    "ledger_url",
    help="Ledger URL (default: $MODELGUARD_LEDGER or .modelguard/ledger.db).",
)
@click.option("--require-ledger", is_flag=True, help="The parent must have a ledgered sign entry.")
@ledger_trust_options
@click.option("--force", is_flag=True, help="Replace a non-empty --out directory.")
@arch_option
@json_option
def harden(
    model_dir: Path,
    method: str,
    out_dir: Path,
    sign_key: Path,
    sign_passphrase_env: str | None,
    sign_passphrase_file: Path | None,
    trust_keys: tuple[Path, ...],
    policy_path: Path | None,
    signature_path: Path | None,
    data: str,
    members: str | None,
    attacks: str | None,
    eval_eps: str | None,
    limit: int | None,
    parent_certificate: Path | None,
    name: str | None,
    model_version: str | None,
    ledger_url: str | None,
    require_ledger: bool,
    ledger_keys: tuple[str, ...],
    ledger_state: Path | None,
    force: bool,
    arch: str | None,
    as_json: bool,
    **defense_options: Any,
) -> None:
    """Harden a verified model, export, evaluate, re-sign with lineage, record in the ledger."""
    from modelguard.robustness.config import EvalConfig
    from modelguard.robustness.hardening import harden_model

    if arch is not None:
        trust_arch(arch, model_dir)
    key = load_sign_key(sign_key, sign_passphrase_env, sign_passphrase_file)
    keys, policy = _trust(trust_keys, policy_path)
    if not keys and policy is None:
        keys = [key.public_key()]
    keys, policy = _with_ledger_trust(keys, policy, ledger_keys, ledger_state)
    options = {k: v for k, v in defense_options.items() if v is not None}
    member_dirs: list[Path] = []
    if members is not None:
        if members.strip().isdigit():
            options["members"] = int(members)
        else:
            member_dirs = [Path(m) for m in members.split(",") if m.strip()]
    config = None
    if attacks or eval_eps or limit:
        defaults = EvalConfig()
        config = EvalConfig(
            attacks=attacks.split(",") if attacks else defaults.attacks,
            eps=float_list(eval_eps, "--eval-eps") or defaults.eps,
            limit=limit,
        )
    with ProgressReporter("harden") as reporter:
        result = harden_model(
            model_dir,
            method=method,
            out_dir=out_dir,
            key=key,
            keys=keys,
            policy=policy,
            signature_path=signature_path,
            data=data,
            options=options,
            members=member_dirs,
            eval_config=config,
            parent_certificate=parent_certificate,
            ledger_url=ledger_url,
            require_ledger=require_ledger,
            name=name,
            version=model_version,
            force=force,
            progress=reporter.update,
        )

    def human(console: Console) -> None:
        training = result.training
        console.print(
            f"[green]hardened[/] {model_dir} -> {out_dir} with {method} "
            f"({training['train_seconds']:.1f} s, {training['epochs_run']} epoch(s))"
        )
        render_comparison(console, result.comparison, f"{method}: parent vs child")
        console.print(f"  certificate {result.certificate}")
        console.print(
            f"  signed, parent root {result.parent_root[:16]}..., child root {result.child_root[:16]}..., "
            f"ledger entry {result.ledger_entry.get('index')}"
        )

    emit(result.to_dict(), as_json, human)


@click.command(
    epilog="""\b
Examples (a scheduled CI job, see docs/hardening.md):
  modelguard recertify build/digits-pgd --trust-key keys/mg.pub
  modelguard recertify build/digits-pgd.robustness/certificate.sig --policy policy.toml --json
  modelguard recertify build/digits-pgd --trust-key keys/mg.pub --require-ledger \\
      --ledger-key .modelguard/ledger.db.note.pub
Exit codes: 0 re-certified; 1 the model, data or numbers no longer match; 2 bad input.
"""
)
@click.argument("target", type=_PATH)
@click.option(
    "--certificate", type=_PATH, help="Certificate (default MODEL.robustness/certificate.sig)."
)
@trust_key_option(dest="trust_keys", legacy_key_alias=True)
@click.option("--policy", "policy_path", type=_PATH, help="TOML policy.")
@click.option("--signature", "signature_path", type=_PATH, help="Model bundle (default model.sig).")
@click.option(
    "--ledger",
    "ledger_url",
    help="Ledger URL (default: $MODELGUARD_LEDGER or .modelguard/ledger.db).",
)
@click.option("--require-ledger", is_flag=True, help="The model must have a ledgered sign entry.")
@ledger_trust_options
@arch_option
@json_option
def recertify(
    target: Path,
    certificate: Path | None,
    trust_keys: tuple[Path, ...],
    policy_path: Path | None,
    signature_path: Path | None,
    ledger_url: str | None,
    require_ledger: bool,
    ledger_keys: tuple[str, ...],
    ledger_state: Path | None,
    arch: str | None,
    as_json: bool,
) -> None:
    """Verify a model and re-run its certificate's evaluation exactly; exit 1 on any drift."""
    from modelguard.robustness.hardening import recertify as run_recertify

    if arch is not None:
        trust_arch(arch, target if target.is_dir() else None)
    keys, policy = _trust(trust_keys, policy_path)
    if not keys and policy is None:
        raise click.UsageError("give trusted keys with --trust-key, or a --policy file")
    keys, policy = _with_ledger_trust(keys, policy, ledger_keys, ledger_state)
    with ProgressReporter("recertify") as reporter:
        result = run_recertify(
            target,
            keys=keys,
            policy=policy,
            signature_path=signature_path,
            certificate=certificate,
            ledger_url=ledger_url,
            require_ledger=require_ledger,
            progress=reporter.update,
        )

    def human(console: Console) -> None:
        console.print(
            f"[green bold]RE-CERTIFIED[/] {result.model}: every recorded number reproduced within "
            f"{result.tolerance} (worst case "
            + ", ".join(f"{percent(v)} at eps {e}" for e, v in result.rerun["worst_case"].items())
            + ")"
        )

    emit(result.to_dict(), as_json, human)
