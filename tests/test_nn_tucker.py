"""Tests for :mod:`pykeen_momok.nn.tucker`: the fused core contraction against a per-query oracle."""

from __future__ import annotations

import copy

import pytest
import torch

from pykeen_momok.nn import tucker
from pykeen_momok.nn.tucker import (
    TuckerHead,
    _DistinctCoreContraction,
    _PerQueryCoreContraction,
    core_dropout_masks,
    core_dropout_threshold,
    default_chunk_size,
    fused_core_contraction,
    fused_core_contraction_per_query,
)


def per_query_core_contraction(
    x: torch.Tensor, r_per_query: torch.Tensor, W: torch.Tensor, masks: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """The oracle: for every query separately, M_b = (r_b W) * mask_b * scale, z_b = x_b M_b."""
    out = []
    for b in range(x.shape[0]):
        m = torch.tensordot(r_per_query[b], W, dims=1)  # (d, d) = sum_k r_bk W_k
        if masks is not None:
            m = m * masks[b] * scale
        out.append(x[b] @ m)
    return torch.stack(out)


def _problem(dtype, B=13, d=5, d_r=4, R=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, d, dtype=dtype, generator=g).requires_grad_()
    rel = torch.randn(R, d_r, dtype=dtype, generator=g).requires_grad_()
    W = torch.randn(d_r, d, d, dtype=dtype, generator=g).requires_grad_()
    ids = torch.randint(0, R, (B,), generator=g)
    ids[:R] = torch.arange(R)  # every relation occurs
    return x, rel, W, ids


def _grads(out, inputs, seed=1):
    g = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(seed)).to(out.device)
    return torch.autograd.grad((out * g).sum(), inputs, retain_graph=True)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("chunk_size", [1, 4, 100])
@pytest.mark.parametrize(("p", "grouped"), [(0.4, True), (0.0, True), (0.0, False)])
def test_distinct_path_matches_oracle(dtype, tol, chunk_size, p, grouped, monkeypatch):
    """``grouped=False``: without masks, chunks of queries as on CUDA in training (no host-side group counts)."""
    monkeypatch.setattr(tucker, "_groups_on_the_host", lambda x: grouped)
    x, rel, W, ids = _problem(dtype)
    B, d = x.shape
    seed = 1234
    uniq, index = torch.unique(ids, return_inverse=True)
    matrices = torch.mm(rel[uniq], W.view(W.shape[0], -1)).view(-1, d, d)
    z = fused_core_contraction(x, matrices, index, p=p, training=True, seed=seed, chunk_size=chunk_size)
    if p > 0:
        masks = core_dropout_masks(seed, B, d, p, chunk_size=chunk_size)
        _, _, scale = core_dropout_threshold(p)
    else:
        masks, scale = None, 1.0
    expected = per_query_core_contraction(x, rel[ids], W, masks, scale)
    torch.testing.assert_close(z, expected, rtol=tol, atol=tol)
    for a, b in zip(_grads(z, (x, rel, W)), _grads(expected, (x, rel, W))):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize(("p", "grouped"), [(0.4, True), (0.0, True), (0.0, False)])
def test_distinct_path_with_relations_no_query_uses(p, grouped, monkeypatch):
    """Matrices for every relation (``relation_matrices="all"``): unused rows get zero gradients, values unchanged."""
    monkeypatch.setattr(tucker, "_groups_on_the_host", lambda x: grouped)
    x, rel, W, ids = _problem(torch.float64, B=9, R=5)
    ids = ids % 2  # only relations 0 and 1 occur; 2, 3, 4 have matrices nobody uses
    matrices = torch.mm(rel, W.view(W.shape[0], -1)).view(-1, x.shape[1], x.shape[1])
    z = fused_core_contraction(x, matrices, ids, p=p, training=True, seed=7, chunk_size=4)
    masks = core_dropout_masks(7, x.shape[0], x.shape[1], p, chunk_size=4) if p > 0 else None
    expected = per_query_core_contraction(x, rel[ids], W, masks, core_dropout_threshold(p)[2] if p > 0 else 1.0)
    torch.testing.assert_close(z, expected, rtol=1e-12, atol=1e-12)
    grad_rel = _grads(z, (rel,))[0]
    torch.testing.assert_close(grad_rel, _grads(expected, (rel,))[0], rtol=1e-12, atol=1e-12)
    assert torch.count_nonzero(grad_rel[2:]) == 0 and torch.count_nonzero(grad_rel[:2]) > 0


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("chunk_size", [1, 3, 100])
def test_per_query_path_matches_oracle(dtype, tol, chunk_size):
    x, rel, W, ids = _problem(dtype, seed=2)
    B, d = x.shape
    r = rel[ids] * torch.linspace(0.5, 1.5, B, dtype=dtype).unsqueeze(1)  # all rows distinct
    p, seed = 0.4, 99
    z = fused_core_contraction_per_query(x, r, W, p=p, training=True, seed=seed, chunk_size=chunk_size)
    masks = core_dropout_masks(seed, B, d, p, chunk_size=chunk_size)
    expected = per_query_core_contraction(x, r, W, masks, core_dropout_threshold(p)[2])
    torch.testing.assert_close(z, expected, rtol=tol, atol=tol)
    for a, b in zip(_grads(z, (x, rel, W)), _grads(expected, (x, rel, W))):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    # eval: no masks
    r = r.detach()
    z_eval = fused_core_contraction_per_query(x, r, W, p=p, training=False, chunk_size=chunk_size)
    expected_eval = per_query_core_contraction(x, r, W, None, 1.0)
    torch.testing.assert_close(z_eval, expected_eval, rtol=tol, atol=tol)
    for a, b in zip(_grads(z_eval, (x, W)), _grads(expected_eval, (x, W))):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_both_paths_use_the_same_masks():
    x, rel, W, ids = _problem(torch.float64, B=20, d=6)
    uniq, index = torch.unique(ids, return_inverse=True)
    matrices = torch.mm(rel[uniq], W.view(W.shape[0], -1)).view(-1, 6, 6)
    a = fused_core_contraction(x, matrices, index, p=0.3, seed=7, chunk_size=6)
    b = fused_core_contraction_per_query(x, rel[ids], W, p=0.3, seed=7, chunk_size=6)
    torch.testing.assert_close(a, b)


def test_backward_regenerates_masks_independently_of_global_rng():
    x, rel, W, ids = _problem(torch.float64, B=17, d=5)
    uniq, index = torch.unique(ids, return_inverse=True)
    torch.manual_seed(0)
    matrices = torch.mm(rel[uniq], W.view(W.shape[0], -1)).view(-1, 5, 5)
    z = fused_core_contraction(x, matrices, index, p=0.5, chunk_size=4)  # seed drawn from global RNG
    torch.manual_seed(0)
    seed = int(torch.randint(0, 1 << 62, (1,)).item())
    torch.manual_seed(12345)
    torch.rand(1000)  # disturb every RNG before backward
    grads = _grads(z, (x, rel, W))
    masks = core_dropout_masks(seed, 17, 5, 0.5, chunk_size=4)
    expected = per_query_core_contraction(x, rel[ids], W, masks, core_dropout_threshold(0.5)[2])
    torch.testing.assert_close(z, expected)
    for a, b in zip(grads, _grads(expected, (x, rel, W))):
        torch.testing.assert_close(a, b)


def test_no_batch_sized_matrix_is_saved():
    B, d, d_r, U = 64, 8, 4, 3
    x, rel, W, ids = _problem(torch.float32, B=B, d=d, d_r=d_r, R=U)
    uniq, index = torch.unique(ids, return_inverse=True)
    matrices = torch.mm(rel[uniq], W.view(d_r, -1)).view(-1, d, d)
    z = fused_core_contraction(x, matrices, index, p=0.4, seed=1, chunk_size=8)
    saved = z.grad_fn.saved_tensors
    assert len(saved) == 3
    assert max(t.numel() for t in saved) < B * d * d
    assert sum(t.numel() for t in saved) == B * d + U * d * d + B
    assert not any(t.dtype == torch.bool for t in saved)
    z2 = fused_core_contraction_per_query(x, rel[ids], W, p=0.4, seed=1, chunk_size=8)
    saved2 = z2.grad_fn.saved_tensors
    assert sum(t.numel() for t in saved2) == B * d + B * d_r + d_r * d * d
    assert isinstance(z.grad_fn, _DistinctCoreContraction._backward_cls)
    assert isinstance(z2.grad_fn, _PerQueryCoreContraction._backward_cls)


def test_threshold_quantisation():
    for p in (0.0, 0.1, 0.3, 0.4, 0.5, 0.999):
        threshold, p_eff, scale = core_dropout_threshold(p)
        assert abs(p_eff - p) <= 2**-17
        assert threshold == -32768 + round(p * 65536)
        assert scale == pytest.approx(1 / (1 - p_eff))
    assert core_dropout_threshold(1.0)[2] == 0.0
    with pytest.raises(ValueError):
        core_dropout_threshold(1.5)


@pytest.mark.parametrize("p", [0.1, 0.4, 0.5])
def test_masks_are_bernoulli(p):
    d = 32
    masks = core_dropout_masks(seed=2024, num_queries=300, dim=d, p=p, chunk_size=7)
    assert masks.shape == (300, d, d) and masks.dtype == torch.bool
    n = masks.numel()
    keep = masks.double().mean().item()
    _, p_eff, _ = core_dropout_threshold(p)
    sigma = (p_eff * (1 - p_eff) / n) ** 0.5
    assert abs(keep - (1 - p_eff)) < 6 * sigma
    # every position of the 4 int16 lanes of a random word is unbiased
    flat = masks.view(-1)[: (n // 4) * 4].view(-1, 4).double().mean(dim=0)
    assert torch.all((flat - (1 - p_eff)).abs() < 6 * (p_eff * (1 - p_eff) / (n / 4)) ** 0.5)
    # per-query keep rates vary like independent Bernoullis, queries/chunks differ
    per_query = masks.view(300, -1).double().mean(dim=1)
    assert per_query.std().item() < 3 * ((1 - p_eff) * p_eff / d**2) ** 0.5
    assert not torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], masks[7])
    # masks are reproducible and a sub-range equals the slice
    again = core_dropout_masks(seed=2024, num_queries=300, dim=d, p=p, chunk_size=7, start=10, count=20)
    assert torch.equal(again, masks[10:30])
    other = core_dropout_masks(seed=2025, num_queries=300, dim=d, p=p, chunk_size=7)
    assert not torch.equal(other, masks)


def test_default_chunk_size():
    assert default_chunk_size(256, "cpu", chunk_bytes=16 << 20) == 64
    assert default_chunk_size(2048, "cpu", chunk_bytes=1 << 20) == 1
    assert default_chunk_size(256, "cuda") >= 1


def test_head_init_matches_reference():
    torch.manual_seed(0)
    head = TuckerHead(32, 16)
    assert head.core.shape == (16, 32, 32)
    bound = (6 / (32 * 32 + 16 * 32)) ** 0.5  # xavier uniform of a (d_r, d, d) tensor
    assert head.core.abs().max().item() <= bound
    assert head.core.abs().max().item() > 0.9 * bound
    assert head.input_dropout.p == 0.3 and head.core_dropout == 0.4 and head.hidden_dropout.p == 0.5


@pytest.mark.parametrize("use_ids", [True, False])
def test_head_train_matches_composed_oracle(use_ids):
    torch.manual_seed(3)
    B, d, d_r, R = 23, 6, 5, 4
    head = TuckerHead(
        d, d_r, input_dropout=0.0, core_dropout=0.4, hidden_dropout=0.0, chunk_bytes=4 * d * d * 5
    ).double()
    ref = copy.deepcopy(head)
    e = torch.randn(B, d, dtype=torch.float64, requires_grad=True)
    rel = torch.randn(R, d_r, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, R, (B,))
    head.train()
    ref.train()
    if use_ids:
        z = head(e, ids, rel)
        r_per_query = rel[ids]
    else:
        r_per_query = rel[ids] + 0.01 * torch.randn(B, d_r, dtype=torch.float64)
        z = head(e, r=r_per_query)
    seed = head.last_core_seed
    assert seed is not None
    masks = core_dropout_masks(seed, B, d, 0.4, chunk_size=head.chunk_size("cpu"))
    assert head.chunk_size("cpu") == 5
    x = ref.bn0(e)
    expected = ref.bn1(per_query_core_contraction(x, r_per_query, ref.core, masks, core_dropout_threshold(0.4)[2]))
    torch.testing.assert_close(z, expected)
    ga = _grads(z, (e, rel, head.core))
    gb = _grads(expected, (e, rel, ref.core))
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("use_ids", [True, False])
def test_head_eval_fused_equals_unfused(use_ids):
    torch.manual_seed(4)
    B, d, d_r, R = 30, 7, 3, 5
    head = TuckerHead(d, d_r).double()
    # give the BatchNorms non-trivial running statistics
    head.train()
    for _ in range(3):
        head(
            torch.randn(B, d, dtype=torch.float64) * 2 + 1,
            torch.randint(0, R, (B,)),
            torch.randn(R, d_r, dtype=torch.float64),
        )
    head.eval()
    unfused = copy.deepcopy(head)
    unfused.fused = False
    e = torch.randn(B, d, dtype=torch.float64)
    rel = torch.randn(R, d_r, dtype=torch.float64)
    ids = torch.randint(0, R, (B,))
    with torch.no_grad():
        if use_ids:
            a, b = head(e, ids, rel), unfused(e, ids, rel)
        else:
            a, b = head(e, r=rel[ids]), unfused(e, r=rel[ids])
    torch.testing.assert_close(a, b)
    expected = unfused.bn1(per_query_core_contraction(unfused.bn0(e), rel[ids], unfused.core, None, 1.0))
    torch.testing.assert_close(a, expected.detach())
    # with autograd enabled in eval mode as well
    e.requires_grad_()
    torch.testing.assert_close(head(e, ids, rel), unfused(e, ids, rel))


def test_head_unfused_train_statistics():
    torch.manual_seed(5)
    head = TuckerHead(4, 3, input_dropout=0.0, core_dropout=0.5, hidden_dropout=0.0, fused=False)
    head.train()
    z = head(torch.randn(8, 4), torch.randint(0, 2, (8,)), torch.randn(2, 3))
    assert z.shape == (8, 4)
    assert head.last_core_seed is None


def test_head_fallback_to_per_query_when_relation_matrices_too_big():
    torch.manual_seed(6)
    B, d, d_r, R = 12, 4, 3, 6
    small = TuckerHead(
        d, d_r, input_dropout=0.0, hidden_dropout=0.0, chunk_bytes=64 * 4 * d * d, max_relation_matrix_bytes=1
    ).double()
    big = copy.deepcopy(small)
    big.max_relation_matrix_bytes = 1 << 30
    e = torch.randn(B, d, dtype=torch.float64)
    rel = torch.randn(R, d_r, dtype=torch.float64)
    ids = torch.randint(0, R, (B,))
    torch.manual_seed(7)
    a = small(e, ids, rel)
    torch.manual_seed(7)
    b = big(e, ids, rel)
    torch.testing.assert_close(a, b)
    assert small.last_core_seed == big.last_core_seed


def test_head_deterministic_under_manual_seed():
    def run():
        torch.manual_seed(8)
        head = TuckerHead(8, 4)
        e = torch.randn(16, 8, requires_grad=True)
        rel = torch.randn(3, 4, requires_grad=True)
        ids = torch.randint(0, 3, (16,))
        z = head(e, ids, rel)
        z.square().sum().backward()
        return z.detach(), e.grad, rel.grad, head.core.grad

    a, b = run(), run()
    for u, v in zip(a, b):
        assert torch.equal(u, v)


def test_head_argument_validation():
    head = TuckerHead(4, 3)
    with pytest.raises(ValueError):
        head(torch.randn(2, 4))
    with pytest.raises(ValueError):
        head(torch.randn(2, 4), torch.tensor([0, 1]), torch.randn(2, 3), r=torch.randn(2, 3))
    with pytest.raises(ValueError):
        TuckerHead(4, 3, core_dropout=1.5)


def test_full_core_dropout_gives_zeros():
    x, rel, W, ids = _problem(torch.float64)
    z = fused_core_contraction_per_query(x, rel[ids], W, p=1.0, seed=1, chunk_size=4)
    assert torch.all(z == 0)
    z.sum().backward()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_oracle():
    device = torch.device("cuda")
    x, rel, W, ids = _problem(torch.float64, B=50, d=9)
    x, rel, W = (t.detach().to(device).requires_grad_() for t in (x, rel, W))
    ids = ids.to(device)
    uniq, index = torch.unique(ids, return_inverse=True)
    matrices = torch.mm(rel[uniq], W.view(W.shape[0], -1)).view(-1, 9, 9)
    z = fused_core_contraction(x, matrices, index, p=0.4, seed=3, chunk_size=8)
    masks = core_dropout_masks(3, 50, 9, 0.4, device=device, chunk_size=8)
    assert masks.device.type == "cuda"
    keep = masks.double().mean().item()
    assert abs(keep - 0.6) < 0.05
    expected = per_query_core_contraction(x, rel[ids], W, masks, core_dropout_threshold(0.4)[2])
    torch.testing.assert_close(z, expected)
    for a, b in zip(_grads(z, (x, rel, W)), _grads(expected, (x, rel, W))):
        torch.testing.assert_close(a, b)
    head = TuckerHead(9, W.shape[0]).to(device).train()
    out = head(torch.randn(50, 9, device=device), ids, rel.detach().float())
    assert out.device.type == "cuda"
