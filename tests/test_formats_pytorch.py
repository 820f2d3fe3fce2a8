"""PyTorch adapter: the opcode scan refuses code before torch.load ever sees the file."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from modelguard.cli import main as cli_main
from modelguard.errors import FormatError, UnsafeModelError
from modelguard.formats import detect_format, parse_model_file
from modelguard.formats.pytorch import parse_pytorch, scan_pickle


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as stop:
        cli_main.main(list(args))
    out, err = capsys.readouterr()
    return int(stop.value.code or 0), out, err


class SystemCall:
    """Unpickling this runs ``os.system(command)``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


def canary_command(canary: Path) -> str:
    return f"touch {canary}"


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_os_system_pickle_is_refused_without_side_effect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], protocol: int
) -> None:
    canary = tmp_path / "canary"
    model = tmp_path / "evil.pt"
    model.write_bytes(pickle.dumps({"w": SystemCall(canary_command(canary))}, protocol=protocol))
    code, out, err = run_cli(capsys, "manifest", str(model))
    assert code == 2 and out == ""
    assert "posix.system" in err or "nt.system" in err
    assert len(err.strip().splitlines()) == 1
    assert not canary.exists()


def test_os_system_inside_a_torch_zip_archive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    canary = tmp_path / "canary"
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(2)}, good)
    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(evil, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("data.pkl"):
                data = pickle.dumps(SystemCall(canary_command(canary)), protocol=2)
            dst.writestr(info, data)
    code, _, err = run_cli(capsys, "manifest", str(evil), "--json")
    assert code == 2 and "system" in err
    assert not canary.exists()
    with pytest.raises(UnsafeModelError, match=r"evil\.pt:.*data\.pkl"):
        parse_model_file(evil, root=tmp_path)


def test_other_imports_are_named(tmp_path: Path) -> None:
    payload = (
        b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94."
    )
    with pytest.raises(UnsafeModelError, match=r"builtins\.eval"):
        scan_pickle(io.BytesIO(payload), "x.pt")


def test_stack_global_through_the_memo_is_resolved(tmp_path: Path) -> None:
    # push 'posix', memoize as 0, push 'system', then fetch both back from the memo
    payload = (
        b"\x80\x04\x8c\x05posix\x94\x8c\x06system\x94" + b"h\x00h\x01\x93" + b"\x8c\x02id\x85R."
    )
    with pytest.raises(UnsafeModelError, match=r"posix\.system"):
        scan_pickle(io.BytesIO(payload), "x.pt")


def test_stack_global_from_a_computed_name_is_refused() -> None:
    # the module name comes from a call result, not a string constant
    payload = b"\x80\x04\x8c\x0bcollections\x8c\x0bOrderedDict\x93)R\x8c\x04name\x93."
    with pytest.raises(UnsafeModelError, match="not a plain string"):
        scan_pickle(io.BytesIO(payload), "x.pt")


def test_huge_length_opcode_is_bounded() -> None:
    payload = b"\x80\x04\x8d" + (2**60).to_bytes(8, "little") + b"xx"
    with pytest.raises(FormatError, match="pickle asks for"):
        scan_pickle(io.BytesIO(payload), "x.pt")


def test_state_dict_zip_and_legacy(tmp_path: Path) -> None:
    state = {
        "layer": {
            "weight": torch.arange(6, dtype=torch.float32).reshape(2, 3),
            "bias": torch.zeros(0),
        },
        "half": torch.tensor([1.5], dtype=torch.float16),
        "bf16": torch.tensor([1.0, -3.0], dtype=torch.bfloat16),
        "mask": torch.tensor([True, False]),
        "epoch": 7,
    }
    torch.save(state, tmp_path / "zip.pt")
    torch.save(state, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    zipped = parse_pytorch(tmp_path / "zip.pt", root=tmp_path)
    legacy = parse_pytorch(tmp_path / "legacy.pt", root=tmp_path)
    assert [t.name for t in zipped.tensors] == [
        "bf16",
        "half",
        "layer.bias",
        "layer.weight",
        "mask",
    ]
    for a, b in zip(zipped.tensors, legacy.tensors, strict=True):
        assert (a.name, a.dtype, a.shape, bytes(a.read())) == (
            b.name,
            b.dtype,
            b.shape,
            bytes(b.read()),
        )
    got = {t.name: bytes(t.read()) for t in zipped.tensors}
    assert got["bf16"] == bytes([0x80, 0x3F, 0x40, 0xC0])
    assert (
        got["layer.weight"] == torch.arange(6, dtype=torch.float32).numpy().astype("<f4").tobytes()
    )
    assert b'"epoch"' in zipped.structure and b"7" in zipped.structure
    assert b'"container":"zip"' in zipped.structure and b'"container":"legacy"' in legacy.structure


def test_non_contiguous_and_shared_storage(tmp_path: Path) -> None:
    base = torch.arange(12, dtype=torch.int64).reshape(3, 4)
    torch.save({"t": base.t(), "row": base[1]}, tmp_path / "m.pt")
    got = {t.name: t for t in parse_pytorch(tmp_path / "m.pt", root=tmp_path).tensors}
    assert bytes(got["t"].read()) == base.t().contiguous().numpy().astype("<i8").tobytes()
    assert bytes(got["row"].read()) == base[1].numpy().astype("<i8").tobytes()
    assert got["t"].shape == (4, 3)


def test_bin_detection(tmp_path: Path) -> None:
    torch.save({"w": torch.ones(1)}, tmp_path / "pytorch_model.bin")
    torch.save({"w": torch.ones(1)}, tmp_path / "legacy.bin", _use_new_zipfile_serialization=False)
    (tmp_path / "data.bin").write_bytes(b"\x80\x02" + bytes(30))
    assert detect_format(tmp_path / "pytorch_model.bin") == "pytorch"
    assert detect_format(tmp_path / "legacy.bin") == "pytorch"
    assert detect_format(tmp_path / "data.bin") is None


def test_truncated_checkpoint_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.save({"w": torch.ones(1000)}, tmp_path / "m.pt", _use_new_zipfile_serialization=False)
    blob = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(blob[: len(blob) - 100])
    code, _, err = run_cli(capsys, "manifest", str(tmp_path / "cut.pt"))
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_bare_pickle_passes_the_scan_but_is_not_loaded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bare.pt").write_bytes(pickle.dumps({"a": 1}))
    code, out, err = run_cli(capsys, "manifest", str(tmp_path / "bare.pt"))
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        f"modelguard: error: {tmp_path / 'bare.pt'}: torch.load(weights_only=True) refused it: Weights only load failed"
    ]


@settings(max_examples=40)
@given(data=st.data(), legacy=st.booleans())
def test_mutated_checkpoints_parse_or_fail_cleanly(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject, legacy: bool
) -> None:
    directory = tmp_path_factory.mktemp("fuzz")
    torch.save(
        {"w": torch.ones(3), "n": 1}, directory / "m.pt", _use_new_zipfile_serialization=not legacy
    )
    blob = bytearray((directory / "m.pt").read_bytes())
    for _ in range(data.draw(st.integers(1, 3))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    (directory / "m.pt").write_bytes(bytes(blob))
    try:
        parsed = parse_pytorch(directory / "m.pt", root=directory)
    except (FormatError, UnsafeModelError):
        return
    for t in parsed.tensors:
        assert t.read().nbytes == t.nbytes
