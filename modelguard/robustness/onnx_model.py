"""A classifier backed by an ONNX Runtime session: scores only, no gradients.

>>> from modelguard.robustness.onnx_model import OnnxClassifier
>>> classifier = OnnxClassifier("model.onnx")            # doctest: +SKIP
>>> classifier.check_input_shape((1, 8, 8), source="digits")  # doctest: +SKIP
>>> logits = classifier(torch.rand(4, 1, 8, 8))            # doctest: +SKIP

Used for black-box (score-based) attacks and for replaying adversarial examples crafted
on the PyTorch model against the deployed ONNX graph (parity).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from modelguard.errors import BadInputError, FormatError

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)
FLOAT_INPUT_TYPES = ("tensor(float)",)


def onnx_session_options() -> Any:
    """Session options for evaluation: quiet, and threads as torch has them."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    # Attacks query small batches thousands of times: follow torch's thread setting
    # rather than one thread per core, which only adds contention on small models.
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    return options


class OnnxClassifier:
    """``OnnxClassifier(path_or_session)(x) -> logits`` on CPU, batched by ``batch_size``."""

    device = torch.device("cpu")

    def __init__(
        self,
        source: str | os.PathLike[str] | Any,
        *,
        providers: Sequence[str] = DEFAULT_PROVIDERS,
        batch_size: int = 1024,
    ) -> None:
        import onnxruntime as ort

        if isinstance(source, str | os.PathLike):
            path = Path(source)
            if not path.is_file():
                raise BadInputError("ONNX model file not found", path=str(path))
            try:
                self.session = ort.InferenceSession(
                    str(path), sess_options=onnx_session_options(), providers=list(providers)
                )
            except Exception as error:  # ORT raises its own exception types
                first = str(error).strip().splitlines()[0] if str(error).strip() else ""
                raise FormatError(
                    f"ONNX Runtime cannot load it ({first})", path=str(path)
                ) from error
            self.source = str(path)
        else:
            self.session = source
            self.source = "<session>"
        inputs = self.session.get_inputs()
        outputs = self.session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise BadInputError(
                f"ONNX model must have exactly one input and at least one output, "
                f"has {len(inputs)} inputs",
                path=self.source,
            )
        self.input_name: str = inputs[0].name
        self.input_type: str = inputs[0].type
        self.input_shape: list[int | str | None] = list(inputs[0].shape)
        self.output_name: str = outputs[0].name
        self.batch_size = int(batch_size)
        self.fixed_batch = self.input_shape[0] if isinstance(self.input_shape[0], int) else None

    def check_input_shape(self, sample_shape: Sequence[int], *, source: str) -> None:
        """One-line ``BadInputError`` unless data of ``(N, *sample_shape)`` fits the input."""
        if self.input_type not in FLOAT_INPUT_TYPES:
            raise BadInputError(
                f"ONNX input {self.input_name!r} has type {self.input_type}, expected float32",
                path=self.source,
            )
        expected = self.input_shape[1:]
        fits = len(expected) == len(sample_shape) and all(
            not isinstance(d, int) or d == s for d, s in zip(expected, sample_shape, strict=True)
        )
        if not fits:
            raise BadInputError(
                f"ONNX input {self.input_name!r} expects shape {self.input_shape}, but {source} "
                f"has examples of shape {list(sample_shape)}",
                path=self.source,
            )

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        step = self.fixed_batch or self.batch_size
        chunks = []
        for start in range(0, x.shape[0], step):
            chunk = x[start : start + step]
            try:
                (out,) = self.session.run([self.output_name], {self.input_name: chunk})
            except Exception as error:
                first = str(error).strip().splitlines()[0] if str(error).strip() else ""
                raise BadInputError(
                    f"ONNX Runtime rejected the input ({first})", path=self.source
                ) from error
            chunks.append(np.asarray(out, dtype=np.float32).reshape(chunk.shape[0], -1))
        return np.concatenate(chunks, axis=0)

    def __call__(self, x: Tensor) -> Tensor:
        return torch.from_numpy(self.predict(x.detach().cpu().numpy())).to(x.device)
