"""Model directories: weights (safetensors), the deployed graph (ONNX) and a model card.

>>> from modelguard.zoo import digits_cnn
>>> from modelguard.modelcard import export_model_dir, load_model_dir
>>> card = export_model_dir(digits_cnn(), "/tmp/mg-doc", factory="modelguard.zoo:digits_cnn",
...                         input_shape=(1, 8, 8), classes=[str(i) for i in range(10)])
>>> model, card = load_model_dir("/tmp/mg-doc")

``modelguard.json``::

    {"arch": {"factory": "modelguard.zoo:digits_cnn", "kwargs": {}},
     "weights": "model.safetensors", "onnx": "model.onnx",
     "input": {"shape": [1, 8, 8], "range": [0, 1],
               "normalization": {"mean": [0.3], "std": [0.4]}},      # optional
     "classes": ["0", ...], "name": "digits-cnn", "version": "1", "format_version": 1}

The user-facing specification is docs/modelcard.md; ``modelguard card`` writes one for your
own architecture.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from modelguard import zoo
from modelguard.errors import BadInputError, FormatError
from modelguard.formats import ModelFiles
from modelguard.robustness.data import Dataset

CARD_NAME = "modelguard.json"
MAX_CARD_BYTES = 1 << 20
ONNX_OPSET = 17


@dataclass
class ModelCard:
    factory: str
    kwargs: dict[str, Any]
    input_shape: list[int]
    classes: list[str]
    weights: str = "model.safetensors"
    onnx: str = "model.onnx"
    input_range: list[float] = field(default_factory=lambda: [0.0, 1.0])
    # What the model applies inside itself, first thing: (x - mean) / std per channel. Recorded
    # so a reader can relate eps (always in input units, i.e. within input_range) to the
    # normalized scale the network's first weights see: eps / std.
    normalization: dict[str, list[float]] | None = None
    name: str = "model"
    version: str = "1"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format_version": 1,
            "arch": {"factory": self.factory, "kwargs": self.kwargs},
            "weights": self.weights,
            "onnx": self.onnx,
            "input": {
                "shape": self.input_shape,
                "range": self.input_range,
                **({"normalization": self.normalization} if self.normalization else {}),
            },
            "classes": self.classes,
            "name": self.name,
            "version": self.version,
        }
        if self.extra:
            out["extra"] = self.extra
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = CARD_NAME) -> ModelCard:
        try:
            arch = data["arch"]
            card = cls(
                factory=str(arch["factory"]),
                kwargs=dict(arch.get("kwargs", {})),
                input_shape=[int(v) for v in data["input"]["shape"]],
                classes=[str(c) for c in data["classes"]],
                weights=str(data.get("weights", "model.safetensors")),
                onnx=str(data.get("onnx", "model.onnx")),
                input_range=[float(v) for v in data["input"].get("range", [0, 1])],
                normalization=_normalization(data["input"].get("normalization")),
                name=str(data.get("name", "model")),
                version=str(data.get("version", "1")),
                extra=dict(data.get("extra", {})),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise FormatError(
                f"malformed model card ({type(error).__name__}: {error})", path=source
            ) from error
        low, high = (card.input_range + [0.0, 0.0])[:2]
        if len(card.input_range) != 2 or not low < high:
            raise FormatError(
                "model card input range must be [low, high] with low < high", path=source
            )
        for member in (card.weights, card.onnx):
            if Path(member).is_absolute() or ".." in Path(member).parts:
                raise FormatError(
                    f"model card path {member!r} must stay inside the model directory", path=source
                )
        return card

    def save(self, directory: Path) -> Path:
        path = directory / CARD_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, directory: Path, content: bytes | None = None) -> ModelCard:
        """``content``: the card's bytes, already read (and verified) by the caller."""
        path = directory / CARD_NAME
        if content is None:
            if not path.is_file():
                raise BadInputError(
                    f"no {CARD_NAME} model card in this directory", path=str(directory)
                )
            if path.stat().st_size > MAX_CARD_BYTES:
                raise FormatError("model card too large", path=str(path))
            content = path.read_bytes()
        if len(content) > MAX_CARD_BYTES:
            raise FormatError("model card too large", path=str(path))
        try:
            data = json.loads(content)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise FormatError(f"model card is not JSON ({error})", path=str(path)) from error
        if not isinstance(data, dict):
            raise FormatError("model card must be a JSON object", path=str(path))
        return cls.from_dict(data, source=str(path))


def _normalization(value: Any) -> dict[str, list[float]] | None:
    """``{"mean": [...], "std": [...]}``: equal lengths, every std > 0 (None when absent)."""
    if value is None:
        return None
    mean = [float(v) for v in value["mean"]]
    std = [float(v) for v in value["std"]]
    if not mean or len(mean) != len(std) or any(not v > 0 for v in std):
        raise ValueError("normalization needs mean and std of equal length, every std > 0")
    return {"mean": mean, "std": std}


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    return torch.Generator().manual_seed(seed)


def batches(
    data: Dataset, batch_size: int, generator: torch.Generator | None = None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches; shuffled when a generator is given."""
    x = torch.from_numpy(data.x)
    y = torch.from_numpy(data.y)
    order = (
        torch.randperm(len(data), generator=generator)
        if generator is not None
        else torch.arange(len(data))
    )
    return [(x[idx], y[idx]) for idx in order.split(batch_size)]


def accuracy(model: nn.Module, data: Dataset, batch_size: int = 512) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for xb, yb in batches(data, batch_size):
            correct += int((model(xb).argmax(dim=1) == yb).sum())
    return correct / len(data)


def train_classifier(
    model: nn.Module,
    train: Dataset,
    *,
    epochs: int = 15,
    lr: float = 2e-3,
    batch_size: int = 64,
    seed: int = 0,
) -> nn.Module:
    """Plain cross-entropy training with Adam (the undefended baseline)."""
    generator = seed_everything(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        model.train()
        for xb, yb in batches(train, batch_size, generator):
            optimizer.zero_grad()
            loss_fn(model(xb), yb).backward()
            optimizer.step()
    model.eval()
    return model


def export_onnx(model: nn.Module, path: Path, input_shape: Sequence[int]) -> None:
    """Export with the TorchScript exporter (no onnxscript needed), dynamic batch axis."""
    model.eval()
    example = torch.zeros(1, *input_shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )


def export_model_dir(
    model: nn.Module,
    out_dir: str | os.PathLike[str],
    *,
    factory: str,
    input_shape: Sequence[int],
    classes: Sequence[str],
    kwargs: Mapping[str, Any] | None = None,
    name: str = "model",
    version: str = "1",
    extra: Mapping[str, Any] | None = None,
) -> ModelCard:
    """Write ``model.safetensors``, ``model.onnx`` and ``modelguard.json`` into ``out_dir``."""
    from safetensors.torch import save_file

    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    card = ModelCard(
        factory=zoo.factory_name(factory),
        kwargs=dict(kwargs or {}),
        input_shape=[int(d) for d in input_shape],
        classes=list(classes),
        name=name,
        version=version,
        extra=dict(extra or {}),
    )
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(directory / card.weights))
    export_onnx(model, directory / card.onnx, card.input_shape)
    card.save(directory)
    return card


def _load_weights(model: nn.Module, weights: Path, factory: str, data: bytes | None = None) -> None:
    """Load safetensors weights strictly; ``data``: the verified bytes (never re-read by path)."""
    from safetensors.torch import load, load_file

    try:
        state = load_file(str(weights)) if data is None else load(data)
    except Exception as error:  # safetensors raises its own error types
        raise FormatError(f"unreadable safetensors weights ({error})", path=str(weights)) from error
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise FormatError(
            f"weights do not fit architecture {factory}: {first}", path=str(weights)
        ) from error
    model.eval()


@dataclass
class CardResult:
    card: ModelCard
    path: Path
    onnx_exported: bool
    parity_max_abs_diff: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "card": str(self.path),
            "onnx_exported": self.onnx_exported,
            "parity_max_abs_diff": self.parity_max_abs_diff,
            **self.card.to_dict(),
        }


PARITY_ATOL = 1e-3


def write_card(
    directory: str | os.PathLike[str],
    *,
    factory: str,
    kwargs: Mapping[str, Any] | None = None,
    input_shape: Sequence[int],
    input_range: Sequence[float] = (0.0, 1.0),
    normalization: Mapping[str, Sequence[float]] | None = None,
    classes: Sequence[str] | None = None,
    weights: str = "model.safetensors",
    onnx: str = "model.onnx",
    export: bool = False,
    name: str | None = None,
    version: str = "1",
    force: bool = False,
) -> CardResult:
    """Write ``modelguard.json`` for your own architecture (``modelguard card``).

    Builds ``factory(**kwargs)`` (code the caller chose to trust), loads the weights strictly,
    counts the classes from a forward pass, exports the ONNX graph when ``export`` (else checks
    the existing one computes the same logits), and writes the card. Sign the directory after.
    """
    target = Path(directory)
    if not target.is_dir():
        raise BadInputError("not a directory", path=str(target))
    card_path = target / CARD_NAME
    if card_path.exists() and not force:
        raise BadInputError(f"{CARD_NAME} exists; --force replaces it", path=str(card_path))
    card = ModelCard.from_dict(
        {
            "arch": {"factory": zoo.factory_name(factory), "kwargs": dict(kwargs or {})},
            "weights": weights,
            "onnx": onnx,
            "input": {
                "shape": list(input_shape),
                "range": list(input_range),
                **({"normalization": dict(normalization)} if normalization else {}),
            },
            "classes": list(classes or []),
            "name": name or target.resolve().name,
            "version": version,
        },
        source=str(card_path),
    )
    zoo.trust_factory(card.factory)
    model = zoo.build(card.factory, card.kwargs, trusted=True)
    weights_path = target / card.weights
    if not weights_path.is_file():
        raise BadInputError(f"weights file {card.weights!r} is missing", path=str(target))
    _load_weights(model, weights_path, card.factory)
    low, high = card.input_range
    probe = low + (high - low) * torch.rand(
        4, *card.input_shape, generator=torch.Generator().manual_seed(0)
    )
    try:
        with torch.no_grad():
            logits = model(probe)
    except RuntimeError as error:
        raise BadInputError(
            f"{card.factory} does not accept inputs of shape {card.input_shape}: "
            f"{str(error).splitlines()[0]}"
        ) from error
    if logits.ndim != 2:
        raise BadInputError(
            f"{card.factory} must return logits (batch, classes), got {list(logits.shape)}"
        )
    count = int(logits.shape[1])
    if not card.classes:
        card.classes = [str(i) for i in range(count)]
    elif len(card.classes) != count:
        raise BadInputError(f"{len(card.classes)} class names for a model with {count} outputs")
    onnx_path = target / card.onnx
    exported = False
    if not onnx_path.is_file():
        if not export:
            raise BadInputError(
                f"no {card.onnx} in the model directory: export it (--export-onnx) or name it (--onnx)",
                path=str(target),
            )
        export_onnx(model, onnx_path, card.input_shape)
        exported = True
    diff = _onnx_parity(onnx_path, probe.numpy(), logits.numpy())
    if diff > PARITY_ATOL:
        raise FormatError(
            f"{card.onnx} does not compute what {card.factory} with {card.weights} computes "
            f"(max |logit diff| {diff:.3g} > {PARITY_ATOL})",
            path=str(onnx_path),
        )
    card.save(target)
    return CardResult(card, card_path, exported, diff)


def _onnx_parity(onnx_path: Path, x: np.ndarray, expected: np.ndarray) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_path.read_bytes(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    try:
        got = session.run(None, {name: x.astype(np.float32)})[0]
    except Exception as error:  # ONNX Runtime raises its own error types
        raise FormatError(
            f"ONNX Runtime cannot run it ({error})".splitlines()[0], path=str(onnx_path)
        ) from error
    if got.shape != expected.shape:
        raise FormatError(
            f"ONNX output shape {list(got.shape)} != PyTorch {list(expected.shape)}",
            path=str(onnx_path),
        )
    return float(np.max(np.abs(got - expected)))


def load_model_dir(
    path: str | os.PathLike[str],
    *,
    trusted_factory: str | None = None,
    files: ModelFiles | None = None,
) -> tuple[nn.Module, ModelCard]:
    """Rebuild the PyTorch model from its card and weights (safetensors: never executes code).

    ``trusted_factory``: a factory the caller named explicitly; it overrides the card's.
    ``files``: the verified model (``VerifiedModel.files``): card and weights come from its
    buffers, never from the paths again.
    """
    directory = Path(path)
    card = ModelCard.load(directory, None if files is None else bytes(files.view(CARD_NAME)))
    factory = trusted_factory or card.factory
    model = zoo.build(factory, card.kwargs, trusted=trusted_factory is not None)
    weights = directory / card.weights
    present = weights.is_file() if files is None else card.weights in files.members
    if not present:
        raise BadInputError(
            f"weights file {card.weights!r} named by the model card is missing", path=str(directory)
        )
    data = None if files is None else bytes(files.view(card.weights))
    _load_weights(model, weights, factory, data)
    return model, card
