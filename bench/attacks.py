"""Attack throughput and agreement: modelguard's FGSM, PGD-40 and C&W vs torchattacks, side by side.

    $ .venv/bin/pip install --no-deps torchattacks==3.5.1     # bench-only; not a modelguard dependency
    $ .venv/bin/python bench/attacks.py                       # both models, 3 interleaved repeats
    $ .venv/bin/python bench/attacks.py --models digits_cnn --repeats 1

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
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from modelguard import zoo
from modelguard.modelcard import accuracy, train_classifier
from modelguard.robustness.attacks import build_attack
from modelguard.robustness.data import digits_split

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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="digits_cnn,digits_cnn_large")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
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
