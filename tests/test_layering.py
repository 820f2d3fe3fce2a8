"""The layering rules of docs/architecture.md, checked on the source with ``ast``.

Every ``import`` counts, at module level or inside a function (a lazy import still runs);
only imports under ``if TYPE_CHECKING:`` are left out. The gate-path rules are transitive:
a gate module may not reach robustness through a third module either.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The modules `verify`, `run` and the ledger gate execute: they must run on a slim install.
GATE_PATH = (
    "modelguard.signing",
    "modelguard.policy",
    "modelguard.runtime",
    "modelguard.audit",
    "modelguard.transparency",
    "modelguard.manifest",
    "modelguard.formats",
    "modelguard.keys",
    "modelguard.hashing",
    "modelguard.safeio",
    "modelguard.errors",
    "modelguard.encryption",
)
# What the gate path must never reach (the certificate and audit checks are handed in by
# the caller through modelguard.policy.PolicyChecks; modelguard.gates is such a caller).
ABOVE_THE_GATE = (
    "modelguard.robustness",
    "modelguard.audits",
    "modelguard.gates",
    "modelguard.zoo",
    "modelguard.modelcard",
    "modelguard.cli",
    "modelguard.demo",
)
# Parsing a PyTorch checkpoint is torch.load(weights_only=True) after the pickle opcode scan:
# the one place on the gate path that needs torch, and only for .pt/.pth/.bin files.
TORCH_ALLOWED = {"modelguard.formats.pytorch"}
APPLICATIONS = ("modelguard.cli", "modelguard.demo", "modelguard.__main__")


def _name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _modules() -> dict[str, Path]:
    files = [*REPO.glob("modelguard/**/*.py"), *REPO.glob("ledger/**/*.py")]
    return {_name(path): path for path in files}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                skipped |= {id(inner) for stmt in node.body for inner in ast.walk(stmt)}
    return skipped


def imports_in(source: str, module: str, *, package: bool = False) -> frozenset[str]:
    """Every module ``source`` imports (``from a.b import c`` counts as a.b and a.b.c)."""
    tree = ast.parse(source, filename=module)
    skipped = _type_checking_nodes(tree)
    parent = module if package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parent.split(".")[: len(parent.split(".")) - node.level + 1]
                source_module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source_module = node.module or ""
            found.add(source_module)
            found |= {f"{source_module}.{alias.name}" for alias in node.names}
    return frozenset(found)


@cache
def imports_of(module: str) -> frozenset[str]:
    path = _modules()[module]
    return imports_in(path.read_text(encoding="utf-8"), module, package=path.name == "__init__.py")


def _local(name: str) -> str | None:
    """The module of ours that an imported name refers to (a module, or a name in one)."""
    modules = _modules()
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


@cache
def reachable(module: str) -> dict[str, str]:
    """Every module of ours ``module`` imports, directly or through others: {module: importer}."""
    seen: dict[str, str] = {}
    todo = [module]
    while todo:
        current = todo.pop()
        for name in imports_of(current):
            target = _local(name)
            if target is not None and target not in seen and target != module:
                seen[target] = current
                todo.append(target)
    return seen


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _gate_modules() -> Iterator[str]:
    return (m for m in sorted(_modules()) if _under(m, GATE_PATH))


def test_the_rules_see_the_whole_tree() -> None:
    """A guard against a test that checks nothing: the walk finds the modules and imports."""
    modules = _modules()
    assert {"ledger.merkle", "modelguard.signing.verify", "modelguard.policy"} <= set(modules)
    assert "modelguard.policy" in reachable("modelguard.signing.verify")
    assert "modelguard.robustness.evaluate" in reachable("modelguard.robustness.hardening")
    assert len(list(_gate_modules())) >= 20


@pytest.mark.parametrize("module", sorted(m for m in _modules() if m.startswith("ledger")))
def test_ledger_imports_nothing_from_modelguard(module: str) -> None:
    bad = sorted(n for n in imports_of(module) if n.split(".")[0] == "modelguard")
    assert not bad, f"{module} imports {bad}: ledger/ is a library of its own"


@pytest.mark.parametrize("module", list(_gate_modules()))
def test_gate_path_never_reaches_robustness_audits_or_the_cli(module: str) -> None:
    via = reachable(module)
    bad = {m: via[m] for m in via if _under(m, ABOVE_THE_GATE)}
    assert not bad, f"{module} reaches {sorted(bad)} (imported by {bad})"


@pytest.mark.parametrize("module", list(_gate_modules()))
def test_gate_path_never_imports_torch(module: str) -> None:
    for name in {module, *reachable(module)} - TORCH_ALLOWED:
        torch = sorted(n for n in imports_of(name) if n.split(".")[0] == "torch")
        assert not torch, f"{module} reaches {name}, which imports {torch}"


@pytest.mark.parametrize(
    "module",
    sorted(m for m in _modules() if m.startswith("modelguard") and not _under(m, APPLICATIONS)),
)
def test_no_library_module_imports_the_cli_or_the_demo(module: str) -> None:
    bad = sorted(n for n in imports_of(module) if _under(n, APPLICATIONS))
    assert not bad, f"{module} imports {bad}: the CLI and the demo sit on top of the library"


def test_the_walk_sees_lazy_and_relative_imports_not_type_checking_ones() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import torch\n"
        "def f():\n    from modelguard.robustness import gate\n"
        "from .bundle import payload_digest\n"
    )
    found = imports_in(source, "modelguard.signing.probe")
    assert "torch" not in found
    assert {"modelguard.robustness.gate", "modelguard.signing.bundle.payload_digest"} <= found


def test_verify_help_imports_no_torch() -> None:
    """The slim gate: ``modelguard verify --help`` runs without importing torch."""
    probe = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from modelguard.cli.main import cli\n"
        "result = CliRunner().invoke(cli, ['verify', '--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "False"


def test_every_module_has_a_row_in_the_architecture_doc() -> None:
    """docs/architecture.md follows the code: each module is named in the module table, by
    its path or in a ``dir/*.py`` row that lists its name."""
    table = [
        line for line in (REPO / "docs" / "architecture.md").read_text().splitlines() if "|" in line
    ]
    missing = []
    for path in sorted(_modules().values()):
        rel = path.relative_to(REPO).as_posix()
        grouped = f"`{path.parent.relative_to(REPO).as_posix()}/*.py`"
        if not any(
            f"`{rel}`" in line or (grouped in line and path.stem in line.split("|")[0])
            for line in table
        ):
            missing.append(rel)
    assert not missing, f"modules without a row in docs/architecture.md: {missing}"


def test_the_standard_checks_call_the_real_gates(tmp_path: Path) -> None:
    """gates.STANDARD_CHECKS imports its gate on first call: the names must resolve, and the
    audit check (torch-free) must decide like ``audits.gate.audit_gate``."""
    from modelguard.gates import STANDARD_CHECKS
    from modelguard.policy import AuditRequirement

    requirement = AuditRequirement("membership", "auc", 0.6)
    assert STANDARD_CHECKS.audit is not None
    reasons = STANDARD_CHECKS.audit(requirement, tmp_path / "m", [], model_root=None)
    assert reasons == [f"no membership audit attestation at {tmp_path}/m.audits/membership.sig"]
    pytest.importorskip("torch")
    from modelguard.policy import CertificateRequirement

    assert STANDARD_CHECKS.certificate is not None
    model = tmp_path / "m"
    reasons = STANDARD_CHECKS.certificate(
        CertificateRequirement(0.8, 0.1), model, tmp_path / "model.sig", [], model_root="00" * 32
    )
    assert reasons == [f"no robustness certificate at {tmp_path}/m.robustness/certificate.sig"]
