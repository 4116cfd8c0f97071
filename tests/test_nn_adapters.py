"""Tests for :mod:`pykeen_momok.nn.adapters`: pooling compared with explicit window means."""

from __future__ import annotations

import math

import pytest
import torch

from pykeen_momok.nn.adapters import (
    POOLING_LAYOUTS,
    LinearAdapter,
    ModalityAdapter,
    PoolingAdapter,
    adapter_resolver,
    l2_normalize_rows,
    reference_pool,
)


def _adaptive_windows(in_size: int, out_size: int) -> list[tuple[int, int]]:
    # PyTorch's adaptive pooling windows: [floor(i*in/out), ceil((i+1)*in/out))
    return [(math.floor(i * in_size / out_size), math.ceil((i + 1) * in_size / out_size)) for i in range(out_size)]


def _explicit_pool(x: torch.Tensor, h: int, w: int, rows: list[tuple[int, int]], cols: list[tuple[int, int]]):
    n = x.shape[0]
    out = torch.empty(n, len(rows) * len(cols), dtype=x.dtype)
    for a in range(n):
        img = x[a].reshape(h, w)
        k = 0
        for r0, r1 in rows:
            for c0, c1 in cols:
                vals = [img[i, j].item() for i in range(r0, r1) for j in range(c0, c1)]
                out[a, k] = sum(vals) / len(vals)
                k += 1
    return out


@pytest.mark.parametrize(
    ("layout", "f", "h", "w", "rows", "cols"),
    [
        ("db15k-image", 4096, 64, 64, [(4 * i, 4 * i + 4) for i in range(16)], [(4 * i, 4 * i + 4) for i in range(16)]),
        ("text-12x64", 768, 12, 64, _adaptive_windows(12, 4), _adaptive_windows(64, 64)),
        ("mkg-text", 384, 12, 32, _adaptive_windows(12, 4), _adaptive_windows(32, 64)),
        ("tiva-image", 2048, 32, 64, _adaptive_windows(32, 4), _adaptive_windows(64, 64)),
    ],
)
def test_reference_pool_values(layout, f, h, w, rows, cols):
    torch.manual_seed(0)
    x = torch.randn(3, f, dtype=torch.float64)
    pooled = reference_pool(x, layout)
    assert pooled.shape == (3, 256)
    assert POOLING_LAYOUTS[layout].out_dim(f) == 256
    torch.testing.assert_close(pooled, _explicit_pool(x, h, w, rows, cols))


def test_text_windows_are_three_rows_and_mkg_duplicates_width():
    torch.manual_seed(1)
    x = torch.randn(2, 768)
    pooled = reference_pool(x, "text-12x64").reshape(2, 4, 64)
    img = x.reshape(2, 12, 64)
    for i in range(4):
        torch.testing.assert_close(pooled[:, i], img[:, 3 * i : 3 * i + 3].mean(dim=1))
    y = torch.randn(2, 384)
    up = reference_pool(y, "mkg-text").reshape(2, 4, 64)
    img = y.reshape(2, 12, 32)
    for i in range(4):
        rows_mean = img[:, 3 * i : 3 * i + 3].mean(dim=1)  # (2, 32)
        torch.testing.assert_close(up[:, i, 0::2], rows_mean)
        torch.testing.assert_close(up[:, i, 1::2], rows_mean)


def test_identity_and_aliases():
    x = torch.randn(4, 383)
    assert torch.equal(reference_pool(x, "identity"), x)
    assert torch.equal(reference_pool(x, "mkg-image"), x)
    assert POOLING_LAYOUTS["db15k-text"] is POOLING_LAYOUTS["text-12x64"]
    assert POOLING_LAYOUTS["fb15k237-image"] is POOLING_LAYOUTS["text-12x64"]


def test_reference_pool_errors():
    with pytest.raises(ValueError, match="4096"):
        reference_pool(torch.randn(2, 768), "db15k-image")
    with pytest.raises(ValueError, match="unknown pooling layout"):
        reference_pool(torch.randn(2, 768), "nope")
    with pytest.raises(ValueError):
        reference_pool(torch.randn(768), "text-12x64")
    with pytest.raises(ValueError):
        PoolingAdapter(in_dim=100, layout="mkg-text")


def test_l2_normalize_rows():
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]])
    expected = torch.tensor([[0.6, 0.8], [0.0, 0.0], [1.0, 0.0]])
    torch.testing.assert_close(l2_normalize_rows(x), expected)


def test_pooling_adapter():
    torch.manual_seed(2)
    features = torch.randn(5, 768) * 3
    adapter = PoolingAdapter(768, "text-12x64")
    assert adapter.out_dim == 256 and adapter.table_dim == 256
    table = adapter.init_table(features)
    normed = features / features.norm(dim=1, keepdim=True)
    torch.testing.assert_close(table, reference_pool(normed, "text-12x64"))
    rows = torch.randn(3, 256)
    assert adapter(rows) is rows
    assert list(adapter.parameters()) == []
    raw = PoolingAdapter(768, "text-12x64", normalize=False).init_table(features)
    torch.testing.assert_close(raw, reference_pool(features, "text-12x64"))
    ident = PoolingAdapter(383)
    assert ident.out_dim == 383
    t = ident.init_table(features[:, :383])
    assert t.data_ptr() != features.data_ptr()


def test_linear_adapter():
    torch.manual_seed(3)
    adapter = LinearAdapter(6, 4)
    assert adapter.out_dim == 4 and adapter.table_dim == 6
    features = torch.randn(5, 6)
    table = adapter.init_table(features)
    assert torch.equal(table, features) and table.data_ptr() != features.data_ptr()
    out = adapter(table)
    expected = torch.stack(
        [
            torch.stack(
                [
                    sum(adapter.linear.weight[o, j] * features[a, j] for j in range(6)) + adapter.linear.bias[o]
                    for o in range(4)
                ]
            )
            for a in range(5)
        ]
    )
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(LinearAdapter(6, 4, normalize=True).init_table(features), l2_normalize_rows(features))


def test_resolver():
    a = adapter_resolver.make("pooling", in_dim=4096, layout="db15k-image")
    assert isinstance(a, PoolingAdapter) and a.out_dim == 256
    b = adapter_resolver.make("linear", in_dim=10, out_dim=3)
    assert isinstance(b, LinearAdapter) and b.out_dim == 3
    c = adapter_resolver.make(None, in_dim=10, out_dim=3)
    assert isinstance(c, LinearAdapter)
    assert isinstance(a, ModalityAdapter)
