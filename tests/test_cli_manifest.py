"""``modelguard manifest`` and ``modelguard diff``: output, --json, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file
from tinymodels import mlp_onnx, model_dir

from modelguard.cli import main as cli_main
from modelguard.manifest import Manifest, build_manifest


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as stop:
        cli_main.main(list(args))
    out, err = capsys.readouterr()
    return int(stop.value.code or 0), out, err


def test_manifest_json_is_the_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = model_dir(tmp_path / "m")
    code, out, err = run_cli(
        capsys, "manifest", str(root), "--json", "--hash", "blake3", "--threads", "2"
    )
    assert code == 0 and err == ""
    document = json.loads(out)
    assert Manifest.from_dict(document) == build_manifest(root, hash_algorithm="blake3")


def test_manifest_human_summary_and_output_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = model_dir(tmp_path / "m")
    target = tmp_path / "manifest.json"
    code, out, _ = run_cli(capsys, "manifest", str(root / "model.onnx"), "-o", str(target))
    manifest = build_manifest(root / "model.onnx")
    assert code == 0
    assert "model.onnx" in out and manifest.layer_root in out and "4 tensors" in out
    assert target.read_bytes() == manifest.canonical_json()


def test_manifest_bad_inputs_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "manifest", str(tmp_path / "missing"), "--json")
    assert code == 2 and json.loads(out)["exit_code"] == 2 and len(err.strip().splitlines()) == 1
    code, _, _ = run_cli(capsys, "manifest", str(tmp_path), "--hash", "md5")
    assert code == 2
    root = model_dir(tmp_path / "m")
    (root / "link").symlink_to(root / "model.onnx")
    code, _, err = run_cli(capsys, "manifest", str(root))
    assert code == 2 and "symlink" in err
    code, _, _ = run_cli(capsys, "manifest", str(root), "--allow-symlinks")
    assert code == 0
    code, _, _ = run_cli(capsys, "manifest", str(root), "--ignore", "link")
    assert code == 0


def test_diff_exit_codes_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mlp_onnx(tmp_path / "a.onnx", seed=1)
    mlp_onnx(tmp_path / "same.onnx", seed=1)
    mlp_onnx(tmp_path / "other.onnx", seed=2)
    code, out, _ = run_cli(capsys, "diff", str(tmp_path / "a.onnx"), str(tmp_path / "same.onnx"))
    assert code == 0 and "identical" in out
    code, out, _ = run_cli(
        capsys, "diff", str(tmp_path / "a.onnx"), str(tmp_path / "other.onnx"), "--json"
    )
    assert code == 1
    document = json.loads(out)
    assert document["identical"] is False
    assert sorted(t["name"] for t in document["tensors_changed"]) == [
        "fc1.bias",
        "fc1.weight",
        "fc2.bias",
        "fc2.weight",
    ]
    assert all(t["max_abs"] > 0 and t["l2"] > 0 for t in document["tensors_changed"])
    code, out, _ = run_cli(capsys, "diff", str(tmp_path / "a.onnx"), str(tmp_path / "other.onnx"))
    assert code == 1 and "fc1.weight" in out


def test_diff_directories_names_the_tensor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = model_dir(tmp_path / "a"), model_dir(tmp_path / "b")
    weights = {"fc1.weight": np.ones((8, 16), np.float32), "fc1.bias": np.zeros(16, np.float32)}
    save_file(weights, b / "model.safetensors")
    code, out, _ = run_cli(capsys, "diff", str(a), str(b), "--json")
    document = json.loads(out)
    assert code == 1
    assert document["files_changed"] == ["model.safetensors"]
    assert [t["name"] for t in document["tensors_removed"]] == ["fc2.bias", "fc2.weight"]
    assert [t["name"] for t in document["tensors_changed"]] == ["fc1.bias", "fc1.weight"]


def test_diff_refuses_unsafe_side(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mlp_onnx(tmp_path / "a.onnx")
    (tmp_path / "b.safetensors").write_bytes((2**60).to_bytes(8, "little") + b"{}")
    code, out, err = run_cli(
        capsys, "diff", str(tmp_path / "a.onnx"), str(tmp_path / "b.safetensors")
    )
    assert code == 2 and out == "" and "exceeds" in err
