"""Nothing silent (issue 12): malformed or useless input is refused or warned about, at load time.

Each test names the item of the issue it guards.
"""

from __future__ import annotations

import logging
import pathlib
import re
import warnings

import numpy as np
import pytest
import torch
from pykeen.triples import TriplesFactory

from pykeen_momok import MoMoK
from pykeen_momok.cli import main, run_demo
from pykeen_momok.datasets.archives import load_pth_matrix
from pykeen_momok.datasets.base import MultiModalDataset, detect_triples_format, map_triples, read_triples_file
from pykeen_momok.features import (
    DataFormatError,
    FeatureSource,
    align_features,
    load_feature_matrix,
    read_id_map,
    read_label_list,
)
from pykeen_momok.nn.adapters import LinearAdapter, PoolingAdapter, l2_normalize_rows
from pykeen_momok.triples import ModalityFeatures, MultiModalTriplesFactory


def _write(path: pathlib.Path, text: str) -> pathlib.Path:
    path.write_text(text, encoding="utf-8")
    return path


def _chain(n: int, start: int = 0, end: str = "\n") -> str:
    """``n`` TSV triples ``e{i} r e{i+1}``, each line ending with ``end``."""
    return "".join(f"e{i}\tr\te{i + 1}{end}" for i in range(start, start + n))


# 4: whitespace around labels -------------------------------------------------------------------------


def test_trailing_spaces_make_no_phantom_entities(tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    # trailing spaces on every line: the tails were 'e1 ', 'e2 ', ... beside the heads 'e1', 'e2', ...
    train = _write(tmp_path / "train.tsv", _chain(20, end=" \n"))
    test = _write(tmp_path / "test.tsv", _chain(10, start=5, end="  \r\n"))
    with caplog.at_level(logging.WARNING):
        dataset = MultiModalDataset(train, test, eager=True)
    assert set(dataset.training.entity_to_id) == {f"e{i}" for i in range(21)}
    assert dataset.testing.num_triples == 10  # was 1: nine test triples named a phantom 'e.. ' entity
    assert "dropping" not in caplog.text
    triples = read_triples_file(_write(tmp_path / "spaced.tsv", "  a \t r\t b \n"))
    assert triples.tolist() == [["a", "r", "b"]]


def test_label_that_is_only_whitespace_is_an_error(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path / "train.tsv", "a\tr\tb\na\t  \tb\n")
    with pytest.raises(DataFormatError, match=r"train\.tsv', line 2: malformed triple.*non-empty labels"):
        read_triples_file(path)


def test_id_maps_and_label_lists_strip_labels(tmp_path: pathlib.Path) -> None:
    assert read_id_map(_write(tmp_path / "entity2id.txt", " a  0\nNew York \t1\n")) == {"a": 0, "New York": 1}
    assert read_label_list(_write(tmp_path / "labels.txt", "a \n b\tname\n")) == ["a", "b"]
    with pytest.raises(DataFormatError, match=r"labels2\.txt', line 2: empty label"):
        read_label_list(_write(tmp_path / "labels2.txt", "a\n \tname\nb\n"))


# 5: header and comment lines -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["head\trelation\ttail\na\tr\tb\n", "H R T .\na r b .\n", "subject\tpredicate\tobject\na\tr\tb\n"],
)
def test_header_line_is_refused_unless_skipped(tmp_path: pathlib.Path, text: str) -> None:
    path = _write(tmp_path / "train.txt", text)
    with pytest.raises(DataFormatError, match=r"train\.txt', line 1: a column header, not a triple.*header='skip'"):
        read_triples_file(path)
    assert read_triples_file(path, header="skip").tolist() == [["a", "r", "b"]]
    assert read_triples_file(path, header="keep").shape == (2, 3)
    assert detect_triples_format(path, header="skip") in ("tsv", "dot")


@pytest.mark.parametrize(
    ("text", "line"),
    [("#\tnote\there\na\tr\tb\n", 1), ("a r b .\n  # note here .\n", 2), ("# a comment\na\tr\tb\n", 1)],
)
def test_comment_line_is_refused_unless_skipped(tmp_path: pathlib.Path, text: str, line: int) -> None:
    path = _write(tmp_path / "train.txt", text)
    with pytest.raises(DataFormatError, match=rf"train\.txt', line {line}: a comment line.*comments='skip'"):
        read_triples_file(path)
    assert read_triples_file(path, comments="skip").tolist() == [["a", "r", "b"]]


def test_comment_policy_keep_reads_labels_starting_with_hash(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path / "train.tsv", "#MeToo\ttag of\tpost1\n")
    assert read_triples_file(path, comments="keep").tolist() == [["#MeToo", "tag of", "post1"]]
    with pytest.raises(ValueError, match=r"comments must be one of \('error', 'skip', 'keep'\), got 'yes'"):
        read_triples_file(path, comments="yes")  # type: ignore[arg-type]


def test_dataset_header_and_comment_options(tmp_path: pathlib.Path) -> None:
    train = _write(tmp_path / "train.tsv", "# my graph\nhead\trelation\ttail\n" + _chain(4))
    test = _write(tmp_path / "test.tsv", "head\trelation\ttail\n" + _chain(1, start=1))
    with pytest.raises(DataFormatError, match=r"train\.tsv', line 1: a comment line.*triples_comments='skip'"):
        MultiModalDataset(train, test, eager=True)
    with pytest.raises(DataFormatError, match=r"train\.tsv', line 2: a column header.*triples_header='skip'"):
        MultiModalDataset(train, test, triples_comments="skip", eager=True)
    dataset = MultiModalDataset(train, test, triples_comments="skip", triples_header="skip", eager=True)
    assert dataset.training.num_triples == 4 and dataset.testing.num_triples == 1
    assert "head" not in dataset.training.entity_to_id
    with pytest.raises(ValueError, match=r"triples_header must be one of"):
        MultiModalDataset(train, test, triples_header=True)  # type: ignore[arg-type]


# 6: empty splits -------------------------------------------------------------------------------------


def test_empty_evaluation_split_is_refused_at_load_time(tmp_path: pathlib.Path) -> None:
    train = _write(tmp_path / "train.tsv", _chain(4))
    test = _write(tmp_path / "test.tsv", _chain(1))
    empty = _write(tmp_path / "empty.tsv", "\n\n")
    with pytest.raises(DataFormatError, match=r"empty\.tsv' \(testing triples\) holds no triples"):
        MultiModalDataset(train, empty, eager=True)
    with pytest.raises(
        DataFormatError, match=r"empty\.tsv' \(validation triples\) holds no triples.*validation_path=None"
    ):
        MultiModalDataset(train, test, empty, eager=True)
    with pytest.raises(DataFormatError, match=r"empty\.tsv' \(training triples\) holds no triples"):
        MultiModalDataset(empty, test, eager=True)


def test_split_whose_triples_are_all_dropped_is_refused(tmp_path: pathlib.Path) -> None:
    train = _write(tmp_path / "train.tsv", _chain(4))
    test = _write(tmp_path / "test.tsv", "x\tr\te1\ne1\tr\ty\n")
    with pytest.raises(
        DataFormatError,
        match=r"test\.tsv': all 2 triples would be dropped, none is left: .*line 1: entity 'x' is not in the "
        r"training triples.*unknown entity labels in 2 of 2 triples",
    ):
        MultiModalDataset(train, test, eager=True)
    with pytest.raises(DataFormatError, match=r"all 1 triples would be dropped.*relation 's' is not in"):
        map_triples(np.array([["a", "s", "b"]], dtype=object), {"a": 0, "b": 1}, {"r": 0}, unknown_relations="drop")


# 7: modalities that are missing ----------------------------------------------------------------------


def _folder_without_features(tmp_path: pathlib.Path) -> pathlib.Path:
    _write(tmp_path / "train.tsv", _chain(4))
    _write(tmp_path / "test.tsv", _chain(1))
    return tmp_path


def test_folder_without_feature_files_warns(tmp_path: pathlib.Path) -> None:
    folder = _folder_without_features(tmp_path)
    with pytest.warns(UserWarning, match=r"holds no feature file.*structure alone.*modalities=\[\]"):
        MultiModalDataset.from_directory(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MultiModalDataset.from_directory(folder, modalities=[])  # asked for: no warning


def test_label_list_without_feature_file_warns(tmp_path: pathlib.Path) -> None:
    folder = _folder_without_features(tmp_path)
    np.save(folder / "text.npy", np.eye(6, dtype=np.float32)[:5])
    _write(folder / "text_entities.txt", "".join(f"e{i}\n" for i in range(5)))
    _write(folder / "image_entities.txt", "e0\n")
    with pytest.warns(UserWarning, match=r"\['image_entities\.txt'\] have no feature file"):
        dataset = MultiModalDataset.from_directory(folder)
    assert list(dataset.modality_sources) == ["text"]


def _inverse_factory(cls=TriplesFactory, **kwargs):
    triples = np.array([[f"e{i}", "r", f"e{i + 1}"] for i in range(5)])
    return cls.from_labeled_triples(triples, create_inverse_triples=True, **kwargs)


def test_structure_only_momok_on_a_multimodal_factory_warns() -> None:
    factory = _inverse_factory(MultiModalTriplesFactory)
    with pytest.warns(UserWarning, match=r"carries no modalities.*structure alone.*modalities=\[\]"):
        MoMoK(triples_factory=factory, embedding_dim=4, relation_dim=4, random_seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the default-loss warning
        warnings.filterwarnings("error", message=".*carries no modalities.*")
        MoMoK(triples_factory=factory, embedding_dim=4, relation_dim=4, modalities=[], random_seed=0)
        MoMoK(triples_factory=_inverse_factory(), embedding_dim=4, relation_dim=4, random_seed=0)


# 8: useless features ---------------------------------------------------------------------------------

ENTITIES = {"a": 0, "b": 1, "c": 2, "d": 3}


def test_all_zero_features_are_refused() -> None:
    with pytest.raises(DataFormatError, match=r"'f\.npy': all 3 rows that belong to entities are all zeros"):
        align_features(np.zeros((3, 4)), ["a", "b", "c"], ENTITIES, source="f.npy")


def test_all_zero_rows_of_present_entities_warn_with_counts() -> None:
    matrix = np.array([[1.0, 2.0], [0.0, 0.0], [0.0, 0.0]])
    with pytest.warns(
        UserWarning, match=r"'f\.npy': 2 of the 3 entities with a feature row have an all-zero row \['b', 'd'\]"
    ):
        out = align_features(matrix, ["a", "b", "d"], ENTITIES, source="f.npy", fill="zeros")
    assert out.present.tolist() == [True, True, False, True]
    # rows filled with zeros for absent entities are not the file's fault: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        align_features(np.ones((2, 2)), ["a", "b"], ENTITIES, fill="zeros")


@pytest.mark.parametrize("magnitude", [1e19, 1e30, 1e-25])
def test_l2_normalisation_does_not_overflow_or_underflow(magnitude: float) -> None:
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, -1.0]]) * magnitude
    expected = torch.tensor([[0.6, 0.8], [0.0, 0.0], [2**-0.5, -(2**-0.5)]])
    torch.testing.assert_close(l2_normalize_rows(x), expected)
    torch.testing.assert_close(PoolingAdapter(2).init_table(x), expected)
    torch.testing.assert_close(LinearAdapter(2, 3, normalize=True).init_table(x), expected)


def test_momok_feature_table_of_huge_values_is_normalised() -> None:
    factory = _inverse_factory(TriplesFactory)
    image = ModalityFeatures(
        features=torch.full((factory.num_entities, 4), 2e19), present=torch.ones(factory.num_entities, dtype=bool)
    )
    factory = MultiModalTriplesFactory.from_triples_factory(factory, modalities={"image": image})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MoMoK(triples_factory=factory, embedding_dim=4, relation_dim=4, random_seed=0)
    # the table under the linear adapter (the default for user data) holds the normalised features
    table = model.entity_representations[1].base(indices=None)
    torch.testing.assert_close(table.norm(dim=1), torch.ones(factory.num_entities))


# 9: nonsense settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        (dict(relation_dim=0), r"relation_dim must be an integer >= 1, got 0"),
        (dict(embedding_dim=-4), r"embedding_dim must be an integer >= 1, got -4"),
        (dict(embedding_dim=1), r"embedding_dim=1 needs mi_hidden_dim >= 2"),
        (dict(embedding_dim=2.5), r"embedding_dim must be an integer >= 1, got 2\.5"),
        (dict(embedding_dim=True), r"embedding_dim must be an integer >= 1, got True"),
        (dict(num_experts=0), r"num_experts must be an integer >= 1, got 0"),
        (dict(num_experts=1), r"num_experts=1 leaves no pair of experts.*mi_weight=0"),
        (dict(mi_weight=-1), r"mi_weight must be a finite number >= 0, got -1"),
        (dict(mi_weight=float("nan")), r"mi_weight must be a finite number >= 0, got nan"),
        (dict(mi_estimator_lr=0.0), r"mi_estimator_lr must be a finite number > 0, got 0\.0"),
        (dict(mi_hidden_dim=1), r"mi_hidden_dim must be an integer >= 2, got 1"),
        (dict(gating_noise_epsilon=-1), r"gating_noise_epsilon must be a finite number >= 0, got -1"),
        (dict(input_dropout=1.0), r"input_dropout must be a finite number in \[0, 1\), got 1\.0"),
        (dict(core_dropout=-0.1), r"core_dropout must be a finite number in \[0, 1\), got -0\.1"),
        (dict(hidden_dropout=1.5), r"hidden_dropout must be a finite number in \[0, 1\)"),
        (dict(fusion_dropout=float("inf")), r"fusion_dropout must be a finite number in \[0, 1\)"),
        (dict(expert_dropout=1), r"expert_dropout must be a finite number in \[0, 1\)"),
        (dict(fusion_heads=0), r"fusion_heads must be an integer >= 1, got 0"),
        (dict(expert_init="zeros"), r"expert_init must be one of \('normal', 'identity'\)"),
        (dict(fused="yes"), r"fused must be True or False, got 'yes'"),
    ],
)
def test_momok_refuses_parameters_out_of_range(kwargs: dict, pattern: str) -> None:
    # checked before the factory is looked at: structure-only, where fusion_heads used to go unchecked
    with pytest.raises(ValueError, match=pattern):
        MoMoK(triples_factory=_inverse_factory(), **kwargs)


def test_momok_accepts_the_edges_of_the_ranges() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        MoMoK(
            triples_factory=_inverse_factory(),
            embedding_dim=np.int64(1),
            mi_hidden_dim=2,
            relation_dim=1,
            num_experts=1,
            mi_weight=0,
            gating_noise_epsilon=0,
            input_dropout=0,
            core_dropout=0.0,
        )


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--epochs", "-1"], r"argument --epochs: must be 1 or more, got -1"),
        (["--epochs", "0"], r"argument --epochs: must be 1 or more, got 0"),
        (["--dim", "0"], r"argument --dim: must be 1 or more, got 0"),
        (["--lr", "-1"], r"argument --lr: must be a finite number > 0, got -1"),
        (["--lr", "nan"], r"argument --lr: must be a finite number > 0, got nan"),
        (["--batch-size", "0"], r"argument --batch-size: must be 1 or more, got 0"),
        (["--batch-size", "x"], r"argument --batch-size: expected an integer, got 'x'"),
        (["--seed", "-3"], r"argument --seed: must be from 0 to 4294967295, got -3"),
        (["--json", "/nonexistent/x.json"], r"argument --json: the folder '/nonexistent' does not exist"),
        (["--dataset", "NoSuchData"], r"argument --dataset: unknown dataset 'NoSuchData'; known: .*syntheticmmkg"),
    ],
)
def test_cli_refuses_bad_options_before_training(
    args: list[str], pattern: str, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pykeen_momok.cli

    def fail(**kwargs):
        raise AssertionError("trained despite a bad option")

    monkeypatch.setattr(pykeen_momok.cli, "run_demo", fail)
    with pytest.raises(SystemExit) as info:
        main(["demo", *args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(pattern, err), err


def test_cli_json_path_that_is_a_folder(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main(["demo", "--json", str(tmp_path)])
    assert info.value.code == 2 and "is a folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [(dict(epochs=-1), r"epochs must be an integer >= 1"), (dict(lr=0.0), r"lr must be a finite number > 0")],
)
def test_run_demo_refuses_bad_settings(kwargs: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        run_demo(**kwargs)


# 13: id files, format detection, line ends ------------------------------------------------------------


def test_empty_id_files_name_the_file(tmp_path: pathlib.Path) -> None:
    train = _write(tmp_path / "train.tsv", _chain(3))
    test = _write(tmp_path / "test.tsv", _chain(1))
    empty = _write(tmp_path / "relation2id.txt", "\n")
    entity2id = _write(tmp_path / "entity2id.txt", "".join(f"e{i}\t{i}\n" for i in range(4)))
    with pytest.raises(DataFormatError, match=r"relation2id\.txt' holds no entries; expected one 'label id'"):
        MultiModalDataset(train, test, entity2id_path=entity2id, relation2id_path=empty, eager=True)
    with pytest.raises(DataFormatError, match=r"e2id\.txt' holds no entries"):
        read_id_map(_write(tmp_path / "e2id.txt", ""))
    # an empty mapping is no IndexError either
    with pytest.raises(DataFormatError, match=r"entity 'a' is not in the training triples"):
        map_triples(np.array([["a", "r", "b"]], dtype=object), {}, {"r": 0})


@pytest.mark.parametrize("text", ["a\tr\tb .\nc r d .\n", "a\tr  b  .\nc  r\td .\n", "a r\tb .\nc r d .\n"])
def test_dot_lines_with_tabs_or_double_spaces(tmp_path: pathlib.Path, text: str) -> None:
    path = _write(tmp_path / "train.txt", text)
    assert detect_triples_format(path) == "dot"
    assert read_triples_file(path).tolist() == [["a", "r", "b"], ["c", "r", "d"]]


def test_malformed_line_hints_at_the_other_format(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path / "train.txt", "a r b .\nc r d .\n")
    with pytest.raises(
        DataFormatError,
        match=r"line 1: malformed triple.*reads as 'head relation tail \.'.*"
        r"pass triples_format='dot'",
    ):
        read_triples_file(path, "tsv")
    mixed = _write(tmp_path / "mixed.txt", "a\tr\tb\nNew York\tr\td\nc r d .\n")
    with pytest.raises(
        DataFormatError,
        match=r"line 3: malformed triple.*pass triples_format='dot' \(the format "
        r"'tsv' was decided from line 1\)",
    ):
        read_triples_file(mixed)


def test_unicode_line_separators_stay_inside_labels(tmp_path: pathlib.Path) -> None:
    tsv = _write(tmp_path / "train.tsv", "a\u2028b\tr\tc\u0085d\nNew\u00a0York\tr\tc\u0085d\n")
    assert read_triples_file(tsv).tolist() == [["a\u2028b", "r", "c\u0085d"], ["New\u00a0York", "r", "c\u0085d"]]
    dot = _write(tmp_path / "train.txt", "a\u2028b r New\u00a0York .\n")
    assert read_triples_file(dot).tolist() == [["a\u2028b", "r", "New\u00a0York"]]
    assert read_label_list(_write(tmp_path / "labels.txt", "a\u2028b\nc\n")) == ["a\u2028b", "c"]
    assert read_id_map(_write(tmp_path / "entity2id.txt", "x\u0085y 1\nz 0\n")) == {"x\u0085y": 1, "z": 0}


def test_line_ends(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "train.tsv"
    path.write_bytes(b"a\tr\tb\r\nc\tr\td\re\tr\tf")
    assert read_triples_file(path).tolist() == [["a", "r", "b"], ["c", "r", "d"], ["e", "r", "f"]]


# 14: .pth files holding lists -------------------------------------------------------------------------


def test_pth_list_of_lists_is_read(tmp_path: pathlib.Path) -> None:
    rows = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    torch.save(rows, tmp_path / "features.pth")
    np.testing.assert_array_equal(load_feature_matrix(tmp_path / "features.pth"), np.array(rows, dtype=np.float32))
    np.testing.assert_array_equal(load_pth_matrix(tmp_path / "features.pth").features, np.array(rows, dtype=np.float32))
    torch.save([torch.ones(3), torch.zeros(3)], tmp_path / "tensors.pt")
    assert load_feature_matrix(tmp_path / "tensors.pt").shape == (2, 3)
    torch.save({"image": rows}, tmp_path / "dict.pt")
    assert load_feature_matrix(tmp_path / "dict.pt", key="image").shape == (2, 3)
    torch.save([[1.0, 2.0], [3.0]], tmp_path / "ragged.pth")
    with pytest.raises(DataFormatError, match=r"ragged\.pth': the rows have different lengths \[1, 2\]"):
        load_feature_matrix(tmp_path / "ragged.pth")
    with pytest.raises(DataFormatError, match=r"ragged\.pth': the rows have different lengths \[1, 2\]"):
        load_pth_matrix(tmp_path / "ragged.pth")  # the same reader
    source = FeatureSource(tmp_path / "features.pth")
    assert source.load({"a": 0, "b": 1}).features.shape == (2, 3)
