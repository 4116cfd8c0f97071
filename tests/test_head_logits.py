"""How MoMoK's per-head logits reach MoMoKLoss (see :mod:`pykeen_momok.losses`): the record on its own, then
PyKEEN's own training loops (LCWA, symmetric LCWA (score_h and score_t), sLCWA with and without a filterer),
and losses that are not MoMoKLoss, which train on the mean logit and make the model keep nothing."""

from __future__ import annotations

import copy
import math
import pickle
import warnings

import pytest
import torch
from pykeen.losses import BCEWithLogitsLoss, MarginRankingLoss, SoftplusLoss
from pykeen.training import LCWATrainingLoop, SLCWATrainingLoop, SymmetricLCWATrainingLoop

from pykeen_momok.datasets.synthetic import SyntheticMMKG
from pykeen_momok.losses import HeadLogitsRecord, MoMoKLoss
from pykeen_momok.model import MoMoK

SMALL = dict(embedding_dim=8, relation_dim=8, num_experts=2, mi_weight=0.0)


@pytest.fixture(scope="module")
def tiny() -> SyntheticMMKG:
    return SyntheticMMKG(
        num_colours=6, num_shapes=6, num_relations=3, triples_per_entity=3, image_dim=6, text_dim=5, seed=1
    )


# the record ------------------------------------------------------------------------------------------------


def test_record_finds_scores_their_views_and_pykeens_concatenation():
    record = HeadLogitsRecord()
    heads_p, heads_n = torch.randn(3, 4, 1), torch.randn(3, 8, 1)
    positive, negative = record.record(heads_p), record.record(heads_n)
    assert torch.equal(positive, heads_p.mean(dim=0)) and len(record) == 2
    assert torch.equal(record.find(positive), heads_p)
    # sLCWA's .view to (B, K), then the pointwise loss's .view(-1) and concatenation
    negative = negative.view(4, 2)
    assert torch.equal(record.find(negative), heads_n.reshape(3, 4, 2))
    flat = torch.cat([positive.view(-1), negative.view(-1)])
    both = torch.cat([heads_p.reshape(3, -1), heads_n.reshape(3, -1)], dim=1)
    assert torch.equal(record.find(flat), both)
    # not: the same values in another order, other values, part of them, the other order of concatenation
    assert record.find(negative.t()) is None and record.find(negative.t().contiguous()) is None
    assert record.find(negative + 1) is None and record.find(negative[:3]) is None
    assert record.find(torch.cat([negative.view(-1), positive.view(-1)])) is None
    # take forgets what it found and everything recorded before
    assert torch.equal(record.take(flat), both) and len(record) == 0 and record.find(positive) is None


def test_record_keeps_the_latest_forwards_only_and_nothing_in_a_pickle():
    record = HeadLogitsRecord()
    first = record.record(torch.randn(2, 5))
    second = record.record(torch.randn(2, 5))
    third = record.record(torch.full((2, 5), math.nan))  # NaN scores are still found (and then fail the loss)
    assert len(record) == HeadLogitsRecord.capacity == 2
    assert record.find(first) is None and record.find(second) is not None and record.find(third.clone()) is not None
    assert record.take(second) is not None and len(record) == 1  # the later forward stays
    assert len(pickle.loads(pickle.dumps(record))) == 0 and len(copy.deepcopy(record)) == 0


def test_a_pickled_model_keeps_no_logits_and_its_loss_reads_its_own_record(tiny):
    model = MoMoK(triples_factory=tiny.training, loss=MoMoKLoss(), random_seed=0, **SMALL).train()
    model.score_t(tiny.training.mapped_triples[:4, :2])  # a forward no loss has read
    assert len(model.head_logits_record) == 1 and model.loss.head_logits_source is model.head_logits_record
    restored = pickle.loads(pickle.dumps(model))
    assert len(restored.head_logits_record) == 0 and restored.loss.head_logits_source is restored.head_logits_record
    assert "head_logits_record" not in str(list(model.state_dict()))


# PyKEEN's training loops with MoMoKLoss ------------------------------------------------------------------


def _spy(monkeypatch, loss: MoMoKLoss) -> dict[str, list]:
    """Record what PyKEEN hands the loss, and which per-head logits the loss then trains on."""
    seen: dict[str, list] = {"lcwa": [], "slcwa": [], "heads": []}
    process_lcwa, process_slcwa, multi_head = loss.process_lcwa_scores, loss.process_slcwa_scores, loss._multi_head

    def lcwa(predictions, labels, *args, **kwargs):
        seen["lcwa"].append((predictions.detach().clone(), labels.clone()))
        return process_lcwa(predictions, labels, *args, **kwargs)

    def slcwa(positive_scores, negative_scores, *args, **kwargs):
        seen["slcwa"].append((positive_scores.shape, negative_scores.shape, kwargs.get("batch_filter")))
        return process_slcwa(positive_scores, negative_scores, *args, **kwargs)

    def heads(head_scores, labels, *args):
        seen["heads"].append(head_scores.detach().clone())
        return multi_head(head_scores, labels, *args)

    monkeypatch.setattr(loss, "process_lcwa_scores", lcwa)
    monkeypatch.setattr(loss, "process_slcwa_scores", slcwa)
    monkeypatch.setattr(loss, "_multi_head", heads)
    return seen


def _assert_heads_of_the_scores(model: MoMoK, seen: dict[str, list]) -> None:
    """Every loss call trained on per-head logits whose mean is exactly the scores PyKEEN passed."""
    assert seen["lcwa"] and len(seen["lcwa"]) == len(seen["heads"])
    for (predictions, labels), heads in zip(seen["lcwa"], seen["heads"], strict=True):
        assert heads.shape == (len(model.head_names), *predictions.shape) and labels.shape == predictions.shape
        torch.testing.assert_close(heads.mean(dim=0), predictions, rtol=0, atol=0)
    assert len(model.head_logits_record) == 0  # the loss took every forward it read


def _train(loop_cls, model, factory, **kwargs) -> list[float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the sLCWA and other-loss hints, PyKEEN's deprecation notes
        loop = loop_cls(model=model, triples_factory=factory, optimizer="adam", **kwargs)
        return loop.train(triples_factory=factory, num_epochs=1, batch_size=32, use_tqdm=False)


@pytest.mark.parametrize(
    ("loop_cls", "kwargs"),
    [(LCWATrainingLoop, {}), (SymmetricLCWATrainingLoop, {})],
    ids=["lcwa", "symmetric-lcwa"],
)
def test_lcwa_loops_train_each_head_on_its_own_logits(tiny, monkeypatch, loop_cls, kwargs):
    model = MoMoK(triples_factory=tiny.training, loss=MoMoKLoss(), random_seed=0, **SMALL)
    seen = _spy(monkeypatch, model.loss)
    losses = _train(loop_cls, model, tiny.training, **kwargs)
    assert math.isfinite(losses[0])
    _assert_heads_of_the_scores(model, seen)
    assert all(predictions.shape[-1] == tiny.training.num_entities for predictions, _ in seen["lcwa"])  # 1-N


@pytest.mark.parametrize("filtered", [False, True], ids=["unfiltered", "filterer"])
def test_slcwa_trains_each_head_on_the_logits_of_positives_and_negatives(tiny, monkeypatch, filtered):
    model = MoMoK(triples_factory=tiny.training, loss=MoMoKLoss(), random_seed=0, **SMALL)
    seen = _spy(monkeypatch, model.loss)
    sampler = dict(num_negs_per_pos=3, filtered=filtered)
    losses = _train(SLCWATrainingLoop, model, tiny.training, negative_sampler="basic", negative_sampler_kwargs=sampler)
    assert math.isfinite(losses[0])
    _assert_heads_of_the_scores(model, seen)
    for (positive, negative, batch_filter), (predictions, labels) in zip(seen["slcwa"], seen["lcwa"], strict=True):
        batch = positive[0]
        if filtered:  # PyKEEN drops the filtered negatives before scoring them, and says which it kept
            assert batch_filter is not None and batch_filter.shape == (batch, 3) and negative == (batch_filter.sum(),)
        else:
            assert batch_filter is None and negative == (batch, 3)
        assert predictions.shape == (batch + negative.numel(),)
        assert labels[:batch].eq(1).all() and labels[batch:].eq(0).all()  # positives first, as recorded
    if filtered:
        assert any(bool((~f).any()) for _, _, f in seen["slcwa"]), "the filterer dropped nothing: no test of it"


def test_a_momok_loss_set_after_construction_reads_the_heads(tiny, monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MoMoK(triples_factory=tiny.training, loss=BCEWithLogitsLoss(), random_seed=0, **SMALL)
    model.loss = MoMoKLoss()
    seen = _spy(monkeypatch, model.loss)
    _train(LCWATrainingLoop, model, tiny.training)
    _assert_heads_of_the_scores(model, seen)


# any other loss trains on the mean logit ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loop_cls", "loss", "kwargs"),
    [
        (LCWATrainingLoop, BCEWithLogitsLoss(), {}),
        (SLCWATrainingLoop, SoftplusLoss(), dict(negative_sampler_kwargs=dict(num_negs_per_pos=2, filtered=True))),
        (SLCWATrainingLoop, MarginRankingLoss(), {}),
    ],
    ids=["lcwa-bce", "slcwa-softplus-filtered", "slcwa-margin"],
)
def test_other_losses_train_on_the_mean_logit(tiny, monkeypatch, loop_cls, loss, kwargs):
    with pytest.warns(UserWarning, match="on the mean of its heads' logits"):
        model = MoMoK(triples_factory=tiny.training, loss=loss, random_seed=0, **SMALL)
    returned = []
    combine = model.interaction.combine

    def spy(head_logits):
        scores = combine(head_logits)
        returned.append((head_logits.detach().clone(), scores))
        return scores

    monkeypatch.setattr(model.interaction, "combine", spy)
    given = []
    forward = loss.forward

    def forward_spy(*args, **kwargs):
        given.append(args or kwargs)
        return forward(*args, **kwargs)

    monkeypatch.setattr(loss, "forward", forward_spy)
    before = {name: p.detach().clone() for name, p in model.interaction.named_parameters()}
    losses = _train(loop_cls, model, tiny.training, **kwargs)
    assert math.isfinite(losses[0]) and returned and given
    for head_logits, scores in returned:
        torch.testing.assert_close(scores, head_logits.mean(dim=0), rtol=0, atol=0)
    assert len(model.head_logits_record) == 0 and getattr(loss, "head_logits_source", None) is None
    # the mean trains every head
    for index in range(len(model.head_names) - 1):
        head = f"heads.{index}."
        params = [(n, p) for n, p in model.interaction.named_parameters() if n.startswith(head)]
        assert any(not torch.equal(p, before[n]) for n, p in params), head
