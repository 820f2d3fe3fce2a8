"""Manifests: stable digests, layer leaves and root, JSON round trip, directories, diffs."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import blake3
import ml_dtypes
import numpy as np
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file
from tinymodels import mlp_onnx, model_dir, tensors_onnx

from ledger.merkle import root_hash
from modelguard.errors import BadInputError, FormatError, UnsafeModelError
from modelguard.formats import parse_model_file
from modelguard.manifest import Manifest, build_manifest, compare_manifests, diff_models

DTYPES = {
    "float32": np.float32,
    "float16": np.float16,
    "bfloat16": ml_dtypes.bfloat16,
    "int8": np.int8,
    "bool": np.bool_,
    "int64": np.int64,
    "uint8": np.uint8,
}


@st.composite
def tensor_sets(draw: st.DrawFn) -> dict[str, np.ndarray]:
    count = draw(st.integers(1, 4))
    names = draw(
        st.lists(
            st.from_regex(r"[a-z][a-z0-9_.]{0,8}", fullmatch=True),
            min_size=count,
            max_size=count,
            unique=True,
        )
    )
    out = {}
    for name in names:
        dtype = DTYPES[draw(st.sampled_from(sorted(DTYPES)))]
        shape = tuple(draw(st.lists(st.integers(0, 5), max_size=3)))
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        raw = draw(st.binary(min_size=size, max_size=size))
        if dtype is np.bool_:
            raw = bytes(b & 1 for b in raw)
        out[name] = (
            np.frombuffer(raw, dtype=np.uint8).view(dtype).reshape(shape)
            if size
            else np.zeros(shape, dtype)
        )
    return out


def _safetensors_dict(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    # safetensors.numpy has no bfloat16: store the same bytes as uint16 (digests cover bytes only)
    return {
        k: (v.view(np.uint16) if v.dtype == ml_dtypes.bfloat16 else v) for k, v in tensors.items()
    }


@settings(max_examples=25)
@given(
    tensors=tensor_sets(),
    chunk=st.sampled_from([1, 7, 4096, 1 << 25]),
    threads=st.sampled_from([1, 2, 5]),
)
def test_digests_independent_of_threads_and_chunks(
    tmp_path_factory: pytest.TempPathFactory,
    tensors: dict[str, np.ndarray],
    chunk: int,
    threads: int,
) -> None:
    directory = tmp_path_factory.mktemp("m")
    tensors_onnx(directory / "m.onnx", tensors)
    save_file(_safetensors_dict(tensors), directory / "m.safetensors")
    reference = build_manifest(directory, threads=1)
    again = build_manifest(directory, threads=threads, chunk_size=chunk)
    assert again == reference
    assert again.canonical_json() == reference.canonical_json()
    onnx_record = reference.file("m.onnx")
    assert onnx_record is not None
    for record in onnx_record.tensors:
        # the tensor digest is sha256 of the canonical little-endian bytes, computed independently
        array = tensors[record.name]
        expected = array.tobytes()  # this test host is little-endian
        assert record.digest == hashlib.sha256(expected).hexdigest()
        assert record.nbytes == len(expected) and record.shape == array.shape
    safetensors_record = reference.file("m.safetensors")
    assert safetensors_record is not None
    for ours, theirs in zip(onnx_record.tensors, safetensors_record.tensors, strict=True):
        assert ours.digest == theirs.digest  # same bytes, same digest, whatever the container


@settings(max_examples=10)
@given(tensors=tensor_sets(), algorithm=st.sampled_from(["blake2b", "blake3"]))
def test_other_algorithms_are_stable_too(
    tmp_path_factory: pytest.TempPathFactory, tensors: dict[str, np.ndarray], algorithm: str
) -> None:
    directory = tmp_path_factory.mktemp("m")
    tensors_onnx(directory / "m.onnx", tensors)
    one = build_manifest(directory, hash_algorithm=algorithm, threads=1, chunk_size=3)
    many = build_manifest(directory, hash_algorithm=algorithm, threads=4, chunk_size=16)
    assert one == many
    blob = (directory / "m.onnx").read_bytes()
    whole = (
        blake3.blake3(blob).hexdigest()
        if algorithm == "blake3"
        else hashlib.blake2b(blob, digest_size=32).hexdigest()
    )
    assert one.files[0].digest == whole


@settings(max_examples=25)
@given(data=st.data())
def test_any_single_byte_weight_change_is_named(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    directory = tmp_path_factory.mktemp("flip")
    weights = mlp_onnx(directory / "a.onnx", seed=data.draw(st.integers(0, 3)))
    parsed = parse_model_file(directory / "a.onnx", root=directory)
    assert parsed is not None
    target = data.draw(st.sampled_from(parsed.tensors))
    assert target.location is not None
    position = target.location[1] + data.draw(st.integers(0, target.nbytes - 1))
    blob = bytearray((directory / "a.onnx").read_bytes())
    blob[position] ^= data.draw(st.integers(1, 255))
    (directory / "b.onnx").write_bytes(blob)
    result = diff_models(directory / "a.onnx", directory / "b.onnx")
    assert not result.identical
    assert [(t.name, t.change) for t in result.tensors] == [(target.name, "changed")]
    assert result.structure_changed == ()
    assert result.tensors[0].max_abs is not None and len(weights) == 4


def test_max_abs_and_l2_of_a_change(tmp_path: Path) -> None:
    a = np.zeros(4, np.float32)
    b = np.array([0, 3, -4, 0], np.float32)
    save_file({"w": a, "same": a}, tmp_path / "a.safetensors")
    save_file({"w": b, "same": a}, tmp_path / "b.safetensors")
    result = diff_models(tmp_path / "a.safetensors", tmp_path / "b.safetensors")
    (change,) = result.tensors
    assert (change.name, change.max_abs, change.l2) == ("w", 4.0, 5.0)
    assert "tensor changed: a.safetensors:w (max |delta| 4, L2 5)" in result.lines()


def test_added_removed_and_reshaped_tensors(tmp_path: Path) -> None:
    save_file(
        {"keep": np.ones(2, np.float32), "old": np.ones(1, np.int8)}, tmp_path / "a.safetensors"
    )
    save_file(
        {"keep": np.ones((1, 2), np.float32), "new": np.ones(1, np.int8)},
        tmp_path / "b.safetensors",
    )
    result = diff_models(tmp_path / "a.safetensors", tmp_path / "b.safetensors")
    assert [(t.name, t.change) for t in result.tensors] == [
        ("keep", "changed"),
        ("new", "added"),
        ("old", "removed"),
    ]
    assert result.tensors[0].max_abs is None  # shapes differ: no max-abs
    assert result.structure_changed == ("a.safetensors",)
    document = result.to_dict()
    assert document["tensors_added"][0]["name"] == "new" and document["identical"] is False


def test_layer_leaves_and_root(tmp_path: Path) -> None:
    manifest = build_manifest(model_dir(tmp_path / "m"))
    leaves = manifest.layer_leaves()
    assert manifest.layer_root == root_hash(leaves).hex()
    # per file: one file leaf, one structure leaf for model files, one leaf per tensor
    assert len(leaves) == sum(
        1 + (f.structure_digest is not None) + len(f.tensors) for f in manifest.files
    )
    first = json.loads(leaves[0])
    assert first["kind"] == "file" and first["path"] == manifest.files[0].path
    assert leaves[0] == rfc8785.dumps(first)
    index = manifest.leaf_index("model.onnx", "fc2.bias")
    leaf = json.loads(leaves[index])
    assert (leaf["kind"], leaf["name"], leaf["path"]) == ("tensor", "fc2.bias", "model.onnx")
    assert json.loads(leaves[manifest.leaf_index("model.onnx") + 1])["kind"] == "structure"


def test_json_round_trip_and_validation(tmp_path: Path) -> None:
    manifest = build_manifest(model_dir(tmp_path / "m"), hash_algorithm="blake3")
    document = json.loads(manifest.canonical_json())
    assert Manifest.from_dict(document) == manifest
    assert manifest.canonical_json() == rfc8785.dumps(manifest.to_dict())
    tampered = json.loads(manifest.canonical_json())
    tampered["files"][0]["digest"] = "0" * 64
    with pytest.raises(FormatError, match="layer_root"):
        Manifest.from_dict(tampered)
    for mutate, reason in [
        (lambda d: d.update(version=2), "version"),
        (lambda d: d.update(extra=1), "expected keys"),
        (lambda d: d["files"][0].update(path="../x"), "normalized"),
        (lambda d: d["files"][0].update(digest="ABC"), "hex"),
        (lambda d: d["files"].reverse(), "sorted"),
        (lambda d: d.update(hash_algorithm="md5"), "hash_algorithm"),
    ]:
        broken = json.loads(manifest.canonical_json())
        mutate(broken)
        with pytest.raises(FormatError, match=reason):
            Manifest.from_dict(broken)


def test_directory_walk_symlinks_and_ignores(tmp_path: Path) -> None:
    root = model_dir(tmp_path / "m")
    (root / "sub").mkdir()
    (root / "sub" / "notes.txt").write_text("hello")
    manifest = build_manifest(root)
    assert [f.path for f in manifest.files] == [
        "model.onnx",
        "model.safetensors",
        "modelguard.json",
        "sub/notes.txt",
    ]
    raw = manifest.file("modelguard.json")
    assert raw is not None and raw.format == "raw" and raw.structure_digest is None
    assert raw.digest == hashlib.sha256((root / "modelguard.json").read_bytes()).hexdigest()
    ignored = build_manifest(root, ignore_paths=["sub", "modelguard.json"])
    assert [f.path for f in ignored.files] == ["model.onnx", "model.safetensors"]
    (root / "link.txt").symlink_to(root / "sub" / "notes.txt")
    with pytest.raises(UnsafeModelError, match="symlink"):
        build_manifest(root)
    followed = build_manifest(root, allow_symlinks=True)
    assert followed.file("link.txt") is not None
    assert followed.file("link.txt").digest == followed.file("sub/notes.txt").digest  # type: ignore[union-attr]


def test_fifo_and_missing_paths_are_refused(tmp_path: Path) -> None:
    root = model_dir(tmp_path / "m")
    os.mkfifo(root / "pipe")
    with pytest.raises(UnsafeModelError, match="not a regular file"):
        build_manifest(root)
    with pytest.raises(BadInputError, match="cannot read"):
        build_manifest(tmp_path / "missing")


def test_compare_identical_and_algorithm_mismatch(tmp_path: Path) -> None:
    root = model_dir(tmp_path / "m")
    a = build_manifest(root)
    assert compare_manifests(a, build_manifest(root, threads=1)).identical
    with pytest.raises(BadInputError, match="cannot compare"):
        compare_manifests(a, build_manifest(root, hash_algorithm="blake3"))
    (root / "extra.txt").write_text("x")
    diff = compare_manifests(a, build_manifest(root))
    assert diff.files_added == ("extra.txt",) and diff.lines() == ["file added: extra.txt"]


def test_invalid_arguments(tmp_path: Path) -> None:
    mlp_onnx(tmp_path / "m.onnx")
    with pytest.raises(BadInputError, match="unknown hash algorithm"):
        build_manifest(tmp_path / "m.onnx", hash_algorithm="md5")
    with pytest.raises(BadInputError, match="threads"):
        build_manifest(tmp_path / "m.onnx", threads=0)
