"""Version anomalies: per-tensor change statistics between two versions, and their outliers.

>>> from pathlib import Path
>>> from modelguard.anomaly import tensor_change_report
>>> report = tensor_change_report(Path("v1"), Path("v2"))       # doctest: +SKIP
>>> [t.name for t in report.tensors if t.outlier]               # doctest: +SKIP
['4.weight']

For every tensor both versions hold with the same name, shape and a numeric dtype: mean,
std, max-abs and sparsity (fraction of exact zeros) of each side, and the L2 norm, max-abs
and relative size (``||b - a|| / ||a||``) of the change, computed in bounded chunks.

A fine-tune moves every layer by a similar relative amount; a trojan edit (Liu et al. 2018,
"Trojaning attack on neural networks"; Dai et al. 2019) or a hand-patched layer moves one.
So each tensor's relative change is scored against the others on a log scale (a robust
z-score, Iglewicz and Hoaglin 1993): the center is the median over every compared tensor
(unchanged ones count at 1e-12), the spread the median absolute deviation of the tensors
that changed (about their own median), with a floor of ``min_spread`` decades so tensors that all moved by nearly the
same amount do not flag each other. A tensor ``z_threshold`` spreads above the center is
flagged: when most tensors did not change at all, every changed one is (the update touched
only those); when most changed, those that changed far more than the rest are. With ``probe`` data both versions' ONNX graphs classify
the same inputs through ONNX Runtime and the prediction agreement is reported.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelguard.errors import BadInputError, FormatError
from modelguard.formats import TensorSlice, parse_model_file
from modelguard.manifest import DTYPE_BITS, _as_float, list_model_files

Z_THRESHOLD = 3.5
MIN_SPREAD_DECADES = 0.25
MIN_RELATIVE_CHANGE = 1e-6  # below this a change is numerical noise, never an outlier
_FLOOR = 1e-12
CHUNK_ELEMENTS = 1 << 22
MAX_CARD_BYTES = 1 << 20
MAX_ONNX_BYTES = 4 << 30


@dataclass(frozen=True)
class SideStats:
    mean: float
    std: float
    max_abs: float
    sparsity: float  # fraction of elements exactly 0

    def to_dict(self) -> dict[str, float]:
        return {
            "mean": self.mean,
            "std": self.std,
            "max_abs": self.max_abs,
            "sparsity": self.sparsity,
        }


@dataclass
class TensorStats:
    file: str
    name: str
    dtype: str
    shape: tuple[int, ...]
    a: SideStats
    b: SideStats
    l2_change: float
    max_abs_change: float
    relative_change: float  # ||b - a||_2 / ||a||_2 (||b - a|| when a is all zeros)
    score: float = 0.0  # robust z-score of log10(relative change) among the compared tensors
    outlier: bool = False

    @property
    def layer(self) -> str:
        """The tensor's layer: its name without the last component (``4.weight`` -> ``4``)."""
        return self.name.rsplit(".", 1)[0] if "." in self.name else self.name

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "name": self.name,
            "layer": self.layer,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "a": self.a.to_dict(),
            "b": self.b.to_dict(),
            "l2_change": self.l2_change,
            "max_abs_change": self.max_abs_change,
            "relative_change": self.relative_change,
            "score": self.score,
            "outlier": self.outlier,
        }


@dataclass
class AnomalyReport:
    tensors: list[TensorStats]
    not_compared: list[dict[str, str]]  # {"file", "name", "reason"}
    z_threshold: float = Z_THRESHOLD
    min_spread: float = MIN_SPREAD_DECADES
    probe: dict[str, Any] | None = None
    max_relative_change: float | None = None
    gate_failures: list[str] = field(default_factory=list)

    @property
    def outliers(self) -> list[TensorStats]:
        return [t for t in self.tensors if t.outlier]

    def apply_gate(self, max_relative_change: float) -> list[str]:
        """Reasons version B is not an acceptable update of A (empty = it is)."""
        self.max_relative_change = max_relative_change
        failures = [
            f"{t.file}:{t.name} changed by {t.relative_change:.3g} (relative), above {max_relative_change:g}"
            for t in self.tensors
            if t.relative_change > max_relative_change
        ]
        failures += [
            f"{t.file}:{t.name} is an outlier: its change is {t.score:.1f} robust deviations "
            "above the other tensors'"
            for t in self.outliers
        ]
        failures += [f"{n['file']}:{n['name']} {n['reason']}" for n in self.not_compared]
        self.gate_failures = failures
        return failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "tensors": [t.to_dict() for t in self.tensors],
            "not_compared": self.not_compared,
            "outliers": [f"{t.file}:{t.name}" for t in self.outliers],
            "outlier_layers": sorted({t.layer for t in self.outliers}),
            "z_threshold": self.z_threshold,
            "min_spread_decades": self.min_spread,
            "probe": self.probe,
            "max_relative_change": self.max_relative_change,
            "gate_failures": self.gate_failures,
            "gate_ok": not self.gate_failures if self.max_relative_change is not None else None,
        }


def _numeric(t: TensorSlice) -> bool:
    return DTYPE_BITS.get(t.dtype, 1) % 8 == 0 and t.dtype not in ("string",)


def tensor_stats(file: str, a: TensorSlice, b: TensorSlice) -> TensorStats | None:
    """Statistics of both sides and of their difference, in bounded chunks; None if not numeric."""
    step = CHUNK_ELEMENTS * DTYPE_BITS[a.dtype] // 8
    view_a, view_b = a.read(), b.read()
    n = 0
    sums = {"a": [0.0, 0.0, 0.0, 0], "b": [0.0, 0.0, 0.0, 0]}  # sum, sum of squares, max, zeros
    d_squares, d_max = 0.0, 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        for start in range(0, view_a.nbytes, step):
            xa = _as_float(view_a[start : start + step], a.dtype)
            xb = _as_float(view_b[start : start + step], b.dtype)
            if xa is None or xb is None:
                return None
            n += xa.size
            for key, x in (("a", xa), ("b", xb)):
                acc = sums[key]
                acc[0] += float(x.sum())
                acc[1] += float(np.dot(x, x))
                acc[2] = max(acc[2], float(np.abs(x).max(initial=0.0)))
                acc[3] += int(np.count_nonzero(x == 0))
            delta = xb - xa
            delta[np.isnan(xa) & np.isnan(xb)] = 0.0
            d_squares += float(np.dot(delta, delta))
            d_max = max(d_max, float(np.abs(delta).max(initial=0.0)))

    def side(key: str) -> SideStats:
        total, squares, peak, zeros = sums[key]
        mean = total / n if n else 0.0
        return SideStats(
            mean=mean,
            std=math.sqrt(max(squares / n - mean * mean, 0.0)) if n else 0.0,
            max_abs=float(peak),
            sparsity=zeros / n if n else 0.0,
        )

    l2 = math.sqrt(d_squares)
    norm_a = math.sqrt(sums["a"][1])
    return TensorStats(
        file=file,
        name=a.name,
        dtype=a.dtype,
        shape=tuple(a.shape),
        a=side("a"),
        b=side("b"),
        l2_change=l2,
        max_abs_change=d_max,
        relative_change=l2 / norm_a if norm_a > 0 else l2,
    )


def score_outliers(
    tensors: Sequence[TensorStats],
    *,
    z_threshold: float = Z_THRESHOLD,
    min_spread: float = MIN_SPREAD_DECADES,
) -> None:
    """Set ``score`` and ``outlier`` on each tensor (robust z of log10 relative change)."""
    finite = [t for t in tensors if math.isfinite(t.relative_change)]
    if not finite:
        return
    logs = np.log10(np.maximum([t.relative_change for t in finite], _FLOOR))
    median = float(np.median(logs))  # over every tensor: most unchanged -> a low center
    moved = logs[logs > math.log10(_FLOOR)]  # the spread only of tensors that changed
    deviation = float(np.median(np.abs(moved - np.median(moved)))) if moved.size else 0.0
    spread = max(1.4826 * deviation, min_spread)
    for t, value in zip(finite, logs, strict=True):
        t.score = (float(value) - median) / spread
        t.outlier = t.score > z_threshold and t.relative_change > MIN_RELATIVE_CHANGE
    for t in tensors:
        if not math.isfinite(t.relative_change):  # inf/nan appeared: always suspicious
            t.score, t.outlier = math.inf, True


def _tensors(path: Path) -> tuple[Path, dict[str, dict[str, TensorSlice]]]:
    root, rels = list_model_files(path)
    out: dict[str, dict[str, TensorSlice]] = {}
    for rel in rels:
        parsed = parse_model_file(root / rel, root=root)
        if parsed is not None:
            out[rel] = {t.name: t for t in parsed.tensors}
    return root, out


def tensor_change_report(
    a: Path,
    b: Path,
    *,
    z_threshold: float = Z_THRESHOLD,
    min_spread: float = MIN_SPREAD_DECADES,
) -> AnomalyReport:
    """Per-tensor statistics of every tensor the two versions share, with outliers flagged."""
    a, b = Path(a), Path(b)
    _, files_a = _tensors(a)
    _, files_b = _tensors(b)
    if not a.is_dir() and not b.is_dir():  # two single files: compare them whatever their names
        files_b = {name: tensors for name, tensors in zip(files_a, files_b.values(), strict=False)}
    stats: list[TensorStats] = []
    skipped: list[dict[str, str]] = []
    for file in sorted(files_a.keys() | files_b.keys()):
        ta, tb = files_a.get(file, {}), files_b.get(file, {})
        for name in sorted(ta.keys() | tb.keys()):
            x, y = ta.get(name), tb.get(name)
            if x is None or y is None:
                skipped.append(
                    {"file": file, "name": name, "reason": "added" if x is None else "removed"}
                )
            elif x.dtype != y.dtype or x.shape != y.shape:
                skipped.append(
                    {
                        "file": file,
                        "name": name,
                        "reason": f"changed from {x.dtype}{list(x.shape)} to {y.dtype}{list(y.shape)}",
                    }
                )
            elif _numeric(x) and (row := tensor_stats(file, x, y)) is not None:
                stats.append(row)
    score_outliers(stats, z_threshold=z_threshold, min_spread=min_spread)
    return AnomalyReport(stats, skipped, z_threshold, min_spread)


# ---------------------------------------------------------------------------------------
# Prediction agreement on probe data (ONNX Runtime, no torch)


def onnx_of(path: Path) -> Path:
    """The ONNX graph of a model: the file itself, or the one a model directory's card names."""
    from modelguard.safeio import read_regular

    path = Path(path)
    if path.is_file() and path.suffix == ".onnx":
        return path
    if path.is_dir():
        card_path = path / "modelguard.json"
        name = "model.onnx"
        if card_path.exists():
            try:
                card = json.loads(
                    read_regular(card_path, max_size=MAX_CARD_BYTES, what="model card")
                )
                name = str(card.get("onnx", name))
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as error:
                raise FormatError(
                    f"model card is not a JSON object ({error})", path=str(card_path)
                ) from None
        onnx = path / name
        if onnx.resolve().parent == path.resolve() and onnx.is_file():
            return onnx
    raise BadInputError(
        "--probe needs an ONNX model: a .onnx file or a model directory with one", path=str(path)
    )


def _onnx_predict(path: Path, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    import onnxruntime as ort

    from modelguard.safeio import read_regular

    data = read_regular(path, max_size=MAX_ONNX_BYTES, what="ONNX model")
    try:
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        outs = [
            np.asarray(session.run(None, {name: x[s : s + batch_size]})[0])
            for s in range(0, x.shape[0], batch_size)
        ]
    except Exception as error:  # onnxruntime raises its own exception types
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise FormatError(
            f"ONNX Runtime cannot run this model on the probe data ({first})", path=str(path)
        ) from None
    return np.concatenate(outs, axis=0).argmax(axis=1)


def probe_agreement(a: Path, b: Path, data_spec: str) -> dict[str, Any]:
    """Share of probe inputs both versions classify alike, and each one's accuracy."""
    from modelguard.robustness.data import load_dataset

    data = load_dataset(data_spec)
    pa, pb = _onnx_predict(onnx_of(a), data.x), _onnx_predict(onnx_of(b), data.x)
    differ = np.nonzero(pa != pb)[0]
    return {
        "data": {"spec": data_spec, "name": data.name, "digest": data.digest, "count": len(data)},
        "agreement": float(np.mean(pa == pb)),
        "disagreements": int(differ.size),
        "first_disagreements": [int(i) for i in differ[:20]],
        "accuracy_a": float(np.mean(pa == data.y)),
        "accuracy_b": float(np.mean(pb == data.y)),
    }
