"""pykeen_momok.analysis on small models: hand-set weights, brute-force ranks, PyKEEN's evaluator, corruption."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from pykeen.datasets import EagerDataset

from pykeen_momok import MoMoK, MoMoKLoss
from pykeen_momok.analysis import (
    DECISION,
    _internals,
    explain_target,
    head_ranks,
    presence_metrics,
    rank_metrics,
    relation_summary,
    relation_weights,
    robustness_table,
    side_metrics,
)
from pykeen_momok.analysis.robustness import corrupt_rows, corrupted_entities
from pykeen_momok.datasets.synthetic import SyntheticMMKG
from pykeen_momok.predict import Predictor, UnknownLabelError, evaluate_model
from pykeen_momok.triples import ModalityFeatures, MultiModalTriplesFactory

# a hand-built model ------------------------------------------------------------------------------------------

ENTITIES = ["a", "b", "c", "d"]
#: the structural embedding and the image table (the identity adapter, not normalised: the table is the features)
STRUCTURE = [[0.5, -1.0], [1.0, 0.2], [-0.3, 0.8], [0.9, 0.9]]
IMAGE = [[1.0, 0.0], [0.0, 2.0], [0.5, 0.5], [0.25, 0.75]]  # d's row: the mean of the present rows (absent)
#: gate projections U (d x K) per modality, the temperature logits of r and r^-1, the fusion attention vectors
GATES = {"structure": [[1.0, -1.0], [0.5, 2.0]], "image": [[-2.0, 1.0], [0.0, 3.0]]}
THETA = [0.0, 2.0]
ENTITY_ATTENTION, RELATION_ATTENTION = [1.0, 0.5], [-1.0, 2.0]
#: the relation vectors of the structure and image heads, for r and r^-1 (the relation fusion's inputs)
RELATION_VECTORS = {"structure": [[0.2, 1.0], [1.5, 0.0]], "image": [[1.0, 1.0], [0.0, 0.4]]}
TRAINING = [("a", "r", "b"), ("b", "r", "c"), ("a", "r", "c"), ("c", "r", "d")]
TESTING = [("d", "r", "a"), ("b", "r", "d")]


def _factory(triples, modality: ModalityFeatures) -> MultiModalTriplesFactory:
    return MultiModalTriplesFactory.from_labeled_triples(
        np.array(triples, dtype=str),
        entity_to_id={e: i for i, e in enumerate(ENTITIES)},
        relation_to_id={"r": 0},
        create_inverse_triples=True,
        modalities={"image": modality},
    )


@pytest.fixture(scope="module")
def hand_built() -> tuple[MoMoK, EagerDataset]:
    """A MoMoK with known gates, temperatures and fusion: experts and fusion projections are identities."""
    image = ModalityFeatures(features=torch.tensor(IMAGE), present=torch.tensor([True, True, True, False]))
    training, testing = _factory(TRAINING, image), _factory(TESTING, image)
    model = MoMoK(
        triples_factory=training,
        embedding_dim=2,
        relation_dim=2,
        num_experts=2,
        mi_weight=0.0,
        fusion_heads=1,
        adapters="identity",
        normalize_features=False,
        input_dropout=0.0,
        core_dropout=0.0,
        hidden_dropout=0.0,
        fusion_dropout=0.0,
        gating_noise=False,
        loss=MoMoKLoss(),
        random_seed=0,
    )
    with torch.no_grad():
        model.entity_representations[0]._embeddings.weight.copy_(torch.tensor(STRUCTURE))
        model.relation_representations[0]._embeddings.weight.copy_(torch.tensor(THETA).view(2, 1))
        for index, name in enumerate(("structure", "image")):
            experts = model.interaction.experts[index]
            experts.weight.copy_(torch.eye(2).expand(2, 2, 2))  # every expert is x -> x: e_m = x
            experts.bias.zero_()
            experts.w_gate.copy_(torch.tensor(GATES[name]))
            model.relation_representations[1 + index]._embeddings.weight.copy_(torch.tensor(RELATION_VECTORS[name]))
        for fusion, attention in (
            (model.interaction.entity_fusion, ENTITY_ATTENTION),
            (model.interaction.relation_fusion, RELATION_ATTENTION),
        ):
            for linear in fusion.projections[0]:
                linear.weight.copy_(torch.eye(2))
                linear.bias.zero_()
            fusion.attention.weight.copy_(torch.tensor([attention]))
    model.eval()
    return model, EagerDataset(training=training, testing=testing)


def _softmax(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return [e / sum(exps) for e in exps]


def _attention(vectors: list[list[float]], a: list[float]) -> list[float]:
    """Fusion attention of identity projections: softmax over modalities of a . ReLU(x_m)."""
    return _softmax([sum(ai * max(0.0, xi) for ai, xi in zip(a, x)) for x in vectors])


def test_relation_weights_are_the_hand_set_ones(hand_built):
    model, dataset = hand_built
    weights = relation_weights(model, dataset.training)
    rows = {"structure": STRUCTURE, "image": IMAGE}
    index = {e: i for i, e in enumerate(ENTITIES)}
    for direction, given_column, theta in (("forward", 0, THETA[0]), ("inverse", 2, THETA[1])):
        given = sorted({index[t[given_column]] for t in TRAINING})  # distinct queries: a, b, c / b, c, d
        temperature = 1 / (1 + math.exp(-theta))
        selected = weights[weights["direction"] == direction]
        assert set(selected["queries"]) == {len(given)}
        assert selected["temperature"].to_numpy() == pytest.approx(temperature)
        for name, table in rows.items():
            expected = np.mean(
                [
                    _softmax([sum(table[e][j] * GATES[name][j][k] for j in range(2)) / temperature for k in range(2)])
                    for e in given
                ],
                axis=0,
            )
            gates = selected[(selected["kind"] == "gate") & (selected["modality"] == name)].sort_values("expert")
            assert gates["weight"].to_numpy() == pytest.approx(expected, abs=1e-6)
        fusion = selected[selected["kind"] == "entity_fusion"].set_index("modality")["weight"]
        expected = np.mean([_attention([STRUCTURE[e], IMAGE[e]], ENTITY_ATTENTION) for e in given], axis=0)
        assert fusion[["structure", "image"]].to_numpy() == pytest.approx(expected, abs=1e-6)
        relation = 0 if direction == "forward" else 1
        expected = _attention(
            [RELATION_VECTORS["structure"][relation], RELATION_VECTORS["image"][relation]], RELATION_ATTENTION
        )
        fusion = selected[selected["kind"] == "relation_fusion"].set_index("modality")["weight"]
        assert fusion[["structure", "image"]].to_numpy() == pytest.approx(expected, abs=1e-6)
    assert set(weights["relation"]) == {"r"}

    summary = relation_summary(weights)
    assert list(summary["direction"]) == ["forward", "inverse"]
    assert list(summary.columns[5:]) == [
        "entity_fusion:structure",
        "entity_fusion:image",
        "relation_fusion:structure",
        "relation_fusion:image",
        "gate:structure:0",
        "gate:structure:1",
        "gate:image:0",
        "gate:image:1",
    ]
    tidy = weights.set_index(["direction", "kind", "modality", "expert"])["weight"]
    assert summary.loc[1, "gate:image:1"] == pytest.approx(tidy[("inverse", "gate", "image", 1)])
    # other triples: their queries, and none for a relation without any (weights NaN, temperature still known)
    only_d = relation_weights(model, dataset.training, triples=dataset.testing.mapped_triples[:1])
    assert set(only_d["queries"]) == {1}
    with pytest.raises(ValueError, match=r"shape \(n, 3\)"):
        relation_weights(model, dataset.training, triples=torch.zeros(2, 2, dtype=torch.long))


def test_the_model_is_left_as_it_was(hand_built):
    model, dataset = hand_built
    model.train()
    before = {key: value.clone() for key, value in model.state_dict().items() if isinstance(value, torch.Tensor)}
    relation_weights(model, dataset.training)
    head_ranks(model, dataset)
    assert model.training  # the mode is restored
    model.eval()
    robustness_table(model, dataset, rates=(0.5, 1.0), use_tqdm=False)
    after = model.state_dict()
    assert all(torch.equal(value, after[key]) for key, value in before.items())


# ranks against a brute force and against PyKEEN's evaluator ----------------------------------------------------


@pytest.fixture(scope="module")
def random_model() -> tuple[MoMoK, SyntheticMMKG]:
    dataset = SyntheticMMKG(
        num_colours=5, num_shapes=6, num_relations=3, triples_per_entity=3, image_dim=6, text_dim=5, seed=2
    )
    model = MoMoK(
        triples_factory=dataset.training,
        embedding_dim=8,
        relation_dim=6,
        num_experts=2,
        loss=MoMoKLoss(),
        random_seed=1,
    )
    return model.eval(), dataset


def test_head_ranks_are_the_brute_force_filtered_ranks(random_model):
    model, dataset = random_model
    ranks = head_ranks(model, dataset, "testing", batch_size=7)
    predictor = Predictor(model, dataset.training)
    known = {
        tuple(map(int, t))
        for key in ("training", "validation", "testing")
        for t in dataset.factory_dict[key].mapped_triples
    }
    heads = (*model.head_names, DECISION)
    assert len(ranks) == 2 * dataset.testing.num_triples
    for row in ranks.itertuples(index=False):
        h, r, t = row.head_id, row.relation_id, row.tail_id
        probabilities = predictor.head_probabilities(row.given_id, r, inverse=row.side == "head")
        scores = torch.cat([probabilities, probabilities.mean(dim=0, keepdim=True)])
        others = [
            e
            for e in range(model.num_entities)
            if e != row.target_id and ((e, r, t) if row.side == "head" else (h, r, e)) not in known
        ]
        assert row.candidates == len(others) + 1
        for name, values in zip(heads, scores, strict=True):
            true = values[row.target_id]
            better = sum(values[e] > true for e in others)
            equal = sum(values[e] == true for e in others)
            assert getattr(row, f"rank_{name}") == 1 + better + equal / 2, name
        assert row.relation == dataset.training.relation_id_to_label[r]


def test_decision_metrics_are_pykeens(random_model):
    model, dataset = random_model
    metrics = side_metrics(head_ranks(model, dataset, "validation"))
    pykeen = evaluate_model(model, dataset, "validation", use_tqdm=False)["metrics"]
    decision = metrics[metrics["head"] == DECISION].set_index("side")
    for side in ("head", "tail", "both"):
        for name in ("MRR", "H@1", "H@3", "H@10"):
            assert decision.loc[side, name] == pytest.approx(pykeen[side][name], abs=1e-4), (side, name)
    assert set(metrics["head"]) == {*model.head_names, DECISION}


def test_rank_metrics_groups(random_model):
    model, dataset = random_model
    ranks = head_ranks(model, dataset)
    per_relation = rank_metrics(ranks, by="relation")
    assert list(per_relation.columns) == ["relation", "head", "MRR", "H@1", "H@3", "H@10", "count"]
    assert per_relation.groupby("head")["count"].sum().eq(len(ranks)).all()
    image = ranks[ranks["relation"] == "r01"]["rank_image"]
    row = per_relation[(per_relation["relation"] == "r01") & (per_relation["head"] == "image")].iloc[0]
    assert row["MRR"] == pytest.approx(float((1 / image).mean()))
    assert row["H@3"] == pytest.approx(float((image <= 3).mean()))
    two = rank_metrics(ranks, by=["relation", "side"])
    assert len(two) == 3 * 2 * len(model.head_names + (DECISION,))
    with pytest.raises(ValueError, match="cannot group by"):
        rank_metrics(ranks, by="colour")
    with pytest.raises(ValueError, match="not a head_ranks table"):
        rank_metrics(pd.DataFrame({"x": [1]}))
    with pytest.raises(ValueError, match="no testing split|split must be"):
        head_ranks(model, dataset, "test")


def test_presence_metrics_split_by_the_mask(random_model):
    model, dataset = random_model
    ranks = head_ranks(model, dataset)
    table = presence_metrics(ranks, dataset.training.modalities)
    present = dataset.training.modalities["text"].present
    for role in ("target", "given"):
        has = present.numpy()[ranks[f"{role}_id"].to_numpy()]
        rows = table[(table["modality"] == "text") & (table["entity"] == role) & (table["head"] == "text")]
        counts = rows.set_index("present")["count"]
        assert counts.get(True, 0) == has.sum() and counts.get(False, 0) == (~has).sum()
        expected = float((1 / ranks.loc[~has, "rank_text"]).mean())
        assert rows.set_index("present").loc[False, "MRR"] == pytest.approx(expected)


# explained predictions -------------------------------------------------------------------------------------


def test_explain_target_follows_pykeen_and_the_predictor(random_model):
    model, dataset = random_model
    factory = dataset.training
    h, r, t = (int(x) for x in factory.mapped_triples[0])
    labels = factory.entity_id_to_label
    explained = explain_target(model, factory, head=labels[h], relation=factory.relation_id_to_label[r], k=5)
    assert explained.target == "tail" and explained.other_columns_fixed_ids == (h, r)
    expected = Predictor(model, factory).predict(head=labels[h], relation=factory.relation_id_to_label[r], k=5)
    assert list(explained.df["tail_id"]) == [p.id for p in expected]
    assert list(explained.df.index) == [p.id for p in expected]  # PyKEEN's frame keeps the ids as index
    for row, prediction in zip(explained.df.itertuples(index=False), expected, strict=True):
        assert row.score == pytest.approx(prediction.score, abs=1e-6)
        assert row.tail_label == prediction.label
        for name in model.head_names:
            assert getattr(row, f"p_{name}") == pytest.approx(prediction.heads[name], abs=1e-6)
        fusion = [getattr(row, f"fusion_{name}") for name in model.modality_names]
        assert sum(fusion) == pytest.approx(1.0, abs=1e-5)
    # the query's weights are those of the relation table for this one query
    weights = relation_weights(model, factory, triples=torch.tensor([[h, r, t]]))
    forward = weights[(weights["direction"] == "forward") & (weights["relation_id"] == r)]
    forward = forward.set_index(["kind", "modality", "expert"])["weight"]
    query = explained.query_weights.set_index(["kind", "modality", "expert"])["weight"]
    assert query.sort_index().to_numpy() == pytest.approx(forward.sort_index().to_numpy(), abs=1e-6)
    temperature = weights.loc[(weights["direction"] == "forward") & (weights["relation_id"] == r), "temperature"]
    assert explained.temperature == pytest.approx(float(temperature.iloc[0]))
    # PyKEEN's post-processing works on it
    membership = explain_target(model, factory, head=h, relation=r, k=None).add_membership_columns(training=factory)
    assert bool(membership.df.set_index("tail_id").loc[t, "in_training"])
    unknown = explain_target(model, factory, head=h, relation=r, k=None).filter_triples(factory)
    assert t not in set(unknown.df["tail_id"]) and len(unknown.df) < model.num_entities

    heads = explain_target(model, factory, relation=r, tail=t, k=3)
    assert heads.target == "head" and list(heads.df.columns[:2]) == ["head_id", "head_label"]
    assert heads.other_columns_fixed_ids == (r, t)
    assert heads.df["head_id"].tolist() == [
        p.id for p in Predictor(model, factory).predict(relation=factory.relation_id_to_label[r], tail=labels[t], k=3)
    ]


def test_explain_target_errors(random_model):
    model, dataset = random_model
    factory = dataset.training
    with pytest.raises(ValueError, match="exactly one of head"):
        explain_target(model, factory, head=0, tail=1, relation=0)
    with pytest.raises(UnknownLabelError, match="did you mean 'e00001'"):
        explain_target(model, factory, head="E00001", relation=0)
    with pytest.raises(ValueError, match=r"entity id in 0\.\.29"):
        explain_target(model, factory, head=30, relation=0)
    with pytest.raises(ValueError, match=r"relation id in 0\.\.2"):
        explain_target(model, factory, head=0, relation=3)
    with pytest.raises(ValueError, match="k must be"):
        explain_target(model, factory, head=0, relation=0, k=0)
    with pytest.raises(TypeError, match="needs a MoMoK"):
        relation_weights(torch.nn.Linear(2, 2), factory)


# robustness -------------------------------------------------------------------------------------------------


def test_corrupt_rows_missing_and_noise():
    table = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 9.0], [2.0, 2.0]])
    present = torch.tensor([True, True, True, False])
    rows = torch.tensor([0, 2])
    generator = torch.Generator().manual_seed(0)
    missing = corrupt_rows(table, present, "mean", rows, "missing", generator)
    assert torch.equal(missing[[0, 2]], table[[3, 3]])  # the row the dataset filled absent entities with
    assert torch.equal(missing[[1, 3]], table[[1, 3]]) and table[0, 0] == 1.0  # the rest, and the input, kept
    everyone = torch.ones(4, dtype=torch.bool)
    assert torch.equal(corrupt_rows(table, everyone, "zeros", rows, "missing", generator)[rows], torch.zeros(2, 2))
    assert corrupt_rows(table, everyone, "mean", rows, "missing", generator)[0].tolist() == [2.75, 4.25]
    many = torch.arange(10_000)
    big = torch.randn(10_000, 2, generator=torch.Generator().manual_seed(7)) * torch.tensor([1.0, 3.0]) + 5.0
    noise = corrupt_rows(big, torch.ones(10_000, dtype=torch.bool), "mean", many, "noise", generator)
    # the table's per-column mean and standard deviation, within 3.5 standard errors (0.05 standard deviations)
    assert ((noise.mean(dim=0) - big.mean(dim=0)).abs() / big.std(dim=0)).max() < 0.05
    assert noise.std(dim=0).tolist() == pytest.approx(big.std(dim=0).tolist(), rel=0.05)
    assert not torch.equal(noise, big)
    normal = corrupt_rows(table, present, "normal", rows, "missing", generator)
    assert not torch.equal(normal[0], normal[2])  # the "normal" fill draws every row
    with pytest.raises(ValueError, match="mode must be"):
        corrupt_rows(table, present, "mean", rows, "blur", generator)


def test_corrupted_entities_are_nested_and_seeded():
    small = corrupted_entities(100, 0.25, seed=3, modality="image")
    large = corrupted_entities(100, 0.75, seed=3, modality="image")
    assert len(small) == 25 and len(large) == 75 and set(small.tolist()) <= set(large.tolist())
    assert torch.equal(small, corrupted_entities(100, 0.25, seed=3, modality="image"))
    assert not torch.equal(small, corrupted_entities(100, 0.25, seed=4, modality="image"))
    assert len(corrupted_entities(100, 0.0, seed=3, modality="image")) == 0


def test_robustness_table(random_model):
    model, dataset = random_model
    table = robustness_table(model, dataset, rates=(0.0, 0.5, 1.0), seed=1, use_tqdm=False)
    heads = [*model.head_names, DECISION]
    assert len(table) == 2 * 2 * 3 * len(heads)  # modalities x modes x rates x heads
    clean = rank_metrics(head_ranks(model, dataset)).set_index("head")["MRR"]
    at_zero = table[table["rate"] == 0.0]
    assert (
        at_zero.groupby("head")["MRR"]
        .agg(["min", "max"])
        .apply(lambda row: row["min"] == row["max"] == clean[row.name], axis=1)
        .all()
    )
    # every image row the same: the image head ties all candidates, each ranked in the middle of them
    ranks = head_ranks(model, dataset)
    expected = float((2.0 / (1.0 + ranks["candidates"])).mean())
    image = table[(table["modality"] == "image") & (table["mode"] == "missing") & (table["rate"] == 1.0)]
    assert image.set_index("head").loc["image", "MRR"] == pytest.approx(expected)
    assert image.set_index("head").loc["structure", "MRR"] == pytest.approx(clean["structure"])
    assert set(table["corrupted"]) == {0, 15, 30}
    with pytest.raises(ValueError, match="no feature modality"):
        robustness_table(model, dataset, modalities=["audio"])
    with pytest.raises(ValueError, match="rates in|numbers in"):
        robustness_table(model, dataset, rates=(1.5,))
    with pytest.raises(ValueError, match="modes must be"):
        robustness_table(model, dataset, modes=("blur",))


def test_feature_table_round_trip(hand_built):
    model, _ = hand_built
    copy = _internals.copy_for_corruption(model)
    assert torch.equal(_internals.feature_table(copy, "image"), torch.tensor(IMAGE))
    _internals.write_feature_table(copy, "image", torch.zeros(4, 2))
    assert torch.equal(_internals.feature_table(copy, "image"), torch.zeros(4, 2))
    assert torch.equal(_internals.feature_table(model, "image"), torch.tensor(IMAGE))
    with pytest.raises(ValueError, match=r"has shape \(4, 2\)"):
        _internals.write_feature_table(copy, "image", torch.zeros(3, 2))
    with pytest.raises(ValueError, match="no feature modality 'text'"):
        _internals.feature_table(model, "text")
