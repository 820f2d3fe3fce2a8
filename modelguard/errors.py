"""Typed errors, mapped to exit codes in exactly one place (``modelguard.cli.main``).

>>> from modelguard.errors import FormatError
>>> FormatError("truncated header", path="model.safetensors").exit_code
2

Exit codes: 0 success; 1 verification failed or policy refused; 2 bad usage or bad
input (unreadable, malformed, unsafe file); 3 unexpected internal error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

EXIT_OK = 0
EXIT_VERIFICATION_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3


class ModelGuardError(Exception):
    """Base of every error modelguard raises on purpose."""

    exit_code = EXIT_INTERNAL

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        self.message = message
        self.path = path
        self.details: dict[str, Any] = dict(details or {})
        super().__init__(f"{path}: {message}" if path else message)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": type(self).__name__, "message": str(self)}
        if self.path:
            out["path"] = self.path
        if self.details:
            out["details"] = self.details
        return out


class BadInputError(ModelGuardError):
    """Bad usage or bad input: unreadable, malformed or unsafe. Exit code 2."""

    exit_code = EXIT_BAD_INPUT


class FormatError(BadInputError):
    """A file is malformed, truncated, or not in the format it claims."""


class UnsafeModelError(BadInputError):
    """A file would execute code or escape its directory if loaded; it was refused."""


class KeyFileError(BadInputError):
    """A key file is unreadable, of the wrong algorithm, or the passphrase is wrong."""


class VerificationError(ModelGuardError):
    """Verification failed or a policy refused. Exit code 1."""

    exit_code = EXIT_VERIFICATION_FAILED


class SignatureError(VerificationError):
    """A signature does not verify, or no trusted signer signed."""


class DigestMismatchError(VerificationError):
    """A file, tensor or structure digest differs from the signed one."""


class PolicyError(VerificationError):
    """A policy refused an otherwise valid artifact."""


class RevokedError(PolicyError):
    """A model digest or signing key has been revoked."""


class LedgerVerificationError(VerificationError):
    """The ledger is inconsistent, or a required ledger entry is missing."""


class DecryptionError(VerificationError):
    """Authenticated decryption failed: wrong key, or the ciphertext was altered."""


class InternalError(ModelGuardError):
    """A bug: an invariant that should hold did not. Exit code 3."""
