"""Whole-model oracle: MoMoK's optimised path against the reference's per-query way, same weights.

``MoMoK(fused=False)`` contracts every query's ``d x d`` relation matrix and drops it out with
``F.dropout``, as the reference implementation does; the default path (``fused=True``) computes the same
function without materialising those matrices (see :mod:`pykeen_momok.nn.tucker`), and in training
recomputes the all-entity candidates in backward (``MoMoK.recompute_candidates``). These tests check that
the two give the same scores and the same gradients:

- evaluation mode: every scoring method;
- training mode with every dropout at 0 and the gating noise off: scores, loss (incl. the CLUB
  penalty) and the gradient of every parameter;
- training mode with the core dropout on: the per-query path fed with the masks the fused path drew;
- the candidate recomputation with all randomness on (its random draws are replayed);
- the GEMM blocks of the per-query contraction and the no-mask GEMM path do not change results.
"""

from __future__ import annotations

import types

import pytest
import torch

from pykeen_momok import MoMoK, MoMoKLoss
from pykeen_momok.nn import tucker
from pykeen_momok.nn.tucker import (
    core_dropout_masks,
    core_dropout_threshold,
    fused_core_contraction,
    fused_core_contraction_per_query,
)
from pykeen_momok.triples import ModalityFeatures, MultiModalTriplesFactory

SMALL = dict(embedding_dim=10, relation_dim=6, num_experts=3)
NO_RANDOMNESS = dict(
    input_dropout=0.0,
    core_dropout=0.0,
    hidden_dropout=0.0,
    fusion_dropout=0.0,
    expert_dropout=0.0,
    gating_noise=False,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one thread. (With OpenMP's default spin-waiting, a busy 2-core machine makes every
    parallel region wait for a time slice: these tests took 28 s with 2 threads there, 3 s with 1.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny() -> types.SimpleNamespace:
    """A small random multi-modal graph: 60 entities, 3 relations (6 with inverses), image 12-d, text 9-d."""
    g = torch.Generator().manual_seed(5)
    num_entities, num_relations, num_triples = 60, 3, 200
    triples = torch.stack(
        [
            torch.randint(0, num_entities, (num_triples,), generator=g),
            torch.randint(0, num_relations, (num_triples,), generator=g),
            torch.randint(0, num_entities, (num_triples,), generator=g),
        ],
        dim=1,
    )
    triples = torch.unique(triples, dim=0)
    present = torch.ones(num_entities, dtype=torch.bool)
    modalities = {
        "image": ModalityFeatures(features=torch.randn(num_entities, 12, generator=g), present=present),
        "text": ModalityFeatures(features=torch.randn(num_entities, 9, generator=g), present=present.clone()),
    }
    labels = dict(
        entity_to_id={f"e{i}": i for i in range(num_entities)},
        relation_to_id={f"r{i}": i for i in range(num_relations)},
    )
    training = MultiModalTriplesFactory(
        mapped_triples=triples[:170], create_inverse_triples=True, modalities=modalities, **labels
    )
    testing = MultiModalTriplesFactory(mapped_triples=triples[170:], modalities=modalities, **labels)
    return types.SimpleNamespace(training=training, testing=testing)


def _pair(factory, **kwargs) -> tuple[MoMoK, MoMoK]:
    """A fused MoMoK and a per-query one (``fused=False``, no candidate recomputation) with equal weights."""
    options = dict(SMALL, **kwargs)
    fused = MoMoK(triples_factory=factory, loss=MoMoKLoss(), random_seed=0, fused=True, **options).double()
    per_query = MoMoK(triples_factory=factory, loss=MoMoKLoss(), random_seed=1, fused=False, **options).double()
    per_query.load_state_dict(fused.state_dict())
    per_query.recompute_candidates = False
    assert all(head.fused for head in fused.interaction.heads) and fused.recompute_candidates
    assert not any(head.fused for head in per_query.interaction.heads)
    return fused, per_query


def _with_running_stats(fused: MoMoK, per_query: MoMoK, factory) -> None:
    """Give every BatchNorm non-trivial running statistics, the same in both models."""
    torch.manual_seed(11)
    fused.train()
    with torch.no_grad():
        fused.score_t(factory.mapped_triples[:, :2])
    fused.mutual_information.estimator_step(fused._expert_outputs_of)  # forget the recorded queries
    per_query.load_state_dict(fused.state_dict())


def _batch(factory):
    pairs = factory.mapped_triples[:, :2]
    pairs = torch.cat([pairs, torch.stack([factory.mapped_triples[:, 2], pairs[:, 1] + factory.real_num_relations], 1)])
    pairs = torch.unique(pairs, dim=0)[:40]
    labels = torch.zeros(len(pairs), factory.num_entities, dtype=torch.float64)
    labels[
        torch.arange(len(pairs)),
        torch.randint(0, factory.num_entities, (len(pairs),), generator=torch.Generator().manual_seed(0)),
    ] = 1.0
    return pairs, labels


def _loss(model, pairs, labels, seed=3):
    """The per-head logits ``(H, B, E)`` of a training forward, and its loss."""
    torch.manual_seed(seed)
    scores = model.score_t(pairs)
    heads = model.head_logits_record.find(scores)
    loss = model.loss.process_lcwa_scores(scores, labels, num_entities=model.num_entities)
    return heads, loss + model.collect_regularization_term()


def _assert_same_gradients(a: MoMoK, b: MoMoK, **tolerance) -> None:
    grads_b = dict(b.named_parameters())
    checked = 0
    for name, param in a.named_parameters():
        other = grads_b[name]
        if param.grad is None:
            assert other.grad is None or torch.count_nonzero(other.grad) == 0, name
            continue
        torch.testing.assert_close(param.grad, other.grad, msg=lambda m, name=name: f"{name}: {m}", **tolerance)
        checked += 1
    assert checked > 20


def test_eval_scores_equal(tiny):
    fused, per_query = _pair(tiny.training)
    _with_running_stats(fused, per_query, tiny.training)
    fused.eval()
    per_query.eval()
    hrt = tiny.testing.mapped_triples
    with torch.no_grad():
        for method, batch in (("score_t", hrt[:, :2]), ("score_h", hrt[:, 1:]), ("score_hrt", hrt)):
            a = getattr(fused, method)(batch)
            b = getattr(per_query, method)(batch)
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=lambda m, method=method: f"{method}: {m}")
        # per-query candidate lists
        tails = torch.randint(0, fused.num_entities, (len(hrt), 7), generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(fused.score_t(hrt[:, :2], tails=tails), per_query.score_t(hrt[:, :2], tails=tails))
    # with autograd on in evaluation mode (the joint head then keeps per-query relation vectors)
    torch.testing.assert_close(fused.score_t(hrt[:, :2]), per_query.score_t(hrt[:, :2]), rtol=1e-10, atol=1e-12)


def test_train_scores_loss_and_gradients_equal_without_dropout(tiny):
    fused, per_query = _pair(tiny.training, mi_weight=0.5, **NO_RANDOMNESS)
    pairs, labels = _batch(tiny.training)
    results = []
    for model in (fused, per_query):
        model.train()
        model.zero_grad(set_to_none=True)
        heads, loss = _loss(model, pairs, labels)
        loss.backward()
        results.append((heads.detach(), loss.detach()))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-10, atol=1e-12)
    _assert_same_gradients(fused, per_query, rtol=1e-9, atol=1e-12)
    # the CLUB estimator's own step sees the same expert outputs
    steps = []
    for model in (fused, per_query):
        torch.manual_seed(4)
        steps.append(float(model.mutual_information.estimator_step(model._expert_outputs_of)))
    assert steps[0] == pytest.approx(steps[1], rel=1e-10)


def test_train_with_core_dropout_equals_per_query_with_the_same_masks(tiny, monkeypatch):
    """Core dropout on (the other dropouts off): the per-query path gets the fused path's masks."""
    options = dict(NO_RANDOMNESS, core_dropout=0.4, mi_weight=0.0)
    fused, per_query = _pair(tiny.training, **options)
    heads = [*fused.interaction.heads, fused.interaction.joint_head]
    for head in heads:  # several mask chunks per batch, several per GEMM block
        head.chunk_bytes = 3 * 4 * head.entity_dim**2
        assert head.chunk_size("cpu") == 3
    pairs, labels = _batch(tiny.training)
    fused.train()
    per_query.train()
    heads_a, loss_a = _loss(fused, pairs, labels)
    loss_a.backward()

    masks = []
    for head in heads:
        assert head.last_core_seed is not None
        keep = core_dropout_masks(
            head.last_core_seed, len(pairs), head.entity_dim, 0.4, chunk_size=head.chunk_size("cpu")
        )
        assert 0.5 < keep.double().mean().item() < 0.7
        masks.append(keep)
    assert_per_query_with_masks_matches(monkeypatch, fused, per_query, masks, 0.4, pairs, labels, heads_a, loss_a)


def assert_per_query_with_masks_matches(monkeypatch, fused, per_query, masks, rate, pairs, labels, heads_a, loss_a):
    """The per-query model, its ``F.dropout`` replaced by ``masks`` (one per head, in call order), reproduces the
    fused model's training forward (per-head logits ``heads_a``, loss ``loss_a``, already backpropagated)."""
    scale = core_dropout_threshold(rate)[2]
    queue = list(masks)

    def dropout(m, p, training):  # replaces F.dropout of the per-query path, head by head in call order
        assert training and p == rate
        keep = queue.pop(0)
        assert keep.shape == m.shape
        return m * keep * scale

    monkeypatch.setattr(tucker, "F", types.SimpleNamespace(dropout=dropout))
    heads_b, loss_b = _loss(per_query, pairs, labels)
    loss_b.backward()
    assert not queue
    torch.testing.assert_close(heads_a, heads_b, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-10, atol=1e-12)
    _assert_same_gradients(fused, per_query, rtol=1e-9, atol=1e-12)


def test_candidate_recomputation_replays_randomness(tiny):
    """All randomness on: recomputing the candidates in backward changes neither values nor gradients."""
    a = MoMoK(
        triples_factory=tiny.training, loss=MoMoKLoss(), random_seed=0, fusion_dropout=0.3, expert_dropout=0.2, **SMALL
    )
    b = MoMoK(
        triples_factory=tiny.training, loss=MoMoKLoss(), random_seed=1, fusion_dropout=0.3, expert_dropout=0.2, **SMALL
    )
    b.load_state_dict(a.state_dict())
    a.recompute_candidates, b.recompute_candidates = True, False
    pairs, labels = _batch(tiny.training)
    labels = labels.float()
    losses = []
    for model in (a, b):
        model.train()
        _, loss = _loss(model, pairs, labels, seed=21)
        loss.backward()
        losses.append(loss.detach())
        after = torch.rand(3)  # the global RNG must be where it would be without recomputation
        losses.append(after)
    torch.testing.assert_close(losses[0], losses[2], rtol=0, atol=0)
    torch.testing.assert_close(losses[1], losses[3], rtol=0, atol=0)
    _assert_same_gradients(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("gemm_chunks", [1, 2, 3, 50])
def test_per_query_gemm_blocks_do_not_change_results(gemm_chunks):
    g = torch.Generator().manual_seed(0)
    B, d, d_r, chunk = 23, 5, 4, 4
    x = torch.randn(B, d, dtype=torch.float64, generator=g).requires_grad_()
    r = torch.randn(B, d_r, dtype=torch.float64, generator=g).requires_grad_()
    W = torch.randn(d_r, d, d, dtype=torch.float64, generator=g).requires_grad_()
    z = fused_core_contraction_per_query(x, r, W, p=0.4, seed=5, chunk_size=chunk, gemm_chunks=gemm_chunks)
    keep = core_dropout_masks(5, B, d, 0.4, chunk_size=chunk)
    expected = torch.stack(
        [x[b] @ (torch.tensordot(r[b], W, dims=1) * keep[b] * core_dropout_threshold(0.4)[2]) for b in range(B)]
    )
    torch.testing.assert_close(z, expected)
    weights = torch.randn(B, d, dtype=torch.float64, generator=g)
    ga = torch.autograd.grad((z * weights).sum(), (x, r, W))
    gb = torch.autograd.grad((expected * weights).sum(), (x, r, W))
    for a, b in zip(ga, gb, strict=True):
        torch.testing.assert_close(a, b)


def test_distinct_no_mask_path_with_absent_matrices():
    g = torch.Generator().manual_seed(1)
    B, d, U = 17, 6, 5
    x = torch.randn(B, d, dtype=torch.float64, generator=g).requires_grad_()
    matrices = torch.randn(U, d, d, dtype=torch.float64, generator=g).requires_grad_()
    index = torch.tensor([3, 0, 3, 3, 0, 4, 0, 3, 3, 0, 0, 4, 3, 0, 3, 3, 4])  # 1 and 2 absent
    for training, p in ((False, 0.4), (True, 0.0)):
        z = fused_core_contraction(x, matrices, index, p=p, training=training, chunk_size=4)
        expected = torch.stack([x[b] @ matrices[index[b]] for b in range(B)])
        torch.testing.assert_close(z, expected)
        weights = torch.randn(B, d, dtype=torch.float64, generator=g)
        ga = torch.autograd.grad((z * weights).sum(), (x, matrices))
        gb = torch.autograd.grad((expected * weights).sum(), (x, matrices))
        for a, b in zip(ga, gb, strict=True):
            torch.testing.assert_close(a, b)
        assert torch.count_nonzero(ga[1][1:3]) == 0


def test_bf16_autocast_trains_and_keeps_caches_apart(tiny):
    """Under (CPU) bf16 autocast both paths train and agree loosely; eval caches are per autocast state."""
    fused, per_query = _pair(tiny.training, mi_weight=0.5, **NO_RANDOMNESS)
    fused.float()
    per_query.float()
    pairs, labels = _batch(tiny.training)
    labels = labels.float()
    losses = []
    for model in (fused, per_query):
        model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, loss = _loss(model, pairs, labels)
        loss.backward()
        losses.append(loss.detach().float())
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    torch.testing.assert_close(losses[0], losses[1], rtol=2e-2, atol=1e-3)
    fused.eval()
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = fused.score_t(pairs)
        full = fused.score_t(pairs)  # must not reuse the bf16 candidates
        again = fused.score_t(pairs)
    assert low.dtype == torch.bfloat16 and full.dtype == torch.float32
    assert torch.equal(full, again)
    torch.testing.assert_close(low.float(), full, rtol=0, atol=2e-2)


def test_eval_decision_without_stack_equals_mean_of_sigmoids(tiny):
    """Under no_grad, score_t accumulates the joint decision head by head; the same as the stacked mean."""
    from pykeen_momok.nn.interaction import joint_decision

    model, _ = _pair(tiny.training)
    model.eval()
    pairs = tiny.testing.mapped_triples[:, :2]
    with torch.no_grad():
        fast = model.score_t(pairs)
        z = model._queries(pairs[:, 0], pairs[:, 1])
        stacked = joint_decision(model.interaction.head_logits(z, model._candidates()))
    with_grad = model.score_t(pairs)  # autograd on: the stacked path
    torch.testing.assert_close(fast, stacked, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(fast, with_grad.detach(), rtol=1e-12, atol=1e-14)
    with pytest.raises(RuntimeError):
        model.interaction.decision_scores(z, model._candidates())
