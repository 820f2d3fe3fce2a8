"""in-toto Statement v1 with the OpenSSF Model Signing v1.0 predicate.

>>> from modelguard.signing.statement import model_statement, parse_statement
>>> st = model_statement("m", [("w.bin", "00" * 32)], ignore_paths=["model.sig"])
>>> parse_statement(st).resources[0].name
'w.bin'

The subject digest is SHA-256 over the concatenated raw resource digests, resources sorted the
way OpenSSF Model Signing sorts them (as POSIX paths, component by component), so that
``model_signing verify`` accepts what we sign. modelguard's per-layer manifest rides in the extra
predicate field ``modelguard``, which v1.0 verifiers ignore.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modelguard.errors import FormatError

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
SERIALIZATION_METHOD = "files"
RESOURCE_HASH = "sha256"
# What OpenSSF Model Signing leaves out of a directory by default; model.sig.d holds co-signatures.
DEFAULT_IGNORE_PATHS: tuple[str, ...] = (
    ".git",
    ".gitattributes",
    ".github",
    ".gitignore",
    "model.sig",
    "model.sig.d",
)
MAX_RESOURCES = 1_000_000
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Resource:
    name: str  # POSIX path relative to the model path; "." when the model is a single file
    algorithm: str
    digest: str  # lowercase hex


@dataclass(frozen=True)
class ParsedStatement:
    model_name: str
    subject_digest: str
    serialization: dict[str, Any]
    resources: tuple[Resource, ...]
    modelguard: dict[str, Any] | None  # the extra predicate field, None for plain OMS signatures
    raw: dict[str, Any]

    @property
    def ignore_paths(self) -> tuple[str, ...]:
        return tuple(self.serialization.get("ignore_paths", ()))


def oms_order(name: str) -> tuple[str, ...]:
    """Sort key equal to ``pathlib.PurePosixPath`` ordering, which OpenSSF Model Signing uses."""
    return tuple(part for part in name.split("/") if part not in ("", "."))


def check_resource_name(name: object) -> str:
    """A safe relative POSIX path (or "."): no absolute path, no ``..``, no empty component."""
    if not isinstance(name, str) or not name:
        raise FormatError("resource name is missing")
    if name == ".":
        return name
    if name.startswith("/") or "\\" in name or "\x00" in name:
        raise FormatError(f"resource name {name!r} is not a relative POSIX path")
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise FormatError(f"resource name {name!r} has an empty, '.' or '..' component")
    return name


def subject_digest(digests_hex: Iterable[str]) -> str:
    hasher = hashlib.sha256()
    for digest in digests_hex:
        hasher.update(bytes.fromhex(digest))
    return hasher.hexdigest()


def model_statement(
    model_name: str,
    resources: Sequence[tuple[str, str]],
    *,
    ignore_paths: Sequence[str] = DEFAULT_IGNORE_PATHS,
    allow_symlinks: bool = False,
    modelguard: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The Statement for ``resources`` = (name, sha256 hex) pairs, in any order."""
    ordered = sorted(resources, key=lambda item: oms_order(item[0]))
    names = [check_resource_name(name) for name, _ in ordered]
    if len(set(names)) != len(names):
        raise FormatError("duplicate resource names")
    predicate: dict[str, Any] = {
        "serialization": {
            "method": SERIALIZATION_METHOD,
            "hash_type": RESOURCE_HASH,
            "allow_symlinks": allow_symlinks,
            "ignore_paths": list(ignore_paths),
        },
        "resources": [
            {"name": name, "algorithm": RESOURCE_HASH, "digest": digest} for name, digest in ordered
        ],
    }
    if modelguard is not None:
        predicate["modelguard"] = dict(modelguard)
    return {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": model_name, "digest": {"sha256": subject_digest(d for _, d in ordered)}}
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    }


def _require(mapping: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = mapping.get(key)
    if not isinstance(value, kind):
        raise FormatError(f"{where}.{key} is missing or not a {kind.__name__}")
    return value


def parse_statement(statement: object) -> ParsedStatement:
    """Validate an OMS v1.0 statement; :class:`FormatError` naming the first problem."""
    if not isinstance(statement, Mapping):
        raise FormatError("statement is not a JSON object")
    if statement.get("_type") != STATEMENT_TYPE:
        raise FormatError(
            f"statement _type is {statement.get('_type')!r}, not in-toto {STATEMENT_TYPE}"
        )
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise FormatError(
            f"predicateType is {statement.get('predicateType')!r}, not {PREDICATE_TYPE}"
        )
    subjects = _require(statement, "subject", list, "statement")
    if len(subjects) != 1 or not isinstance(subjects[0], Mapping):
        raise FormatError("statement must have exactly one subject")
    model_name = _require(subjects[0], "name", str, "subject")
    digest = _require(subjects[0], "digest", Mapping, "subject")
    expected_root = digest.get("sha256")
    if not isinstance(expected_root, str) or not _HEX64.fullmatch(expected_root):
        raise FormatError("subject.digest.sha256 is missing or not 64 lowercase hex digits")
    predicate = _require(statement, "predicate", Mapping, "statement")
    serialization = _require(predicate, "serialization", Mapping, "predicate")
    if serialization.get("method") != SERIALIZATION_METHOD:
        raise FormatError(
            f"serialization method {serialization.get('method')!r} is not supported (only 'files')"
        )
    if serialization.get("hash_type") != RESOURCE_HASH:
        raise FormatError(
            f"serialization hash_type {serialization.get('hash_type')!r} is not supported (only sha256)"
        )
    if not isinstance(serialization.get("allow_symlinks", False), bool):
        raise FormatError("serialization.allow_symlinks is not a boolean")
    ignore = serialization.get("ignore_paths", [])
    if not isinstance(ignore, list) or not all(isinstance(p, str) for p in ignore):
        raise FormatError("serialization.ignore_paths is not a list of strings")
    for path in ignore:
        check_resource_name(path.rstrip("/"))
    raw_resources = _require(predicate, "resources", list, "predicate")
    if len(raw_resources) > MAX_RESOURCES:
        raise FormatError(f"more than {MAX_RESOURCES} resources")
    resources = []
    seen: set[str] = set()
    for number, item in enumerate(raw_resources):
        where = f"resources[{number}]"
        if not isinstance(item, Mapping):
            raise FormatError(f"{where} is not an object")
        name = check_resource_name(item.get("name"))
        if name in seen:
            raise FormatError(f"duplicate resource {name!r}")
        seen.add(name)
        if item.get("algorithm") != RESOURCE_HASH:
            raise FormatError(f"{where} algorithm {item.get('algorithm')!r} is not sha256")
        value = item.get("digest")
        if not isinstance(value, str) or not _HEX64.fullmatch(value):
            raise FormatError(f"{where} digest is not 64 lowercase hex digits")
        resources.append(Resource(name=name, algorithm=RESOURCE_HASH, digest=value))
    if "." in seen and len(resources) != 1:
        raise FormatError("resource '.' (a single-file model) must be the only resource")
    # The subject digest covers the resources in the order they are listed (as OMS checks it).
    if subject_digest(r.digest for r in resources) != expected_root:
        raise FormatError("subject digest does not match the listed resources")
    extra = predicate.get("modelguard")
    if extra is not None and not isinstance(extra, Mapping):
        raise FormatError("predicate.modelguard is not an object")
    return ParsedStatement(
        model_name=model_name,
        subject_digest=expected_root,
        serialization=dict(serialization),
        resources=tuple(resources),
        modelguard=dict(extra) if extra is not None else None,
        raw=dict(statement),
    )
