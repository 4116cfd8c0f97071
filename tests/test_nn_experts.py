"""Tests for :mod:`pykeen_momok.nn.experts` against explicit per-row, per-expert formulas."""

from __future__ import annotations

import math

import pytest
import torch

from pykeen_momok.nn.experts import ModalityExperts


def _explicit_experts(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    n, d = x.shape
    k = weight.shape[0]
    out = torch.zeros(n, k, d, dtype=x.dtype)
    for a in range(n):
        for i in range(k):
            for o in range(d):
                out[a, i, o] = sum(weight[i, o, j] * (x[a, j] - bias[i, j]) for j in range(d))
    return out


def _softmax(values: list[float]) -> list[float]:
    m = max(values)
    e = [math.exp(v - m) for v in values]
    s = sum(e)
    return [v / s for v in e]


def test_init():
    torch.manual_seed(0)
    m = ModalityExperts(dim=64, num_experts=3)
    assert m.weight.shape == (3, 64, 64)
    assert m.bias.shape == (3, 64)
    assert torch.all(m.bias == 0) and torch.all(m.w_gate == 0) and torch.all(m.w_noise == 0)
    assert abs(m.weight.std().item() - 0.02) < 0.002
    assert abs(m.weight.mean().item()) < 0.002


def test_identity_init():
    torch.manual_seed(0)
    m = ModalityExperts(dim=64, num_experts=3, init="identity")
    noise = m.weight - torch.eye(64)
    assert abs(noise.std().item() - 0.02) < 0.002
    assert abs(noise.mean().item()) < 0.002
    assert torch.all(m.bias == 0) and torch.all(m.w_gate == 0)
    m.weight.data.zero_()
    m.reset_parameters()  # a reset keeps the chosen initialisation
    assert (m.weight - torch.eye(64)).abs().max() < 0.2
    assert "init='identity'" in repr(m)
    with pytest.raises(ValueError, match="init must be one of"):
        ModalityExperts(dim=4, init="orthogonal")


def test_expert_outputs_and_mix_hand_computed():
    torch.manual_seed(1)
    m = ModalityExperts(dim=3, num_experts=2).double().eval()
    with torch.no_grad():
        m.weight.copy_(torch.randn(2, 3, 3, dtype=torch.float64))
        m.bias.copy_(torch.randn(2, 3, dtype=torch.float64))
        m.w_gate.copy_(torch.randn(3, 2, dtype=torch.float64))
        m.w_noise.copy_(torch.randn(3, 2, dtype=torch.float64))
    x = torch.randn(4, 3, dtype=torch.float64)
    temperature = torch.sigmoid(torch.randn(4, 1, dtype=torch.float64))
    mixed, experts = m(x, temperature)
    expected_experts = _explicit_experts(x, m.weight.detach(), m.bias.detach())
    torch.testing.assert_close(experts, expected_experts)
    torch.testing.assert_close(m.expert_outputs(x), expected_experts)
    # eval: no noise; gate logits g = x U, softmax(g / tau)
    for a in range(4):
        logits = [sum(x[a, j].item() * m.w_gate[j, i].item() for j in range(3)) for i in range(2)]
        alpha = _softmax([v / temperature[a, 0].item() for v in logits])
        expected = sum(alpha[i] * expected_experts[a, i] for i in range(2))
        torch.testing.assert_close(mixed[a], expected)
    # no temperature: plain softmax
    mixed_plain, _ = m(x)
    for a in range(4):
        logits = [sum(x[a, j].item() * m.w_gate[j, i].item() for j in range(3)) for i in range(2)]
        alpha = _softmax(logits)
        torch.testing.assert_close(mixed_plain[a], sum(alpha[i] * expected_experts[a, i] for i in range(2)))


def test_uniform_gates_at_init():
    torch.manual_seed(2)
    m = ModalityExperts(dim=5, num_experts=3)
    x = torch.randn(7, 5)
    for mode in (True, False):
        m.train(mode)
        alpha = m.gates(x, torch.full((7, 1), 0.3))
        # U = 0: clean logits 0; noise std = softplus(0) + eps, so only training is noisy
        if not mode:
            torch.testing.assert_close(alpha, torch.full((7, 3), 1 / 3))
    m.eval()
    mixed, experts = m(x)
    torch.testing.assert_close(mixed, experts.mean(dim=1))


def test_noisy_gating_hand_computed():
    torch.manual_seed(3)
    m = ModalityExperts(dim=3, num_experts=2, noise_epsilon=0.01).double().train()
    with torch.no_grad():
        m.w_gate.copy_(torch.randn(3, 2, dtype=torch.float64))
        m.w_noise.copy_(torch.randn(3, 2, dtype=torch.float64))
    x = torch.randn(5, 3, dtype=torch.float64)
    tau = torch.rand(5, 1, dtype=torch.float64) + 0.2
    torch.manual_seed(10)
    alpha = m.gates(x, tau)
    torch.manual_seed(10)
    eps = torch.randn(5, 2, dtype=torch.float64)
    for a in range(5):
        logits = []
        for i in range(2):
            clean = sum(x[a, j].item() * m.w_gate[j, i].item() for j in range(3))
            raw = sum(x[a, j].item() * m.w_noise[j, i].item() for j in range(3))
            std = math.log1p(math.exp(raw)) + 0.01
            logits.append((clean + eps[a, i].item() * std) / tau[a, 0].item())
        torch.testing.assert_close(alpha[a], torch.tensor(_softmax(logits), dtype=torch.float64))
    # noise off: deterministic
    m.noisy_gating = False
    torch.testing.assert_close(m.gates(x, tau), m.eval().gates(x, tau))


def test_expert_dropout_independent_per_expert():
    torch.manual_seed(4)
    m = ModalityExperts(dim=16, num_experts=3, expert_dropout=0.5).train()
    with torch.no_grad():
        m.weight.copy_(torch.eye(16).expand(3, 16, 16))
    x = torch.ones(10, 16)
    out = m.expert_outputs(x)
    # identity experts: output is the dropped input (values 0 or 2), different masks per expert
    assert set(out.unique().tolist()) <= {0.0, 2.0}
    assert not torch.equal(out[:, 0], out[:, 1])
    m.eval()
    torch.testing.assert_close(m.expert_outputs(x), x.unsqueeze(1).expand(-1, 3, -1))


def test_gradients_and_determinism():
    def run():
        torch.manual_seed(5)
        m = ModalityExperts(dim=8, num_experts=3)
        with torch.no_grad():
            m.w_gate.normal_()
            m.w_noise.normal_()
        x = torch.randn(6, 8, requires_grad=True)
        theta = torch.randn(6, 1, requires_grad=True)
        mixed, experts = m(x, torch.sigmoid(theta))
        (mixed.square().sum() + experts.sum()).backward()
        return mixed.detach(), x.grad, theta.grad, m.weight.grad, m.bias.grad, m.w_gate.grad, m.w_noise.grad

    a, b = run(), run()
    for u, v in zip(a, b):
        assert u is not None
        assert torch.equal(u, v)
    assert all(t.abs().sum() > 0 for t in a[1:])


def test_shape_validation():
    m = ModalityExperts(dim=4)
    with pytest.raises(ValueError):
        m(torch.randn(3, 5))
    with pytest.raises(ValueError):
        ModalityExperts(dim=4, expert_dropout=1.0)
