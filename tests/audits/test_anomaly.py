"""Version anomalies: a single scaled layer is flagged as that layer, a light fine-tune is not."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from modelguard.anomaly import probe_agreement, tensor_change_report
from modelguard.cli.main import cli
from modelguard.modelcard import load_model_dir, train_classifier
from modelguard.robustness.data import digits_split

from .conftest import export_mlp


@pytest.fixture(scope="module")
def versions(mlp_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base, _ = load_model_dir(mlp_dir)
    root = tmp_path_factory.mktemp("versions")
    scaled = copy.deepcopy(base)
    with torch.no_grad():
        scaled[4].weight.mul_(1.3)  # the output layer: a hand edit of one layer
    tuned = copy.deepcopy(base)
    train, _ = digits_split()
    train_classifier(tuned, train.subset(300), epochs=1, lr=2e-4, seed=1)
    both = copy.deepcopy(tuned)
    with torch.no_grad():
        both[2].weight.mul_(1.3)
    return {
        "base": mlp_dir,
        "scaled": export_mlp(scaled, root / "scaled"),
        "tuned": export_mlp(tuned, root / "tuned"),
        "tuned+edit": export_mlp(both, root / "tuned-edit"),
    }


def test_scaling_one_layer_is_flagged_as_that_layer(versions: dict[str, Path]) -> None:
    report = tensor_change_report(versions["base"], versions["scaled"])
    flagged = {(t.file, t.name) for t in report.outliers}
    assert flagged == {("model.safetensors", "4.weight"), ("model.onnx", "4.weight")}
    assert {t.layer for t in report.outliers} == {"4"}
    row = next(t for t in report.tensors if t.name == "4.weight")
    assert row.relative_change == pytest.approx(0.3, rel=1e-5)
    assert row.b.std == pytest.approx(1.3 * row.a.std, rel=1e-4)


def test_fine_tuning_every_layer_slightly_is_not_flagged(versions: dict[str, Path]) -> None:
    report = tensor_change_report(versions["base"], versions["tuned"])
    changed = [t for t in report.tensors if t.relative_change > 0]
    assert len(changed) >= 8  # every weight and bias moved, in both files
    assert report.outliers == []


def test_a_single_layer_edit_hidden_in_a_fine_tune_is_still_flagged(
    versions: dict[str, Path],
) -> None:
    report = tensor_change_report(versions["base"], versions["tuned+edit"])
    assert {t.layer for t in report.outliers} == {"2"}


def test_identical_versions_have_no_change_and_no_outlier(versions: dict[str, Path]) -> None:
    report = tensor_change_report(versions["base"], versions["base"])
    assert report.outliers == [] and all(t.relative_change == 0 for t in report.tensors)


def test_probe_agreement(versions: dict[str, Path]) -> None:
    same = probe_agreement(versions["base"], versions["base"], "digits")
    assert same["agreement"] == 1.0 and same["disagreements"] == 0
    tuned = probe_agreement(versions["base"], versions["tuned"], "digits")
    assert 0.9 < tuned["agreement"] <= 1.0
    assert tuned["data"]["count"] == 360


def test_diff_gate_exit_codes(versions: dict[str, Path]) -> None:
    runner = CliRunner()
    args = ["diff", str(versions["base"])]
    ok = runner.invoke(
        cli, [*args, str(versions["tuned"]), "--max-relative-change", "0.2", "--json"]
    )
    assert ok.exit_code == 0, ok.output
    document = json.loads(ok.output)
    assert document["stats"]["gate_ok"] is True and document["stats"]["outliers"] == []
    too_much = runner.invoke(cli, [*args, str(versions["tuned"]), "--max-relative-change", "0.001"])
    assert too_much.exit_code == 1
    edited = runner.invoke(
        cli,
        [
            *args,
            str(versions["scaled"]),
            "--max-relative-change",
            "0.5",
            "--probe",
            "digits",
            "--json",
        ],
    )
    assert edited.exit_code == 1
    stats = json.loads(edited.output)["stats"]
    assert stats["outlier_layers"] == ["4"] and stats["probe"]["data"]["count"] == 360
    plain = runner.invoke(cli, [*args, str(versions["scaled"]), "--stats"])
    assert plain.exit_code == 1 and "outlier layers: 4" in plain.output
