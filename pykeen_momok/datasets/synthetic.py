"""``SyntheticMMKG``: a generated multi-modal knowledge graph, built in, with no download.

It is SYNTHETIC: made to show, in a few CPU minutes, that MoMoK uses its modalities. Every entity has
two hidden attributes, a *colour* and a *shape* (``num_colours x num_shapes`` cells). Each relation
maps a head to the tails whose colour and shape are shifted by the relation's own offsets, so the
right tail of ``(h, r, ?)`` is one of the few entities of one cell. The ``image`` features encode the
colour and the ``text`` features the shape (noisy random projections), and some entities lack one of
them (filled with the mean, marked absent).

With ``relation_attributes="alternate"`` (or a list naming ``"colour"``, ``"shape"`` or ``"both"`` per
relation) some relations depend on one attribute only: a *colour* relation shifts the colour and leaves the
tail's shape to chance (a random entity of the shifted colour), a *shape* relation the other way round. Only the
image features can then help on colour relations, only the text features on shape relations: a model that uses
its modalities well shows it per relation (:mod:`pykeen_momok.analysis`). The default (``"both"``) is the
original graph, unchanged.

Structure alone cannot place *cold* entities: a fraction of entities appear in no training triple,
only in validation and testing. A structure-only model (TuckER) ranks them at random; the feature
modalities place them.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from docdata import parse_docdata
from pykeen.datasets.base import EagerDataset

from ..triples import ModalityFeatures, MultiModalTriplesFactory

__all__ = ["RELATION_ATTRIBUTES", "SyntheticMMKG", "generate_synthetic_mmkg", "resolve_relation_attributes"]

#: what a relation of the synthetic graph may shift: the colour only, the shape only, or both
RELATION_ATTRIBUTES = ("colour", "shape", "both")


def resolve_relation_attributes(relation_attributes: str | Sequence[str], num_relations: int) -> list[str]:
    """The attribute each relation shifts, one of :data:`RELATION_ATTRIBUTES` per relation.

    :param relation_attributes: ``"both"`` (every relation, the default graph), ``"alternate"`` (relation 0 colour,
        1 shape, 2 colour, ...), one of :data:`RELATION_ATTRIBUTES` for every relation, or a sequence of
        ``num_relations`` of them
    :raises ValueError: for an unknown name or a sequence of the wrong length
    """
    if isinstance(relation_attributes, str):
        if relation_attributes == "alternate":
            return [("colour", "shape")[r % 2] for r in range(num_relations)]
        relation_attributes = [relation_attributes] * num_relations
    attributes = list(relation_attributes)
    if len(attributes) != num_relations:
        raise ValueError(
            f"relation_attributes names {len(attributes)} relations, the graph has num_relations={num_relations}"
        )
    unknown = sorted({str(a) for a in attributes if a not in RELATION_ATTRIBUTES})
    if unknown:
        raise ValueError(
            f"relation_attributes: unknown {unknown}; expected 'alternate' or, per relation, one of "
            f"{RELATION_ATTRIBUTES}"
        )
    return attributes


def _features(codes: np.ndarray, num_codes: int, dim: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Noisy random-projection encoding of integer codes, shape ``(len(codes), dim)``."""
    prototypes = rng.standard_normal((num_codes, dim))
    return (prototypes[codes] + noise * rng.standard_normal((len(codes), dim))).astype(np.float32)


def generate_synthetic_mmkg(
    num_colours: int = 20,
    num_shapes: int = 30,
    num_relations: int = 6,
    triples_per_entity: int = 6,
    cold_fraction: float = 0.15,
    warm_held_out_fraction: float = 0.05,
    missing_fraction: float = 0.1,
    image_dim: int = 64,
    text_dim: int = 48,
    noise: float = 0.5,
    seed: int = 0,
    relation_attributes: str | Sequence[str] = "both",
) -> tuple[dict[str, np.ndarray], dict[str, ModalityFeatures]]:
    """Generate the labeled splits and the per-entity features (deterministic for a seed).

    There is one entity per (colour, shape) cell, ``num_colours * num_shapes`` in all; each entity is the
    head of ``triples_per_entity`` of the ``num_relations`` relations, and its tail there is the entity of
    the shifted cell. A relation that shifts only one attribute (``relation_attributes``) leaves the other one
    to chance: its tail is a random entity of the shifted colour (or shape).

    :param relation_attributes: what each relation shifts, see :func:`resolve_relation_attributes`; the random
        attribute is drawn from a stream of its own, so the cells, offsets and cold entities are those of the
        default graph of the same seed (the held-out triples differ where their tails do)
    :return: labeled triples ``{"training", "validation", "testing"}`` each of shape ``(n, 3)``, and the
        ``image`` / ``text`` :class:`ModalityFeatures` in entity-id order (labels ``e00000``, ...)
    """
    if not 0 < triples_per_entity <= num_relations:
        raise ValueError(f"triples_per_entity must be in 1..num_relations={num_relations}, got {triples_per_entity}")
    attributes = resolve_relation_attributes(relation_attributes, num_relations)
    rng = np.random.default_rng(seed)
    num_entities = num_colours * num_shapes
    cell = rng.permutation(num_entities)  # entity -> its cell
    entity_of_cell = np.argsort(cell)
    colour, shape = cell // num_shapes, cell % num_shapes
    colour_offset = rng.integers(1, num_colours, size=num_relations)
    shape_offset = rng.integers(1, num_shapes, size=num_relations)

    heads = np.repeat(np.arange(num_entities), triples_per_entity)
    relations = np.argsort(rng.random((num_entities, num_relations)), axis=1)[:, :triples_per_entity].ravel()
    target_colour = (colour[heads] + colour_offset[relations]) % num_colours
    target_shape = (shape[heads] + shape_offset[relations]) % num_shapes
    if any(attribute != "both" for attribute in attributes):
        # a separate stream: the default graph's draws (cold entities, features) stay as they are
        chance = np.random.default_rng([seed, 1])
        kind = np.asarray(attributes)[relations]
        random_colour = chance.integers(0, num_colours, size=len(heads))
        random_shape = chance.integers(0, num_shapes, size=len(heads))
        target_colour = np.where(kind == "shape", random_colour, target_colour)
        target_shape = np.where(kind == "colour", random_shape, target_shape)
    target = target_colour * num_shapes + target_shape
    triples = np.stack([heads, relations, entity_of_cell[target]], axis=1)

    # cold entities: none of their triples is in training, so structure alone knows nothing of them;
    # a small share of the other triples is held out too, so the evaluation also covers warm entities
    cold = rng.random(num_entities) < cold_fraction
    held_out = cold[triples[:, 0]] | cold[triples[:, 2]] | (rng.random(len(triples)) < warm_held_out_fraction)
    held_out_index = np.flatnonzero(held_out)
    rng.shuffle(held_out_index)
    half = len(held_out_index) // 2
    split_index = {
        "training": np.flatnonzero(~held_out),
        "validation": held_out_index[:half],
        "testing": held_out_index[half:],
    }
    labels = np.array([f"e{i:05d}" for i in range(num_entities)])
    relation_labels = np.array([f"r{i:02d}" for i in range(num_relations)])

    def labeled(index: np.ndarray) -> np.ndarray:
        t = triples[np.sort(index)]
        return np.stack([labels[t[:, 0]], relation_labels[t[:, 1]], labels[t[:, 2]]], axis=1)

    modalities = {}
    for name, codes, num_codes, dim in (
        ("image", colour, num_colours, image_dim),
        ("text", shape, num_shapes, text_dim),
    ):
        values = _features(codes, num_codes, dim, noise, rng)
        present = rng.random(num_entities) >= missing_fraction
        values[~present] = values[present].mean(axis=0)
        modalities[name] = ModalityFeatures(
            features=torch.from_numpy(values), present=torch.from_numpy(present), fill="mean"
        )
    return {key: labeled(index) for key, index in split_index.items()}, modalities


_GENERATOR_DEFAULTS = {
    name: parameter.default for name, parameter in inspect.signature(generate_synthetic_mmkg).parameters.items()
}


@parse_docdata
class SyntheticMMKG(EagerDataset):
    """A generated multi-modal KG with planted image/text signal (synthetic; see the module docstring).

    ---
    name: Synthetic multi-modal KG
    statistics:
        entities: 600
        relations: 6
        training: 2406
        testing: 597
        validation: 597
        triples: 3600
    """

    #: PyKEEN's dataset cache rebuilds the factories with this class: it keeps the features
    triples_factory_cls = MultiModalTriplesFactory
    #: ``get_dataset`` generates it afresh instead of caching it under PyKEEN's home folder
    #: (see :func:`pykeen_momok.registration.patch_dataset_cache`): generating takes well under a second, and a
    #: cached copy, keyed by the keyword arguments only, would outlive any change of the generator
    cache_in_pykeen_home: ClassVar[bool] = False

    def __init__(self, create_inverse_triples: bool = True, seed: int = 0, **kwargs: Any) -> None:
        """Generate the dataset.

        :param create_inverse_triples: add inverse triples (MoMoK needs them)
        :param seed: the generator's seed; the default graph is ``seed=0``
        :param kwargs: further parameters of :func:`generate_synthetic_mmkg`
        """
        splits, modalities = generate_synthetic_mmkg(seed=seed, **kwargs)
        num_relations = kwargs.get("num_relations", _GENERATOR_DEFAULTS["num_relations"])
        # what each relation shifts, by label (r00, ...): what an analysis of a trained model should find
        relation_attributes = dict(
            zip(
                (f"r{i:02d}" for i in range(num_relations)),
                resolve_relation_attributes(
                    kwargs.get("relation_attributes", _GENERATOR_DEFAULTS["relation_attributes"]), num_relations
                ),
                strict=True,
            )
        )
        num_entities = len(modalities["image"].present)
        all_labels = np.array([f"e{i:05d}" for i in range(num_entities)])
        entity_to_id = {label: i for i, label in enumerate(all_labels)}
        relation_to_id = {
            label: i for i, label in enumerate(sorted({r for triples in splits.values() for r in triples[:, 1]}))
        }
        factories = {
            key: MultiModalTriplesFactory.from_labeled_triples(
                triples,
                entity_to_id=entity_to_id,
                relation_to_id=relation_to_id,
                create_inverse_triples=create_inverse_triples,
                modalities=modalities,
                metadata=dict(synthetic=True, seed=seed, relation_attributes=relation_attributes),
            )
            for key, triples in splits.items()
        }
        super().__init__(**factories)
