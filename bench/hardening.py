"""Hardening on digits with the demo CNN at eps = 0.1: undefended vs PGD-AT vs fast-AT vs
defensive distillation, side by side in one run, each evaluated with the full portfolio.

    $ .venv/bin/python bench/hardening.py                      # full portfolio, 360 test digits
    $ .venv/bin/python bench/hardening.py --limit 120 --attacks fgsm,pgd,pgd-margin   # quick look

Every model is trained from scratch here (the undefended one with plain cross-entropy), so the
training times compare whole trainings; fast-AT's time includes its overfitting guard. The
evaluation is ``modelguard.robustness.evaluate`` (what ``modelguard eval`` runs): per-example
worst case over the whole portfolio (FGSM, PGD-CE, PGD-margin, C&W, DeepFool, Square on the
ONNX graph), with ONNX parity and the Carlini et al. soundness checks. The distilled model's
cross-entropy-only PGD number is printed only next to its soundness warnings.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# bench/ledger.py would shadow the ledger package when this file runs as a script.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import torch  # noqa: E402

from modelguard.modelcard import ModelCard, export_model_dir, train_classifier  # noqa: E402
from modelguard.robustness.config import DEFAULT_ATTACKS, EvalConfig  # noqa: E402
from modelguard.robustness.data import digits_split  # noqa: E402
from modelguard.robustness.defenses import apply_defense  # noqa: E402
from modelguard.robustness.evaluate import evaluate_model_dir  # noqa: E402
from modelguard.zoo import digits_cnn  # noqa: E402

CLASSES = [str(i) for i in range(10)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--attacks", default=",".join(DEFAULT_ATTACKS))
    parser.add_argument("--limit", type=int, default=None, help="test examples (default all 360)")
    parser.add_argument("--pgd-epochs", type=int, default=20)
    parser.add_argument("--pgd-steps", type=int, default=7)
    parser.add_argument("--fast-epochs", type=int, default=15)
    parser.add_argument("--distill-epochs", type=int, default=15)
    parser.add_argument("--temperature", type=float, default=50.0)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument(
        "--interleaved",
        type=int,
        default=3,
        help="alternating single-epoch PGD-AT / fast-AT timings (load hits both alike)",
    )
    parser.add_argument("--timing-only", action="store_true", help="only the interleaved timing")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    train, _ = digits_split()
    if args.timing_only:
        interleaved(args, train)
        return
    card = ModelCard("modelguard.zoo:digits_cnn", {}, [1, 8, 8], CLASSES)
    runs: list[dict[str, Any]] = []

    torch.manual_seed(0)
    started = time.perf_counter()
    base = train_classifier(digits_cnn(), train, epochs=15, seed=0)
    base_seconds = time.perf_counter() - started
    runs.append(
        {
            "name": "undefended",
            "model": base,
            "factory": card.factory,
            "kwargs": {},
            "seconds": base_seconds,
            "epochs": 15,
            "per_epoch": base_seconds / 15,
        }
    )
    plans = [
        (
            "PGD-AT",
            "pgd-at",
            {
                "eps": args.eps,
                "epochs": args.pgd_epochs,
                "steps": args.pgd_steps,
                "init": "scratch",
            },
        ),
        ("fast-AT", "fast-at", {"eps": args.eps, "epochs": args.fast_epochs, "init": "scratch"}),
        (
            f"distillation T={args.temperature:g}",
            "distill",
            {"temperature": args.temperature, "epochs": args.distill_epochs},
        ),
    ]
    for label, method, options in plans:
        defended = apply_defense(method, base, card, train, options)
        summary = defended.summary()
        runs.append(
            {
                "name": label,
                "model": defended.model,
                "factory": defended.factory,
                "kwargs": defended.kwargs,
                "seconds": defended.train_seconds,
                "epochs": summary["epochs_run"],
                "per_epoch": summary["seconds_per_epoch"],
                "report": defended.report,
                "hyper": defended.hyperparameters,
            }
        )
        print(f"trained {label}: {defended.train_seconds:.1f} s", flush=True)

    config = EvalConfig(attacks=args.attacks.split(","), eps=[args.eps], limit=args.limit)
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs:
            out = Path(tmp) / run["name"].split()[0]
            export_model_dir(
                run["model"],
                out,
                factory=run["factory"],
                kwargs=run["kwargs"],
                input_shape=[1, 8, 8],
                classes=CLASSES,
            )
            started = time.perf_counter()
            result = evaluate_model_dir(out, config)
            run["eval_seconds"] = time.perf_counter() - started
            run["clean"] = result.clean_accuracy
            run["worst"] = result.worst_case_accuracy(args.eps)
            run["per_attack"] = result.robust_table()[str(args.eps)]
            run["warnings"] = result.soundness_warnings
            print(f"evaluated {run['name']}: {run['eval_seconds']:.1f} s", flush=True)

    print(f"\ndigits (360 test), demo CNN, eps={args.eps}, portfolio: {args.attacks}")
    print(
        f"{'model':<20}{'train s':>9}{'epochs':>7}{'s/epoch':>9}{'clean':>8}{'worst':>8}  soundness"
    )
    for run in runs:
        print(
            f"{run['name']:<20}{run['seconds']:>9.1f}{run['epochs']:>7}{run['per_epoch']:>9.2f}"
            f"{100 * run['clean']:>7.1f}%{100 * run['worst']:>7.1f}%  "
            f"{', '.join(run['warnings']) or 'pass'}"
        )
    print("\nper attack robust accuracy (%):")
    for run in runs:
        cells = ", ".join(f"{k} {100 * v:.1f}" for k, v in sorted(run["per_attack"].items()))
        print(f"  {run['name']:<20}{cells}")
    pgd, fast, distilled = runs[1], runs[2], runs[3]
    print(
        f"\nfast-AT / PGD-AT training time: {fast['seconds'] / pgd['seconds']:.2f} "
        f"(target <= 0.33); worst-case gap {100 * (pgd['worst'] - fast['worst']):+.1f} points "
        "(target <= 3)"
    )
    print(f"fast-AT overfitting guard: {fast['report'].get('overfitting_guard')}")
    if args.interleaved:
        interleaved(args, train)
    ce = distilled["per_attack"].get("pgd")
    if ce is not None:
        print(
            f"distillation: cross-entropy PGD alone {100 * ce:.1f}% -- NOT a robustness figure: "
            f"soundness warnings {distilled['warnings'] or 'none'}; worst case "
            f"{100 * distilled['worst']:.1f}% vs undefended {100 * runs[0]['worst']:.1f}%"
        )


def interleaved(args: argparse.Namespace, train: Any) -> None:
    """One epoch of each, alternating, so a noisy shared machine slows both alike."""
    import statistics

    from modelguard.robustness.defenses.adversarial import AdversarialSettings, fast_at, pgd_at
    from modelguard.robustness.defenses.training import TrainSettings

    pgd_times, fast_times = [], []
    for repeat in range(args.interleaved):
        one = TrainSettings(epochs=1, seed=repeat)
        started = time.perf_counter()
        pgd_at(digits_cnn(), train, AdversarialSettings(eps=args.eps, steps=args.pgd_steps), one)
        pgd_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        # fast_at runs its guard twice here (before and after); a real run pays once per epoch.
        fast_at(digits_cnn(), train, AdversarialSettings(eps=args.eps), one)
        fast_times.append(time.perf_counter() - started)
    pgd_epoch, fast_epoch = statistics.median(pgd_times), statistics.median(fast_times)
    print(
        f"\ninterleaved single epochs (median of {args.interleaved}): PGD-AT {pgd_epoch:.2f} s, "
        f"fast-AT incl. 2 guard checks {fast_epoch:.2f} s; per-epoch ratio {fast_epoch / pgd_epoch:.2f}; "
        f"whole-training ratio at {args.fast_epochs} vs {args.pgd_epochs} epochs "
        f"<= {fast_epoch * args.fast_epochs / (pgd_epoch * args.pgd_epochs):.2f}"
    )


if __name__ == "__main__":
    main()
