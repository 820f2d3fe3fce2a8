"""What an evaluation loads: the model (PyTorch and/or the deployed ONNX graph) with the
identity a certificate binds, the data set, the surrogate of a transfer attack, the device.

>>> from modelguard.robustness.loaders import load_model_directory
>>> loaded = load_model_directory("build/demo/model")                  # doctest: +SKIP
>>> loaded.info["manifest_root"], loaded.num_classes                   # doctest: +SKIP
('41bca8...', 10)

Three kinds of target, one :class:`LoadedModel` each: a model directory (``modelguard.json``
names factory, weights and ONNX graph; from verified buffers when given), ``--arch`` plus
safetensors weights (the user trusts the factory), or a bare ONNX file (black-box). What
belongs here: reading and identifying what is evaluated; nothing that attacks or scores it.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from modelguard import __version__
from modelguard.errors import BadInputError, DigestMismatchError, FormatError
from modelguard.hashing import digest_file
from modelguard.robustness import distributed
from modelguard.robustness.config import EvalConfig
from modelguard.robustness.data import Dataset, load_dataset
from modelguard.robustness.onnx_model import OnnxClassifier, onnx_session_options


@dataclass
class LoadedModel:
    """A model ready to evaluate, and what identifies it (the result's ``model`` section)."""

    torch_model: nn.Module | None
    onnx: OnnxClassifier | None
    info: dict[str, Any]
    num_classes: int | None = None  # None: ask the model (``--arch`` and bare ONNX)
    input_shape: list[int] | None = None


def environment() -> dict[str, Any]:
    import onnxruntime

    return {
        "modelguard": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def sha256_file(path: Path) -> str:
    return digest_file(path, "sha256")


def model_identity(path: Path) -> dict[str, Any]:
    """Manifest root (OMS ignore paths, hashes as signing computes them) of a file or directory."""
    from modelguard.manifest import SIGNING_FILE_HASH, SIGNING_LAYER_HASH, build_manifest
    from modelguard.signing.statement import DEFAULT_IGNORE_PATHS

    manifest = build_manifest(
        path,
        hash_algorithm=SIGNING_LAYER_HASH,
        file_hash_algorithm=SIGNING_FILE_HASH,
        ignore_paths=DEFAULT_IGNORE_PATHS,
    )
    return {
        "manifest_root": manifest.layer_root,
        "hash_algorithm": manifest.hash_algorithm,
        "files": {f.path: f.digest for f in manifest.files},
    }


def load_data(
    config: EvalConfig, *, num_classes: int, input_shape: Sequence[int] | None
) -> Dataset:
    data = load_dataset(config.data, seed=0).subset(config.limit)
    if input_shape is not None and list(data.x.shape[1:]) != list(input_shape):
        raise BadInputError(
            f"data set {config.data!r} has examples of shape {list(data.x.shape[1:])}, "
            f"but the model expects {list(input_shape)}"
        )
    if int(data.y.max()) >= num_classes:
        raise BadInputError(
            f"data set {config.data!r} has label {int(data.y.max())}, but the model has only "
            f"{num_classes} classes"
        )
    if config.data_digest is not None and config.data_digest != data.digest:
        raise DigestMismatchError(
            f"data set {config.data!r} no longer matches its recorded digest "
            f"(sha256 {data.digest[:16]}..., recorded {config.data_digest[:16]}...)"
        )
    return data


def load_surrogate(params: dict[str, Any], fallback: nn.Module | None) -> nn.Module:
    spec = params.get("surrogate")
    if spec is None:
        if fallback is None:
            raise BadInputError(
                "transfer on a bare ONNX model needs a surrogate: attack_params "
                "{'transfer': {'surrogate': 'MODEL_DIR'}} (a model directory)"
            )
        return fallback
    from modelguard.modelcard import load_model_dir

    surrogate, _ = load_model_dir(str(spec))
    return surrogate


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return distributed.local_device(device)  # cuda:LOCAL_RANK in a NCCL job
    except RuntimeError as error:
        raise BadInputError(f"unknown device {device!r}") from error


def num_outputs(model: nn.Module, x: np.ndarray) -> int:
    try:
        with torch.no_grad():
            out = model(torch.from_numpy(x))
    except RuntimeError as error:
        raise BadInputError(
            f"the model does not accept the data's examples of shape {list(x.shape[1:])} "
            f"({str(error).splitlines()[0]})"
        ) from error
    return int(out.shape[-1])


def load_model_directory(
    model_dir: str | os.PathLike[str],
    *,
    trusted_factory: str | None = None,
    verified: Any = None,
) -> LoadedModel:
    """A model directory (``modelguard.json``) with its ONNX graph when it has one.

    ``verified``: the model as verified (``modelguard.signing.report.VerifiedModel``): card,
    weights and ONNX graph come from its buffers and its manifest is the identity; nothing is
    read by path again.
    """
    from modelguard.modelcard import load_model_dir

    directory = Path(model_dir)
    files = verified.files if verified is not None else None
    model, card = load_model_dir(directory, trusted_factory=trusted_factory, files=files)
    onnx: OnnxClassifier | None
    if files is not None:
        from modelguard.runtime import session_from_files

        identity = {
            "manifest_root": verified.manifest.layer_root,
            "hash_algorithm": verified.manifest.hash_algorithm,
            "files": {f.path: f.digest for f in verified.manifest.files},
        }
        onnx = (
            OnnxClassifier(session_from_files(files, card.onnx, options=onnx_session_options()))
            if card.onnx in files.members
            else None
        )
    else:
        onnx_path = directory / card.onnx
        onnx = OnnxClassifier(onnx_path) if onnx_path.is_file() else None
        identity = model_identity(directory)
    info = {
        "kind": "model-dir",
        "path": str(directory),
        "name": card.name,
        "version": card.version,
        "factory": trusted_factory or card.factory,
        "kwargs": card.kwargs,
        "weights": card.weights,
        "weights_sha256": identity["files"].get(card.weights),
        "onnx": card.onnx if onnx is not None else None,
        "onnx_sha256": identity["files"].get(card.onnx) if onnx is not None else None,
        "manifest_root": identity["manifest_root"],
        "hash_algorithm": identity["hash_algorithm"],
    }
    return LoadedModel(model, onnx, info, len(card.classes), card.input_shape)


def load_arch(
    factory: str,
    weights: str | os.PathLike[str],
    *,
    kwargs: Mapping[str, Any] | None = None,
    onnx_path: str | os.PathLike[str] | None = None,
) -> LoadedModel:
    """``--arch pkg.mod:fn --weights W.safetensors`` (the user trusts fn), optionally with the
    ONNX graph to compare against; the identity is the weights file's."""
    from safetensors.torch import load_file

    from modelguard import zoo

    weights_path = Path(weights)
    if not weights_path.is_file():
        raise BadInputError("weights file not found", path=str(weights_path))
    model = zoo.build(
        zoo.factory_name(factory) if ":" not in factory else factory, kwargs, trusted=True
    )
    try:
        state = load_file(str(weights_path))
    except Exception as error:
        raise FormatError(
            f"unreadable safetensors weights ({error})", path=str(weights_path)
        ) from error
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise FormatError(
            f"weights do not fit architecture {factory}: {str(error).splitlines()[0]}",
            path=str(weights_path),
        ) from error
    model.eval()
    onnx = OnnxClassifier(onnx_path) if onnx_path is not None else None
    identity = model_identity(weights_path)
    info = {
        "kind": "arch+weights",
        "path": str(weights_path),
        "name": weights_path.stem,
        "version": None,
        "factory": factory,
        "kwargs": dict(kwargs or {}),
        "weights": weights_path.name,
        "weights_sha256": identity["files"].get(weights_path.name),
        "onnx": str(onnx_path) if onnx_path is not None else None,
        "onnx_sha256": sha256_file(Path(onnx_path)) if onnx_path is not None else None,
        "manifest_root": identity["manifest_root"],
        "hash_algorithm": identity["hash_algorithm"],
    }
    return LoadedModel(model, onnx, info)


def load_onnx(onnx_path: str | os.PathLike[str]) -> LoadedModel:
    """Any ONNX file, through ONNX Runtime only (black-box: score-based attacks)."""
    path = Path(onnx_path)
    onnx = OnnxClassifier(path)
    identity = model_identity(path)
    info = {
        "kind": "onnx",
        "path": str(path),
        "name": path.stem,
        "version": None,
        "onnx": path.name,
        "onnx_sha256": identity["files"].get(path.name),
        "manifest_root": identity["manifest_root"],
        "hash_algorithm": identity["hash_algorithm"],
    }
    return LoadedModel(None, onnx, info)
