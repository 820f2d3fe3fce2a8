"""What verification found: checks, signers, the report and the model that verified.

Plain data shared by :mod:`modelguard.signing.verify` (which fills them),
:mod:`modelguard.signing.gate` (policy checks add to the report), the CLI and the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelguard.errors import (
    DigestMismatchError,
    LedgerVerificationError,
    PolicyError,
    RevokedError,
    SignatureError,
    VerificationError,
)
from modelguard.formats import ModelFiles
from modelguard.manifest import (
    Manifest,
)

_KIND_ERRORS: dict[str, type[VerificationError]] = {
    "signature": SignatureError,
    "digest": DigestMismatchError,
    "policy": PolicyError,
    "revoked": RevokedError,
    "ledger": LedgerVerificationError,
}


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    kind: str = "signature"

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "detail": self.detail, "kind": self.kind}


@dataclass
class SignerResult:
    signature: str
    status: str  # verified | untrusted | invalid | revoked
    key_id: str | None = None
    name: str | None = None
    signed_at: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    layer_detail: bool = False
    reason: str | None = None
    payload_digest: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class VerificationReport:
    model: str
    signature: str
    signers: list[SignerResult] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    manifest: Manifest | None = None
    subject_digest: str | None = None
    layer_detail: bool = False
    ledger: dict[str, Any] | None = None
    # the tensors checked when verification was partial (verify --tensors); None: every byte
    partial: list[str] | None = None

    @property
    def failures(self) -> list[str]:
        return [c.detail for c in self.checks if not c.ok]

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def check(self, name: str, ok: bool, detail: str, kind: str = "signature") -> None:
        self.checks.append(Check(name, ok, detail, kind))

    def error(self) -> VerificationError | None:
        """The typed error for the first failed check (None when everything passed)."""
        failed = [c for c in self.checks if not c.ok]
        if not failed and self.ok:
            return None
        if not failed:
            return SignatureError("nothing was verified", path=self.model)
        # The most specific failure first: a named tensor or structure beats a file digest.
        first = next((c for c in failed if c.name == "layers"), failed[0])
        more = f" (+{len(failed) - 1} more)" if len(failed) > 1 else ""
        return _KIND_ERRORS.get(first.kind, VerificationError)(
            first.detail + more, path=self.model, details={"failures": self.failures}
        )

    def raise_if_failed(self) -> None:
        error = self.error()
        if error is not None:
            raise error

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "model": self.model,
            "signature": self.signature,
            "subject_digest": self.subject_digest,
            "layer_root": self.manifest.layer_root if self.manifest else None,
            "layer_detail": self.layer_detail,
            "signers": [s.to_dict() for s in self.signers],
            "checks": [c.to_dict() for c in self.checks],
            "failures": self.failures,
            "ledger": self.ledger,
            "partial_tensors": self.partial,
        }


@dataclass
class VerifiedModel:
    """A model that verified, holding the buffers that were checked: the only bytes to use.

    ``files`` are the model's files as read once for verification (private copies when asked
    for): ONNX Runtime, the decryptor and the certificate gate take their bytes from here and
    never re-open a path.
    """

    path: Path
    report: VerificationReport
    files: ModelFiles

    @property
    def manifest(self) -> Manifest | None:
        return self.report.manifest
