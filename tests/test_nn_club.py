"""Tests for :mod:`pykeen_momok.nn.club` against explicit loops on tiny sizes."""

from __future__ import annotations

import math

import pytest
import torch

from pykeen_momok.nn.club import CLUB, ExpertMIRegularizer


def _mlp(seq: torch.nn.Sequential, x: list[float], tanh: bool) -> list[float]:
    l1, l2 = seq[0], seq[2]
    h = [
        max(0.0, sum(l1.weight[o, j].item() * x[j] for j in range(len(x))) + l1.bias[o].item())
        for o in range(l1.out_features)
    ]
    out = [
        sum(l2.weight[o, j].item() * h[j] for j in range(len(h))) + l2.bias[o].item() for o in range(l2.out_features)
    ]
    return [math.tanh(v) for v in out] if tanh else out


def _club(x_dim=3, y_dim=2, hidden=4, **kwargs):
    torch.manual_seed(0)
    club = CLUB(x_dim, y_dim, hidden, **kwargs).double()
    with torch.no_grad():
        for p in club.parameters():
            p.normal_()
    return club


def test_structure_matches_reference():
    club = CLUB(6, 5, 8)
    assert [type(m).__name__ for m in club.p_mu] == ["Linear", "ReLU", "Linear"]
    assert [type(m).__name__ for m in club.p_logvar] == ["Linear", "ReLU", "Linear", "Tanh"]
    assert club.p_mu[0].out_features == 4 and club.p_mu[2].out_features == 5
    assert club.p_logvar[0].in_features == 6
    with pytest.raises(ValueError):
        CLUB(2, 2, 1)


@pytest.mark.parametrize("variance_term", [False, True])
def test_log_likelihood_hand_computed(variance_term):
    club = _club(variance_term=variance_term)
    x = torch.randn(4, 3, dtype=torch.float64)
    y = torch.randn(4, 2, dtype=torch.float64)
    total = 0.0
    for a in range(4):
        mu = _mlp(club.p_mu, x[a].tolist(), tanh=False)
        lv = _mlp(club.p_logvar, x[a].tolist(), tanh=True)
        for k in range(2):
            total += -((mu[k] - y[a, k].item()) ** 2) / 2.0 / math.exp(lv[k])
            if variance_term:
                total -= lv[k] / 2.0
    expected = total / 4
    assert club.log_likelihood(x, y).item() == pytest.approx(expected, rel=1e-12)
    assert club.learning_loss(x, y).item() == pytest.approx(-expected, rel=1e-12)


def test_club_bound_hand_computed():
    club = _club()
    x = torch.randn(5, 3, dtype=torch.float64)
    y = torch.randn(5, 2, dtype=torch.float64)
    perm = torch.tensor([2, 0, 4, 1, 3])
    total = 0.0
    for a in range(5):
        mu = _mlp(club.p_mu, x[a].tolist(), tanh=False)
        lv = _mlp(club.p_logvar, x[a].tolist(), tanh=True)
        for k in range(2):
            pos = -((mu[k] - y[a, k].item()) ** 2) / math.exp(lv[k])
            neg = -((mu[k] - y[perm[a], k].item()) ** 2) / math.exp(lv[k])
            total += pos - neg
    expected = total / 5 / 2
    assert club(x, y, permutation=perm).item() == pytest.approx(expected, rel=1e-12)
    # default permutation: torch.randperm(n) from the global RNG
    torch.manual_seed(11)
    value = club(x, y)
    torch.manual_seed(11)
    assert value.item() == pytest.approx(club(x, y, permutation=torch.randperm(5)).item(), rel=1e-12)
    # identity permutation: bound is exactly zero
    assert club(x, y, permutation=torch.arange(5)).item() == 0.0


def test_detach_params():
    club = _club()
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    perm = torch.tensor([1, 2, 3, 4, 0])
    a = club(x, y, permutation=perm, detach_params=True)
    a.backward()
    assert all(p.grad is None for p in club.parameters())
    gx, gy = x.grad.clone(), y.grad.clone()
    x.grad = y.grad = None
    b = club(x, y, permutation=perm)
    b.backward()
    assert a.item() == pytest.approx(b.item(), rel=1e-12)
    torch.testing.assert_close(x.grad, gx)
    torch.testing.assert_close(y.grad, gy)
    assert all(p.grad is not None for p in club.parameters())


def _regularizer_and_outputs(**kwargs):
    """A float64 regularizer over two modalities (d 3 and 2, K = 3, n = 6) with random weights, and expert outputs."""
    torch.manual_seed(1)
    reg = ExpertMIRegularizer([3, 2], **kwargs).double()
    for p in reg.parameters():
        torch.nn.init.normal_(p)
    v0 = torch.randn(6, 3, 3, dtype=torch.float64, requires_grad=True)
    v1 = torch.randn(6, 3, 2, dtype=torch.float64, requires_grad=True)
    return reg, v0, v1


def test_regularizer_pairs_and_values():
    reg, v0, v1 = _regularizer_and_outputs()
    assert [e.hidden_dim for e in reg.estimators] == [3, 2]
    torch.manual_seed(5)
    value = reg([v0, v1])
    # replay the RNG: one shared pair from randperm(K)[:2], then one randperm(n) per modality
    torch.manual_seed(5)
    i, j = torch.randperm(3)[:2].tolist()
    assert i != j
    p0, p1 = torch.randperm(6), torch.randperm(6)
    expected = (
        reg.estimators[0](v0[:, i], v0[:, j], permutation=p0) + reg.estimators[1](v1[:, i], v1[:, j], permutation=p1)
    ) / 2
    assert value.item() == pytest.approx(expected.item(), rel=1e-12)
    value.backward()
    assert v0.grad is not None and v0.grad.abs().sum() > 0
    assert all(p.grad is None for p in reg.parameters())
    # the estimator loss trains only the estimators, on a fresh pair
    v0.grad = None
    torch.manual_seed(6)
    loss = reg.estimator_loss([v0, v1])
    torch.manual_seed(6)
    i, j = torch.randperm(3)[:2].tolist()
    expected_loss = (
        reg.estimators[0].learning_loss(v0[:, i], v0[:, j]) + reg.estimators[1].learning_loss(v1[:, i], v1[:, j])
    ) / 2
    assert loss.item() == pytest.approx(expected_loss.item(), rel=1e-12)
    loss.backward()
    assert v0.grad is None
    assert all(p.grad is not None for p in reg.parameters())


def test_regularizer_pair_per_modality_and_validation():
    torch.manual_seed(2)
    reg = ExpertMIRegularizer([2, 2], shared_pair=False)
    v = [torch.randn(4, 3, 2), torch.randn(4, 5, 2)]
    torch.manual_seed(3)
    value = reg(v)
    torch.manual_seed(3)
    (i0, j0), (i1, j1) = torch.randperm(3)[:2].tolist(), torch.randperm(5)[:2].tolist()
    p0, p1 = torch.randperm(4), torch.randperm(4)
    expected = (reg.estimators[0](v[0][:, i0], v[0][:, j0], p0) + reg.estimators[1](v[1][:, i1], v[1][:, j1], p1)) / 2
    torch.testing.assert_close(value, expected)
    with pytest.raises(ValueError):
        reg([torch.randn(4, 1, 2), torch.randn(4, 1, 2)])
    with pytest.raises(ValueError):
        reg([torch.randn(4, 3, 2)])
    with pytest.raises(ValueError):
        reg([torch.randn(4, 3, 2), torch.randn(4, 3, 7)])


@pytest.mark.parametrize("shared_pair", [True, False])
def test_regularizer_draws_its_pairs_on_the_device(shared_pair):
    """``pair_draw="device"``: the first two of ``argsort(rand(K))`` on the outputs' device, gathered there."""
    reg, v0, v1 = _regularizer_and_outputs(shared_pair=shared_pair, pair_draw="device")
    torch.manual_seed(5)
    value = reg([v0, v1])
    torch.manual_seed(5)
    pairs = [torch.rand(3).argsort()[:2].tolist()] * 2 if shared_pair else [torch.rand(3).argsort()[:2].tolist()]
    if not shared_pair:
        pairs.append(torch.rand(3).argsort()[:2].tolist())
    (i0, j0), (i1, j1) = pairs
    assert i0 != j0 and i1 != j1
    p0, p1 = torch.randperm(6), torch.randperm(6)
    expected = (
        reg.estimators[0](v0[:, i0], v0[:, j0], permutation=p0)
        + reg.estimators[1](v1[:, i1], v1[:, j1], permutation=p1)
    ) / 2
    assert value.item() == pytest.approx(expected.item(), rel=1e-12)
    value.backward()
    grads = v0.grad.abs().sum(dim=(0, 2))
    assert (grads[[i0, j0]] > 0).all() and grads[3 - i0 - j0] == 0  # only the drawn experts get gradients
    torch.manual_seed(6)
    loss = reg.estimator_loss([v0, v1])
    torch.manual_seed(6)
    i, j = torch.rand(3).argsort()[:2].tolist()
    if shared_pair:
        expected_loss = (
            reg.estimators[0].learning_loss(v0[:, i], v0[:, j]) + reg.estimators[1].learning_loss(v1[:, i], v1[:, j])
        ) / 2
        assert loss.item() == pytest.approx(expected_loss.item(), rel=1e-12)


def test_regularizer_pair_draws_cover_every_ordered_pair_alike():
    """Host and device draws have one distribution: every ordered pair of distinct experts, equally often."""
    counts = {}
    for draw in ("host", "device"):
        reg = ExpertMIRegularizer([2], pair_draw=draw)
        torch.manual_seed(0)
        drawn = [tuple(int(k) for k in reg._pair_indices([torch.zeros(1, 3, 2)])[0]) for _ in range(3000)]
        counts[draw] = {pair: drawn.count(pair) / len(drawn) for pair in set(drawn)}
        assert set(counts[draw]) == {(i, j) for i in range(3) for j in range(3) if i != j}
        assert all(abs(share - 1 / 6) < 0.03 for share in counts[draw].values())
    with pytest.raises(ValueError, match="pair_draw must be one of"):
        ExpertMIRegularizer([2], pair_draw="gpu")


def test_estimator_learns_dependence():
    """Adam steps on the estimator make the bound clearly positive for two nearly equal experts."""
    torch.manual_seed(4)
    reg = ExpertMIRegularizer([4], hidden_dims=[16])
    opt = torch.optim.Adam(reg.parameters(), lr=1e-2)
    base = torch.randn(256, 4)
    experts = torch.stack([base, base + 0.1 * torch.randn(256, 4)], dim=1)
    for _ in range(300):
        opt.zero_grad()
        reg.estimator_loss([experts]).backward()
        opt.step()
    assert reg([experts]).item() > 1.0
