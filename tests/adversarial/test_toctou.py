"""Class 2, verify-then-load (TOCTOU): what ONNX Runtime runs is exactly what was verified.

The adversary can rename, replace, rewrite or delete the model's files at any moment. Two
kinds of attack: a swap staged exactly between verification and session creation (the
window the old loader left open), and a real second process swapping files in a loop while
the loader verifies and loads over and over. Zero wins allowed: every session either computes
the signed model's outputs or was refused.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from gatebind_models import X, external_mlp, plain_mlp, signed_and_unsigned_containers

import modelguard.signing.verify as signing_model
from modelguard.errors import BadInputError, VerificationError
from modelguard.formats.onnx import MEMORY_LOCATION, nested_tensors
from modelguard.keys import generate_key
from modelguard.runtime import open_session
from modelguard.signing.sign import sign_model

GOOD = np.eye(4, dtype=np.float32)
EVIL = np.full((4, 4), 9.0, dtype=np.float32)
ITERATIONS = 60  # per concurrent attack: a few seconds on a busy 2-core machine

SWAPPER = r"""
import os, sys
target, good, evil, spare, mode, stop = sys.argv[1:7]
blobs = [open(evil, "rb").read(), open(good, "rb").read()]
while not os.path.exists(stop):
    for data in blobs:
        if mode == "rename":
            with open(spare, "wb") as handle:
                handle.write(data)
            os.replace(spare, target)
        else:  # rewrite the same inode in place
            with open(target, "r+b") as handle:
                handle.write(data)
"""


def _session_output(path: Path, **kwargs: object) -> np.ndarray:
    session = open_session(path, providers="cpu", **kwargs)  # type: ignore[arg-type]
    return np.asarray(session.run(None, {"x": X})[0])


@pytest.fixture
def swapper(tmp_path: Path) -> Iterator[Callable[[Path, Path, Path, str], None]]:
    """Start a process that swaps ``target`` between evil and good bytes until the test ends."""
    procs: list[subprocess.Popen[bytes]] = []
    stop = tmp_path / "stop-swapping"

    def start(target: Path, good: Path, evil: Path, mode: str) -> None:
        spare = tmp_path / f"spare-{len(procs)}"  # outside the model directory
        args = [str(target), str(good), str(evil), str(spare), mode, str(stop)]
        procs.append(subprocess.Popen([sys.executable, "-c", SWAPPER, *args]))

    yield start
    stop.touch()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _race(load: Callable[[], np.ndarray], good_output: np.ndarray) -> tuple[int, int, int]:
    """(accepted with the signed outputs, refused, wins for the adversary)."""
    accepted = refused = wins = 0
    for _ in range(ITERATIONS):
        try:
            output = load()
        except (VerificationError, BadInputError):
            refused += 1
            continue
        if np.array_equal(output, good_output):
            accepted += 1
        else:
            wins += 1
    return accepted, refused, wins


# ---- the window between verification and session creation, staged exactly -----------------


def _after_verification(monkeypatch: pytest.MonkeyPatch, attack: Callable[[], None]) -> None:
    real = signing_model.verify_and_hold

    def verify_then_attack(*args: object, **kwargs: object) -> signing_model.VerifiedModel:
        verified = real(*args, **kwargs)  # type: ignore[arg-type]
        attack()
        return verified

    monkeypatch.setattr(signing_model, "verify_and_hold", verify_then_attack)


def test_directory_external_data_swapped_after_verification(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = generate_key()
    model = external_mlp(tmp_path / "m", GOOD)
    sign_model(model, key, record=False)
    poison = tmp_path / "poison.bin"
    poison.write_bytes(EVIL.tobytes())
    _after_verification(monkeypatch, lambda: os.replace(poison, model / "w.bin"))
    assert np.array_equal(_session_output(model, keys=[key.public_key()]), X @ GOOD)
    assert (model / "w.bin").read_bytes() == EVIL.tobytes()  # the swap did happen


def test_directory_rewritten_in_place_and_removed_after_verification(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = generate_key()
    model = external_mlp(tmp_path / "m", GOOD)
    sign_model(model, key, record=False)

    def attack() -> None:
        with open(model / "w.bin", "r+b") as handle:  # same inode: an mmap would see this
            handle.write(EVIL.tobytes())
        shutil.copyfile(model / "w.bin", tmp_path / "evil-w.bin")
        (model / "model.onnx").unlink()

    _after_verification(monkeypatch, attack)
    assert np.array_equal(_session_output(model, keys=[key.public_key()]), X @ GOOD)


def test_single_file_replaced_after_verification(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = generate_key()
    model = plain_mlp(tmp_path / "X" / "model.onnx", GOOD)
    sign_model(model, key, record=False)
    evil = plain_mlp(tmp_path / "evil.onnx", EVIL)
    _after_verification(monkeypatch, lambda: os.replace(evil, model))
    assert np.array_equal(_session_output(model, keys=[key.public_key()]), X @ GOOD)


def test_single_file_with_external_data_swapped_after_verification(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A single ONNX file signed on its own: its external data is read once with it."""
    key = generate_key()
    model = external_mlp(tmp_path / "m", GOOD) / "model.onnx"
    sign_model(model, key, record=False)
    poison = tmp_path / "poison.bin"
    poison.write_bytes(EVIL.tobytes())
    _after_verification(monkeypatch, lambda: os.replace(poison, model.parent / "w.bin"))
    assert np.array_equal(_session_output(model, keys=[key.public_key()]), X @ GOOD)


def test_container_replaced_after_verification(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, identity = generate_key(), X25519PrivateKey.generate()
    container, evil = signed_and_unsigned_containers(tmp_path, GOOD, EVIL, key, identity)
    _after_verification(monkeypatch, lambda: os.replace(evil, container))
    got = _session_output(container, keys=[key.public_key()], identity=identity)
    assert np.array_equal(got, X @ GOOD)


def test_onnx_runtime_never_gets_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The graph goes to ONNX Runtime as bytes and names no file: every tensor is in memory."""
    key = generate_key()
    model = external_mlp(tmp_path / "m", GOOD)
    sign_model(model, key, record=False)
    given: list[object] = []
    real = ort.InferenceSession

    def spy(model_arg: object, *args: object, **kwargs: object) -> ort.InferenceSession:
        given.append(model_arg)
        return real(model_arg, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ort, "InferenceSession", spy)
    assert np.array_equal(_session_output(model, keys=[key.public_key()]), X @ GOOD)
    assert len(given) == 1 and isinstance(given[0], bytes)
    graph = onnx.ModelProto.FromString(given[0])
    locations = [
        entry.value
        for tensor in [*graph.graph.initializer, *(t for _, t in nested_tensors(graph))]
        for entry in tensor.external_data
        if entry.key == "location"
    ]
    assert locations == [MEMORY_LOCATION]


# ---- a real second process swapping files while the loader runs ---------------------------


@pytest.mark.parametrize("mode", ["rename", "inplace"])
def test_concurrent_swapper_on_directory_external_data(
    tmp_path: Path, swapper: Callable[[Path, Path, Path, str], None], mode: str
) -> None:
    key = generate_key()
    model = external_mlp(tmp_path / "m", GOOD)
    sign_model(model, key, record=False)
    good, evil = tmp_path / "good.bin", tmp_path / "evil.bin"
    good.write_bytes(GOOD.tobytes())
    evil.write_bytes(EVIL.tobytes())
    swapper(model / "w.bin", good, evil, mode)
    accepted, refused, wins = _race(
        lambda: _session_output(model, keys=[key.public_key()]), X @ GOOD
    )
    assert wins == 0, f"{wins} wins ({accepted} accepted, {refused} refused)"
    assert refused > 0  # the swapper was really racing the loader


@pytest.mark.parametrize("mode", ["rename", "inplace"])
def test_concurrent_swapper_on_single_file(
    tmp_path: Path, swapper: Callable[[Path, Path, Path, str], None], mode: str
) -> None:
    key = generate_key()
    model = plain_mlp(tmp_path / "X" / "model.onnx", GOOD)
    sign_model(model, key, record=False)
    good = tmp_path / "good.onnx"
    shutil.copyfile(model, good)
    evil = plain_mlp(tmp_path / "evil.onnx", EVIL)
    assert evil.stat().st_size == good.stat().st_size
    swapper(model, good, evil, mode)
    accepted, refused, wins = _race(
        lambda: _session_output(model, keys=[key.public_key()]), X @ GOOD
    )
    assert wins == 0, f"{wins} wins ({accepted} accepted, {refused} refused)"
    assert refused > 0


def test_concurrent_swapper_on_encrypted_container(
    tmp_path: Path, swapper: Callable[[Path, Path, Path, str], None]
) -> None:
    key, identity = generate_key(), X25519PrivateKey.generate()
    container, evil = signed_and_unsigned_containers(tmp_path, GOOD, EVIL, key, identity)
    good = tmp_path / "good.mgenc"
    shutil.copyfile(container, good)
    swapper(container, good, evil, "rename")
    accepted, refused, wins = _race(
        lambda: _session_output(container, keys=[key.public_key()], identity=identity),
        X @ GOOD,
    )
    assert wins == 0, f"{wins} wins ({accepted} accepted, {refused} refused)"
    assert refused > 0


def test_certificate_gate_binds_to_the_verified_root(tmp_path: Path) -> None:
    """The certificate check gets the root of the bytes that verified; it never re-reads the
    model (a re-read could hash a swapped-in, certified other model)."""
    from modelguard.keys import write_keypair
    from modelguard.policy import PolicyChecks, load_policy
    from modelguard.signing.verify import verify_model

    key = generate_key()
    model = external_mlp(tmp_path / "m", GOOD)
    signed = sign_model(model, key, record=False)
    _, pub = write_keypair(tmp_path, "alice", key, None)
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(
        f'threshold = 1\n[[signers]]\nname = "alice"\npublic_key = "{pub}"\n'
        "[certificate]\nmin_robust_accuracy = 0.5\nepsilon = 0.1\n"
    )
    seen: list[str | None] = []

    def check(*args: object, model_root: str | None = None) -> list[str]:
        seen.append(model_root)
        return []

    checks = PolicyChecks(certificate=check)
    assert verify_model(model, policy=load_policy(policy_file), checks=checks).ok
    assert seen == [signed.manifest.layer_root]


def test_harden_parent_is_loaded_from_the_verified_bytes(tmp_path: Path) -> None:
    """``harden`` trains from its parent: swapping the parent's weights or card after the
    parent verified must not reach the model it loads (and then signs a child of)."""
    torch = pytest.importorskip("torch")
    from modelguard.modelcard import export_model_dir, load_model_dir
    from modelguard.robustness.hardening import Trust, verify_and_hold_or_refuse
    from modelguard.zoo import digits_cnn

    def export(directory: Path, seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        model = digits_cnn(width=4)
        export_model_dir(
            model,
            directory,
            factory="digits_cnn",
            kwargs={"width": 4},
            input_shape=(1, 8, 8),
            classes=[str(i) for i in range(10)],
        )
        return model

    key = generate_key()
    good = export(tmp_path / "parent", 0)
    export(tmp_path / "evil", 1)
    sign_model(tmp_path / "parent", key, record=False)
    held = verify_and_hold_or_refuse(
        tmp_path / "parent", Trust(keys=[key.public_key()]), what="parent"
    )
    for name in ("model.safetensors", "modelguard.json"):
        os.replace(tmp_path / "evil" / name, tmp_path / "parent" / name)
    loaded, _ = load_model_dir(tmp_path / "parent", files=held.files)
    for (name, want), got in zip(
        good.state_dict().items(), loaded.state_dict().values(), strict=True
    ):
        assert torch.equal(want, got), name


def test_external_data_in_a_checkpoint_is_not_loaded_from_a_mapping(tmp_path: Path) -> None:
    """``run`` keeps safetensors/PyTorch files mapped (ONNX Runtime never reads them), so an
    ONNX graph whose external data points into one is refused rather than loaded from a
    mapping another process could rewrite in place after verification."""
    from safetensors.numpy import save_file

    from modelguard.errors import VerificationError

    key = generate_key()
    model = external_mlp(tmp_path / "m", GOOD, data="w.safetensors")
    save_file({"w": GOOD}, str(model / "w.safetensors"))
    header = 8 + int.from_bytes((model / "w.safetensors").read_bytes()[:8], "little")
    graph = onnx.load(model / "model.onnx", load_external_data=False)
    for entry in graph.graph.initializer[0].external_data:
        if entry.key == "offset":
            entry.value = str(header)
    onnx.save(graph, model / "model.onnx")
    sign_model(model, key, record=False)
    assert signing_model.verify_model(model, keys=[key.public_key()]).ok
    with pytest.raises(VerificationError, match="weights checkpoint"):
        _session_output(model, keys=[key.public_key()])


@pytest.mark.parametrize("encrypted", [False, True])
def test_a_model_verified_without_private_copies_is_not_loaded(
    tmp_path: Path, encrypted: bool
) -> None:
    """Mapped buffers (``verify`` for CI) could change after verification: loading refuses them."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from modelguard.errors import UnsafeModelError
    from modelguard.runtime import session_from_verified

    key, identity = generate_key(), X25519PrivateKey.generate()
    if encrypted:
        model, _ = signed_and_unsigned_containers(tmp_path, GOOD, EVIL, key, identity)
    else:
        model = external_mlp(tmp_path / "m", GOOD)
        sign_model(model, key, record=False)
    mapped = signing_model.verify_and_hold(model, keys=[key.public_key()], private=False)
    with pytest.raises(UnsafeModelError, match="private memory"):
        session_from_verified(mapped, identity=identity, providers="cpu")
    held = signing_model.verify_and_hold(model, keys=[key.public_key()])
    session = session_from_verified(held, identity=identity, providers="cpu").session
    assert np.array_equal(session.run(None, {"x": X})[0], X @ GOOD)


def test_recertify_evaluates_the_verified_bytes(tmp_path: Path) -> None:
    """``recertify`` re-runs a certified evaluation: with the model gone from disk after
    verification, the evaluation still runs, on the verified bytes (nothing read by path)."""
    torch = pytest.importorskip("torch")
    from modelguard.modelcard import export_model_dir
    from modelguard.robustness.evaluate import EvalConfig, evaluate_model_dir
    from modelguard.robustness.hardening import Trust, verify_and_hold_or_refuse
    from modelguard.zoo import digits_cnn

    torch.manual_seed(0)
    export_model_dir(
        digits_cnn(width=4),
        tmp_path / "model",
        factory="digits_cnn",
        kwargs={"width": 4},
        input_shape=(1, 8, 8),
        classes=[str(i) for i in range(10)],
    )
    key = generate_key()
    sign_model(tmp_path / "model", key, record=False)
    config = EvalConfig(attacks=["fgsm"], eps=[0.1], limit=16, soundness=False)
    before = evaluate_model_dir(tmp_path / "model", config)
    held = verify_and_hold_or_refuse(tmp_path / "model", Trust(keys=[key.public_key()]), what="m")
    shutil.rmtree(tmp_path / "model")
    after = evaluate_model_dir(tmp_path / "model", config, verified=held)
    assert after.model["manifest_root"] == held.manifest.layer_root
    assert after.results_dict() == before.results_dict()
