"""Class 5 (parsers): scan exactly the pickle records torch would read from a torch.save zip.

torch's zip reader (miniz) finds records by name case-insensitively, so an archive member
``archive/DATA.PKL`` is what ``torch.load`` unpickles as ``archive/data.pkl``. Every variant
here hides a pickle that imports ``os.system``; each must be refused before torch sees it.
"""

from __future__ import annotations

import io
import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

from modelguard.cli import main as cli_main
from modelguard.errors import FormatError, UnsafeModelError
from modelguard.formats.pytorch import parse_pytorch


class Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("echo pwned",))


EVIL = pickle.dumps({"w": Evil()}, protocol=2)


def torch_zip() -> list[tuple[str, bytes]]:
    buffer = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buffer)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]


def write_zip(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in members:
                archive.writestr(name, data)
    return path


def variant(path: Path, how: str) -> Path:
    members = torch_zip()
    if how == "renamed-upper":  # the only data.pkl is spelled DATA.PKL
        members = [("archive/DATA.PKL" if n == "archive/data.pkl" else n, EVIL if n.endswith(
            "data.pkl") else d) for n, d in members]  # fmt: skip
    elif how == "extra-upper-after":
        members.insert(1, ("archive/DATA.PKL", EVIL))
    elif how == "extra-upper-first":
        members.insert(0, ("archive/DATA.PKL", EVIL))
    elif how == "extra-mixed-case":
        members.append(("archive/Data.Pkl", EVIL))
    elif how == "exact-duplicate":
        members.append(("archive/data.pkl", EVIL))
    elif how == "prefix-case":
        members.append(("ARCHIVE/data.pkl", EVIL))
    elif how == "other-pickle-upper":
        members.append(("archive/extra.PKL", EVIL))
    return write_zip(path, members)


VARIANTS = [
    "renamed-upper",
    "extra-upper-after",
    "extra-upper-first",
    "extra-mixed-case",
    "exact-duplicate",
    "prefix-case",
    "other-pickle-upper",
]


def test_torch_really_reads_the_upper_case_member(tmp_path: Path) -> None:
    """The attack is real: torch.load finds ``archive/DATA.PKL`` as its data.pkl."""
    members = [("archive/DATA.PKL" if n == "archive/data.pkl" else n, d) for n, d in torch_zip()]
    path = write_zip(tmp_path / "m.pt", members)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(2))
    assert [t.name for t in parse_pytorch(path, root=tmp_path).tensors] == ["w"]


@pytest.mark.parametrize("how", VARIANTS)
def test_member_name_variants_are_refused(tmp_path: Path, how: str) -> None:
    path = variant(tmp_path / "m.pt", how)
    with pytest.raises(UnsafeModelError, match="os.system|posix.system|same name|ambiguous"):
        parse_pytorch(path, root=tmp_path)


@pytest.mark.parametrize("how", VARIANTS)
def test_member_name_variants_exit_2_on_the_command_line(
    tmp_path: Path, how: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = variant(tmp_path / "m.pt", how)
    with pytest.raises(SystemExit) as done:
        cli_main.main(["manifest", str(path)])
    err = capsys.readouterr().err
    assert done.value.code == 2 and "m.pt" in err and len(err.strip().splitlines()) == 1


def test_archive_without_data_pkl_or_directory_is_refused(tmp_path: Path) -> None:
    members = [(n, d) for n, d in torch_zip() if not n.endswith("data.pkl")]
    with pytest.raises(FormatError, match="data.pkl"):
        parse_pytorch(write_zip(tmp_path / "a.pt", members), root=tmp_path)
    flat = [(n.split("/", 1)[1], d) for n, d in torch_zip()]
    with pytest.raises(FormatError, match="directory"):
        parse_pytorch(write_zip(tmp_path / "b.pt", flat), root=tmp_path)


def test_the_bytes_scanned_are_the_bytes_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch.load gets the scanned buffer, never the path (a swap after the scan is moot)."""
    path = write_zip(tmp_path / "m.pt", torch_zip())
    seen: list[Any] = []
    real = torch.load

    def spy(source: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(source)
        return real(source, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    parse_pytorch(path, root=tmp_path)
    assert len(seen) == 1 and isinstance(seen[0], io.BytesIO)
