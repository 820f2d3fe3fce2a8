"""``modelguard eval``: adversarial robustness evaluation with a signed certificate.

$ modelguard eval build/demo/model --attacks fgsm,pgd,cw,square --eps 0.05,0.1,0.2
$ modelguard eval model.onnx --attacks square --eps 0.1 --limit 100 --json      # black-box
$ modelguard eval --arch mypkg.models:net --weights net.safetensors --data test.npz
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from modelguard.cli.options import json_object, load_sign_key, sign_key_options, trust_arch
from modelguard.cli.output import ProgressReporter, emit, json_option, percent
from modelguard.errors import BadInputError
from modelguard.robustness.certificate import EvaluationRun, evaluate_and_certify
from modelguard.robustness.config import (
    DEFAULT_ATTACKS,
    DEFAULT_ATTACKS_L2,
    DEFAULT_EPS,
    EvalConfig,
)
from modelguard.robustness.smoothing import SmoothingConfig


def _eps_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise BadInputError(f"--eps must be comma-separated numbers, got {text!r}") from None
    return values


def _params(items: tuple[str, ...], surrogate: Path | None) -> dict[str, dict[str, Any]]:
    """``--param pgd.steps=40`` (values parsed as JSON when they parse) into attack_params."""
    params: dict[str, dict[str, Any]] = {}
    for item in items:
        target, sep, raw = item.partition("=")
        attack, dot, name = target.partition(".")
        if not sep or not dot or not attack or not name:
            raise BadInputError(f"--param must look like ATTACK.NAME=VALUE, got {item!r}")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        params.setdefault(attack, {})[name] = value
    if surrogate is not None:
        params.setdefault("transfer", {})["surrogate"] = str(surrogate)
    return params


def _render(run: EvaluationRun, console: Console) -> None:
    result = run.result
    console.print(
        f"[bold]{result.model.get('name')}[/bold]  root {result.model.get('manifest_root')}\n"
        f"clean accuracy {percent(result.clean_accuracy)} "
        f"(ONNX {percent(result.onnx_clean_accuracy)}); "
        f"{result.data['count']} examples of {result.data['name']}; threat model {result.config.norm}"
    )
    table = Table(title="robust accuracy (worst case = every attack failed)")
    table.add_column("eps", justify="right")
    for name in result.config.attacks:
        table.add_column(name, justify="right")
    table.add_column(f"worst case [95% CI, n={result.n}]", justify="right", style="bold")
    rows = result.robust_table()
    for eps, worst in zip(result.config.eps, result.worst_case, strict=True):
        row = rows[str(eps)]
        low, high = worst["robust"]["ci95"]
        table.add_row(
            str(eps),
            *[percent(row[a]) for a in result.config.attacks],
            f"{percent(row['worst_case'])} [{percent(low)}, {percent(high)}]",
        )
    console.print(table)
    for check in result.soundness:
        colour = {"pass": "green", "warn": "red", "skip": "yellow"}[check["status"]]
        console.print(
            f"[{colour}]{check['status']:>4}[/{colour}] {check['name']}: {check['detail']}"
        )
    parity = result.parity
    if parity.get("checked"):
        console.print(
            f"parity ok: max |logit diff| {parity['max_abs_diff']:.2g} over "
            f"{parity['inputs_compared']} inputs"
        )
    for method, section in (result.certified or {}).items():
        key = "radius" if method == "randomized_smoothing" else "eps"
        certified = ", ".join(
            f"{key} {r[key]}: {r['certified_accuracy']:.3f}" for r in section["certified_accuracy"]
        )
        console.print(f"certified ({method}, {section['norm']}): {certified}")
    for kind, path in run.outputs.items():
        console.print(f"{kind}: {path}")
    if run.certificate and run.certificate.ledger_entry is not None:
        console.print(f"ledger: evaluate entry #{run.certificate.ledger_entry.index}")


@click.command(
    "eval",
    epilog="""\b
Examples:
  modelguard eval build/demo/model --eps 0.05,0.1,0.2 --sign-key keys/demo.priv \\
      --sign-passphrase-env MG_PASS
  modelguard eval model_dir --attacks fgsm,pgd,pgd-margin --param pgd.steps=40 --limit 200
  modelguard eval model_dir --attacks standard --eps 0.1 --key keys/mg.priv
  modelguard eval model.onnx --attacks square,transfer --surrogate other_model_dir --json
  modelguard eval --arch pkg.mod:fn --weights w.safetensors --data test.npz --no-ledger
""",
)
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option(
    "--data", default="digits", show_default=True, help="digits | file.npz (x, y) | image folder."
)
@click.option(
    "--attacks",
    default=None,
    help="A profile (standard = AutoAttack: apgd-ce, apgd-t, fab-t, square as a cascade; quick; "
    "rand = EOT for randomized defenses) or a comma-separated portfolio (fgsm, pgd, pgd-l2, "
    "pgd-margin, bim, mifgsm, deepfool, cw, square, square-l2, transfer, apgd-ce, apgd-dlr, "
    "apgd-t, fab-t); each runs in --norm's threat model or is refused.  "
    f"[default: {','.join(DEFAULT_ATTACKS)}; with --norm l2: {','.join(DEFAULT_ATTACKS_L2)}]",
)
@click.option(
    "--eps",
    "eps_text",
    default=",".join(str(e) for e in DEFAULT_EPS),
    show_default=True,
    help="Comma-separated budgets.",
)
@click.option(
    "--norm",
    type=click.Choice(["linf", "l2"]),
    default="linf",
    show_default=True,
    help="Threat model.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Output directory (default: MODEL.robustness beside the model, where the policy gate "
    "and harden look for the certificate).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for every attack.")
@click.option("--limit", type=int, help="Evaluate the first N examples only.")
@click.option("--batch-size", type=int, default=512, show_default=True)
@click.option(
    "--param",
    "params",
    multiple=True,
    help="Attack hyperparameter, ATTACK.NAME=VALUE (repeatable).",
)
@click.option(
    "--surrogate",
    type=click.Path(path_type=Path),
    help="Model directory the transfer attack crafts on.",
)
@click.option(
    "--arch",
    help="Your factory module:function, trusted to run (imported from the current directory "
    "first): the one MODEL's modelguard.json names, or with --weights for a quick uncertified look.",
)
@click.option("--weights", type=click.Path(path_type=Path), help="safetensors weights for --arch.")
@click.option(
    "--arch-kwargs", default="{}", help="JSON keyword arguments for --arch, e.g. '{\"width\": 16}'."
)
@click.option("--device", default="cpu", show_default=True, help="cpu | cuda | cuda:N | auto.")
@click.option("--no-soundness", is_flag=True, help="Skip the soundness checks (not recommended).")
@click.option(
    "--smoothing-sigma",
    type=float,
    default=None,
    help="Also certify L2 robustness of the smoothed classifier by randomized smoothing "
    "(Cohen et al. 2019) with this noise level (its own 'certified' section).",
)
@click.option(
    "--ibp",
    is_flag=True,
    help="Also certify Linf robustness by interval bound propagation (small Linear/Conv/ReLU nets).",
)
@click.option(
    "--smoothing-n",
    type=int,
    default=1000,
    show_default=True,
    help="Noise samples per example for CERTIFY (n0 = 100, alpha = 0.001).",
)
@sign_key_options(required=False, help="Private key: sign a certificate.", legacy=True)
@click.option(
    "--ledger",
    "ledger_url",
    help="Ledger URL (default: $MODELGUARD_LEDGER or .modelguard/ledger.db).",
)
@click.option("--no-ledger", is_flag=True, help="Do not append the evaluate entry.")
@json_option
@click.pass_context
def evaluate(
    ctx: click.Context,
    model: Path | None,
    data: str,
    attacks: str | None,
    eps_text: str,
    norm: str,
    out_dir: Path | None,
    seed: int,
    limit: int | None,
    batch_size: int,
    params: tuple[str, ...],
    surrogate: Path | None,
    arch: str | None,
    weights: Path | None,
    arch_kwargs: str,
    device: str,
    no_soundness: bool,
    smoothing_sigma: float | None,
    ibp: bool,
    smoothing_n: int,
    sign_key: Path | None,
    sign_passphrase_env: str | None,
    sign_passphrase_file: Path | None,
    ledger_url: str | None,
    no_ledger: bool,
    as_json: bool,
) -> None:
    """Attack a model with a portfolio of attacks; report per-example worst-case robustness.

    With --key, the result is signed as a robustness certificate (in-toto, bound to the
    model's manifest root) and appended to the ledger as an `evaluate` entry.
    """
    if no_ledger and ledger_url:
        raise click.UsageError("--ledger and --no-ledger contradict each other")
    if model is None and arch is None:
        raise click.UsageError("give MODEL (a model directory or .onnx file) or --arch/--weights")
    if arch is not None:
        trust_arch(arch, model if model is not None and model.is_dir() else None)
    if model is not None and model.is_dir():
        if weights is not None:
            raise BadInputError(
                "a model directory's weights are the ones its modelguard.json names; "
                "drop --weights (write the card with `modelguard card`)"
            )
        arch = None  # trusted above; the card names it and the directory is what is certified
    elif weights is not None and sign_key is not None:
        raise BadInputError(
            "a certificate is bound to a signed model directory, not to a weights file: "
            "write its card (modelguard card DIR --arch ...), sign DIR, then evaluate DIR"
        )
    if attacks is None:
        attacks = ",".join(DEFAULT_ATTACKS if norm == "linf" else DEFAULT_ATTACKS_L2)
    config = EvalConfig(
        attacks=[a.strip() for a in attacks.split(",") if a.strip()],
        eps=_eps_list(eps_text),
        seed=seed,
        data=data,
        limit=limit,
        norm=norm,
        attack_params=_params(params, surrogate),
        batch_size=batch_size,
        soundness=not no_soundness,
        smoothing=None
        if smoothing_sigma is None
        else SmoothingConfig(sigma=smoothing_sigma, n=smoothing_n),
        ibp=ibp,
    ).resolved()
    if out_dir is None:
        from modelguard.robustness.gate import robustness_dir_for

        out_dir = robustness_dir_for(model) if model is not None else Path("eval-report")
    key = None
    if sign_key is not None:
        key = load_sign_key(sign_key, sign_passphrase_env, sign_passphrase_file)
    with ProgressReporter("evaluating", unit="attack runs") as reporter:
        run = evaluate_and_certify(
            model if model is not None else "",
            config,
            out_dir,
            key=key,
            ledger_url=ledger_url,
            record=not no_ledger,
            arch=arch,
            weights=weights,
            arch_kwargs=json_object(arch_kwargs, "--arch-kwargs"),
            device=device,
            progress=reporter.update,
        )
    emit(run.to_dict(), as_json, lambda console: _render(run, console))
