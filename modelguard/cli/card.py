"""``modelguard card``: the model card (modelguard.json) for your own architecture.

$ modelguard card model --arch mynet:build --input-shape 1,8,8 --export-onnx
$ modelguard card model --arch pkg.nets:resnet --arch-kwargs '{"depth": 8}' \\
      --input-shape 3,32,32 --mean 0.49,0.48,0.45 --std 0.25,0.24,0.26 --classes cat,dog --json
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from modelguard.cli.options import float_list, json_object
from modelguard.cli.output import emit, json_option
from modelguard.errors import BadInputError


@click.command(
    epilog="""\b
Examples:
  modelguard card model --arch mynet:build --input-shape 1,8,8 --export-onnx
  modelguard card model --arch pkg.nets:resnet --arch-kwargs '{"depth": 8}' \\
      --input-shape 3,32,32 --mean 0.49,0.48,0.45 --std 0.25,0.24,0.26 --classes cat,dog
Then sign the directory: the card is part of what the signature covers (docs/modelcard.md).
"""
)
@click.argument("model_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--arch",
    required=True,
    help="Your factory, module:function (imported from the current directory first).",
)
@click.option("--arch-kwargs", default="{}", help="JSON keyword arguments for --arch.")
@click.option(
    "--input-shape", required=True, help="One example's shape without the batch, e.g. 1,8,8."
)
@click.option(
    "--input-range",
    default="0,1",
    show_default=True,
    help="LOW,HIGH of the inputs the model takes; attack budgets (eps) are in these units.",
)
@click.option("--mean", help="Per-channel mean the model subtracts inside itself (recorded).")
@click.option("--std", help="Per-channel std the model divides by inside itself (recorded).")
@click.option("--classes", help="Comma-separated class names (default: 0..K-1).")
@click.option(
    "--weights", default="model.safetensors", show_default=True, help="safetensors file in DIR."
)
@click.option("--onnx", default="model.onnx", show_default=True, help="ONNX graph in DIR.")
@click.option(
    "--export-onnx", is_flag=True, help="Export --onnx from --arch and --weights (dynamo=False)."
)
@click.option("--name", help="Model name (default: the directory name).")
@click.option("--version", "model_version", default="1", show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing modelguard.json.")
@json_option
def card(
    model_dir: Path,
    arch: str,
    arch_kwargs: str,
    input_shape: str,
    input_range: str,
    mean: str | None,
    std: str | None,
    classes: str | None,
    weights: str,
    onnx: str,
    export_onnx: bool,
    name: str | None,
    model_version: str,
    force: bool,
    as_json: bool,
) -> None:
    """Write modelguard.json for your own model: architecture, weights, ONNX graph, inputs."""
    from modelguard.modelcard import write_card

    shape = float_list(input_shape, "--input-shape") or []
    if not shape or any(v != int(v) or v < 1 for v in shape):
        raise BadInputError(f"--input-shape must be positive integers, got {input_shape!r}")
    if (mean is None) != (std is None):
        raise click.UsageError("--mean and --std go together")
    normalization = None
    if mean is not None:
        normalization = {
            "mean": float_list(mean, "--mean") or [],
            "std": float_list(std, "--std") or [],
        }
    result = write_card(
        model_dir,
        factory=arch,
        kwargs=json_object(arch_kwargs, "--arch-kwargs"),
        input_shape=[int(v) for v in shape],
        input_range=float_list(input_range, "--input-range") or [],
        normalization=normalization,
        classes=[c.strip() for c in classes.split(",")] if classes else None,
        weights=weights,
        onnx=onnx,
        export=export_onnx,
        name=name,
        version=model_version,
        force=force,
    )

    def human(console: Console) -> None:
        made = "exported" if result.onnx_exported else "checked"
        console.print(f"[green]wrote[/] {result.path}")
        console.print(
            f"  {result.card.factory}, {len(result.card.classes)} classes, input "
            f"{result.card.input_shape} in {result.card.input_range}; {result.card.onnx} {made} "
            f"(max |logit diff| vs PyTorch {result.parity_max_abs_diff:.2g})"
        )
        console.print(f"  next: modelguard sign {model_dir} --sign-key ...")

    emit(result.to_dict(), as_json, human)
