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

from rich.console import Console

from modelguard import audit, zoo
from modelguard.formats import parse_model_file
from modelguard.keys import generate_key, key_id, load_private_key, load_public_key, write_keypair
from modelguard.manifest import build_manifest
from modelguard.modelcard import accuracy, export_model_dir, seed_everything, train_classifier
from modelguard.robustness.data import digits_split
from modelguard.signing.model import sign_model, verify_model

DEMO_SEED = 0


@dataclass
class DemoContext:
    workdir: Path
    console: Console
    summary: dict[str, Any] = field(default_factory=dict)

    def say(self, message: str) -> None:
        self.console.print(message)

    def path(self, *parts: str) -> Path:
        return self.workdir.joinpath(*parts)

    @property
    def ledger_url(self) -> str:
        return f"sqlite:///{self.path('ledger', 'ledger.db')}"


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
        f"[bold]1. Train[/] a small CNN on {len(train)} bundled digits in {seconds:.1f} s: "
        f"test accuracy {clean:.1%}; exported to {ctx.path('model')} "
        "(model.onnx, model.safetensors, modelguard.json)"
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
        f"[bold]2. Manifest[/]: {len(manifest.files)} files, {tensors} tensors hashed one by one "
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
    ctx.summary["keys"] = {"private": str(priv), "public": str(pub), "key_id": key_id(public)}
    signed = sign_model(
        ctx.path("model"), key, name="digits-cnn", version="1", ledger_url=ctx.ledger_url
    )
    report = verify_model(
        ctx.path("model"), keys=[public], ledger_url=ctx.ledger_url, require_ledger=True
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
        f"[bold]3. Sign[/] with a throwaway ECDSA P-256 key ({signed.key_id[:12]}...): "
        f"{signed.signature_path.name} is an OpenSSF Model Signing bundle; "
        f"verify -> {'[green]ok[/]' if report.ok else '[red]FAILED[/]'}"
    )
    named = next((f for f in bad.failures if "tensor" in f), "; ".join(bad.failures))
    ctx.say(
        f"   flipped one byte of tensor {tensor!r} in a copy: verify -> "
        f"{'[red]FAILED[/]' if not bad.ok else 'ok (unexpected!)'}: {named}"
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
        f"[bold]4. Ledger[/] {ctx.ledger_url}: {size} entries, chain and tree verify: {report.ok}"
    )
    for entry in entries:
        ctx.say(
            f"   #{entry.index} {entry.kind:<9} {entry.subject.get('name', '')} "
            f"v{entry.subject.get('version', '')} by {entry.actor[:12]}..."
        )
    ctx.say("   signed checkpoint (C2SP tlog-checkpoint):")
    for line in checkpoint.strip().splitlines():
        ctx.say(f"     {line}")
    ctx.say(f"   inclusion proof of entry #{last.index} checked offline against it: ok")


STAGES: list[tuple[str, Callable[[DemoContext], None]]] = [
    ("train", stage_train),
    ("manifest", stage_manifest),
    ("sign", stage_sign),
    ("ledger", stage_ledger),
]


def run_demo(workdir: str | Path, *, console: Console | None = None) -> dict[str, Any]:
    """Run every stage in a fresh ``workdir``; return the summary."""
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
