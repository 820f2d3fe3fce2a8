"""AdvGAN next to PGD: success rate, and time per example once the generator is trained.

    $ .venv/bin/python bench/advgan.py                 # eps 0.1 and 0.2, 3 interleaved repeats
    $ .venv/bin/python bench/advgan.py --eps 0.2 --repeats 1 --no-black-box

Trains the demo CNN (``zoo.digits_cnn``, 8 epochs, seed 0) on the digits train split, then
for each eps: PGD as ``modelguard eval`` runs it (20 steps, early stop, one restart), AdvGAN
(white-box, the attack's default budget: 15 epochs on the train split) and, unless
``--no-black-box``, AdvGAN-bb against the exported ONNX graph (scores only). Each AdvGAN is
trained once (its training time is printed separately); crafting on the 360-example test
split is then timed interleaved with PGD (PGD, AdvGAN, AdvGAN-bb, PGD, ...) and the median
of ``--repeats`` is reported with the ratio PGD time / AdvGAN time. Random sign noise at the
same Linf norm is the baseline. One torch thread.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from modelguard import zoo
from modelguard.modelcard import export_model_dir, seed_everything, train_classifier
from modelguard.robustness.attacks import Attack, build_attack
from modelguard.robustness.config import EVAL_DEFAULTS
from modelguard.robustness.data import digits_split
from modelguard.robustness.onnx_model import OnnxClassifier


def success(model: torch.nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        clean = model(x).argmax(1) == y
        return float((clean & (model(x_adv).argmax(1) != y)).sum() / clean.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eps", default="0.1,0.2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-black-box", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, test = digits_split()
    seed_everything(0)
    model = train_classifier(zoo.digits_cnn(), train, epochs=8, seed=0).eval()
    x, y = torch.from_numpy(test.x), torch.from_numpy(test.y)
    workdir = Path(tempfile.mkdtemp())
    export_model_dir(
        model, workdir / "m", factory="digits_cnn", input_shape=(1, 8, 8), classes=train.classes
    )
    onnx = OnnxClassifier(workdir / "m" / "model.onnx")
    print(f"torch {torch.__version__}, threads {args.threads}, {len(y)} test examples")
    print("| eps | attack | success rate | train s | ms/example (crafting) | PGD time / this |")
    print("|---:|---|---:|---:|---:|---:|")
    for eps in (float(e) for e in args.eps.split(",")):
        attacks: dict[str, Attack] = {
            "pgd": build_attack("pgd", model, eps=eps, seed=0, **EVAL_DEFAULTS["pgd"]),
            "advgan": build_attack("advgan", model, eps=eps, seed=0),
        }
        if not args.no_black_box:
            attacks["advgan-bb"] = build_attack("advgan-bb", onnx, eps=eps, seed=0)
        for name, attack in attacks.items():
            if name != "pgd":
                attack(x[:1], y[:1])  # train once; crafting is timed below
        times: dict[str, list[float]] = {name: [] for name in attacks}
        rates: dict[str, float] = {}
        for _ in range(args.repeats):
            for name, attack in attacks.items():
                started = time.perf_counter()
                x_adv = attack(x, y)
                times[name].append(time.perf_counter() - started)
                rates[name] = success(model, x, x_adv, y)
        sign = torch.sign(torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) - 0.5)
        noise = success(model, x, torch.clamp(x + eps * sign, 0, 1), y)
        pgd = statistics.median(times["pgd"])
        for name, attack in attacks.items():
            median = statistics.median(times[name])
            trained = f"{getattr(attack, 'train_seconds', 0.0):.1f}" if name != "pgd" else "-"
            print(
                f"| {eps} | {name} | {rates[name]:.3f} | {trained} | "
                f"{1000 * median / len(y):.4f} | {pgd / median:.0f}x |"
            )
        print(f"| {eps} | random sign noise | {noise:.3f} | - | - | - |")


if __name__ == "__main__":
    main()
