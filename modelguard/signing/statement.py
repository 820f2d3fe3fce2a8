"""in-toto Statement v1 with the OpenSSF Model Signing v1.0 predicate.

>>> from modelguard.signing.statement import model_statement, parse_statement
>>> st = model_statement("m", [("w.bin", "00" * 32)], ignore_paths=["model.sig"])
>>> sorted(st["predicate"])
['resources', 'serialization']
>>> parse_statement(st).resources[0].name
'w.bin'

The subject digest is SHA-256 over the concatenated raw resource digests, resources sorted the
way OpenSSF Model Signing sorts them (as POSIX paths, component by component; shards by path
then offsets), so that ``model_signing verify`` accepts what we sign.

Where modelguard's own data rides (docs/signature.md): the v1.0 predicate allows only
``resources`` and ``serialization``, so the per-layer manifest goes into in-toto Resource
Descriptor ``annotations``, which OMS verifiers must ignore (spec 5.2.1): each file's manifest
record (format, structure digest, tensors) and byte layout on that file's resource (its
first shard in shard mode), and the model-level fields (name, version, parent, signing time,
signer, layer root) on the subject. All of it is inside the one signed payload. Bundles from
earlier modelguard versions carried the same data in a top-level ``predicate.modelguard``
field; :func:`parse_statement` still reads them (deprecation window, docs/signature.md).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modelguard.errors import FormatError
from modelguard.signing.bundle import ParsedBundle, parse_bundle
from modelguard.signing.dsse import load_json_payload
from modelguard.signing.shards import (
    DIGEST_HEX_LENGTH,
    MAX_SHARD_SIZE,
    METHODS,
    OMS_HASHES,
    Serialization,
    parse_shard_name,
    resource_sort_key,
)

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
ANNOTATION = "modelguard"  # the key under a resource descriptor's ``annotations``
EXTENSION_SCHEMA = 2  # 1 was the top-level ``predicate.modelguard`` field
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
_HEX = re.compile(r"[0-9a-f]+")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_SERIALIZATION_FIELDS = {"method", "hash_type", "shard_size", "allow_symlinks", "ignore_paths"}
_STATEMENT_FIELDS = {"_type", "subject", "predicateType", "predicate"}


@dataclass(frozen=True)
class Resource:
    name: str  # POSIX path ("." for a single-file model), or "path:start:end" for a shard
    algorithm: str  # OMS registry name (sha256, blake2b, blake3), even if the bundle said
    #                 "sha256-sharded-N" (model_signing 1.1.1)
    digest: str  # lowercase hex
    path: str = ""  # the file this resource covers (the name itself for whole files)
    start: int | None = None  # byte range of a shard, None for a whole file
    end: int | None = None


@dataclass(frozen=True)
class ParsedStatement:
    model_name: str
    subject_digest: str
    serialization: dict[str, Any]
    resources: tuple[Resource, ...]
    # modelguard's data in one shape whatever its wire placement: schema, tool, tool_version,
    # name, version, parent, signed_at, signer_key_id, manifest (Manifest.to_dict()), layout
    # ({path: segments}, when the model is tiled). None for plain OMS signatures.
    modelguard: dict[str, Any] | None
    raw: dict[str, Any]
    legacy_extension: bool = False  # modelguard data came from the pre-v1.0 predicate field

    @property
    def ignore_paths(self) -> tuple[str, ...]:
        return tuple(self.serialization.get("ignore_paths", ()))

    @property
    def paths(self) -> tuple[str, ...]:
        """The files the resources cover ("." for a single-file model), shards folded, sorted."""
        return tuple(sorted({r.path for r in self.resources}))

    @property
    def method(self) -> str:
        return str(self.serialization["method"])

    @property
    def serialization_spec(self) -> Serialization:
        return Serialization(
            self.method,
            str(self.serialization["hash_type"]),
            self.serialization.get("shard_size"),
        )


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


def _split_resource(name: object, method: str) -> tuple[str, int | None, int | None]:
    if method == "shards":
        path, start, end = parse_shard_name(name)
        return check_resource_name(path), start, end
    return check_resource_name(name), None, None


def _place_extension(
    modelguard: Mapping[str, Any],
    names: Sequence[str],
    method: str,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Split modelguard's data into the subject's annotation and one per carrying resource."""
    model_fields = {k: v for k, v in modelguard.items() if k not in ("manifest", "layout")}
    model_fields["schema"] = EXTENSION_SCHEMA
    manifest = modelguard.get("manifest")
    per_resource: dict[str, dict[str, Any]] = {}
    if manifest is None:
        return model_fields, per_resource
    model_fields["manifest"] = {k: v for k, v in manifest.items() if k != "files"}
    layout = modelguard.get("layout") or {}
    carriers: dict[str, str] = {}  # file path -> the resource that carries its record
    for name in names:
        path, start, _ = _split_resource(name, method)
        if start in (None, 0):
            carriers[path] = name
    records = list(manifest["files"])
    for record in records:
        path = record["path"]
        carrier = carriers.get(path) or (carriers.get(".") if len(records) == 1 else None)
        if carrier is None:
            raise FormatError(f"manifest file {path!r} has no resource to carry its record")
        annotation: dict[str, Any] = {"file": record}
        if path in layout:
            annotation["layout"] = layout[path]
        per_resource[carrier] = annotation
    return model_fields, per_resource


def model_statement(
    model_name: str,
    resources: Sequence[tuple[str, str]],
    *,
    ignore_paths: Sequence[str] = DEFAULT_IGNORE_PATHS,
    allow_symlinks: bool = False,
    modelguard: Mapping[str, Any] | None = None,
    serialization: Serialization | None = None,
) -> dict[str, Any]:
    """The Statement for ``resources`` = (name, hex digest) pairs, in any order.

    ``serialization`` (default: whole files, SHA-256) says what the names and digests are.
    ``modelguard`` (fields, ``manifest``, ``layout``) goes into annotations, never into the
    predicate's top level, so the statement validates against the OMS v1.0 schema.
    """
    spec = serialization or Serialization()
    ordered = sorted(resources, key=lambda item: resource_sort_key(item[0], spec.method))
    names = [name for name, _ in ordered]
    for name in names:
        _split_resource(name, spec.method)
    if len(set(names)) != len(names):
        raise FormatError("duplicate resource names")
    subject: dict[str, Any] = {
        "name": model_name,
        "digest": {"sha256": subject_digest(d for _, d in ordered)},
    }
    per_resource: dict[str, dict[str, Any]] = {}
    if modelguard is not None:
        model_fields, per_resource = _place_extension(modelguard, names, spec.method)
        subject["annotations"] = {ANNOTATION: model_fields}
    descriptors = []
    for name, digest in ordered:
        descriptor: dict[str, Any] = {"name": name, "algorithm": spec.hash_type, "digest": digest}
        if name in per_resource:
            descriptor["annotations"] = {ANNOTATION: per_resource[name]}
        descriptors.append(descriptor)
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [subject],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": {
                **spec.to_predicate(),
                "allow_symlinks": allow_symlinks,
                "ignore_paths": list(ignore_paths),
            },
            "resources": descriptors,
        },
    }
    # Never sign what a reader would refuse (e.g. a file that changed between the manifest
    # pass and the resource pass, so that its record and its shards disagree).
    parse_statement(statement)
    return statement


def _require(mapping: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = mapping.get(key)
    if not isinstance(value, kind):
        raise FormatError(f"{where}.{key} is missing or not a {kind.__name__}")
    return value


def _parse_serialization(serialization: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(serialization) - _SERIALIZATION_FIELDS
    if unknown:
        raise FormatError(f"serialization has unknown fields {sorted(unknown)}")
    method = serialization.get("method")
    if method not in METHODS:
        raise FormatError(f"serialization method {method!r} is not supported ({list(METHODS)})")
    hash_type = serialization.get("hash_type")
    if hash_type not in OMS_HASHES:
        raise FormatError(
            f"serialization hash_type {hash_type!r} is not in the OMS registry {list(OMS_HASHES)}"
        )
    fields = dict(serialization)
    size = serialization.get("shard_size")
    if method == "shards":
        # model_signing 1.1.1 writes the size through a protobuf Struct, as a float (500.0)
        if isinstance(size, float) and size.is_integer():
            size = int(size)
        if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= MAX_SHARD_SIZE:
            raise FormatError("serialization.shard_size is missing or not a positive integer")
        fields["shard_size"] = size
    elif size is not None:
        raise FormatError("serialization.shard_size is only allowed with method 'shards'")
    if not isinstance(serialization.get("allow_symlinks", False), bool):
        raise FormatError("serialization.allow_symlinks is not a boolean")
    ignore = serialization.get("ignore_paths", [])
    if not isinstance(ignore, list) or not all(isinstance(p, str) for p in ignore):
        raise FormatError("serialization.ignore_paths is not a list of strings")
    for path in ignore:
        check_resource_name(path.rstrip("/"))
    return fields


def _parse_resources(raw_resources: list[Any], spec: Serialization) -> list[Resource]:
    if len(raw_resources) > MAX_RESOURCES:
        raise FormatError(f"more than {MAX_RESOURCES} resources")
    resources = []
    seen: set[str] = set()
    width = DIGEST_HEX_LENGTH[spec.hash_type]
    for number, item in enumerate(raw_resources):
        where = f"resources[{number}]"
        if not isinstance(item, Mapping):
            raise FormatError(f"{where} is not an object")
        name = item.get("name")
        path, start, end = _split_resource(name, spec.method)
        assert isinstance(name, str)
        if name in seen:
            raise FormatError(f"duplicate resource {name!r}")
        seen.add(name)
        if not spec.resource_algorithm_ok(item.get("algorithm")):
            raise FormatError(
                f"{where} algorithm {item.get('algorithm')!r} is not the serialization's "
                f"hash_type {spec.hash_type!r}"
            )
        value = item.get("digest")
        if not isinstance(value, str) or len(value) != width or not _HEX.fullmatch(value):
            raise FormatError(f"{where} digest is not {width} lowercase hex digits")
        resources.append(Resource(name, spec.hash_type, value, path, start, end))
    paths = {r.path for r in resources}
    if "." in paths and len(paths) != 1:
        raise FormatError("resource '.' (a single-file model) must be the only resource")
    if spec.method == "shards":
        _check_tiling(resources, spec)
    return resources


def _check_tiling(resources: Sequence[Resource], spec: Serialization) -> None:
    """Every file's shards are ``shard_size`` long (the last one at most), from 0, no holes."""
    assert spec.shard_size is not None
    by_path: dict[str, list[tuple[int, int]]] = {}
    for r in resources:
        assert r.start is not None and r.end is not None
        by_path.setdefault(r.path, []).append((r.start, r.end))
    for path, ranges in by_path.items():
        cursor = 0
        ranges.sort()
        for number, (start, end) in enumerate(ranges):
            last = number == len(ranges) - 1
            length = end - start
            if (
                start != cursor
                or length > spec.shard_size
                or (not last and length != spec.shard_size)
            ):
                raise FormatError(
                    f"shards of {path!r} do not cut the file into {spec.shard_size}-byte pieces"
                )
            cursor = end


def _extension(
    subject: Mapping[str, Any],
    predicate: Mapping[str, Any],
    raw_resources: list[Any],
    resources: Sequence[Resource],
    spec: Serialization,
) -> tuple[dict[str, Any] | None, bool]:
    """modelguard's data from the annotations (or the legacy predicate field), and whether legacy."""
    legacy = predicate.get("modelguard")
    annotations = subject.get("annotations")
    model_fields = annotations.get(ANNOTATION) if isinstance(annotations, Mapping) else None
    carried = []
    for item, resource in zip(raw_resources, resources, strict=True):
        notes = item.get("annotations")
        if isinstance(notes, Mapping) and ANNOTATION in notes:
            carried.append((resource, notes[ANNOTATION]))
    if legacy is not None:
        if model_fields is not None or carried:
            raise FormatError("statement carries modelguard data both in annotations and predicate")
        if not isinstance(legacy, Mapping):
            raise FormatError("predicate.modelguard is not an object")
        return dict(legacy), True
    if model_fields is None:
        if carried:
            raise FormatError("resource annotations without the subject's modelguard annotation")
        return None, False
    if not isinstance(model_fields, Mapping) or model_fields.get("schema") != EXTENSION_SCHEMA:
        raise FormatError(
            f"subject annotation {ANNOTATION!r} is not a schema-{EXTENSION_SCHEMA} object"
        )
    data = {k: v for k, v in model_fields.items() if k != "manifest"}
    head = model_fields.get("manifest")
    if head is None:
        if carried:
            raise FormatError("resource annotations without a manifest in the subject")
        return data, False
    if not isinstance(head, Mapping) or "files" in head:
        raise FormatError("subject annotation manifest is not a manifest header")
    records: dict[str, Any] = {}
    layout: dict[str, Any] = {}
    covered: dict[str, int] = {}
    for r in resources:
        covered[r.path] = covered.get(r.path, 0) + (
            (r.end or 0) - (r.start or 0) if r.start is not None else 0
        )
    for resource, note in carried:
        where = f"annotations of resource {resource.name!r}"
        if not isinstance(note, Mapping) or set(note) - {"file", "layout"}:
            raise FormatError(f"{where} are not a modelguard file record")
        record = note.get("file")
        if not isinstance(record, Mapping) or not isinstance(record.get("path"), str):
            raise FormatError(f"{where} have no file record")
        path = record["path"]
        if resource.start not in (None, 0) or (resource.path not in (path, ".")):
            raise FormatError(f"{where} describe {path!r}, another file")
        if path in records:
            raise FormatError(f"file {path!r} has two manifest records")
        if (
            spec.method == "files"
            and (head.get("file_hash_algorithm") or head.get("hash_algorithm")) == spec.hash_type
            and record.get("digest") != resource.digest
        ):
            raise FormatError(f"manifest record of {path!r} disagrees with its resource digest")
        if spec.method == "shards" and record.get("size") != covered[resource.path]:
            raise FormatError(f"manifest record of {path!r} disagrees with its shards' extent")
        records[path] = record
        if "layout" in note:
            layout[path] = note["layout"]
    if len(records) != len({r.path for r in resources}):
        raise FormatError("not every signed file has a manifest record in its annotations")
    data["manifest"] = {**head, "files": [records[p] for p in sorted(records)]}
    if layout:
        data["layout"] = layout
    return data, False


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
    if set(statement) - _STATEMENT_FIELDS:
        raise FormatError(
            f"statement has unknown fields {sorted(set(statement) - _STATEMENT_FIELDS)}"
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
    unknown = set(predicate) - {"resources", "serialization", "modelguard"}
    if unknown:
        raise FormatError(f"predicate has unknown fields {sorted(unknown)}")
    serialization = _parse_serialization(_require(predicate, "serialization", Mapping, "predicate"))
    spec = Serialization(
        serialization["method"], serialization["hash_type"], serialization.get("shard_size")
    )
    raw_resources = _require(predicate, "resources", list, "predicate")
    resources = _parse_resources(raw_resources, spec)
    # The subject digest covers the resources in the order they are listed (as OMS checks it).
    if subject_digest(r.digest for r in resources) != expected_root:
        raise FormatError("subject digest does not match the listed resources")
    extra, legacy = _extension(subjects[0], predicate, raw_resources, resources, spec)
    return ParsedStatement(
        model_name=model_name,
        subject_digest=expected_root,
        serialization=serialization,
        resources=tuple(resources),
        modelguard=extra,
        raw=dict(statement),
        legacy_extension=legacy,
    )


def parse_oms_bundle(document: object) -> tuple[ParsedBundle, ParsedStatement]:
    """A bundle and the OMS statement it claims, checked for shape only (not yet verified).

    Refuses malformed bundles and payloads up front (exit 2) whoever signed them; the
    signature is checked afterwards with :func:`modelguard.signing.envelope.verify_bundle`.
    """
    parsed = parse_bundle(document)
    return parsed, parse_statement(load_json_payload(parsed.envelope.payload))
