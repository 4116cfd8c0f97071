"""Tests for :mod:`pykeen_momok.nn.fusion` against explicit loops."""

from __future__ import annotations

import math

import pytest
import torch

from pykeen_momok.nn.fusion import ModalityFusion


def _explicit(fusion: ModalityFusion, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    n = inputs[0].shape[0]
    d = fusion.out_dim
    a = fusion.attention.weight[0]
    out = torch.zeros(n, d, dtype=inputs[0].dtype)
    att = torch.zeros(n, fusion.num_heads, len(inputs), dtype=inputs[0].dtype)
    for row in range(n):
        for h in range(fusion.num_heads):
            vs, logits = [], []
            for m, x in enumerate(inputs):
                lin = fusion.projections[h][m]
                v = [
                    max(
                        0.0,
                        sum(lin.weight[o, j].item() * x[row, j].item() for j in range(x.shape[1])) + lin.bias[o].item(),
                    )
                    for o in range(d)
                ]
                vs.append(v)
                logits.append(sum(a[o].item() * v[o] for o in range(d)))
            mx = max(logits)
            e = [math.exp(logit - mx) for logit in logits]
            beta = [u / sum(e) for u in e]
            for m in range(len(inputs)):
                att[row, h, m] = beta[m]
                for o in range(d):
                    out[row, o] += beta[m] * vs[m][o]
    return out, att


@pytest.mark.parametrize("in_dims", [[3], [3, 4], [3, 4, 2], [2, 2, 2, 2]])
def test_fusion_hand_computed(in_dims):
    torch.manual_seed(0)
    fusion = ModalityFusion(in_dims, out_dim=5, num_heads=2).double().eval()
    inputs = [torch.randn(4, d, dtype=torch.float64) for d in in_dims]
    out = fusion(inputs)
    expected, att = _explicit(fusion, inputs)
    assert out.shape == (4, 5)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(fusion.last_attention, att)
    if len(in_dims) == 1:
        torch.testing.assert_close(att, torch.ones_like(att))


def test_structure_matches_reference():
    fusion = ModalityFusion([7, 5, 3], out_dim=4, num_heads=2, dropout=0.2)
    assert fusion.attention.bias is None and fusion.attention.weight.shape == (1, 4)
    assert len(fusion.projections) == 2 and all(len(h) == 3 for h in fusion.projections)
    assert fusion.projections[0][1].weight.shape == (4, 5) and fusion.projections[0][1].bias is not None
    assert fusion.projections[0][0] is not fusion.projections[1][0]
    assert fusion.dropout.p == 0.2


def test_dropout_train_and_determinism_and_grad():
    def run():
        torch.manual_seed(1)
        fusion = ModalityFusion([6, 6, 6], out_dim=6, num_heads=2, dropout=0.5).train()
        xs = [torch.randn(8, 6, requires_grad=True) for _ in range(3)]
        out = fusion(xs)
        out.sum().backward()
        return out.detach(), [x.grad for x in xs], fusion.attention.weight.grad

    a, b = run(), run()
    assert torch.equal(a[0], b[0])
    assert all(torch.equal(u, v) for u, v in zip(a[1], b[1]))
    assert torch.equal(a[2], b[2])
    torch.manual_seed(1)
    fusion = ModalityFusion([6, 6, 6], out_dim=6, num_heads=2, dropout=0.5)
    xs = [torch.randn(8, 6) for _ in range(3)]
    assert not torch.allclose(fusion.train()(xs), fusion.eval()(xs))


def test_wrong_number_of_inputs():
    fusion = ModalityFusion([2, 3], out_dim=4)
    with pytest.raises(ValueError):
        fusion([torch.randn(2, 2)])
    with pytest.raises(ValueError):
        ModalityFusion([], out_dim=4)


def test_attention_weights_are_forwards_without_fusing():
    torch.manual_seed(1)
    fusion = ModalityFusion([3, 4, 2], out_dim=5, num_heads=2, dropout=0.5).eval()
    inputs = [torch.randn(6, d) for d in (3, 4, 2)]
    fusion(inputs)
    kept = fusion.last_attention
    other = [torch.randn(6, d) for d in (3, 4, 2)]
    weights = fusion.attention_weights(other)
    assert fusion.last_attention is kept  # nothing stored
    fusion(other)
    torch.testing.assert_close(weights, fusion.last_attention)
    assert weights.shape == (6, 2, 3)
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(6, 2))
    with pytest.raises(ValueError, match="expected 3 modality inputs"):
        fusion.attention_weights(other[:2])


def test_fusion_under_an_activation_checkpoint_traces_as_one_graph():
    """``torch.compile`` traces the fusion inside an activation checkpoint (as the model's candidates run) without a
    break: the attention weights are stored only when the call runs eagerly, where they still are."""
    import torch._dynamo
    from torch.utils.checkpoint import checkpoint

    torch.manual_seed(0)
    fusion = ModalityFusion([3, 4], out_dim=5, num_heads=2, dropout=0.1).train()
    inputs = [torch.randn(6, 3, requires_grad=True), torch.randn(6, 4, requires_grad=True)]
    torch._dynamo.reset()
    explained = torch._dynamo.explain(lambda *x: checkpoint(fusion, list(x), use_reentrant=False))(*inputs)
    assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons
    assert fusion.last_attention is None  # traced, not run: nothing stored
    fusion(inputs)
    assert fusion.last_attention.shape == (6, 2, 2)
