"""The whole pipeline on the embedded default (scikit-learn's bundled digits), end to end.

>>> from modelguard.demo import run_demo
>>> summary = run_demo("build/demo")          # doctest: +SKIP

Each stage prints what it did in a line or two a newcomer can follow, and records its
figures in the summary (``modelguard demo --json`` prints it).
"""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from modelguard import audit, zoo
from modelguard.formats import parse_model_file
from modelguard.gates import STANDARD_CHECKS
from modelguard.keys import (
    generate_encryption_key,
    generate_key,
    key_id,
    load_private_key,
    load_public_key,
    public_pem,
    write_keypair,
)
from modelguard.manifest import build_manifest
from modelguard.modelcard import accuracy, export_model_dir, seed_everything, train_classifier
from modelguard.policy import Policy, policy_from_keys, with_ledger_trust
from modelguard.robustness.data import digits_split
from modelguard.signing.files import signed_manifest
from modelguard.signing.sign import sign_model
from modelguard.signing.verify import verify_model

DEMO_SEED = 0


@dataclass
class DemoContext:
    workdir: Path
    console: Console
    summary: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)  # keys and objects later stages reuse

    step: int = 0

    def heading(self, title: str) -> str:
        """The next stage's numbered heading, e.g. ``"3. Sign"``."""
        self.step += 1
        return f"[bold]{self.step}. {title}[/]"

    def say(self, message: str) -> None:
        self.console.print(message)

    def path(self, *parts: str) -> Path:
        return self.workdir.joinpath(*parts)

    @property
    def ledger_url(self) -> str:
        return f"sqlite:///{self.path('ledger', 'ledger.db')}"

    def gate_policy(self, public: Any) -> Policy:
        """Trust ``public`` for signatures and the ledger's note key for its checkpoints."""
        return with_ledger_trust(
            policy_from_keys([public]),
            [str(audit.note_public_key_path(self.ledger_url))],
            self.path("ledger-state"),
        )


def stage_train(ctx: DemoContext) -> None:
    train, test = digits_split(DEMO_SEED)
    started = time.perf_counter()
    seed_everything(DEMO_SEED)  # before construction: the initial weights come from the seed too
    model = train_classifier(zoo.digits_cnn(), train, epochs=15, seed=DEMO_SEED)
    seconds = time.perf_counter() - started
    clean = accuracy(model, test)
    export_model_dir(
        model,
        ctx.path("model"),
        factory="modelguard.zoo:digits_cnn",
        input_shape=(1, 8, 8),
        classes=train.classes,
        name="digits-cnn",
        version="1",
    )
    ctx.summary["train"] = {
        "train_examples": len(train),
        "test_examples": len(test),
        "test_accuracy": clean,
        "seconds": round(seconds, 2),
        "model_dir": str(ctx.path("model")),
    }
    ctx.say(
        f"{ctx.heading('Train')} a small CNN on {len(train)} bundled digits in {seconds:.1f} s: "
        f"test accuracy {clean:.1%}; exported to {ctx.path('model')} "
        "(model.onnx, model.safetensors, modelguard.json)"
    )


def stage_card(ctx: DemoContext) -> None:
    """What `modelguard card` does for your own architecture, on the demo's model."""
    from modelguard.modelcard import write_card

    normalization = {"mean": [zoo.DIGITS_MEAN], "std": [zoo.DIGITS_STD]}
    result = write_card(ctx.path("model"), factory="modelguard.zoo:digits_cnn",
                        input_shape=(1, 8, 8), normalization=normalization,
                        name="digits-cnn", version="1", force=True)  # fmt: skip
    ctx.summary["card"] = result.to_dict()
    ctx.say(
        f"{ctx.heading('Model card')} rewritten the way `modelguard card` does for your own "
        f"model: weights load strictly into {result.card.factory}, model.onnx computes the same "
        f"logits (max |diff| {result.parity_max_abs_diff:.1g}), inputs in {result.card.input_range} "
        f"normalized inside the model (mean {zoo.DIGITS_MEAN}, std {zoo.DIGITS_STD}); see "
        "docs/modelcard.md"
    )


def stage_manifest(ctx: DemoContext) -> None:
    manifest = build_manifest(ctx.path("model"))
    tensors = sum(len(f.tensors) for f in manifest.files)
    ctx.summary["manifest"] = {
        "files": len(manifest.files),
        "tensors": tensors,
        "layer_root": manifest.layer_root,
    }
    ctx.say(
        f"{ctx.heading('Manifest')}: {len(manifest.files)} files, {tensors} tensors hashed one by one "
        f"(sha256); layer Merkle root {manifest.layer_root[:16]}..."
    )


def flip_one_weight_byte(model_dir: Path, file_name: str) -> str:
    """Flip one byte inside the largest tensor of ``file_name``; return the tensor's name."""
    path = model_dir / file_name
    parsed = parse_model_file(path, root=model_dir)
    assert parsed is not None
    target = max(parsed.tensors, key=lambda t: t.nbytes)
    assert target.location is not None
    _, offset, length = target.location
    data = bytearray(path.read_bytes())
    data[offset + length // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return target.name


def stage_sign(ctx: DemoContext) -> None:
    passphrase = secrets.token_urlsafe(16).encode()  # throwaway; keys stay encrypted at rest
    priv, pub = write_keypair(ctx.path("keys"), "demo", generate_key("ecdsa-p256"), passphrase)
    key = load_private_key(priv, passphrase)
    public = load_public_key(pub)
    ctx.artifacts.update(signing_key=key, public_key=public, passphrase=passphrase, key_path=priv)
    ctx.summary["keys"] = {"private": str(priv), "public": str(pub), "key_id": key_id(public)}
    signed = sign_model(
        ctx.path("model"), key, name="digits-cnn", version="1", ledger_url=ctx.ledger_url
    )
    report = verify_model(
        ctx.path("model"),
        policy=ctx.gate_policy(public),
        ledger_url=ctx.ledger_url,
        require_ledger=True,
    )
    tampered = ctx.path("tampered-model")
    shutil.copytree(ctx.path("model"), tampered)
    tensor = flip_one_weight_byte(tampered, "model.safetensors")
    bad = verify_model(tampered, keys=[public])
    ctx.summary["sign"] = {
        "signature": str(signed.signature_path),
        "key_id": signed.key_id,
        "verified": report.ok,
        "tampered_verified": bad.ok,
        "tampered_failures": bad.failures,
    }
    ctx.say(
        f"{ctx.heading('Sign')} with a throwaway ECDSA P-256 key ({signed.key_id[:12]}...): "
        f"{signed.signature_path.name} is an OpenSSF Model Signing bundle; "
        f"verify -> {'[green]ok[/]' if report.ok else '[red]FAILED[/]'}"
    )
    named = next((f for f in bad.failures if "tensor '" in f), "; ".join(bad.failures))
    ctx.say(
        f"   flipped one byte of tensor {tensor!r} in a copy: verify -> "
        f"{'[red]FAILED[/]' if not bad.ok else 'ok (unexpected!)'}: {named}"
    )
    # Partial verification (issue 15): only the named tensor plus every non-tensor byte, the
    # tensor proven against the signed layer root; the flipped tensor is still caught.
    partial = verify_model(tampered, keys=[public], tensors=[tensor])
    signed_files = report.manifest.files if report.manifest is not None else []
    others = [t.name for f in signed_files for t in f.tensors if t.name != tensor]
    untouched = verify_model(tampered, keys=[public], tensors=[others[0]]) if others else None
    ctx.summary["sign"]["partial"] = {
        "tensor": tensor,
        "verified": partial.ok,
        "other_tensor_verified": untouched.ok if untouched is not None else None,
    }
    ctx.say(
        f"   verify --tensors {tensor}: {'ok (unexpected!)' if partial.ok else '[red]FAILED[/]'}"
        + (
            f"; --tensors {others[0]} (untouched): "
            f"{'[green]ok[/]' if untouched.ok else 'FAILED'}, the rest reported as unchecked"
            if untouched is not None
            else ""
        )
    )


def stage_bind(ctx: DemoContext) -> None:
    """Issue 10: a signature covers only its target, and a run uses only the bytes it verified."""
    import numpy as np

    from modelguard.runtime import session_from_verified
    from modelguard.signing.verify import verify_and_hold

    public, key = ctx.artifacts["public_key"], ctx.artifacts["signing_key"]
    single = ctx.path("single", "model.onnx")
    single.parent.mkdir()
    shutil.copyfile(ctx.path("model", "model.onnx"), single)
    sign_model(single, key, record=False)
    sibling = ctx.path("single", "evil.onnx")  # unsigned, dropped next to the signed file
    shutil.copyfile(single, sibling)
    flip_one_weight_byte(sibling.parent, sibling.name)
    refused = verify_model(sibling, keys=[public]).error()
    x = digits_split(DEMO_SEED)[1].x[:8]
    verified = verify_and_hold(ctx.path("model"), keys=[public])
    moved = ctx.path("model-moved-away")
    shutil.move(ctx.path("model"), moved)  # gone from disk between verification and loading
    try:
        session = session_from_verified(verified, providers="cpu").session
        logits = session.run(None, {session.get_inputs()[0].name: x})[0]
    finally:
        shutil.move(moved, ctx.path("model"))
    ctx.summary["bind"] = {
        "sibling_refused": str(refused) if refused else "accepted (unexpected!)",
        "run_after_removal_predictions": np.asarray(logits).argmax(axis=1).tolist(),
    }
    ctx.say(
        f"{ctx.heading('Bind')}: an unsigned evil.onnx beside the signed model.onnx -> "
        f"{'[red]refused[/]' if refused else 'accepted (unexpected!)'}: {refused}"
    )
    ctx.say(
        "   model directory moved away after verification, session built from the verified "
        f"buffers: predictions {ctx.summary['bind']['run_after_removal_predictions']}"
    )


def stage_ledger(ctx: DemoContext) -> None:
    size, entries = audit.list_entries(ctx.ledger_url)
    checkpoint = audit.sign_checkpoint(ctx.ledger_url)
    last = entries[-1]
    bundle = audit.prove_with_checkpoint(last.index, ctx.ledger_url)
    public_key = audit.note_key_path(ctx.ledger_url).with_suffix(".pub")
    proof, _ = audit.check_proof(bundle, [public_key])
    report = audit.verify_ledger(ctx.ledger_url)
    ctx.summary["ledger"] = {
        "url": ctx.ledger_url,
        "entries": size,
        "kinds": [e.kind for e in entries],
        "checkpoint": checkpoint,
        "proof_index": last.index,
        "proof_hashes": len(proof.to_dict().get("hashes", [])),
        "verified": report.ok,
    }
    ctx.say(
        f"{ctx.heading('Ledger')} {ctx.ledger_url}: {size} entries, chain and tree verify: {report.ok}"
    )
    for entry in entries:
        version = entry.subject.get("version")
        ctx.say(
            f"   #{entry.index} {entry.kind:<9} {entry.subject.get('name', '')}"
            f"{f' v{version}' if version else ''} by {entry.actor[:12]}..."
        )
    ctx.say("   signed checkpoint (C2SP tlog-checkpoint):")
    for line in checkpoint.strip().splitlines():
        ctx.say(f"     {line}")
    ctx.say(f"   inclusion proof of entry #{last.index} checked offline against it: ok")
    refused = gate_on_a_truncated_copy(ctx)
    ctx.summary["ledger"]["truncated_copy_refused"] = refused
    ctx.say(
        "   the gate (pinned ledger key, trust state) on a copy with its newest entry deleted"
        f" and the checkpoint rows cut: {'[red]refused[/]' if refused else 'accepted (unexpected!)'}"
    )


def gate_on_a_truncated_copy(ctx: DemoContext) -> bool:
    """Gate once (the trust state learns the log), then again on a copy cut by one entry."""
    import sqlite3

    public = ctx.artifacts["public_key"]
    first = verify_model(
        ctx.path("model"), policy=ctx.gate_policy(public), ledger_url=ctx.ledger_url,
        require_ledger=True,
    )  # fmt: skip
    copy = ctx.path("ledger", "truncated.db")
    with sqlite3.connect(ctx.path("ledger", "ledger.db")) as source, sqlite3.connect(copy) as cut:
        source.backup(cut)
        size = cut.execute("SELECT MAX(idx) FROM ledger_entries").fetchone()[0]
        cut.execute("DELETE FROM ledger_entries WHERE idx = ?", (size,))
        cut.execute("DELETE FROM ledger_checkpoints WHERE tree_size > ?", (size,))
    second = verify_model(
        ctx.path("model"), policy=ctx.gate_policy(public), ledger_url=f"sqlite:///{copy}",
        require_ledger=True,
    )  # fmt: skip
    return first.ok and not second.ok


def _frozen_view(cosigned: str, witness_state: Path) -> str:
    """``cosigned`` with its cosignature replaced by the same witness's from two days ago."""
    from ledger.note import split_note
    from ledger.witness import Witness

    note = "".join(cosigned.splitlines(keepends=True)[:-1])
    stale = int(time.time()) - 2 * 86400
    return note + Witness.load(witness_state).cosigner.cosign(split_note(note)[0], stale)


def stage_transparency(ctx: DemoContext) -> None:
    from modelguard import transparency
    from modelguard.errors import LedgerVerificationError

    public_key = audit.note_public_key_path(ctx.ledger_url)
    state = ctx.path("witness")
    witness = transparency.init_witness(state, "witness.demo/w1", [public_key])
    cosigned = transparency.cosign_checkpoint([str(state)], ctx.ledger_url)
    witness_keys = transparency.load_witness_keys([state / "witness.pub"])
    names = transparency.require_witness_quorum(cosigned["checkpoint"], witness_keys, 1)
    frozen = _frozen_view(cosigned["checkpoint"], state)
    try:
        transparency.require_witness_quorum(frozen, witness_keys, 1)
        freeze = "ACCEPTED (bug)"
    except LedgerVerificationError as error:
        freeze = f"refused ({str(error).split(': ', 2)[-1]})"
    tiles = ctx.path("tiles")
    export = transparency.export_tile_tree(
        tiles, ctx.ledger_url, checkpoint_note=cosigned["checkpoint"]
    )
    report = transparency.verify_tile_tree(tiles, [public_key])
    ctx.summary["transparency"] = {
        "witness": witness["name"],
        "cosigned_size": cosigned["size"],
        "tiles_written": export.written_count - 1,
        "tiles_verified": report.ok,
        "frozen_view_refused": freeze.startswith("refused"),
    }
    ctx.say(
        f"{ctx.heading('Transparency')} witness {names[0]} cosigned the checkpoint of size"
        f" {cosigned['size']} (C2SP tlog-witness, cosignature/v1)"
    )
    ctx.say(f"   the same checkpoint with a valid cosignature from 2 days ago (a freeze): {freeze}")
    ctx.say(
        f"   exported {export.written_count - 1} static C2SP tiles to {tiles.name}/; checked"
        f" offline against the ledger key ({report.tiles_checked} tiles, root and signature):"
        f" {'ok' if report.ok else 'FAILED'}"
    )


def stage_encrypt_run(ctx: DemoContext) -> None:
    import numpy as np
    import onnxruntime as ort

    from modelguard.encryption import encrypt_model, load_x25519_private_key, load_x25519_public_key
    from modelguard.errors import ModelGuardError
    from modelguard.runtime import open_verified

    passphrase = ctx.artifacts["passphrase"]
    priv, pub = write_keypair(ctx.path("keys"), "alice", generate_encryption_key(), passphrase)
    identity = load_x25519_private_key(priv, passphrase)
    recipient = load_x25519_public_key(pub)
    container = ctx.path("digits.enc")
    encrypted = encrypt_model(
        ctx.path("model"),
        container,
        recipients=[recipient],
        sign_key=ctx.artifacts["signing_key"],
        name="digits-cnn",
        version="1",
        ledger_url=ctx.ledger_url,
    )
    x = digits_split(DEMO_SEED)[1].x[:8]
    verified = open_verified(
        container,
        policy=ctx.gate_policy(ctx.artifacts["public_key"]),
        identity=identity,
        ledger_url=ctx.ledger_url,
        require_ledger=True,
    )
    input_name = verified.session.get_inputs()[0].name
    logits = verified.session.run(None, {input_name: x})[0]
    plain = ort.InferenceSession(
        str(ctx.path("model", "model.onnx")), providers=["CPUExecutionProvider"]
    )
    plain_logits = plain.run(None, {plain.get_inputs()[0].name: x})[0]
    bit_exact = bool(np.array_equal(logits, plain_logits))
    tampered = ctx.path("tampered.enc")
    shutil.copytree(container, tampered)
    target = tampered / "model.onnx.mgenc"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    try:
        open_verified(tampered, keys=[ctx.artifacts["public_key"]], identity=identity)
        refused = "accepted (unexpected!)"
    except ModelGuardError as error:
        refused = str(error)
    ctx.summary["encrypt_run"] = {
        "container": str(container),
        "provider": verified.provider,
        "tensors_verified": verified.tensors_verified,
        "predictions": logits.argmax(axis=1).tolist(),
        "bit_exact_with_plaintext": bit_exact,
        "tampered_refused": refused,
    }
    ctx.say(
        f"{ctx.heading('Encrypt')} tensor by tensor (AES-256-GCM) for a throwaway X25519 recipient and "
        f"sign the container: {container.name}/"
    )
    ctx.say(
        f"   verified run in memory on {verified.provider}: {verified.tensors_verified} tensors "
        f"checked after decryption; predictions {logits.argmax(axis=1).tolist()} "
        f"(labels {digits_split(DEMO_SEED)[1].y[:8].tolist()}); identical to the plaintext "
        f"model: {bit_exact}"
    )
    ctx.say(f"   one flipped byte in a copy of the container, refused before decryption: {refused}")
    # one root per model: the ledger's encrypt entry names the root the model's signature records
    _, encrypt_entries = audit.list_entries(ctx.ledger_url, kind="encrypt")
    ledger_root = encrypt_entries[-1].subject["root"]
    same = ledger_root == signed_manifest(ctx.path("model")).layer_root
    ctx.summary["encrypt_run"]["one_root"] = same
    ctx.say(
        f"   ledger encrypt entry root {ledger_root[:16]}... = the plaintext model's signed root: "
        f"{same} (container scheme {encrypted.hash_algorithm} tensors, "
        f"{encrypted.file_hash_algorithm} files)"
    )


DEMO_EPS = [0.1, 0.2]  # the gate checks 0.1; fewer budgets keep the demo under 2 minutes
# AutoAttack's composition with small budgets (modelguard/robustness/profiles.py), as a cascade.
DEMO_ATTACKS = ["quick"]


def format_table(
    table: dict[str, dict[str, float]], attacks: list[str], worst: list[dict[str, Any]]
) -> list[str]:
    """Per-attack robust accuracy (cumulative in a cascade) and the worst case with its CI."""
    intervals = {str(w["eps"]): w["robust"]["ci95"] for w in worst}
    columns = [*attacks, "worst_case"]
    lines = ["   eps    " + "".join(f"{c:>11}" for c in columns) + "     95% CI"]
    for eps, row in table.items():
        low, high = intervals[eps]
        lines.append(
            f"   {float(eps):<6} "
            + "".join(f"{row.get(c, float('nan')):>11.1%}" for c in columns)
            + f"  [{low:.1%}, {high:.1%}]"
        )
    return lines


def stage_evaluate(ctx: DemoContext) -> None:
    from modelguard.robustness.certificate import certify
    from modelguard.robustness.config import EvalConfig
    from modelguard.robustness.evaluate import evaluate_model_dir
    from modelguard.robustness.gate import robustness_dir_for
    from modelguard.robustness.report import write_outputs

    config = EvalConfig(attacks=DEMO_ATTACKS, eps=DEMO_EPS, seed=DEMO_SEED)
    started = time.perf_counter()
    result = evaluate_model_dir(ctx.path("model"), config)
    seconds = time.perf_counter() - started
    out = robustness_dir_for(ctx.path("model"))
    paths = write_outputs(result, out)
    issued = certify(result, ctx.artifacts["signing_key"], out, ledger_url=ctx.ledger_url)
    table = result.robust_table()
    ctx.artifacts["parent_eval"] = result
    ctx.summary["evaluate"] = {
        "clean_accuracy": result.clean_accuracy,
        "robust_accuracy": table,
        "soundness_warnings": result.soundness_warnings,
        "report": str(paths["html"]),
        "certificate": str(issued.path),
        "seconds": round(seconds, 1),
    }
    ctx.say(
        f"{ctx.heading('Evaluate')} robustness on {result.data.get('count', '')} "
        f"test digits in {seconds:.0f} s (Linf, inputs in [0, 1]); clean accuracy "
        f"{result.clean_accuracy:.1%}; profile {result.config.profile!r} (APGD-CE, APGD-T, FAB-T, "
        "Square, each on the examples still unbroken): robust accuracy so far after each attack, "
        "and the worst case with its 95% Clopper-Pearson interval:"
    )
    for line in format_table(table, result.config.attacks, result.worst_case):
        ctx.say(line)
    warnings = result.soundness_warnings
    ctx.say(
        f"   soundness checks (Carlini et al. 2019): {'all pass' if not warnings else '; '.join(warnings)}"
    )
    ctx.say(
        f"   report {paths['html']}; signed certificate {issued.path.name} "
        f"in the ledger as entry #{getattr(issued.ledger_entry, 'index', '?')}"
    )


def stage_harden(ctx: DemoContext) -> None:
    from modelguard.cli.hardening import render_comparison
    from modelguard.cli.ledger import lineage_tree
    from modelguard.robustness.config import EvalConfig
    from modelguard.robustness.hardening import harden_model, recertify

    config = EvalConfig(attacks=DEMO_ATTACKS, eps=DEMO_EPS, seed=DEMO_SEED)
    common: dict[str, Any] = {
        "key": ctx.artifacts["signing_key"],
        "keys": [ctx.artifacts["public_key"]],
        "eval_config": config,
        "ledger_url": ctx.ledger_url,
    }
    runs: dict[str, tuple[dict[str, Any], str]] = {
        "pgd-at": (
            {"eps": 0.1, "epochs": 5, "steps": 5},
            "PGD adversarial training (Madry), eps 0.1",
        ),
        "distill": ({"temperature": 50, "epochs": 8}, "defensive distillation, T = 50"),
    }
    ctx.say(
        f"{ctx.heading('Harden')} the verified parent twice; each child is exported, evaluated with "
        "the same portfolio, re-signed with its parent recorded, and ledgered:"
    )
    results = {}
    for method, (options, title) in runs.items():
        started = time.perf_counter()
        result = harden_model(
            ctx.path("model"),
            method=method,
            out_dir=ctx.path(f"model-{method}"),
            options=options,
            **common,
        )
        results[method] = result
        render_comparison(
            ctx.console, result.comparison, f"{title} ({time.perf_counter() - started:.0f} s)"
        )
    trees = audit.lineage("digits-cnn", ctx.ledger_url)
    ctx.console.print(lineage_tree("lineage of digits-cnn (from the ledger)", trees))
    rerun = recertify(
        ctx.path("model-pgd-at"), keys=[ctx.artifacts["public_key"]], ledger_url=ctx.ledger_url
    )
    ctx.say(
        f"   recertify model-pgd-at: re-ran the recorded evaluation (same seeds, data digest, "
        f"attacks): {'[green]matches[/]' if rerun.ok else '[red]DRIFT[/]'} within {rerun.tolerance:.1%}"
    )
    ctx.summary["harden"] = {
        method: {
            "model": result.child,
            "comparison": result.comparison,
            "child_root": result.child_root,
            "parent_root": result.parent_root,
        }
        for method, result in results.items()
    }
    ctx.summary["recertify"] = {"ok": rerun.ok, "drifts": rerun.drifts}


def stage_gate(ctx: DemoContext) -> None:
    from modelguard.errors import ModelGuardError
    from modelguard.policy import load_policy

    policy_path = ctx.path("policy.toml")
    policy_path.write_text(
        'version = 1\nthreshold = 1\nallowed_hash_algorithms = ["sha256"]\n'
        'model_name = "^digits-cnn.*$"\n\n'
        '[[signers]]\nname = "demo"\npublic_key = "keys/demo.pub"\n\n'
        '[certificate]\nmin_robust_accuracy = 0.80\nepsilon = 0.1\nnorm = "linf"\n'
    )
    policy = load_policy(policy_path)
    verdicts = {}
    for name in ("model", "model-pgd-at", "model-distill"):
        try:
            report = verify_model(ctx.path(name), policy=policy, checks=STANDARD_CHECKS)
            verdicts[name] = (
                "accepted"
                if report.ok
                else "refused: "
                + "; ".join(f for f in report.failures if "certificate" in f or "robust" in f)
            )
        except ModelGuardError as error:
            verdicts[name] = f"refused: {error}"
    ctx.summary["gate"] = {"policy": str(policy_path), "verdicts": verdicts}
    ctx.say(
        f"{ctx.heading('Gate')} `verify --policy policy.toml` demanding a trusted signer and a "
        "certified worst-case robust accuracy >= 80% at eps 0.1:"
    )
    for name, verdict in verdicts.items():
        ctx.say(f"   {name:<14} {verdict}")


def stage_audits(ctx: DemoContext) -> None:
    import copy

    from modelguard.anomaly import probe_agreement, tensor_change_report
    from modelguard.audits.attestation import audits_dir_for
    from modelguard.audits.membership import MembershipConfig, run_membership_audit
    from modelguard.audits.poisoning import PoisoningConfig, run_poisoning_audit
    from modelguard.modelcard import load_model_dir
    from modelguard.policy import parse_policy
    from modelguard.robustness.attacks import build_attack

    key, model_dir = ctx.artifacts["signing_key"], ctx.path("model")
    ctx.say(f"{ctx.heading('Audit')} the model and its data (small budgets; docs/audits.md):")
    model, card = load_model_dir(model_dir)
    _, test = digits_split(DEMO_SEED)
    x, y = torch.from_numpy(test.x[:200]), torch.from_numpy(test.y[:200])
    rows = {}
    for name, params in (("pgd", {}), ("advgan", {"epochs": 4, "train_limit": 600})):
        attack = build_attack(name, model, eps=0.2, seed=DEMO_SEED, **params)
        if name == "advgan":
            attack(x[:1], y[:1])  # train the generator first: time per example once trained
        started = time.perf_counter()
        with torch.no_grad():
            fooled = model(attack(x, y)).argmax(1) != y
        rows[name] = {
            "success_rate": float(fooled.float().mean()),
            "ms_per_example": 1000 * (time.perf_counter() - started) / len(y),
            "train_seconds": round(getattr(attack, "train_seconds", 0.0), 1),
        }
    ctx.say(
        f"   AdvGAN (generator trained {rows['advgan']['train_seconds']} s) at eps 0.2: "
        f"success {rows['advgan']['success_rate']:.0%} at {rows['advgan']['ms_per_example']:.3f} "
        f"ms/example; PGD {rows['pgd']['success_rate']:.0%} at "
        f"{rows['pgd']['ms_per_example']:.3f} ms/example"
    )
    poisoning = run_poisoning_audit(
        "digits:train",
        PoisoningConfig(
            folds=3,
            limit=600,
            simulate_flip=0.1,
            seed=DEMO_SEED,
            retrain=True,
            test="digits",
            retrain_epochs=60,
        ),
        ctx.path("poisoning-audit"),
        arch="digits_mlp",
        epochs=20,
        key=key,
        ledger_url=ctx.ledger_url,
    )
    p = poisoning.document["summary"]
    ctx.say(
        f"   poisoning: flipped 10% of 600 labels; confident learning flagged {p['flagged']} "
        f"(precision {p['precision']:.0%}, recall {p['recall']:.0%}); retrained accuracy "
        + ", ".join(f"{k} {v:.1%}" for k, v in p["retrain"].items())
    )
    membership = run_membership_audit(
        model_dir,
        "digits:train",
        "digits",
        MembershipConfig(reference_models=2, limit=300, seed=DEMO_SEED),
        audits_dir_for(model_dir),
        epochs=15,
        key=key,
        ledger_url=ctx.ledger_url,
    )
    m = membership.document["summary"]
    ctx.say(
        f"   membership inference on the model: ROC AUC {m['auc']:.3f} ({m['strongest_attack']}), "
        f"TPR at 1% FPR {m['tpr_at_0.01_fpr']:.1%}; attestation signed, ledgered"
    )
    edited = copy.deepcopy(model)
    last = [m for m in edited.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(1.3)  # a hand edit of one layer, as a trojan insertion would
    tuned = train_classifier(
        copy.deepcopy(model), digits_split(DEMO_SEED)[0].subset(300), epochs=1, lr=2e-4, seed=1
    )
    flagged = {}
    for name, net in (("model-edited", edited), ("model-tuned", tuned)):
        export_model_dir(
            net,
            ctx.path(name),
            factory=card.factory,
            kwargs=card.kwargs,
            input_shape=card.input_shape,
            classes=card.classes,
            name=card.name,
            version="2",
        )
        report = tensor_change_report(model_dir, ctx.path(name))
        agreement = probe_agreement(model_dir, ctx.path(name), "digits")["agreement"]
        flagged[name] = sorted({t.layer for t in report.outliers})
        ctx.say(
            f"   diff model {name} --stats: outlier layers {flagged[name] or 'none'}; "
            f"prediction agreement {agreement:.1%}"
        )
    signer = {"name": "demo", "public_key_pem": public_pem(ctx.artifacts["public_key"]).decode()}
    policy = parse_policy(
        {"signers": [signer], "audit": {"membership": {"max_auc": 0.6}}}, source="demo"
    )
    verdict = verify_model(model_dir, policy=policy, checks=STANDARD_CHECKS)
    ctx.say(
        "   gate \\[audit.membership] max_auc = 0.6 on model: "
        + (
            "[green]accepted[/]"
            if verdict.ok
            else "[red]refused[/]: " + "; ".join(verdict.failures)
        )
    )
    ctx.summary["audits"] = {
        "advgan_vs_pgd": rows,
        "poisoning": p,
        "membership": m,
        "diff_outlier_layers": flagged,
        "gate_ok": verdict.ok,
    }


STAGES: list[tuple[str, Callable[[DemoContext], None]]] = [
    ("train", stage_train),
    ("card", stage_card),
    ("manifest", stage_manifest),
    ("sign", stage_sign),
    ("bind", stage_bind),
    ("encrypt", stage_encrypt_run),
    ("evaluate", stage_evaluate),
    ("harden", stage_harden),
    ("gate", stage_gate),
    ("audits", stage_audits),
    ("ledger", stage_ledger),
    ("transparency", stage_transparency),
]


def run_demo(workdir: str | Path, *, console: Console | None = None) -> dict[str, Any]:
    """Run every stage in a fresh ``workdir``; return the summary."""
    # Small models on a few cores: one intra-op thread avoids OpenMP oversubscription.
    torch.set_num_threads(1)
    root = Path(workdir)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    ctx = DemoContext(root.resolve(), console or Console(quiet=True))
    started = time.perf_counter()
    for _name, stage in STAGES:
        stage(ctx)
    ctx.summary["seconds"] = round(time.perf_counter() - started, 1)
    ctx.summary["workdir"] = str(ctx.workdir)
    return ctx.summary
