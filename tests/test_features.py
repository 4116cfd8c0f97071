"""Tests for reading feature files, label/id files, and aligning feature rows to entity ids."""

from __future__ import annotations

import os
import pathlib
import re
import stat

import numpy as np
import pytest
import torch

from pykeen_momok.features import (
    DataFormatError,
    FeatureSource,
    align_features,
    atomic_write,
    load_feature_matrix,
    read_feature_file,
    read_id_map,
    read_label_list,
    read_label_values,
)
from pykeen_momok.triples import ModalityFeatures

ENTITY_TO_ID = {"a": 0, "b": 1, "c": 2, "d": 3}


def _write(path: pathlib.Path, text: str) -> pathlib.Path:
    path.write_text(text, encoding="utf-8")
    return path


# load_feature_matrix ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int64])
def test_load_npy_returns_float32(tmp_path: pathlib.Path, dtype) -> None:
    matrix = np.arange(12).reshape(4, 3).astype(dtype)
    np.save(tmp_path / "x.npy", matrix)
    out = load_feature_matrix(tmp_path / "x.npy")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, matrix.astype(np.float32))


def test_load_npz_single_and_key(tmp_path: pathlib.Path) -> None:
    a, b = np.ones((2, 3)), np.zeros((2, 5))
    np.savez(tmp_path / "one.npz", features=a)
    np.testing.assert_array_equal(load_feature_matrix(tmp_path / "one.npz"), a)
    np.savez(tmp_path / "two.npz", a=a, b=b)
    assert load_feature_matrix(tmp_path / "two.npz", key="b").shape == (2, 5)
    with pytest.raises(DataFormatError, match=r"two\.npz.*holds 2 arrays.*key="):
        load_feature_matrix(tmp_path / "two.npz")
    with pytest.raises(DataFormatError, match=r"two\.npz.*no array 'c'"):
        load_feature_matrix(tmp_path / "two.npz", key="c")


def test_load_pt_tensor_and_dict(tmp_path: pathlib.Path) -> None:
    tensor = torch.randn(4, 6, dtype=torch.bfloat16)
    torch.save(tensor, tmp_path / "t.pt")
    assert load_feature_matrix(tmp_path / "t.pt").shape == (4, 6)
    torch.save({"image": torch.ones(4, 2), "text": torch.zeros(4, 3)}, tmp_path / "d.pth")
    np.testing.assert_array_equal(load_feature_matrix(tmp_path / "d.pth", key="text"), np.zeros((4, 3)))
    with pytest.raises(DataFormatError, match=r"d\.pth.*holds 2 keys \[.image., .text.\]; pass key="):
        load_feature_matrix(tmp_path / "d.pth")
    torch.save({"only": torch.ones(4, 2)}, tmp_path / "single.pt")
    assert load_feature_matrix(tmp_path / "single.pt").shape == (4, 2)
    torch.save(3.5, tmp_path / "number.pt")
    with pytest.raises(DataFormatError, match=r"number\.pt.*expected a tensor, a list of rows"):
        load_feature_matrix(tmp_path / "number.pt")


class _Payload:
    """An arbitrary class: unpickling it needs weights_only=False."""


def test_load_pt_refuses_pickled_objects(tmp_path: pathlib.Path) -> None:
    torch.save({"x": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(DataFormatError, match=r"evil\.pt.*could not be read"):
        load_feature_matrix(tmp_path / "evil.pt")


def test_one_pth_reader_for_numpy_pickles_and_label_dicts(tmp_path: pathlib.Path) -> None:
    """The authors' archive holds NumPy arrays pickled by torch.save, and {label: vector} dicts occur too."""
    array = np.random.default_rng(0).random((4, 3)).astype(np.float32)
    torch.save(array, tmp_path / "numpy.pth")
    np.testing.assert_array_equal(load_feature_matrix(tmp_path / "numpy.pth"), array)
    torch.save({"c": torch.full((2,), 2.0), "a": torch.zeros(2) + 1}, tmp_path / "labelled.pth")
    matrix = read_feature_file(tmp_path / "labelled.pth")
    assert list(matrix.labels) == ["c", "a"]
    np.testing.assert_array_equal(matrix.features, [[2.0, 2.0], [1.0, 1.0]])
    # the rows name their entities: a reader that drops the labels refuses, FeatureSource aligns by them
    with pytest.raises(DataFormatError, match=r"labelled\.pth' holds a \{label: vector\} dict"):
        load_feature_matrix(tmp_path / "labelled.pth")
    aligned = FeatureSource(tmp_path / "labelled.pth").load(ENTITY_TO_ID)
    assert aligned.present.tolist() == [True, False, True, False]
    assert aligned.features[2].tolist() == [2.0, 2.0] and aligned.features[0].tolist() == [1.0, 1.0]
    labels = _write(tmp_path / "labels.txt", "c\na\n")
    with pytest.raises(DataFormatError, match=r"names its rows; give no labels="):
        FeatureSource(tmp_path / "labelled.pth", labels=labels).load(ENTITY_TO_ID)


def test_read_label_values(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path / "entity2text.txt", "/m/1\tBarack Obama\t(politician)\n\n /m/2 \tParis \n")
    assert read_label_values(path) == {"/m/1": "Barack Obama\t(politician)", "/m/2": "Paris"}
    _write(path, "/m/1\tA\n/m/2 B\n")
    with pytest.raises(DataFormatError, match=r"entity2text\.txt', line 2: expected 'label<TAB>name', got '/m/2 B'"):
        read_label_values(path, what="name")
    _write(path, "/m/1\tA\n\n/m/1\tB\n")
    with pytest.raises(DataFormatError, match=r"label '/m/1' occurs more than once \(lines \[1, 3\]\)"):
        read_label_values(path)
    assert read_label_values(path, repeated="last") == {"/m/1": "B"}


def test_atomic_write_puts_the_whole_file_in_place_or_nothing(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "sub" / "vectors.npy"
    with atomic_write(path) as tmp:
        assert tmp.parent == path.parent and not path.exists()
        with tmp.open("wb") as handle:
            np.save(handle, np.ones(3))
    np.testing.assert_array_equal(np.load(path), np.ones(3))
    with pytest.raises(ValueError, match="checksum"), atomic_write(path) as tmp:
        tmp.write_bytes(b"half a file")
        raise ValueError("checksum mismatch")
    np.testing.assert_array_equal(np.load(path), np.ones(3))  # the old file, untouched
    assert sorted(p.name for p in path.parent.iterdir()) == ["vectors.npy"]  # no temporary file left


def test_atomic_write_gives_the_file_the_mode_open_would(tmp_path: pathlib.Path) -> None:
    """Regression: tempfile.mkstemp made every published file (downloads, caches) readable by its owner only."""
    umask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "shared.txt") as tmp:
            tmp.write_text("x")
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "shared.txt").stat().st_mode) == stat.S_IMODE(
        (tmp_path / "plain.txt").stat().st_mode
    )
    assert stat.S_IMODE((tmp_path / "shared.txt").stat().st_mode) == 0o644


def test_load_h5(tmp_path: pathlib.Path) -> None:
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "f.h5", "w") as file:
        file.create_group("group").create_dataset("features", data=np.ones((3, 2)))
    np.testing.assert_array_equal(load_feature_matrix(tmp_path / "f.h5"), np.ones((3, 2)))
    assert load_feature_matrix(tmp_path / "f.h5", key="group/features").shape == (3, 2)
    with h5py.File(tmp_path / "g.h5", "w") as file:
        file.create_dataset("a", data=np.ones((3, 2)))
        file.create_dataset("b", data=np.ones((3, 2)))
    with pytest.raises(DataFormatError, match=r"g\.h5.*holds 2 datasets.*'a', 'b'"):
        load_feature_matrix(tmp_path / "g.h5")


@pytest.mark.parametrize(
    ("array", "pattern"),
    [
        (np.ones(5), r"expected a 2-D matrix.*shape \(5,\)"),
        (np.ones((2, 3, 4)), r"expected a 2-D matrix.*shape \(2, 3, 4\)"),
        (np.ones((2, 3), dtype=np.complex64), r"expected real numbers, got dtype complex64"),
        (np.ones((2, 3), dtype=bool), r"expected real numbers, got dtype bool"),
        (np.array([["a", "b"]]), r"expected real numbers, got dtype <U1"),
        (np.ones((0, 3)), r"the matrix is empty"),
    ],
)
def test_load_rejects_bad_arrays(tmp_path: pathlib.Path, array: np.ndarray, pattern: str) -> None:
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(DataFormatError, match=r"bad\.npy.*" + pattern):
        load_feature_matrix(tmp_path / "bad.npy")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_load_names_first_non_finite_row(tmp_path: pathlib.Path, value: float) -> None:
    matrix = np.zeros((6, 2))
    matrix[3, 1] = value
    matrix[5, 0] = value
    np.save(tmp_path / "nan.npy", matrix)
    with pytest.raises(DataFormatError, match=r"nan\.npy.*row 3 \(0-based\).*2 rows are not finite: \[3, 5\]"):
        load_feature_matrix(tmp_path / "nan.npy")


def test_load_float64_overflow_is_reported(tmp_path: pathlib.Path) -> None:
    np.save(tmp_path / "big.npy", np.array([[0.0], [1e300]]))
    with pytest.raises(DataFormatError, match=r"big\.npy.*row 1 \(0-based\) holds values too large for float32"):
        load_feature_matrix(tmp_path / "big.npy")


def test_load_object_array_and_unknown_suffix_and_missing(tmp_path: pathlib.Path) -> None:
    np.save(tmp_path / "obj.npy", np.array([[1, "x"]], dtype=object), allow_pickle=True)
    with pytest.raises(DataFormatError, match=r"obj\.npy.*could not be read"):
        load_feature_matrix(tmp_path / "obj.npy")
    _write(tmp_path / "x.csv", "1,2\n")
    with pytest.raises(DataFormatError, match=r"x\.csv.*unsupported feature file suffix '.csv'"):
        load_feature_matrix(tmp_path / "x.csv")
    with pytest.raises(FileNotFoundError, match=r"nope\.npy"):
        load_feature_matrix(tmp_path / "nope.npy")


# label lists and id maps -----------------------------------------------------------------------------


def test_read_label_list(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path / "labels.txt", "a\tsome description\nb c\nd\n\n\n")
    assert read_label_list(path) == ["a", "b c", "d"]


def test_read_label_list_errors(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path / "dup.txt", "a\nb\na\tx\n")
    with pytest.raises(DataFormatError, match=r"dup\.txt.*label 'a' occurs more than once \(lines \[1, 3\]\)"):
        read_label_list(path)
    path = _write(tmp_path / "gap.txt", "a\n\nb\n")
    with pytest.raises(DataFormatError, match=r"gap\.txt', line 2: empty label"):
        read_label_list(path)


def test_read_id_map_formats(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path / "entity2id.txt", "New York City 2\nb\t0\n\n<http://x/c d> 1\n")
    assert read_id_map(path) == {"New York City": 2, "b": 0, "<http://x/c d>": 1}
    # OpenKE: the first line holds the number of entries
    path = _write(tmp_path / "openke.txt", "2\nx 1\ny 0\n")
    assert read_id_map(path) == {"x": 1, "y": 0}


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("a 0\nb\n", r"line 2: expected 'label id', got 'b'"),
        ("a 0\nb one\n", r"line 2: the id 'one' is not an integer \(line: 'b one'\)"),
        ("a 0\nb 2\n", r"line 2: id 2 is out of range.*permutation of 0\.\.1 \(line: 'b 2'\)"),
        ("a 0\nb -1\n", r"line 2: id -1 is out of range"),
        ("a 0\nb 1\nc 1\n", r"line 3: id 1 was already given on line 2"),
        ("a 0\nb 1\n\na 2\n", r"line 4: label 'a' was already given on line 1"),
        ("3\na 0\nb 1\n", r"line 1: declares 3 entries, the file has 2"),
    ],
)
def test_read_id_map_errors(tmp_path: pathlib.Path, text: str, pattern: str) -> None:
    path = _write(tmp_path / "entity2id.txt", text)
    with pytest.raises(DataFormatError, match=r"entity2id\.txt', " + pattern):
        read_id_map(path)


def test_read_lines_rejects_non_utf8(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "latin.txt"
    path.write_bytes("caf\xe9 0\n".encode("latin-1"))
    with pytest.raises(DataFormatError, match=r"latin\.txt' is not valid UTF-8"):
        read_id_map(path)


# align_features --------------------------------------------------------------------------------------


def test_align_permuted_rows() -> None:
    matrix = np.array([[3.0, 3.0], [1.0, 1.0], [0.0, 0.0], [2.0, 2.0]])
    out = align_features(matrix, ["d", "b", "a", "c"], ENTITY_TO_ID)
    assert isinstance(out, ModalityFeatures)
    assert out.features.dtype == torch.float32
    torch.testing.assert_close(out.features[:, 0], torch.tensor([0.0, 1.0, 2.0, 3.0]))
    assert out.present.all()


def test_align_identity_rows() -> None:
    matrix = np.arange(8, dtype=np.float32).reshape(4, 2)
    out = align_features(matrix, None, ENTITY_TO_ID)
    torch.testing.assert_close(out.features, torch.from_numpy(matrix))
    with pytest.raises(DataFormatError, match=r"'f\.npy' has 3 rows but the graph has 4 entities"):
        align_features(matrix[:3], None, ENTITY_TO_ID, source="f.npy")


@pytest.mark.parametrize("fill", ["mean", "zeros", "normal"])
def test_align_fills_missing_entities(fill: str) -> None:
    matrix = np.array([[1.0, 10.0], [3.0, 30.0]])
    out = align_features(matrix, ["a", "c"], ENTITY_TO_ID, fill=fill)
    assert out.fill == fill
    assert out.present.tolist() == [True, False, True, False]
    torch.testing.assert_close(out.features[[0, 2]], torch.tensor([[1.0, 10.0], [3.0, 30.0]]))
    absent = out.features[[1, 3]]
    if fill == "mean":
        torch.testing.assert_close(absent, torch.tensor([[2.0, 20.0], [2.0, 20.0]]))
    elif fill == "zeros":
        assert (absent == 0).all()
    else:
        assert torch.isfinite(absent).all()
        assert not torch.equal(absent[0], absent[1])


def test_align_normal_fill_is_seeded_and_matches_statistics() -> None:
    rng = np.random.default_rng(0)
    num = 2000
    entity_to_id = {f"e{i}": i for i in range(2 * num)}
    matrix = rng.normal(loc=[5.0, -3.0], scale=[2.0, 0.5], size=(num, 2))
    labels = [f"e{i}" for i in range(num)]
    first = align_features(matrix, labels, entity_to_id, fill="normal", seed=1)
    again = align_features(matrix, labels, entity_to_id, fill="normal", seed=1)
    other = align_features(matrix, labels, entity_to_id, fill="normal", seed=2)
    generated = align_features(matrix, labels, entity_to_id, fill="normal", generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(first.features, again.features)
    torch.testing.assert_close(first.features, generated.features)
    assert not torch.equal(first.features, other.features)
    filled = first.features[~first.present].double()
    torch.testing.assert_close(filled.mean(0), torch.tensor(matrix.mean(0)), atol=0.15, rtol=0)
    torch.testing.assert_close(filled.std(0), torch.tensor(matrix.std(0)), atol=0.1, rtol=0)


def test_align_unknown_labels() -> None:
    matrix = np.ones((4, 2))
    labels = ["a", "x", "b", "y"]
    with pytest.raises(
        DataFormatError,
        match=r"2 of the 4 rows of 'f\.npy' \(labels from 'l\.txt'\) name entities that are not in the graph: "
        r"\['x', 'y'\]; pass unknown='ignore'",
    ):
        align_features(matrix, labels, ENTITY_TO_ID, source="f.npy", labels_source="l.txt")
    out = align_features(matrix, labels, ENTITY_TO_ID, unknown="ignore")
    assert out.present.tolist() == [True, True, False, False]


def test_align_no_match_at_all() -> None:
    with pytest.raises(DataFormatError, match=r"no row of 'f\.npy' matches an entity"):
        align_features(np.ones((2, 2)), ["x", "y"], ENTITY_TO_ID, unknown="ignore", source="f.npy")


def test_align_duplicate_labels() -> None:
    pattern = r"'l\.txt' \(labels of 'f\.npy'\) lists 'b' more than once \(rows \[1, 2\]"
    with pytest.raises(DataFormatError, match=pattern):
        align_features(np.ones((3, 2)), ["a", "b", "b"], ENTITY_TO_ID, source="f.npy", labels_source="l.txt")


def test_align_row_count_mismatch_names_both_files() -> None:
    with pytest.raises(DataFormatError, match=r"'f\.npy' has 3 rows but 'l\.txt' lists 2 labels"):
        align_features(np.ones((3, 2)), ["a", "b"], ENTITY_TO_ID, source="f.npy", labels_source="l.txt")


def test_align_expected_dim() -> None:
    with pytest.raises(DataFormatError, match=r"'f\.npy': expected 4 feature columns, got 2"):
        align_features(np.ones((4, 2)), None, ENTITY_TO_ID, expected_dim=4, source="f.npy")


def test_align_non_finite_matrix() -> None:
    matrix = np.ones((4, 2))
    matrix[2, 0] = np.nan
    with pytest.raises(DataFormatError, match=r"'f\.npy': row 2 \(0-based\) holds NaN or inf"):
        align_features(matrix, None, ENTITY_TO_ID, source="f.npy")


def test_align_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="fill must be one of"):
        align_features(np.ones((4, 2)), None, ENTITY_TO_ID, fill="median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown must be one of"):
        align_features(np.ones((4, 2)), None, ENTITY_TO_ID, unknown="skip")  # type: ignore[arg-type]


# FeatureSource ---------------------------------------------------------------------------------------


def test_feature_source_with_labels(tmp_path: pathlib.Path) -> None:
    np.save(tmp_path / "image.npy", np.array([[2.0], [0.0]]))
    _write(tmp_path / "image_entities.txt", "c\na\n")
    source = FeatureSource(tmp_path / "image.npy", labels=tmp_path / "image_entities.txt", fill="zeros", dim=1)
    out = source.load(ENTITY_TO_ID)
    assert out.features.view(-1).tolist() == [0.0, 0.0, 2.0, 0.0]
    assert out.present.tolist() == [True, False, True, False]
    assert not source.follows_entity_ids


def test_feature_source_with_entity2id_order(tmp_path: pathlib.Path) -> None:
    # rows follow a different id order than the graph's
    torch.save(torch.tensor([[3.0], [0.0], [1.0], [2.0]]), tmp_path / "text.pt")
    _write(tmp_path / "published_entity2id.txt", "d 0\na 1\nb 2\nc 3\n")
    out = FeatureSource(tmp_path / "text.pt", entity2id=tmp_path / "published_entity2id.txt").load(ENTITY_TO_ID)
    assert out.features.view(-1).tolist() == [0.0, 1.0, 2.0, 3.0]


def test_feature_source_follows_entity_ids(tmp_path: pathlib.Path) -> None:
    np.save(tmp_path / "x.npy", np.arange(4.0)[:, None])
    source = FeatureSource(str(tmp_path / "x.npy"))
    assert source.follows_entity_ids
    assert isinstance(source.path, pathlib.Path)
    assert source.load(ENTITY_TO_ID).features.view(-1).tolist() == [0.0, 1.0, 2.0, 3.0]


def test_feature_source_dim_and_labels_errors(tmp_path: pathlib.Path) -> None:
    np.save(tmp_path / "x.npy", np.ones((4, 3)))
    _write(tmp_path / "x_entities.txt", "a\nb\nc\n")
    with pytest.raises(DataFormatError, match=re.escape(f"{str(tmp_path / 'x.npy')!r}: expected 8 feature columns")):
        FeatureSource(tmp_path / "x.npy", dim=8).load(ENTITY_TO_ID)
    with pytest.raises(DataFormatError, match=r"x\.npy' has 4 rows but '.*x_entities\.txt' lists 3 labels"):
        FeatureSource(tmp_path / "x.npy", labels=tmp_path / "x_entities.txt").load(ENTITY_TO_ID)


def test_feature_source_options_are_checked() -> None:
    with pytest.raises(ValueError, match="labels or entity2id, not both"):
        FeatureSource("x.npy", labels="l.txt", entity2id="e.txt")
    with pytest.raises(ValueError, match="fill must be one of"):
        FeatureSource("x.npy", fill="median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown must be one of"):
        FeatureSource("x.npy", unknown="drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dim must be positive"):
        FeatureSource("x.npy", dim=0)
