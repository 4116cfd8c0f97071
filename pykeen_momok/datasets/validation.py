"""Honest validation splits: what a benchmark's model selection may look at.

DB15K's published validation file is not a selection set: of its 7,481 unique triples, 6,584 are also
training triples and 824 are test triples; only 73 are its own. Selecting on it selects for memorisation
and peeks at the test set. :func:`honest_splits` builds a validation split that overlaps neither.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

__all__ = ["VALIDATION_CHOICES", "ValidationChoice", "honest_splits", "overlap_counts"]

ValidationChoice = Literal["published", "disjoint", "heldout"]
#: what ``validation=`` of a benchmark accepts
VALIDATION_CHOICES: tuple[str, ...] = ("published", "disjoint", "heldout")


def _keys(mapped: torch.Tensor, num_entities: int, num_relations: int) -> np.ndarray:
    """One int64 key per triple ``(h, r, t)``."""
    array = mapped.detach().cpu().numpy().astype(np.int64)
    return (array[:, 0] * num_relations + array[:, 1]) * num_entities + array[:, 2]


def overlap_counts(training, validation, testing) -> dict[str, int]:
    """Unique validation triples that are training triples, test triples, or neither (``own``)."""
    e, r = training.num_entities, training.real_num_relations
    valid = np.unique(_keys(validation.mapped_triples, e, r))
    in_training = np.isin(valid, _keys(training.mapped_triples, e, r))
    in_testing = np.isin(valid, _keys(testing.mapped_triples, e, r))
    return dict(
        unique=int(valid.size),
        in_training=int(in_training.sum()),
        in_testing=int(in_testing.sum()),
        own=int((~in_training & ~in_testing).sum()),
    )


def honest_splits(training, validation, testing, choice: str, heldout_size: int, seed: int):
    """Return ``(training, validation, description)`` for a validation choice.

    :param training: the training factory (its ``mapped_triples`` hold no inverse triples)
    :param validation: the published validation factory
    :param testing: the testing factory (never changed)
    :param choice: ``"published"``: as published; ``"disjoint"``: the published validation triples that are
        neither training nor test triples (deduplicated); ``"heldout"``: ``heldout_size`` training triples
        drawn with ``seed``, removed from training and used as validation
    :param heldout_size: number of held-out training triples for ``"heldout"``
    :param seed: seed of the held-out draw
    :raises ValueError: for an unknown choice, a non-positive size, or a size that leaves no training triple
    """
    if choice not in VALIDATION_CHOICES:
        raise ValueError(f"validation must be one of {VALIDATION_CHOICES}, got {choice!r}")
    if choice == "published":
        return training, validation, "the published validation split"
    e, r = training.num_entities, training.real_num_relations
    if choice == "disjoint":
        keys = _keys(validation.mapped_triples, e, r)
        forbidden = np.concatenate([_keys(training.mapped_triples, e, r), _keys(testing.mapped_triples, e, r)])
        _, first = np.unique(keys, return_index=True)
        keep = np.zeros(keys.size, dtype=bool)
        keep[first] = True
        keep &= ~np.isin(keys, forbidden)
        if not keep.any():
            raise ValueError("validation='disjoint': every published validation triple is a training or test triple")
        kept = validation.mapped_triples[torch.as_tensor(keep)]
        description = f"the {int(keep.sum())} published validation triples that are neither training nor test triples"
        return training, validation.clone_and_exchange_triples(kept), description
    num = training.num_triples
    if not 0 < heldout_size < num:
        raise ValueError(f"heldout_size must lie in [1, {num - 1}] (the training triples), got {heldout_size}")
    generator = np.random.default_rng(seed)
    chosen = np.zeros(num, dtype=bool)
    chosen[generator.choice(num, size=heldout_size, replace=False)] = True
    mask = torch.as_tensor(chosen)
    held_out = training.mapped_triples[mask]
    description = (
        f"{heldout_size} training triples held out (seed {seed}) and removed from training; the published "
        "validation file is not used"
    )
    return (
        training.clone_and_exchange_triples(training.mapped_triples[~mask]),
        validation.clone_and_exchange_triples(held_out, create_inverse_triples=False),
        description,
    )
