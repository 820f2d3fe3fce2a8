"""``modelguard manifest`` and ``modelguard diff``.

$ modelguard manifest model_dir/ --hash blake3
$ modelguard manifest model.onnx --json > manifest.json
$ modelguard diff model.onnx tampered.onnx; echo $?    # 1: they differ
$ modelguard diff v1/ v2/ --stats --probe digits --max-relative-change 0.5   # gate an update
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from modelguard.anomaly import AnomalyReport, probe_agreement, tensor_change_report
from modelguard.cli.output import emit, json_option, progress
from modelguard.hashing import DEFAULT_HASH, HASH_ALGORITHMS
from modelguard.manifest import Manifest, ManifestDiff, build_manifest, diff_models


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _hash_options(func: click.decorators.FC) -> click.decorators.FC:
    func = click.option(
        "--threads",
        type=click.IntRange(min=1),
        default=None,
        help="Hashing threads (default: CPU count).",
    )(func)
    func = click.option(
        "--ignore",
        "ignore_paths",
        multiple=True,
        metavar="RELPATH",
        help="Skip this path (relative to the model root); repeatable.",
    )(func)
    func = click.option(
        "--allow-symlinks",
        is_flag=True,
        help="Follow symlinks inside a model directory (refused by default).",
    )(func)
    func = click.option(
        "--hash",
        "hash_algorithm",
        type=click.Choice(HASH_ALGORITHMS),
        default=DEFAULT_HASH,
        show_default=True,
        help="Digest algorithm.",
    )(func)
    return func


def _render_manifest(out: Console, manifest: Manifest, path: Path) -> None:
    table = Table(title=f"manifest of {path}", title_justify="left")
    table.add_column("file")
    table.add_column("format")
    table.add_column("size", justify="right")
    table.add_column("tensors", justify="right")
    table.add_column(f"{manifest.hash_algorithm} (file)")
    table.add_column("structure")
    for record in manifest.files:
        table.add_row(
            record.path,
            record.format,
            _size(record.size),
            str(len(record.tensors)),
            record.digest[:16] + "…",
            (record.structure_digest or "")[:16] + ("…" if record.structure_digest else "-"),
        )
    out.print(table)
    out.print(
        f"{len(manifest.files)} files, {manifest.tensor_count} tensors, {_size(manifest.total_size)}"
    )
    out.print(
        f"layer root (RFC 9162, over {len(manifest.layer_leaves())} leaves): [bold]{manifest.layer_root}[/bold]"
    )


@click.command(
    "manifest",
    epilog="Example: modelguard manifest model_dir/ --hash blake3 --json > manifest.json",
)
@click.argument("path", type=click.Path(path_type=Path))
@_hash_options
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Also write the manifest as canonical JSON (RFC 8785) to this file.",
)
@click.option(
    "--prove",
    "prove",
    metavar="[FILE:]TENSOR",
    default=None,
    help="Print (or -o: write) an RFC 9162 inclusion proof of TENSOR against the layer root a"
    " signature of PATH records (BLAKE3 tensors, SHA-256 files), for partial checks by others.",
)
@json_option
def manifest(
    path: Path,
    hash_algorithm: str,
    allow_symlinks: bool,
    ignore_paths: tuple[str, ...],
    threads: int | None,
    output: Path | None,
    prove: str | None,
    as_json: bool,
) -> None:
    """Hash a model (file or directory) file by file, layer by layer.

    Prints per-file digests, per-tensor digests, structure digests and the RFC 9162 Merkle
    root over all layer leaves. With --json the document is the manifest itself (docs/manifest.md).
    """
    if prove is not None:
        from modelguard.manifest import prove_tensor
        from modelguard.signing.files import signed_manifest

        signed = signed_manifest(path, threads=threads)
        # FILE:TENSOR names the file when several hold a tensor of that name
        where = next((f.path for f in signed.files if prove.startswith(f.path + ":")), None)
        name = prove[len(where) + 1 :] if where is not None else prove
        proof = prove_tensor(signed, name, where).to_dict()
        if output is not None:
            output.write_text(json.dumps(proof, indent=2) + "\n")
        emit(proof, as_json or output is None, lambda out: None)
        return
    with progress("hashing") as hashed:
        result = build_manifest(
            path,
            hash_algorithm=hash_algorithm,
            allow_symlinks=allow_symlinks,
            ignore_paths=ignore_paths,
            threads=threads,
            progress=hashed,
        )
    if output is not None:
        output.write_bytes(result.canonical_json())
    emit(result.to_dict(), as_json, lambda out: _render_manifest(out, result, path))


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def _render_diff(out: Console, result: ManifestDiff, a: Path, b: Path) -> None:
    if result.identical:
        out.print(f"[green]identical[/green]: {a} and {b}")
        return
    out.print(f"[red]differ[/red]: {a} vs {b}")
    for label, paths in (
        ("added file", result.files_added),
        ("removed file", result.files_removed),
        ("changed file", result.files_changed),
        ("structure changed", result.structure_changed),
    ):
        for p in paths:
            out.print(f"  {label}: {p}", markup=False)
    for detail in result.structure_details:
        out.print(f"    {detail}", markup=False)
    if result.tensors:
        table = Table(title="tensors", title_justify="left")
        for column in ("file", "tensor", "change", "shape", "max |Δ|", "L2(Δ)"):
            table.add_column(column)
        for t in result.tensors:
            record = t.actual or t.expected
            shape = "x".join(map(str, record.shape)) if record else ""
            if t.expected and t.actual and t.expected.shape != t.actual.shape:
                shape = f"{list(t.expected.shape)} -> {list(t.actual.shape)}"
            table.add_row(t.path, t.name, t.change, shape, _number(t.max_abs), _number(t.l2))
        out.print(table)


def _render_stats(out: Console, report: AnomalyReport) -> None:
    table = Table(title="per-tensor change (outlier: robust z of log relative change)")
    for column in (
        "file",
        "tensor",
        "std a→b",
        "sparsity a→b",
        "max |Δ|",
        "L2(Δ)",
        "relative",
        "z",
    ):
        table.add_column(column)
    for t in report.tensors:
        table.add_row(
            t.file,
            f"[red]{t.name}[/red]" if t.outlier else t.name,
            f"{t.a.std:.3g}→{t.b.std:.3g}",
            f"{t.a.sparsity:.2f}→{t.b.sparsity:.2f}",
            _number(t.max_abs_change),
            _number(t.l2_change),
            _number(t.relative_change),
            f"{t.score:.1f}",
        )
    out.print(table)
    layers = sorted({t.layer for t in report.outliers})
    out.print(f"outlier layers: {', '.join(layers) if layers else 'none'}", markup=False)
    if report.probe is not None:
        p = report.probe
        out.print(
            f"prediction agreement on {p['data']['name']}: {p['agreement']:.4f} "
            f"({p['disagreements']} of {p['data']['count']} differ)"
        )
    for failure in report.gate_failures:
        out.print(f"[red]gate[/red]: {failure}")


@click.command(
    "diff",
    epilog="Exit code: 0 identical, 1 they differ, 2 bad or unsafe input. With "
    "--max-relative-change: 0 when B is an acceptable update of A, 1 when the gate fails.",
)
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@_hash_options
@click.option("--stats", is_flag=True, help="Per-tensor statistics and outlier changes.")
@click.option("--probe", metavar="DATA", help="Prediction agreement of both ONNX graphs on DATA.")
@click.option(
    "--max-relative-change",
    type=click.FloatRange(min=0),
    help="Gate: exit 1 when a tensor changes by more (relative), is an outlier, or appears, "
    "vanishes or is reshaped, or the structure changed; else exit 0.",
)
@json_option
@click.pass_context
def diff(
    ctx: click.Context,
    a: Path,
    b: Path,
    hash_algorithm: str,
    allow_symlinks: bool,
    ignore_paths: tuple[str, ...],
    threads: int | None,
    stats: bool,
    probe: str | None,
    max_relative_change: float | None,
    as_json: bool,
) -> None:
    """Compare two models: files and tensors added, removed, changed (with max-abs and L2), structure.

    --stats adds per-tensor statistics and flags tensors whose change is an outlier against
    the others (the single-layer edit of a trojan insertion; docs/audits.md).
    """
    result = diff_models(
        a,
        b,
        hash_algorithm=hash_algorithm,
        allow_symlinks=allow_symlinks,
        ignore_paths=ignore_paths,
        threads=threads,
    )
    report = None
    if stats or probe or max_relative_change is not None:
        report = tensor_change_report(a, b)
        if probe:
            report.probe = probe_agreement(a, b, probe)
        if max_relative_change is not None:
            report.apply_gate(max_relative_change)
            report.gate_failures += [f"{p}: structure changed" for p in result.structure_changed]
    document = {"a": str(a), "b": str(b), **result.to_dict()}
    if report is not None:
        document["stats"] = report.to_dict()

    def human(out: Console) -> None:
        _render_diff(out, result, a, b)
        if report is not None:
            _render_stats(out, report)

    emit(document, as_json, human)
    if max_relative_change is not None:
        assert report is not None
        ctx.exit(1 if report.gate_failures else 0)
    if not result.identical:
        ctx.exit(1)
