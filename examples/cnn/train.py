"""Train examples/cnn/mynet.py on scikit-learn's bundled digits and write a model directory.

    $ python examples/cnn/train.py --out model --epochs 3

Writes ``model.safetensors`` (the weights) and ``model.onnx`` (the deployed graph). The ONNX
export uses the TorchScript exporter, ``torch.onnx.export(..., dynamo=False)``: the default
dynamo exporter of recent torch needs the extra package onnxscript (``pip install
onnxscript``). Next: ``modelguard card`` writes ``modelguard.json``, then sign the directory.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere
from examples.cnn.mynet import build
from modelguard.robustness.data import load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="model directory to write")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    # The training split only: `modelguard eval --data digits` evaluates on the held-out test split.
    train = load_dataset("digits:train")
    x, y = torch.from_numpy(train.x), torch.from_numpy(train.y)  # x in [0, 1], shape (N, 1, 8, 8)
    model = build(width=args.width)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(args.epochs):
        model.train()
        for idx in torch.randperm(len(x)).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x).argmax(1) == y).float().mean())

    args.out.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, args.out / "model.safetensors"
    )
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # torch >= 2.9 warns that the TorchScript exporter is legacy
        torch.onnx.export(
            model,
            (torch.zeros(1, 1, 8, 8),),
            str(args.out / "model.onnx"),
            dynamo=False,  # TorchScript exporter: no onnxscript needed
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    print(f"wrote {args.out}/model.safetensors and model.onnx (train accuracy {accuracy:.1%})")


if __name__ == "__main__":
    main()
