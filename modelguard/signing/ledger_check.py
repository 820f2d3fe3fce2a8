"""``verify --require-ledger``: the signature's sign entry, its inclusion proof, revocations, rollback.

    report = verify_model(path, keys=[pub], ledger_url="sqlite:///l.db", require_ledger=True)

Each verified signature must have a ``sign`` entry (looked up by the SHA-256 of the bundle
file) whose inclusion proof checks against a signed checkpoint (``audit.check_inclusion``);
neither the model digest, the layer root, the bundle nor the signing key may be revoked; and a
named, versioned model may not be older than the newest version in the ledger.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from modelguard.audit import (
    check_inclusion,
    compare_versions,
    find_sign_entry,
    newest_version,
    resolve_ledger_url,
    revocation_for,
)
from modelguard.errors import ModelGuardError
from modelguard.manifest import Manifest

if TYPE_CHECKING:
    from modelguard.signing.model import SignerResult, VerificationReport


def check_ledger(
    report: VerificationReport,
    signed: Sequence[tuple[str, SignerResult, str, Manifest | None]],
    *,
    ledger_url: str | None,
    allow_rollback: bool,
) -> None:
    """Add ledger checks to ``report`` for each (payload digest, signer, subject digest, manifest)."""
    url = resolve_ledger_url(ledger_url)
    summary: dict[str, Any] = {"url": url, "entries": []}
    report.ledger = summary
    if not signed:
        report.check("ledger", False, "no verified signature to look up in the ledger", "ledger")
        return
    for payload_digest, signer, subject_digest, manifest in signed:
        who = f"signer {signer.name or (signer.key_id or '')[:16]}"
        entry = find_sign_entry(payload_digest, url)
        if entry is None:
            report.check(
                "ledger",
                False,
                f"{who}: no sign entry for {payload_digest} in the ledger",
                "ledger",
            )
            continue
        try:
            proof = check_inclusion(entry, url)
        except ModelGuardError as error:
            report.check(
                "ledger",
                False,
                f"{who}: inclusion proof for entry {entry.index} fails: {error}",
                "ledger",
            )
            continue
        summary["entries"].append(
            {"index": entry.index, "payload_digest": payload_digest, "tree_size": proof.tree_size}
        )
        report.check(
            "ledger",
            True,
            f"{who}: sign entry {entry.index} is in the ledger (inclusion proof to a signed checkpoint of size {proof.tree_size})",
            "ledger",
        )
        targets = [subject_digest, payload_digest]
        if manifest is not None:
            targets.append(manifest.layer_root)
        if signer.key_id:
            targets.append(signer.key_id)
        revoked = [(t, r) for t in targets if (r := revocation_for(t, url)) is not None]
        for target, revocation in revoked:
            reason = revocation.details.get("reason", "")
            report.check(
                "revocation",
                False,
                f"{who}: {target} was revoked in ledger entry {revocation.index}: {reason}",
                "revoked",
            )
        if not revoked:
            report.check(
                "revocation", True, f"{who}: neither the model nor the key is revoked", "revoked"
            )
        name, version = signer.model_name, signer.model_version
        if name and version:
            newest = newest_version(name, url)
            if newest is not None and compare_versions(version, newest) < 0 and not allow_rollback:
                report.check(
                    "rollback",
                    False,
                    f"{who}: {name} {version} is older than ledgered version {newest} (rollback; --allow-rollback accepts it)",
                    "policy",
                )
            else:
                report.check(
                    "rollback",
                    True,
                    f"{who}: {name} {version} is not older than the newest ledgered version ({newest})",
                    "policy",
                )
