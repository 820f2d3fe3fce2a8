"""Attack throughput and agreement with torchattacks, side by side in one run.

    $ .venv/bin/pip install --no-deps torchattacks==3.5.1     # bench-only; not a modelguard dependency
    $ .venv/bin/python bench/attacks.py                       # both models, 3 interleaved repeats
    $ .venv/bin/python bench/attacks.py --models digits_cnn --repeats 1
    $ .venv/bin/python bench/attacks.py --suite autoattack    # `--attacks standard` vs AutoAttack

``--suite autoattack``: on the digits test split at eps 0.1 (Linf), five models (undefended,
PGD-AT, defensive distillation, bit-depth squeezing, a 3-member ensemble; trained here,
seeded) are each evaluated by ``modelguard eval --attacks standard`` (the full pipeline:
exported model directory, ONNX parity, Square on ONNX Runtime, cascade over unbroken
examples) and by torchattacks' ``AutoAttack(version="standard")`` on the PyTorch model. Both
count an example robust only if it is classified correctly clean and after the attacks. Our
robust accuracy must not exceed the reference's by more than 0.5 points on any model
(``MISSED`` otherwise); times are wall seconds and their ratio (ours / theirs). Note that
torchattacks' AutoAttack runs APGD with its class default of 10 steps, not the paper's 100.

``--suite throughput`` (the default): modelguard's FGSM, PGD-40 and C&W vs torchattacks.

``--suite resnet``: throughput beyond 8x8: ``zoo.resnet_small`` (78k parameters) on locally
made 3 x 32 x 32 images (four colour classes; nothing downloaded), briefly trained, then
APGD-CE, APGD-T, FAB-T and Square of both libraries with the same budgets (``--steps``
steps, 3 targets, ``--steps * 10`` Square queries) at eps 8/255, interleaved; examples per
second, their ratio, and the robust accuracy each leaves.

Trains the demo CNN (``zoo.digits_cnn``) and ``zoo.digits_cnn_large`` on the digits train split
for a few epochs (seeded), then on the 360-example test split runs each attack from both
libraries with identical eps, steps, step size and batch size, interleaved (ours, theirs,
ours, theirs ...), and prints the median examples/second of each, their ratio, and the robust
accuracy each attack leaves. PGD robust accuracies must agree within 1 point (random starts
differ: each library draws its own; modelguard also keeps each example's best iterate).

Settings: eps = 0.1 (Linf, inputs in [0, 1]); FGSM; PGD 40 steps, alpha 0.01, random start;
``pgd-40es``: modelguard's PGD with ``early_stop=True`` (what ``modelguard eval`` runs: no
more steps on an already-fooled example; same robust accuracy) against the same torchattacks
PGD-40. C&W L2: c = 1, kappa = 0, 50 Adam steps, lr = 0.01, one binary-search step (torchattacks' CW
has no search), early abort on; batch 128. Threads: ``--threads`` (default 1: steadier on a
shared machine).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# bench/ledger.py would shadow the ledger package when this file runs as a script.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from modelguard import zoo  # noqa: E402
from modelguard.modelcard import accuracy, train_classifier  # noqa: E402
from modelguard.robustness.attacks import build_attack  # noqa: E402
from modelguard.robustness.data import digits_split  # noqa: E402

EPS = 0.1
PGD_STEPS = 40
PGD_ALPHA = 0.01
CW = {"c": 1.0, "kappa": 0.0, "steps": 50, "lr": 0.01}


def ours(name: str, model: nn.Module) -> Callable[[Tensor, Tensor], Tensor]:
    if name == "fgsm":
        return build_attack("fgsm", model, eps=EPS)
    if name.startswith("pgd-40"):
        return build_attack(
            "pgd",
            model,
            eps=EPS,
            alpha=PGD_ALPHA,
            steps=PGD_STEPS,
            seed=0,
            early_stop=name.endswith("es"),
        )
    return build_attack(
        "cw",
        model,
        eps=float("inf"),
        binary_search_steps=1,
        initial_const=CW["c"],
        kappa=CW["kappa"],
        steps=int(CW["steps"]),
        lr=CW["lr"],
    )


def theirs(name: str, model: nn.Module) -> Callable[[Tensor, Tensor], Tensor]:
    import torchattacks

    if name == "fgsm":
        return torchattacks.FGSM(model, eps=EPS)
    if name.startswith("pgd-40"):
        return torchattacks.PGD(model, eps=EPS, alpha=PGD_ALPHA, steps=PGD_STEPS, random_start=True)
    return torchattacks.CW(model, c=CW["c"], kappa=CW["kappa"], steps=int(CW["steps"]), lr=CW["lr"])


def run(
    attack: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor, batch: int
) -> tuple[float, Tensor]:
    start = time.perf_counter()
    outs = [attack(x[i : i + batch], y[i : i + batch]) for i in range(0, len(x), batch)]
    return time.perf_counter() - start, torch.cat(outs)


def robust(model: nn.Module, x_adv: Tensor, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        clean_ok = model(x).argmax(1) == y
        return float((clean_ok & (model(x_adv).argmax(1) == y)).float().mean())


AUTOATTACK_EPS = 0.1
AGREEMENT_POINTS = 0.5
CLASSES = [str(i) for i in range(10)]
DEFENSES: dict[str, tuple[str, dict[str, Any]] | None] = {
    "undefended": None,
    "pgd-at": ("pgd-at", {"eps": 0.1, "epochs": 8, "steps": 5}),
    "distilled": ("distill", {"temperature": 50, "epochs": 8}),
    "squeeze": ("squeeze", {"bits": 3}),
    "ensemble": ("ensemble", {"members": 2, "epochs": 8}),
}


def autoattack_suite(args: argparse.Namespace) -> None:
    """``--attacks standard`` beside torchattacks' AutoAttack on five (defended) models."""
    import tempfile

    import torchattacks

    from modelguard.modelcard import ModelCard, export_model_dir
    from modelguard.robustness.config import EvalConfig
    from modelguard.robustness.defenses import apply_defense
    from modelguard.robustness.evaluate import evaluate_model_dir

    train, test = digits_split()
    test = test.subset(args.limit)
    x, y = torch.from_numpy(test.x), torch.from_numpy(test.y)
    print(
        f"torch {torch.__version__}, torchattacks {torchattacks.__version__}, threads "
        f"{args.threads}, {len(x)} examples, eps {AUTOATTACK_EPS} (Linf); load average "
        f"{os.getloadavg()[0]:.2f} at start"
    )
    print(
        f"{'model':<11} {'clean':>6} {'ours':>7} {'AutoAttack':>10} {'diff pts':>8} "
        f"{'ours s':>7} {'theirs s':>8} {'ratio':>6}  verdict"
    )
    card = ModelCard("modelguard.zoo:digits_cnn", {}, [1, 8, 8], CLASSES)
    base = train_classifier(zoo.digits_cnn(), train, epochs=args.epochs, seed=0)
    worst_gap = -1.0
    with tempfile.TemporaryDirectory() as tmp:
        for label, defense in DEFENSES.items():
            if label not in args.defenses.split(","):
                continue
            if defense is None:
                model, factory, kwargs = base, "digits_cnn", {}
            else:
                defended = apply_defense(defense[0], base, card, train, defense[1])
                model, factory, kwargs = defended.model, defended.factory, defended.kwargs
            model.eval()
            directory = Path(tmp) / label
            export_model_dir(
                model, directory, factory=factory, kwargs=kwargs, input_shape=[1, 8, 8],
                classes=CLASSES, name=label, version="1",
            )  # fmt: skip
            config = EvalConfig(
                attacks=["standard"], eps=[AUTOATTACK_EPS], limit=args.limit, soundness=False
            )
            started = time.perf_counter()
            result = evaluate_model_dir(directory, config)
            ours_seconds = time.perf_counter() - started
            ours = result.worst_case_accuracy(AUTOATTACK_EPS)
            reference = torchattacks.AutoAttack(
                model, norm="Linf", eps=AUTOATTACK_EPS, version="standard", n_classes=10, seed=0
            )
            started = time.perf_counter()
            _, x_adv = run(reference, x, y, args.batch)
            theirs_seconds = time.perf_counter() - started
            theirs = robust(model, x_adv, x, y)
            gap = (ours - theirs) * 100
            worst_gap = max(worst_gap, gap)
            verdict = "ok" if gap <= AGREEMENT_POINTS else f"MISSED: > {AGREEMENT_POINTS} points"
            print(
                f"{label:<11} {result.clean_accuracy:>6.3f} {ours:>7.3f} {theirs:>10.3f} "
                f"{gap:>+8.2f} {ours_seconds:>7.1f} {theirs_seconds:>8.1f} "
                f"{ours_seconds / theirs_seconds:>6.2f}  {verdict}"
            )
    print(
        f"largest (ours - AutoAttack): {worst_gap:+.2f} points; load average "
        f"{os.getloadavg()[0]:.2f} at the end"
    )


def resnet_suite(args: argparse.Namespace) -> None:
    """Attack throughput on a small ResNet with 3 x 32 x 32 inputs, ours vs torchattacks."""
    import numpy as np
    import torchattacks

    from modelguard.robustness.data import Dataset

    rng = np.random.default_rng(0)
    count = 512 + args.examples
    labels = np.arange(count) % 4
    images = rng.uniform(0.0, 0.4, size=(count, 3, 32, 32)).astype(np.float32)
    for i, label in enumerate(labels):
        if label < 3:
            images[i, label] += 0.5
    train = Dataset(images[:512], labels[:512], ["r", "g", "b", "none"], "train")
    model = train_classifier(zoo.resnet_small(num_classes=4), train, epochs=2, seed=0).eval()
    x = torch.from_numpy(images[512:])
    y = torch.from_numpy(labels[512:].astype(np.int64))
    eps, steps = 8 / 255, args.steps
    ours_attacks: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
        "apgd-ce": build_attack("apgd-ce", model, eps=eps, steps=steps),
        "apgd-t": build_attack("apgd-t", model, eps=eps, steps=steps, n_targets=3),
        "fab-t": build_attack("fab-t", model, eps=float("inf"), steps=steps, n_targets=3),
        "square": build_attack("square", model, eps=eps, n_queries=10 * steps, p_init=0.8),
    }
    theirs_attacks: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
        "apgd-ce": torchattacks.APGD(model, eps=eps, steps=steps, loss="ce", seed=0),
        "apgd-t": torchattacks.APGDT(model, eps=eps, steps=steps, n_classes=4, seed=0),
        "fab-t": torchattacks.FAB(
            model, eps=eps, steps=steps, multi_targeted=True, n_classes=4, seed=0
        ),
        "square": torchattacks.Square(model, eps=eps, n_queries=10 * steps, seed=0),
    }
    print(
        f"torch {torch.__version__}, torchattacks {torchattacks.__version__}, threads "
        f"{args.threads}, resnet_small on {len(x)} examples of 3x32x32, eps 8/255, {steps} "
        f"steps; load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{'attack':<8} {'ours ex/s':>10} {'theirs ex/s':>12} {'ratio':>6} {'ours acc':>9} {'theirs acc':>11}"
    )
    for name in ours_attacks:
        times: dict[str, list[float]] = {"ours": [], "theirs": []}
        accs: dict[str, float] = {}
        for _ in range(args.repeats):
            for side, attack in (("ours", ours_attacks[name]), ("theirs", theirs_attacks[name])):
                seconds, x_adv = run(attack, x, y, args.batch)
                if name == "fab-t" and side == "ours":  # minimum norm: count it within eps
                    delta = (x_adv - x).flatten(1).abs().amax(1).view(-1, 1, 1, 1)
                    x_adv = torch.where(delta <= eps + 1e-6, x_adv, x)
                times[side].append(seconds)
                accs[side] = robust(model, x_adv, x, y)
        rate = {side: len(x) / statistics.median(t) for side, t in times.items()}
        print(
            f"{name:<8} {rate['ours']:>10.1f} {rate['theirs']:>12.1f} "
            f"{rate['ours'] / rate['theirs']:>6.2f} {accs['ours']:>9.3f} {accs['theirs']:>11.3f}"
        )
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--suite", choices=["throughput", "autoattack", "resnet"], default="throughput"
    )
    parser.add_argument("--models", default="digits_cnn,digits_cnn_large")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--limit", type=int, default=None, help="test examples (default 360)")
    parser.add_argument("--examples", type=int, default=64, help="--suite resnet: examples")
    parser.add_argument(
        "--defenses", default=",".join(DEFENSES), help="--suite autoattack: which models"
    )
    parser.add_argument("--steps", type=int, default=20, help="--suite resnet: attack steps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.suite == "autoattack":
        autoattack_suite(args)
        return
    if args.suite == "resnet":
        resnet_suite(args)
        return
    import torchattacks

    train, test = digits_split()
    x, y = torch.from_numpy(test.x), torch.from_numpy(test.y)
    print(
        f"torch {torch.__version__}, torchattacks {torchattacks.__version__}, threads {args.threads}, "
        f"{len(x)} examples, batch {args.batch}, eps {EPS}, repeats {args.repeats} (median)"
    )
    header = f"{'model':<17} {'attack':<8} {'ours ex/s':>10} {'theirs ex/s':>12} {'ratio':>6} {'ours acc':>9} {'theirs acc':>11}"
    print(header)
    for model_name in args.models.split(","):
        model = train_classifier(
            zoo.build(zoo.factory_name(model_name)), train, epochs=args.epochs, seed=0
        )
        clean = accuracy(model, test)
        for attack_name in ("fgsm", "pgd-40", "pgd-40es", "cw"):
            times: dict[str, list[float]] = {"ours": [], "theirs": []}
            accs: dict[str, float] = {}
            for _ in range(args.repeats):
                for side, factory in (("ours", ours), ("theirs", theirs)):
                    seconds, x_adv = run(factory(attack_name, model), x, y, args.batch)
                    times[side].append(seconds)
                    accs[side] = robust(model, x_adv, x, y)
            rate = {side: len(x) / statistics.median(t) for side, t in times.items()}
            print(
                f"{model_name:<17} {attack_name:<8} {rate['ours']:>10.0f} {rate['theirs']:>12.0f} "
                f"{rate['ours'] / rate['theirs']:>6.2f} {accs['ours']:>9.3f} {accs['theirs']:>11.3f}"
                + (f"   (clean {clean:.3f})" if attack_name == "fgsm" else "")
            )
            if attack_name == "pgd-40":
                gap = abs(accs["ours"] - accs["theirs"])
                print(
                    f"{'':<17} PGD robust accuracy agreement: |diff| = {gap * 100:.2f} points ({'ok' if gap <= 0.01 else 'MISSED: > 1 point'})"
                )


if __name__ == "__main__":
    main()
