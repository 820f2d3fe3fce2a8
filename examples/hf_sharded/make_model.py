"""Write a Hugging Face-style sharded model directory: index json + safetensors shards + ONNX.

    $ python examples/hf_sharded/make_model.py --out hf-model

Layout (what ``save_pretrained(max_shard_size=...)`` and ``optimum`` export produce)::

    hf-model/config.json
    hf-model/model.safetensors.index.json     {"metadata": {"total_size": N}, "weight_map": {...}}
    hf-model/model-00001-of-00002.safetensors
    hf-model/model-00002-of-00002.safetensors
    hf-model/onnx/model.onnx                   the graph `modelguard run` executes

modelguard hashes every tensor of every shard (and the index and config as files), so the
signature covers the whole directory; a swapped shard or an edited weight_map fails verify.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn


def tiny_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    out: Path = args.out
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    model = tiny_mlp()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    names = sorted(state)
    shards = [names[: len(names) // 2], names[len(names) // 2 :]]
    weight_map: dict[str, str] = {}
    for number, shard in enumerate(shards, start=1):
        file = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        save_file({k: state[k] for k in shard}, out / file, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, file))
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    config = {"model_type": "tiny-mlp", "hidden_size": 32, "num_labels": 10}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is "legacy" in torch >= 2.9
        torch.onnx.export(
            model,
            (torch.zeros(1, 1, 8, 8),),
            str(out / "onnx" / "model.onnx"),
            dynamo=False,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    print(f"wrote {out}: {len(shards)} shards, {len(names)} tensors, onnx/model.onnx")


if __name__ == "__main__":
    main()
