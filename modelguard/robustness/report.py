"""Evaluation outputs: ``report.json``, a robustness curve PNG and a self-contained HTML report.

>>> from modelguard.robustness.report import write_outputs
>>> paths = write_outputs(result, "build/eval")      # doctest: +SKIP
>>> sorted(paths)                                     # doctest: +SKIP
['curve', 'html', 'json']

The HTML page embeds everything (the curve and the example grid as base64 PNG), so it can be
mailed or attached to a CI run as one file.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from modelguard.robustness.results import EvalResult

REPORT_JSON = "report.json"
CURVE_PNG = "robustness.png"
REPORT_HTML = "report.html"


def _figure_png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def curve_png(result: EvalResult) -> bytes:
    """Robust accuracy vs eps, one line per attack, the worst case in bold; clean at eps = 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    eps = [0.0, *result.config.eps]
    for name in result.config.attacks:
        accs = [r.robust_accuracy for r in result.attacks if r.attack == name]
        ax.plot(eps, [result.clean_accuracy, *accs], marker="o", linewidth=1.2, label=name)
    worst = [r["robust_accuracy"] for r in result.worst_case]
    clean_ci = result.results_dict()["clean"]["ci95"]
    ax.fill_between(
        eps,
        [clean_ci[0], *[r["robust"]["ci95"][0] for r in result.worst_case]],
        [clean_ci[1], *[r["robust"]["ci95"][1] for r in result.worst_case]],
        color="black",
        alpha=0.12,
        label="worst case, 95% CI",
    )
    ax.plot(
        eps,
        [result.clean_accuracy, *worst],
        color="black",
        linewidth=2.6,
        marker="s",
        label="worst case",
    )
    ax.set_xlabel(f"eps ({result.config.norm})")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(f"{result.model.get('name')}: robust accuracy on {result.data['name']}")
    ax.legend(fontsize=8)
    data = _figure_png(fig)
    plt.close(fig)
    return data


def examples_png(result: EvalResult) -> bytes | None:
    """A grid: the first examples clean (top row), then their worst-case adversarial per eps."""
    samples = result.samples
    if samples is None or samples.x.shape[0] == 0 or samples.x.ndim != 4:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = result.data["classes"]
    rows = [("clean", samples.x, samples.clean_pred, [""] * len(samples.y))]
    for eps, (x_adv, pred, by) in sorted(samples.adversarial.items()):
        rows.append((f"eps={eps}", x_adv, pred, by))
    n = samples.x.shape[0]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.25 * n, 1.45 * len(rows)), squeeze=False)
    for r, (label, images, preds, attacks) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            image = np.transpose(images[c], (1, 2, 0))
            ax.imshow(
                image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1
            )
            ok = int(preds[c]) == int(samples.y[c])
            # A model may have more outputs than the data has classes (a detector's "reject").
            label_of = int(preds[c])
            name = classes[label_of] if label_of < len(classes) else f"output {label_of}"
            title = name + (f" ({attacks[c]})" if attacks[c] else "")
            ax.set_title(title, fontsize=7, color="black" if ok else "red")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    data = _figure_png(fig)
    plt.close(fig)
    return data


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _ci(stat: dict[str, Any] | None) -> str:
    """``[lo, hi]`` of an accuracy's 95% Clopper-Pearson interval, as text."""
    if stat is None:
        return "-"
    return f"[{stat['ci95'][0]:.3f}, {stat['ci95'][1]:.3f}]"


def _certified_html(certified: dict[str, Any] | None) -> str:
    """The certified sections (smoothing, IBP): apart from every empirical number."""
    if certified is None:
        return ""
    parts = []
    smoothing = certified.get("randomized_smoothing")
    if smoothing is not None:
        config = smoothing["config"]
        rows = [
            [r["radius"], r["certified_accuracy"], _ci(r["certified"])]
            for r in smoothing["certified_accuracy"]
        ]
        parts.append(
            "<h2>Certified robustness (randomized smoothing, L2)</h2>"
            f"<p>Certified, not empirical: these numbers describe {html.escape(smoothing['describes'])}. "
            f"sigma {config['sigma']}, n0 {config['n0']}, n {config['n']}, alpha {config['alpha']}; "
            f"{smoothing['n']} examples, {smoothing['abstained']} abstentions (counted as errors).</p>"
            + _table(["L2 radius", "certified accuracy", "95% CI"], rows)
        )
    ibp = certified.get("ibp")
    if ibp is not None:
        rows = [
            [r["eps"], r["certified_accuracy"], _ci(r["certified"])]
            for r in ibp["certified_accuracy"]
        ]
        parts.append(
            "<h2>Certified robustness (interval bound propagation, Linf)</h2>"
            f"<p>Certified, not empirical: {html.escape(ibp['describes'])}.</p>"
            + _table(["eps", "certified accuracy", "95% CI"], rows)
        )
    return "".join(parts)


def render_html(result: EvalResult, curve: bytes, grid: bytes | None) -> str:
    summary = result.summary()
    results = result.results_dict()
    attack_rows = [
        [
            r.attack,
            r.eps,
            r.target,
            r.robust_accuracy,
            _ci(row["robust"]),
            r.onnx_robust_accuracy,
            r.success_rate,
            r.median_l2,
            r.median_linf,
            r.queries,
        ]
        for r, row in zip(result.attacks, results["attacks"], strict=True)
    ]
    worst_rows = [
        [
            w["eps"],
            w["robust_accuracy"],
            _ci(w["robust"]),
            ", ".join(f"{k}: {v}" for k, v in w["broken_by"].items()),
        ]
        for w in result.worst_case
    ]
    checks = [[c["name"], c["status"], c["detail"]] for c in result.soundness]
    classes = result.data["classes"]

    def matrix(m: list[list[int]]) -> str:
        return _table(
            ["true \\ predicted", *classes], [[classes[i], *row] for i, row in enumerate(m)]
        )

    confusions = "".join(
        f"<h3>worst case, eps={w['eps']}</h3>{matrix(w['confusion'])}" for w in result.worst_case
    )
    grid_html = (
        f"<h2>Examples</h2><p>Top row clean; below, the worst-case adversarial example per eps "
        f"(red title: misclassified; the attack that broke it in brackets; an example no attack broke is shown clean).</p>"
        f'<img alt="examples" src="data:image/png;base64,{base64.b64encode(grid).decode()}">'
        if grid
        else ""
    )
    parity = result.parity
    status = (
        "FAILED" if not result.parity_ok else ("warnings" if result.soundness_warnings else "ok")
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>modelguard robustness report: {html.escape(str(summary["model"]))}</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;margin:0.5em 0 1.5em}}td,th{{border:1px solid #ccc;padding:3px 8px;
text-align:right;font-size:0.9em}}th{{background:#f3f3f3}}td:first-child{{text-align:left}}
.warn{{color:#b00}}code,pre{{background:#f6f6f6;padding:2px 4px}}pre{{overflow-x:auto;font-size:0.8em}}
</style></head><body>
<h1>Robustness report: {html.escape(str(summary["model"]))}</h1>
<p>Status: <b class="{"warn" if status != "ok" else ""}">{status}</b>.
Model manifest root <code>{html.escape(str(result.model.get("manifest_root")))}</code>;
data <code>{html.escape(result.data["name"])}</code> ({result.data["count"]} examples, sha256
<code>{html.escape(result.data["digest"])}</code>); threat model {result.config.norm}.</p>
<p>Every accuracy is measured on n = {result.n} examples and shown with its 95% Clopper-Pearson
interval: the true accuracy on the data's distribution lies in it with 95% confidence.</p>
{_table(["metric", "value", "95% CI"], [["clean accuracy (PyTorch)", result.clean_accuracy, _ci(results["clean"])], ["clean accuracy (ONNX)", result.onnx_clean_accuracy, _ci(results["onnx_clean"])], ["parity", "ok" if result.parity_ok else "FAILED", ""], ["parity max |logit diff|", parity.get("max_abs_diff"), ""]])}
<h2>Robustness curve</h2>
<img alt="robustness curve" src="data:image/png;base64,{base64.b64encode(curve).decode()}">
<h2>Worst case over the portfolio</h2>
<p>An example counts as robust only if every attack failed on it (on the model it targeted and
on the ONNX graph).</p>
{_table(["eps", "robust accuracy", "95% CI", "examples broken per attack"], worst_rows)}
<h2>Per attack</h2>
{_table(["attack", "eps", "target", "robust acc", "95% CI", "ONNX robust acc", "success rate", "median L2", "median Linf", "queries"], attack_rows)}
{_certified_html(result.certified)}
<h2>Soundness checks (Carlini et al. 2019)</h2>
{_table(["check", "status", "detail"], checks)}
{grid_html}
<h2>Confusion matrices</h2><h3>clean</h3>{matrix(result.clean_confusion)}{confusions}
<h2>Configuration</h2><pre>{html.escape(json.dumps(result.config.to_dict(), indent=2))}</pre>
<h2>Environment</h2><pre>{html.escape(json.dumps(result.environment, indent=2))}</pre>
</body></html>
"""


def write_outputs(result: EvalResult, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write report.json, robustness.png and report.html into ``out_dir``; return their paths."""
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": directory / REPORT_JSON,
        "curve": directory / CURVE_PNG,
        "html": directory / REPORT_HTML,
    }
    paths["json"].write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n")
    curve = curve_png(result)
    paths["curve"].write_bytes(curve)
    paths["html"].write_text(render_html(result, curve, examples_png(result)))
    return paths
