"""Deployment policy (TOML): who may sign, how many must, what is revoked, what is too old.

>>> from modelguard.policy import parse_policy
>>> p = parse_policy({"threshold": 1, "signers": []}, source="inline")
Traceback (most recent call last):
...
modelguard.errors.BadInputError: inline: policy needs at least one [[signers]] entry

A policy file (see docs/policy.md)::

    version = 1
    threshold = 2                      # k distinct trusted keys must have signed
    max_signature_age = "90d"          # s, m, h, d suffixes, or an integer of seconds
    allowed_hash_algorithms = ["sha256"]
    model_name = "^digits-[a-z0-9-]+$" # a regex the signed model name must fully match
    revoked_key_ids = ["<hex sha256 of SPKI DER>"]

    [[signers]]
    name = "release-bot"
    public_key = "keys/release-bot.pub"   # relative to the policy file
    [[signers]]
    name = "alice"
    public_key_pem = "-----BEGIN PUBLIC KEY-----\\n..."

    [certificate]                      # checked by the certificate check (PolicyChecks)
    min_robust_accuracy = 0.80
    epsilon = 0.1
    norm = "linf"

    [ledger]                           # used by verify/run --require-ledger
    key = "keys/ledger.note.pub"       # the ledger's checkpoint (note) public key, or a list
    state = "ledger-state"             # where the gate keeps the last checkpoint it accepted
    witnesses = ["keys/w1.pub", "keys/w2.pub"]  # witness cosignature keys (files or vkeys)
    witness_quorum = 2                 # a checkpoint needs this many valid cosignatures
    max_cosignature_age = "24h"        # ... each at most this old (default 24h; as max_signature_age)
    [audit.poisoning]                  # checked by the audit check (docs/audits.md)
    max_issue_rate = 0.05
    [audit.membership]
    max_auc = 0.6
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from ledger.witness import DEFAULT_MAX_COSIGNATURE_AGE
from modelguard.audit import is_verifier_key_string
from modelguard.errors import BadInputError
from modelguard.hashing import HASH_ALGORITHMS
from modelguard.keys import PublicKey, key_id, load_public_key, load_public_key_pem
from modelguard.safeio import MAX_POLICY_BYTES, read_regular

POLICY_VERSION = 1
_TOP_KEYS = {
    "version",
    "threshold",
    "max_signature_age",
    "allowed_hash_algorithms",
    "model_name",
    "revoked_key_ids",
    "signers",
    "certificate",
    "ledger",
    "audit",
}
_LEDGER_KEYS = {"key", "state", "witnesses", "witness_quorum", "max_cosignature_age"}
_SIGNER_KEYS = {"name", "public_key", "public_key_pem"}
_CERTIFICATE_KEYS = {"min_robust_accuracy", "epsilon", "norm", "required", "estimate"}
_AGE = re.compile(r"(\d+)\s*([smhd]?)")
_AGE_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class TrustedSigner:
    name: str
    public_key: PublicKey
    key_id: str


@dataclass(frozen=True)
class CertificateRequirement:
    """Minimum worst-case robust accuracy at ``epsilon`` (``norm``) a certificate must show."""

    min_robust_accuracy: float
    epsilon: float
    norm: str = "linf"
    required: bool = True
    # "lower_bound": the 95% Clopper-Pearson lower bound must clear the threshold; "point": the
    # measured fraction must.
    estimate: str = "lower_bound"

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_robust_accuracy": self.min_robust_accuracy,
            "epsilon": self.epsilon,
            "norm": self.norm,
            "required": self.required,
            "estimate": self.estimate,
        }


class CertificateCheck(Protocol):
    """(requirement, model path, signature path, the policy's trusted keys) -> failure reasons;
    empty = satisfied. ``model_root``: the layer root of the bytes that verified, which the
    certificate must be bound to (the check never re-reads the model when it is given)."""

    def __call__(
        self,
        requirement: CertificateRequirement,
        model: Path,
        signature: Path,
        trusted: Sequence[PublicKey],
        /,
        *,
        model_root: str | None = None,
    ) -> list[str]: ...


@dataclass(frozen=True)
class LedgerTrust:
    """What the ledger gate trusts: checkpoint (note) keys, and where it keeps its state.

    ``keys``: key files (``<name>.pub`` from ``ledger init``) or verifier key strings
    (``<name>+<hex id>+<base64>``). ``state``: the directory of the gate's trust state
    (None: ``$MODELGUARD_LEDGER_STATE``, else the user's config directory).
    """

    keys: tuple[str, ...] = ()
    state: Path | None = None
    witnesses: tuple[str, ...] = ()  # witness keys (files or vkeys), for witness_quorum
    witness_quorum: int = 0  # valid witness cosignatures a checkpoint needs
    max_cosignature_age: int = DEFAULT_MAX_COSIGNATURE_AGE  # seconds; older ones do not count

    def to_dict(self) -> dict[str, Any]:
        return {
            "keys": list(self.keys),
            "state": str(self.state) if self.state else None,
            "witnesses": list(self.witnesses),
            "witness_quorum": self.witness_quorum,
            "max_cosignature_age_s": self.max_cosignature_age,
        }


@dataclass(frozen=True)
class AuditRequirement:
    """One ``[audit.NAME]`` table: the model's signed NAME audit must stay under ``limit``."""

    audit: str  # "poisoning" | "membership"
    metric: str  # "issue_rate" | "auc"
    limit: float
    required: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "audit": self.audit,
            f"max_{self.metric}": self.limit,
            "required": self.required,
        }


class AuditCheck(Protocol):
    """(requirement, model path, the policy's trusted keys) -> failure reasons; empty =
    satisfied. ``model_root``: the layer root of the bytes that verified, which the
    attestation must be bound to (None: nothing verified, so the check fails)."""

    def __call__(
        self,
        requirement: AuditRequirement,
        model: Path,
        trusted: Sequence[PublicKey],
        /,
        *,
        model_root: str | None = None,
    ) -> list[str]: ...


_AUDIT_LIMITS = {"poisoning": "issue_rate", "membership": "auc"}


@dataclass(frozen=True)
class PolicyChecks:
    """The checks behind a policy's ``[certificate]`` and ``[audit.*]`` tables, handed to
    ``verify_model`` by whoever composes verification (the CLI, ``open_session``'s caller,
    hardening): signing and policy never import robustness or audits themselves.

    A policy that requires a certificate or an audit fails closed when its check is None.
    ``modelguard.gates.STANDARD_CHECKS`` holds modelguard's own (loaded on first use, so the
    slim verify path imports no torch).
    """

    certificate: CertificateCheck | None = None
    audit: AuditCheck | None = None


NO_CHECKS = PolicyChecks()


def _audits(table: object, source: str) -> tuple[AuditRequirement, ...]:
    if not isinstance(table, Mapping) or set(table) - set(_AUDIT_LIMITS):
        raise _fail(f"[audit] holds only the tables {sorted(_AUDIT_LIMITS)}", source)
    out = []
    for audit, entry in table.items():
        metric = _AUDIT_LIMITS[audit]
        if not isinstance(entry, Mapping) or set(entry) - {f"max_{metric}", "required"}:
            raise _fail(f"[audit.{audit}] takes max_{metric} and required", source)
        limit, required = entry.get(f"max_{metric}"), entry.get("required", True)
        if not isinstance(limit, int | float) or isinstance(limit, bool) or not 0 <= limit <= 1:
            raise _fail(f"[audit.{audit}] max_{metric} must be a number in [0, 1]", source)
        if not isinstance(required, bool):
            raise _fail(f"[audit.{audit}] required must be true or false", source)
        out.append(AuditRequirement(audit, metric, float(limit), required))
    return tuple(out)


@dataclass(frozen=True)
class Policy:
    signers: tuple[TrustedSigner, ...]
    threshold: int = 1
    revoked_key_ids: frozenset[str] = frozenset()
    max_signature_age_s: int | None = None
    allowed_hash_algorithms: tuple[str, ...] = ("sha256", "blake3")  # signatures: docs/signature.md
    model_name_pattern: str | None = None
    certificate: CertificateRequirement | None = None
    ledger: LedgerTrust | None = None
    source: str = "<policy>"
    audits: tuple[AuditRequirement, ...] = ()

    @property
    def trusted_keys(self) -> list[PublicKey]:
        return [s.public_key for s in self.signers if s.key_id not in self.revoked_key_ids]

    def signer_name(self, kid: str) -> str | None:
        return next((s.name for s in self.signers if s.key_id == kid), None)

    def name_allowed(self, model_name: str | None) -> bool:
        if self.model_name_pattern is None:
            return True
        return (
            model_name is not None and re.fullmatch(self.model_name_pattern, model_name) is not None
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "signers": [{"name": s.name, "key_id": s.key_id} for s in self.signers],
            "threshold": self.threshold,
            "revoked_key_ids": sorted(self.revoked_key_ids),
            "max_signature_age_s": self.max_signature_age_s,
            "allowed_hash_algorithms": list(self.allowed_hash_algorithms),
            "model_name": self.model_name_pattern,
            "certificate": self.certificate.to_dict() if self.certificate else None,
            "ledger": self.ledger.to_dict() if self.ledger else None,
            "audit": [a.to_dict() for a in self.audits],
        }


def parse_age(value: object, source: str, key: str = "max_signature_age") -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        match = _AGE.fullmatch(value.strip())
        if match and int(match.group(1)) > 0:
            return int(match.group(1)) * _AGE_UNITS[match.group(2)]
    raise BadInputError(f"{key} {value!r} is not like 3600, '90m', '12h' or '30d'", path=source)


def _fail(message: str, source: str) -> BadInputError:
    return BadInputError(message, path=source)


def _signer(entry: object, base: Path | None, source: str) -> TrustedSigner:
    if not isinstance(entry, Mapping):
        raise _fail("each [[signers]] entry must be a table", source)
    unknown = set(entry) - _SIGNER_KEYS
    if unknown:
        raise _fail(f"[[signers]] has unknown keys {sorted(unknown)}", source)
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise _fail("[[signers]] entry needs a name", source)
    has_path, has_pem = "public_key" in entry, "public_key_pem" in entry
    if has_path == has_pem:
        raise _fail(
            f"signer {name!r} needs exactly one of public_key (path) or public_key_pem", source
        )
    if has_pem:
        pem = entry["public_key_pem"]
        if not isinstance(pem, str):
            raise _fail(f"signer {name!r}: public_key_pem must be a string", source)
        key = load_public_key_pem(pem.encode(), source=f"{source} (signer {name})")
    else:
        raw = entry["public_key"]
        if not isinstance(raw, str):
            raise _fail(f"signer {name!r}: public_key must be a path string", source)
        path = Path(raw).expanduser()
        if not path.is_absolute() and base is not None:
            path = base / path
        key = load_public_key(path)
    return TrustedSigner(name=name, public_key=key, key_id=key_id(key))


def _certificate(table: object, source: str) -> CertificateRequirement:
    if not isinstance(table, Mapping):
        raise _fail("[certificate] must be a table", source)
    unknown = set(table) - _CERTIFICATE_KEYS
    if unknown:
        raise _fail(f"[certificate] has unknown keys {sorted(unknown)}", source)
    accuracy, epsilon = table.get("min_robust_accuracy"), table.get("epsilon")
    if (
        not isinstance(accuracy, int | float)
        or isinstance(accuracy, bool)
        or not 0 <= accuracy <= 1
    ):
        raise _fail("[certificate] min_robust_accuracy must be a number in [0, 1]", source)
    if not isinstance(epsilon, int | float) or isinstance(epsilon, bool) or epsilon < 0:
        raise _fail("[certificate] epsilon must be a number >= 0", source)
    norm = table.get("norm", "linf")
    if norm not in ("linf", "l2"):
        raise _fail("[certificate] norm must be 'linf' or 'l2'", source)
    required = table.get("required", True)
    if not isinstance(required, bool):
        raise _fail("[certificate] required must be true or false", source)
    estimate = table.get("estimate", "lower_bound")
    if estimate not in ("lower_bound", "point"):
        raise _fail("[certificate] estimate must be 'lower_bound' or 'point'", source)
    return CertificateRequirement(float(accuracy), float(epsilon), norm, required, estimate)


def _resolve(value: str, base: Path | None) -> str:
    """A relative path is relative to the policy file; a verifier key string stays as is."""
    if is_verifier_key_string(value):
        return value
    path = Path(value).expanduser()
    return str(base / path if base is not None and not path.is_absolute() else path)


def _ledger(table: object, base: Path | None, source: str) -> LedgerTrust:
    if not isinstance(table, Mapping):
        raise _fail("[ledger] must be a table", source)
    unknown = set(table) - _LEDGER_KEYS
    if unknown:
        raise _fail(f"[ledger] has unknown keys {sorted(unknown)}", source)
    raw = table.get("key", [])
    keys = [raw] if isinstance(raw, str) else raw
    if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
        raise _fail("[ledger] key must be a key file path, a verifier key, or a list", source)
    state = table.get("state")
    if state is not None and (not isinstance(state, str) or not state):
        raise _fail("[ledger] state must be a directory path", source)
    witnesses = table.get("witnesses", [])
    if not isinstance(witnesses, list) or not all(isinstance(w, str) and w for w in witnesses):
        raise _fail("[ledger] witnesses must be a list of witness key files or keys", source)
    quorum = table.get("witness_quorum", len(witnesses))
    if not isinstance(quorum, int) or isinstance(quorum, bool) or not 0 <= quorum <= len(witnesses):
        raise _fail(f"[ledger] witness_quorum must be an integer 0..{len(witnesses)}", source)
    max_age = table.get("max_cosignature_age", DEFAULT_MAX_COSIGNATURE_AGE)
    return LedgerTrust(
        keys=tuple(_resolve(k, base) for k in keys),
        state=Path(_resolve(state, base)) if state else None,
        witnesses=tuple(_resolve(w, base) for w in witnesses),
        witness_quorum=quorum,
        max_cosignature_age=parse_age(max_age, source, "[ledger] max_cosignature_age"),
    )


def with_ledger_trust(
    policy: Policy, keys: Sequence[str | Path] = (), state: Path | None = None
) -> Policy:
    """``policy`` with the command line's ``--ledger-key``/``--ledger-state`` taking precedence."""
    if not keys and state is None:
        return policy
    current = policy.ledger or LedgerTrust()
    return replace(
        policy,
        ledger=replace(
            current, keys=tuple(str(k) for k in keys) or current.keys, state=state or current.state
        ),
    )


def parse_policy(data: Mapping[str, Any], *, source: str, base: Path | None = None) -> Policy:
    """Validate a parsed TOML document; :class:`BadInputError` naming the first problem."""
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise _fail(f"unknown policy keys {sorted(unknown)}", source)
    if data.get("version", POLICY_VERSION) != POLICY_VERSION:
        raise _fail(
            f"policy version {data.get('version')!r} is not supported (only {POLICY_VERSION})",
            source,
        )
    raw_signers = data.get("signers", [])
    if not isinstance(raw_signers, list) or not raw_signers:
        raise _fail("policy needs at least one [[signers]] entry", source)
    signers = [_signer(entry, base, source) for entry in raw_signers]
    ids = [s.key_id for s in signers]
    if len(set(ids)) != len(ids):
        raise _fail("the same public key is listed for two signers", source)
    names = [s.name for s in signers]
    if len(set(names)) != len(names):
        raise _fail("two signers share a name", source)
    revoked = data.get("revoked_key_ids", [])
    if not isinstance(revoked, list) or not all(
        isinstance(r, str) and _HEX64.fullmatch(r) for r in revoked
    ):
        raise _fail("revoked_key_ids must be a list of 64-hex-digit key ids", source)
    threshold = data.get("threshold", 1)
    usable = len(set(ids) - set(revoked))
    if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 1:
        raise _fail("threshold must be an integer >= 1", source)
    if threshold > usable:
        raise _fail(
            f"threshold {threshold} exceeds the {usable} trusted, unrevoked signers", source
        )
    algorithms = data.get("allowed_hash_algorithms", ["sha256", "blake3"])
    if (
        not isinstance(algorithms, list)
        or not algorithms
        or not all(a in HASH_ALGORITHMS for a in algorithms)
    ):
        raise _fail(
            f"allowed_hash_algorithms must be a non-empty list from {list(HASH_ALGORITHMS)}", source
        )
    pattern = data.get("model_name")
    if pattern is not None:
        if not isinstance(pattern, str):
            raise _fail("model_name must be a regular expression string", source)
        try:
            re.compile(pattern)
        except re.error as error:
            raise _fail(f"model_name is not a valid regex: {error}", source) from None
    age = data.get("max_signature_age")
    return Policy(
        signers=tuple(signers),
        threshold=threshold,
        revoked_key_ids=frozenset(revoked),
        max_signature_age_s=parse_age(age, source) if age is not None else None,
        allowed_hash_algorithms=tuple(algorithms),
        model_name_pattern=pattern,
        certificate=_certificate(data["certificate"], source) if "certificate" in data else None,
        ledger=_ledger(data["ledger"], base, source) if "ledger" in data else None,
        source=source,
        audits=_audits(data["audit"], source) if "audit" in data else (),
    )


def load_policy(path: Path) -> Policy:
    """Read and validate a TOML policy file."""
    data = read_regular(path, max_size=MAX_POLICY_BYTES, what="policy file")
    return parse_policy(parse_policy_toml(data, str(path)), source=str(path), base=path.parent)


def parse_policy_toml(data: bytes, source: str) -> dict[str, Any]:
    """Policy bytes -> TOML document; BadInputError (exit 2) for anything malformed."""
    if len(data) > MAX_POLICY_BYTES:
        raise _fail(f"policy is more than {MAX_POLICY_BYTES} bytes", source)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _fail("policy is not UTF-8 text", source) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise _fail(f"policy is not valid TOML: {error}", source) from None
    except RecursionError:
        raise _fail("policy is nested too deeply", source) from None


def policy_from_keys(keys: Sequence[PublicKey]) -> Policy:
    """The implicit policy of ``verify --key A --key B``: every given key must have signed."""
    signers = tuple(
        TrustedSigner(name=f"key {key_id(k)[:16]}", public_key=k, key_id=key_id(k)) for k in keys
    )
    unique = len({s.key_id for s in signers})
    if unique != len(signers):
        raise BadInputError("the same public key was given twice")
    return Policy(signers=signers, threshold=len(signers), source="--key")
