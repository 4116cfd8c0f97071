"""Honest validation splits (DB15K's published validation is mostly training and test triples)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pykeen_momok.datasets.benchmarks import DB15K, MKGY
from pykeen_momok.datasets.validation import honest_splits, overlap_counts
from pykeen_momok.triples import MultiModalTriplesFactory

from conftest import shared_dataset_dir


def _factory(triples, num_entities=6, create_inverse_triples=False):
    return MultiModalTriplesFactory(
        mapped_triples=torch.as_tensor(triples, dtype=torch.long),
        entity_to_id={f"e{i}": i for i in range(num_entities)},
        relation_to_id={"r0": 0, "r1": 1},
        create_inverse_triples=create_inverse_triples,
    )


def _set(factory):
    return {tuple(row) for row in factory.mapped_triples.tolist()}


def test_disjoint_keeps_only_own_unique_triples():
    training = _factory([[0, 0, 1], [1, 0, 2], [2, 1, 3]], create_inverse_triples=True)
    testing = _factory([[3, 0, 4]])
    validation = _factory([[0, 0, 1], [3, 0, 4], [4, 1, 5], [4, 1, 5], [5, 0, 0]])
    assert overlap_counts(training, validation, testing) == dict(unique=4, in_training=1, in_testing=1, own=2)
    new_training, new_validation, note = honest_splits(training, validation, testing, "disjoint", 10, 0)
    assert new_training is training
    assert _set(new_validation) == {(4, 1, 5), (5, 0, 0)} and new_validation.num_triples == 2
    assert "2 published validation triples" in note


def test_heldout_moves_training_triples_and_ignores_the_file():
    triples = [[i % 6, i % 2, (i + 1) % 6] for i in range(12)]
    training = _factory(np.unique(np.asarray(triples), axis=0), create_inverse_triples=True)
    validation = _factory([[0, 0, 5]])
    testing = _factory([[1, 1, 5]])
    new_training, new_validation, _ = honest_splits(training, validation, testing, "heldout", 3, seed=1)
    assert new_validation.num_triples == 3 and new_training.num_triples == training.num_triples - 3
    assert _set(new_training) | _set(new_validation) == _set(training)
    assert not _set(new_training) & _set(new_validation)
    assert new_training.create_inverse_triples and not new_validation.create_inverse_triples
    again = honest_splits(training, validation, testing, "heldout", 3, seed=1)[1]
    assert _set(again) == _set(new_validation)  # seeded
    with pytest.raises(ValueError, match="heldout_size"):
        honest_splits(training, validation, testing, "heldout", training.num_triples, seed=1)
    with pytest.raises(ValueError, match="validation must be one of"):
        honest_splits(training, validation, testing, "test", 3, seed=1)


def test_db15k_default_validation_overlaps_neither_training_nor_test(tmp_path):
    folder = shared_dataset_dir("DB15K")
    published = DB15K(directory=folder, cache_root=tmp_path, progress=False, validation="published")
    assert overlap_counts(published.training, published.validation, published.testing) == dict(
        unique=7481, in_training=6584, in_testing=824, own=73
    )
    dataset = DB15K(directory=folder, cache_root=tmp_path, progress=False)
    assert dataset.validation.num_triples == 2000
    assert dataset.training.num_triples == 79222 - 2000
    counts = overlap_counts(dataset.training, dataset.validation, dataset.testing)
    assert counts["in_training"] == 0 and counts["in_testing"] == 0
    assert "held out" in dataset.training.metadata["validation"]
    disjoint = DB15K(directory=folder, cache_root=tmp_path, progress=False, validation="disjoint")
    assert disjoint.validation.num_triples == 73
    with pytest.raises(ValueError, match="validation must be one of"):
        DB15K(directory=folder, cache_root=tmp_path, progress=False, validation="valid")


def test_mkgy_keeps_its_published_validation(tmp_path):
    dataset = MKGY(directory=shared_dataset_dir("MKG-Y"), cache_root=tmp_path, progress=False)
    assert dataset.validation.num_triples == 2665
    assert dataset.training.metadata["validation"] == "the published validation split"
