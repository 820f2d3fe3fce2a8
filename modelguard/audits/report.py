"""An audit's outputs: ``report.json``, ``report.html`` and, given a key, the signed attestation.

>>> from modelguard.audits.report import render_html
>>> "<table>" in render_html("membership audit", {"auc": 0.5}, [])
True

The attestation lands in the same directory (``<audit>.sig``); with ``--model M`` that
directory defaults to ``M.audits/`` beside the model, where the policy gate looks for it.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelguard.audits.attestation import IssuedAttestation, build_statement, issue_attestation
from modelguard.keys import PrivateKey, atomic_write

Table = tuple[str, Sequence[str], Sequence[Sequence[Any]]]  # (title, header, rows)
_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}"
    "table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}"
    "th{background:#f4f4f4}"
)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return html.escape(json.dumps(value, sort_keys=True))
    return html.escape(str(value))


def render_html(title: str, summary: Mapping[str, Any], tables: Sequence[Table]) -> str:
    """A self-contained page: the summary as key/value rows, then each table."""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1><table>"
    ]
    parts += [f"<tr><th>{html.escape(k)}</th><td>{_cell(v)}</td></tr>" for k, v in summary.items()]
    parts.append("</table>")
    for name, header, rows in tables:
        parts.append(f"<h2>{html.escape(name)}</h2><table><tr>")
        parts += [f"<th>{html.escape(h)}</th>" for h in header]
        parts.append("</tr>")
        for row in rows:
            parts.append("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "".join(parts)


@dataclass
class AuditRun:
    """What an audit wrote: its document, output paths and attestation (when signed)."""

    audit: str
    document: dict[str, Any]
    outputs: dict[str, Path]
    attestation: IssuedAttestation | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "audit": self.audit,
            "summary": self.document["summary"],
            "outputs": {k: str(v) for k, v in self.outputs.items()},
            "attestation": self.attestation.to_dict() if self.attestation else None,
        }


def finish_audit(
    audit: str,
    document: dict[str, Any],
    *,
    model: Mapping[str, Any] | None,
    datasets: Mapping[str, Mapping[str, Any]],
    tables: Sequence[Table],
    out_dir: str | os.PathLike[str],
    key: PrivateKey | None = None,
    ledger_url: str | None = None,
    record: bool = True,
) -> AuditRun:
    """Write report.json and report.html; with ``key`` sign and record the attestation."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    document = {**document, "model": dict(model) if model is not None else None}
    outputs = {"json": out / "report.json", "html": out / "report.html"}
    atomic_write(outputs["json"], json.dumps(document, indent=2, sort_keys=True).encode())
    summary = dict(document["summary"])
    atomic_write(outputs["html"], render_html(f"{audit} audit", summary, tables).encode())
    issued = None
    if key is not None:
        statement = build_statement(
            audit,
            model=model,
            datasets=datasets,
            config={"audit": document["config"], "recipe": document.get("recipe")},
            results=document["results"],
            summary=summary,
        )
        issued = issue_attestation(
            statement, key, out / f"{audit}.sig", ledger_url=ledger_url, record=record
        )
        outputs["attestation"] = issued.path
    return AuditRun(audit, document, outputs, issued)
