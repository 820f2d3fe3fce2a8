"""Your own model: what must be refused (the happy paths run in tests/test_docs.py).

A card whose weights do not fit, whose ONNX graph computes something else, or that would
overwrite another; an --arch that cannot be imported (with the hint), that differs from the
card, or that tries to certify a bare weights file; a certificate bound to a weights file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from modelguard.errors import BadInputError

REPO = Path(__file__).resolve().parent.parent
ARCH = "examples.cnn.mynet:build"

pytestmark = pytest.mark.slow


def mg(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELGUARD_")}
    env["OMP_NUM_THREADS"] = "1"
    bin_dir = Path(sys.executable).parent
    return subprocess.run(
        [str(bin_dir / "modelguard"), *args],  # the console script: sys.path[0] is bin/, not cwd
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's project: examples/ in the working directory, a trained and carded model."""
    work = tmp_path_factory.mktemp("project")
    shutil.copytree(
        REPO / "examples", work / "examples", ignore=shutil.ignore_patterns("__pycache__")
    )
    done = subprocess.run(
        [sys.executable, "examples/cnn/train.py", "--out", "model", "--epochs", "1"],
        cwd=work,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    carded = mg("card", "model", "--arch", ARCH, "--input-shape", "1,8,8", "--json", cwd=work)
    assert carded.returncode == 0, carded.stderr
    return work


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_card_refuses_to_overwrite_without_force(project: Path) -> None:
    done = mg("card", "model", "--arch", ARCH, "--input-shape", "1,8,8", cwd=project)
    assert done.returncode == 2
    assert "--force" in one_line(done)


def test_card_refuses_weights_that_do_not_fit(project: Path) -> None:
    other = project / "wide"
    shutil.copytree(project / "model", other)
    (other / "modelguard.json").unlink()
    done = mg(
        "card", "wide", "--arch", ARCH, "--arch-kwargs", '{"width": 8}', "--input-shape", "1,8,8",
        cwd=project,
    )  # fmt: skip
    assert done.returncode == 2
    assert "do not fit" in one_line(done)


def test_card_refuses_an_onnx_graph_that_computes_something_else(project: Path) -> None:
    swapped = project / "swapped"
    shutil.copytree(project / "model", swapped)
    (swapped / "modelguard.json").unlink()
    sys.path.insert(0, str(project))
    try:
        from examples.cnn.mynet import build
    finally:
        sys.path.remove(str(project))
    torch.manual_seed(123)
    save_file(
        build().state_dict(), str(swapped / "model.safetensors")
    )  # same shapes, other weights
    done = mg("card", "swapped", "--arch", ARCH, "--input-shape", "1,8,8", cwd=project)
    assert done.returncode == 2
    assert "does not compute what" in one_line(done)


def test_card_exports_onnx_when_asked(project: Path) -> None:
    fresh = project / "fresh"
    fresh.mkdir()
    shutil.copy2(project / "model" / "model.safetensors", fresh / "model.safetensors")
    missing = mg("card", "fresh", "--arch", ARCH, "--input-shape", "1,8,8", cwd=project)
    assert missing.returncode == 2 and "--export-onnx" in missing.stderr
    done = mg(
        "card", "fresh", "--arch", ARCH, "--input-shape", "1,8,8", "--export-onnx", cwd=project
    )
    assert done.returncode == 0, done.stderr
    assert (fresh / "model.onnx").is_file()


def test_arch_import_failure_gives_the_hint(project: Path) -> None:
    done = mg("eval", "model", "--arch", "mypkg.mynet:make", "--limit", "5", cwd=project)
    assert done.returncode == 2
    line = one_line(done)
    assert "No module named 'mypkg'" in line
    assert f"current directory ({project})" in line and "PYTHONPATH" in line


def test_arch_is_imported_from_the_current_directory(project: Path, tmp_path: Path) -> None:
    local = tmp_path / "mine"
    shutil.copytree(project / "model", local / "model")
    (local / "model" / "modelguard.json").unlink()
    shutil.copy2(project / "examples" / "cnn" / "mynet.py", local / "mynet_local.py")
    args = ["card", "model", "--arch", "mynet_local:build", "--input-shape", "1,8,8"]
    assert mg(*args, cwd=local).returncode == 0  # the console script finds ./mynet_local.py
    (local / "elsewhere").mkdir()
    shutil.copytree(local / "model", local / "elsewhere" / "model")
    done = mg(*args, "--force", cwd=local / "elsewhere")
    assert done.returncode == 2
    assert "No module named 'mynet_local'" in one_line(done)


def test_card_factory_must_not_load_without_arch(project: Path) -> None:
    done = mg("eval", "model", "--limit", "5", "--attacks", "fgsm", "--eps", "0.1", cwd=project)
    assert done.returncode == 2
    assert "--arch" in one_line(done)


def test_arch_must_match_the_card(project: Path) -> None:
    done = mg("eval", "model", "--arch", "modelguard.zoo:digits_cnn", "--limit", "5", cwd=project)
    assert done.returncode == 2
    assert "names architecture 'examples.cnn.mynet:build'" in one_line(done)


def test_no_certificate_for_a_bare_weights_file(project: Path) -> None:
    (project / "keys").mkdir(exist_ok=True)
    assert mg("keygen", "--out", "keys", "--no-passphrase", cwd=project).returncode == 0
    done = mg(
        "eval", "--arch", ARCH, "--weights", "model/model.safetensors", "--limit", "5",
        "--sign-key", "keys/modelguard.priv", cwd=project,
    )  # fmt: skip
    assert done.returncode == 2
    assert "bound to a signed model directory" in one_line(done)
    both = mg("eval", "model", "--arch", ARCH, "--weights", "model/model.safetensors", cwd=project)
    assert both.returncode == 2 and "drop --weights" in both.stderr


def test_certify_refuses_a_weights_file_result(project: Path, tmp_path: Path) -> None:
    from modelguard import zoo
    from modelguard.keys import generate_key
    from modelguard.robustness.certificate import certify
    from modelguard.robustness.config import EvalConfig
    from modelguard.robustness.evaluate import evaluate

    zoo.trust_factory(ARCH)
    cwd = os.getcwd()
    os.chdir(project)
    try:
        result = evaluate(
            "", EvalConfig(attacks=["fgsm"], eps=[0.1], limit=5, soundness=False),
            arch=ARCH, weights=project / "model" / "model.safetensors",
        )  # fmt: skip
    finally:
        os.chdir(cwd)
    with pytest.raises(BadInputError, match="bound to a signed model directory"):
        certify(result, generate_key(), tmp_path, record=False)
