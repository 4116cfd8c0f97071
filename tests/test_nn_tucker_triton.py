"""The Triton core contraction (:mod:`pykeen_momok.nn.tucker_triton`) against the per-query oracle, and path choice.

Without CUDA the kernels run under Triton's interpreter on CPU tensors (``TRITON_INTERPRET=1``, set below at
collection, before triton is first imported), on small shapes (d 8-16, B 4-8); with CUDA the same tests run the
compiled kernels on the GPU, and a larger CUDA test (skipped elsewhere) adds the "auto" timing. The masks are
checked bit for bit against an independent NumPy Philox-4x32-10, so interpreter and GPU draw the same masks.
"""

from __future__ import annotations

import copy
import os
import pathlib
import sys

import numpy as np
import pytest
import torch

# Triton runs CPU tensors only under its interpreter, and decides when triton is first imported (its own library,
# tl.randint included, is defined then): switch it on before that, for this process, where there is no GPU.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from pykeen_momok.nn import tucker  # noqa: E402
from pykeen_momok.nn.tucker import (  # noqa: E402
    TuckerHead,
    core_contraction_choices,
    core_dropout_masks,
    core_dropout_threshold,
    fused_core_contraction,
    get_core_contraction_path,
    set_core_contraction_path,
)

pytest.importorskip("triton", reason="triton is not installed (pip install -e '.[tests]' installs it)")

from test_model_oracle import NO_RANDOMNESS, _batch, _loss, _pair, assert_per_query_with_masks_matches  # noqa: E402
from test_model_oracle import tiny as tiny_graph  # noqa: E402,F401  (a fixture, under this name here)
from test_nn_tucker import _grads, _problem, per_query_core_contraction  # noqa: E402

from pykeen_momok.nn import tucker_triton  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))

from _host_sync import HostSyncAudit  # noqa: E402

P = 0.4
DROP_LEVELS = round(P * 65536)


@pytest.fixture(scope="module")
def device() -> torch.device:
    """Where the kernels run here: CUDA (compiled), else CPU under the interpreter."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ok, reason = tucker_triton.triton_availability(device)
    if not ok:
        pytest.skip(f"the Triton kernels cannot run here: {reason}")
    return device


@pytest.fixture(autouse=True)
def _path_setting_restored(monkeypatch):
    monkeypatch.delenv(tucker.CORE_CONTRACTION_PATH_ENV, raising=False)
    yield
    set_core_contraction_path(None)
    core_contraction_choices(clear=True)


def _on(device, *tensors):
    """Leaf copies on ``device`` (gradients flow to them)."""
    return [t.detach().to(device).requires_grad_(t.requires_grad) for t in tensors]


# an independent Philox-4x32-10 (Salmon et al. 2011, as Triton's tl.randint): the masks' reference ---------------


def philox_keep(seed: int, num_queries: int, dim: int, drop_levels: int) -> torch.Tensor:
    """Keep masks ``(B, d, d)``: entry ``(b, i, j)`` has counter ``(b*d + i)*d + j``, kept iff ``word >> 16 >= levels``.

    Philox-4x32-10 (Salmon et al. 2011) as Triton's ``tl.randint``: key ``(seed_lo, seed_hi)``, counter
    ``(offset_lo, offset_hi, 0, 0)``, the first output word.
    """
    counter = np.arange(num_queries * dim * dim, dtype=np.uint64)
    mask32 = np.uint64(0xFFFFFFFF)
    c0, c1 = counter & mask32, counter >> np.uint64(32)
    c2 = np.zeros_like(c0)
    c3 = np.zeros_like(c0)
    k0, k1 = np.uint64(seed & 0xFFFFFFFF), np.uint64((seed >> 32) & 0xFFFFFFFF)
    round_a, round_b = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
    key_a, key_b = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
    for _ in range(10):
        product_b, product_a = round_b * c2, round_a * c0  # < 2^64: exact in uint64
        c0, c1, c2, c3 = (
            (product_b >> np.uint64(32)) ^ c1 ^ k0,
            product_b & mask32,
            (product_a >> np.uint64(32)) ^ c3 ^ k1,
            product_a & mask32,
        )
        k0, k1 = (k0 + key_a) & mask32, (k1 + key_b) & mask32
    keep = (c0 >> np.uint64(16)) >= np.uint64(drop_levels)
    return torch.from_numpy(keep.reshape(num_queries, dim, dim))


SMALL_BLOCKS = dict(query=2, row=8, col=8)  # tiles that do not divide d = 12: the edge masks are exercised


@pytest.mark.parametrize("seed", [0, 5, (1 << 62) + 12345])
def test_masks_are_philox_bits_whatever_the_tiles(device, seed):
    B, d = 5, 12
    expected = philox_keep(seed, B, d, DROP_LEVELS)
    for blocks in (
        tucker_triton.TritonBlockSizes(**SMALL_BLOCKS),
        tucker_triton.TritonBlockSizes(query=4, row=16, col=4),
    ):
        masks = tucker_triton.triton_core_dropout_masks(seed, B, d, DROP_LEVELS, device=device, blocks=blocks)
        assert masks.dtype == torch.bool and masks.shape == (B, d, d) and masks.device.type == device.type
        assert torch.equal(masks.cpu(), expected)
    # through the public helper, for a sub-range; the first queries' masks do not depend on the batch size
    again = core_dropout_masks(seed, B, d, P, device=device, path="triton", start=1, count=3)
    assert torch.equal(again.cpu(), expected[1:4])
    assert torch.equal(core_dropout_masks(seed, 2, d, P, device=device, path="triton").cpu(), expected[:2])
    assert not torch.equal(expected[0], expected[1])


def test_mask_rate_is_p_eff(device):
    B, d = 8, 16
    for p in (0.1, 0.5):
        masks = core_dropout_masks(2024, B, d, p, device=device, path="triton")
        _, p_eff, _ = core_dropout_threshold(p)
        sigma = (p_eff * (1 - p_eff) / masks.numel()) ** 0.5
        assert abs(masks.double().mean().item() - (1 - p_eff)) < 6 * sigma
    assert core_dropout_masks(1, 4, 8, 0.0, device=device, path="triton").all()  # 0 levels: everything kept


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("piece", [64, 2])  # one piece per relation / split + ordered sum
def test_kernel_matches_per_query_oracle(device, monkeypatch, dtype, tol, piece):
    """Values and gradients of x, the relation vectors and the core: the oracle fed with the kernel's masks."""
    monkeypatch.setattr(tucker_triton, "DEFAULT_BLOCKS", tucker_triton.TritonBlockSizes(**SMALL_BLOCKS, piece=piece))
    x, rel, W, ids = _on(device, *_problem(dtype, B=8, d=12, d_r=4, R=3))
    B, d = x.shape
    uniq, index = torch.unique(ids, return_inverse=True)
    matrices = torch.mm(rel[uniq], W.view(W.shape[0], -1)).view(-1, d, d)
    seed = 77
    z = fused_core_contraction(x, matrices, index, p=P, training=True, seed=seed, path="triton")
    masks = core_dropout_masks(seed, B, d, P, device=device, path="triton")
    expected = per_query_core_contraction(x, rel[ids], W, masks, core_dropout_threshold(P)[2])
    torch.testing.assert_close(z, expected, rtol=tol, atol=tol)
    for a, b in zip(_grads(z, (x, rel, W)), _grads(expected, (x, rel, W)), strict=True):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


PER_QUERY_BLOCKS = [
    dict(query=16, row=4, col=8, k=16),  # tiles that do not divide d = 12 or d_r = 5
    dict(query=16, row=16, col=16, k=16),  # one tile per matrix
]


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("blocks", PER_QUERY_BLOCKS)
def test_per_query_kernels_match_oracle(device, monkeypatch, dtype, tol, blocks):
    """Relation vectors per query (the joint head): values and gradients of x, r and the core."""
    monkeypatch.setattr(tucker_triton, "DEFAULT_GEMM_BLOCKS", tucker_triton.TritonGemmBlockSizes(**blocks))
    x, rel, W, ids = _on(device, *_problem(dtype, B=8, d=12, d_r=5, R=3, seed=2))
    B, d = x.shape
    r = rel[ids] * torch.linspace(0.5, 1.5, B, dtype=dtype, device=device).unsqueeze(1)  # all rows distinct
    seed = 99
    z = tucker.fused_core_contraction_per_query(x, r, W, p=P, seed=seed, path="triton")
    masks = core_dropout_masks(seed, B, d, P, device=device, path="triton")
    expected = per_query_core_contraction(x, r, W, masks, core_dropout_threshold(P)[2])
    torch.testing.assert_close(z, expected, rtol=tol, atol=tol)
    for a, b in zip(_grads(z, (x, rel, W)), _grads(expected, (x, rel, W)), strict=True):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    # the same masks as the distinct-relation kernels: the same function where the relation vectors repeat
    uniq, index = torch.unique(ids, return_inverse=True)
    matrices = torch.mm(rel[uniq], W.view(W.shape[0], -1)).view(-1, d, d)
    distinct = fused_core_contraction(x, matrices, index, p=P, seed=seed, path="triton")
    per_query = tucker.fused_core_contraction_per_query(x, rel[ids], W, p=P, seed=seed, path="triton")
    torch.testing.assert_close(distinct, per_query, rtol=tol, atol=tol)


def test_per_query_kernels_only_what_is_needed(device):
    """Gradients only for the inputs that need them; the saved tensors are the inputs and the seed alone."""
    x, rel, W, ids = _on(device, *_problem(torch.float64, B=6, d=8, d_r=4, R=2))
    r = rel[ids].detach()
    z = tucker.fused_core_contraction_per_query(x, r, W.detach(), p=P, seed=3, path="triton")
    node = z.grad_fn.next_functions[0][0]
    assert isinstance(node, tucker_triton._TritonPerQueryCoreContraction._backward_cls)
    assert sum(t.numel() for t in node.saved_tensors) == 6 * 8 + 6 * 4 + 4 * 8 * 8 + 1
    (grad_x,) = torch.autograd.grad(z.sum(), (x,))
    masks = core_dropout_masks(3, 6, 8, P, device=device, path="triton")
    expected = per_query_core_contraction(x, r, W.detach(), masks, core_dropout_threshold(P)[2])
    torch.testing.assert_close(grad_x, torch.autograd.grad(expected.sum(), (x,))[0])


def test_kernel_with_absent_relations_and_half_precision(device, monkeypatch):
    """Matrices no query uses get zero gradients; bf16 inputs accumulate in float32 and come back as bf16."""
    monkeypatch.setattr(tucker_triton, "DEFAULT_BLOCKS", tucker_triton.TritonBlockSizes(**SMALL_BLOCKS, piece=2))
    g = torch.Generator().manual_seed(3)
    B, d, U = 7, 10, 5
    x = torch.randn(B, d, generator=g, dtype=torch.float64).to(device).requires_grad_()
    matrices = torch.randn(U, d, d, generator=g, dtype=torch.float64).to(device).requires_grad_()
    index = torch.tensor([3, 0, 3, 3, 0, 4, 3], device=device)  # 1 and 2 absent; relation 3 spans two pieces
    masks = core_dropout_masks(9, B, d, P, device=device, path="triton")
    scale = core_dropout_threshold(P)[2]
    z = fused_core_contraction(x, matrices, index, p=P, seed=9, path="triton")
    expected = torch.stack([x[b] @ (matrices[index[b]] * masks[b] * scale) for b in range(B)])
    torch.testing.assert_close(z, expected)
    ga = _grads(z, (x, matrices))
    for a, b in zip(ga, _grads(expected, (x, matrices)), strict=True):
        torch.testing.assert_close(a, b)
    assert torch.count_nonzero(ga[1][1:3]) == 0
    xb, mb = x.detach().bfloat16().requires_grad_(), matrices.detach().bfloat16().requires_grad_()
    zb = fused_core_contraction(xb, mb, index, p=P, seed=9, path="triton")
    assert zb.dtype == torch.bfloat16
    reference = torch.stack([xb[b].double() @ (mb[index[b]].double() * masks[b] * scale) for b in range(B)])
    torch.testing.assert_close(zb.double(), reference, rtol=2e-2, atol=2e-2)
    zb.float().square().sum().backward()
    assert xb.grad.dtype == torch.bfloat16 and torch.isfinite(mb.grad.float()).all()


def test_kernel_saves_no_batch_sized_tensor_and_is_deterministic(device):
    x, rel, W, ids = _on(device, *_problem(torch.float32, B=8, d=8, d_r=3, R=3))
    B, d = x.shape
    uniq, index = torch.unique(ids, return_inverse=True)
    matrices = torch.mm(rel[uniq], W.view(W.shape[0], -1)).view(-1, d, d)
    runs = []
    for _ in range(2):
        z = fused_core_contraction(x, matrices, index, p=P, seed=4, path="triton")
        kernel_node = z.grad_fn.next_functions[0][0]  # z = kernel output * scale
        assert isinstance(kernel_node, tucker_triton._TritonDistinctCoreContraction._backward_cls)
        saved = kernel_node.saved_tensors
        assert sum(t.numel() for t in saved) == B * d + matrices.shape[0] * d * d + B + 1  # + the seed tensor
        assert not any(t.dtype == torch.bool for t in saved)
        runs.append((z.detach(), *_grads(z, (x, rel, W))))
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)  # no atomics: bitwise reproducible


def _pieces_on_the_host(index: torch.Tensor, num_groups: int, piece: int):
    """The piece tables as a Python loop over the relations' counts builds them (what the kernels once took)."""
    counts = torch.bincount(index, minlength=num_groups).tolist()
    starts, ends, first, position = [], [], [0], 0
    for count in counts:
        for lo in range(0, count, piece):
            starts.append(position + lo)
            ends.append(position + min(lo + piece, count))
        position += count
        first.append(len(starts))
    return torch.tensor(starts), torch.tensor(ends), torch.tensor(first)


@pytest.mark.parametrize("piece", [1, 2, 3, 64])
@pytest.mark.parametrize(
    ("index", "num_groups"),
    [
        ([3, 0, 3, 3, 0, 4, 3], 5),  # 1 and 2 absent
        ([0, 0, 0, 0, 0], 3),  # the last relations absent: the empty slots start past the last present one
        ([2, 1, 0, 1, 2, 2, 2, 1], 3),
        ([0], 1),
        ([3, 0], 8),  # more relations than queries: P = B slots
        (torch.randint(0, 6, (23,), generator=torch.Generator().manual_seed(1)).tolist(), 8),
    ],
)
def test_piece_tables_are_built_on_the_device_in_slots_the_host_knows(index, num_groups, piece):
    """The tables of the Python loop, then empty slots; their number depends on ``B``, ``U`` and ``piece`` only."""
    index = torch.tensor(index)
    order, starts, ends, first = tucker_triton._pieces(index, num_groups, piece)
    expected_starts, expected_ends, expected_first = _pieces_on_the_host(index, num_groups, piece)
    B, m, n = len(index), min(num_groups, len(index)), len(expected_starts)
    assert all(t.dtype == torch.int64 for t in (order, starts, ends, first))
    assert torch.equal(order, torch.argsort(index, stable=True))
    assert starts.shape == ends.shape == (m + (B - m) // piece,) and n <= starts.shape[0] <= B
    assert torch.equal(first, expected_first)
    assert torch.equal(starts[:n], expected_starts) and torch.equal(ends[:n], expected_ends)
    assert torch.equal(starts[n:], ends[n:])  # empty: the dM kernel writes zeros there, and nobody reads them


def test_distinct_contraction_asks_nothing_of_the_data_on_the_host(device):
    """Forward and backward of the distinct-relation kernels: no data-dependent operation (on a GPU, no wait)."""
    g = torch.Generator().manual_seed(5)
    B, d, U, seed = 9, 8, 5, 7
    x = torch.randn(B, d, generator=g, dtype=torch.float64).to(device).requires_grad_()
    matrices = torch.randn(U, d, d, generator=g, dtype=torch.float64).to(device).requires_grad_()
    index = torch.tensor([4, 0, 4, 4, 1, 4, 0, 4, 4], device=device)  # 2, 3 absent; 4 spans three pieces
    blocks = tucker_triton.TritonBlockSizes(**SMALL_BLOCKS, piece=3)
    audit = HostSyncAudit()
    with audit:
        z = tucker_triton.triton_core_contraction(x, matrices, index, seed, DROP_LEVELS, blocks)
        grads = torch.autograd.grad(z.square().sum(), (x, matrices))
    assert not audit.sites, f"data-dependent operations: {dict(audit.sites)}"
    masks = tucker_triton.triton_core_dropout_masks(seed, B, d, DROP_LEVELS, device=device)
    expected = torch.stack([x[b] @ (matrices[index[b]] * masks[b]) for b in range(B)])
    torch.testing.assert_close(z, expected)
    for a, b in zip(grads, torch.autograd.grad(expected.square().sum(), (x, matrices)), strict=True):
        torch.testing.assert_close(a, b)
    assert torch.count_nonzero(grads[1][2:4]) == 0


def test_without_masks_every_path_is_the_same_gemm(device):
    x, rel, W, ids = _on(device, *_problem(torch.float64, B=6, d=8))
    uniq, index = torch.unique(ids, return_inverse=True)
    matrices = torch.mm(rel[uniq], W.view(W.shape[0], -1)).view(-1, 8, 8)
    for training, p in ((False, P), (True, 0.0)):
        a = fused_core_contraction(x, matrices, index, p=p, training=training, path="triton")
        b = fused_core_contraction(x, matrices, index, p=p, training=training, path="torch")
        assert torch.equal(a, b)
    assert torch.all(fused_core_contraction(x, matrices, index, p=1.0, seed=1, path="triton") == 0)


@pytest.mark.parametrize("use_ids", [True, False])
def test_head_on_the_triton_path_matches_composed_oracle(device, use_ids):
    """``TuckerHead(contraction_path="triton")``: BN0 -> contraction -> BN1 against the oracle, masks by path."""
    torch.manual_seed(3)
    B, d, d_r, R = 8, 12, 5, 3
    head = TuckerHead(d, d_r, input_dropout=0.0, hidden_dropout=0.0, contraction_path="triton")
    head = head.double().to(device).train()
    ref = copy.deepcopy(head)
    e = torch.randn(B, d, dtype=torch.float64, device=device, requires_grad=True)
    rel = torch.randn(R, d_r, dtype=torch.float64, device=device, requires_grad=True)
    ids = torch.randint(0, R, (B,), device=device)
    if use_ids:
        z, r_per_query = head(e, ids, rel), rel[ids]
    else:  # per-query relation vectors: the per-query kernels
        r_per_query = rel[ids] + 0.01 * torch.randn(B, d_r, dtype=torch.float64, device=device)
        z = head(e, r=r_per_query)
    assert head.last_core_path == "triton"
    masks = core_dropout_masks(
        head.last_core_seed, B, d, P, device=device, chunk_size=head.chunk_size(device), path=head.last_core_path
    )
    expected = ref.bn1(
        per_query_core_contraction(ref.bn0(e), r_per_query, ref.core, masks, core_dropout_threshold(P)[2])
    )
    torch.testing.assert_close(z, expected)
    for a, b in zip(_grads(z, (e, rel, head.core)), _grads(expected, (e, rel, ref.core)), strict=True):
        torch.testing.assert_close(a, b)


def test_model_on_the_triton_path_equals_per_query_with_the_same_masks(device, tiny_graph, monkeypatch):  # noqa: F811
    """Whole MoMoK, core dropout on: the per-query model (``fused=False``) fed with the masks each head drew."""
    set_core_contraction_path("triton")
    fused, per_query = _pair(tiny_graph.training, **dict(NO_RANDOMNESS, core_dropout=P, mi_weight=0.0))
    fused, per_query = fused.to(device), per_query.to(device)
    heads = [*fused.interaction.heads, fused.interaction.joint_head]
    pairs, labels = _batch(tiny_graph.training)
    pairs, labels = pairs[:8].to(device), labels[:8].to(device)
    fused.train()
    per_query.train()
    heads_a, loss_a = _loss(fused, pairs, labels)
    loss_a.backward()
    # the base-modality heads take the distinct-relation kernels, the joint head (per-query relations) the GEMM ones
    assert [head.last_core_path for head in heads] == ["triton"] * len(heads)
    masks = [
        core_dropout_masks(
            h.last_core_seed, len(pairs), h.entity_dim, P, device=device, chunk_size=h.chunk_size(device),
            path=h.last_core_path,
        )
        for h in heads
    ]  # fmt: skip
    assert_per_query_with_masks_matches(monkeypatch, fused, per_query, masks, P, pairs, labels, heads_a, loss_a)


# the seed on the device ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("per_query", [False, True])
def test_a_seed_tensor_draws_the_masks_of_its_int(device, per_query):
    """The kernels read the seed from a device tensor: the same values and gradients as the int it holds."""
    x, rel, W, ids = _on(device, *_problem(torch.float64, B=6, d=8, d_r=4, R=3))
    seed = (1 << 40) + 7  # above 2^31, where a launch argument would have been int64 too
    runs = []
    for given in (seed, torch.tensor([seed], device=device)):
        if per_query:
            z = tucker.fused_core_contraction_per_query(x, rel[ids], W, p=P, seed=given, path="triton")
        else:
            matrices = torch.mm(rel, W.view(W.shape[0], -1)).view(-1, 8, 8)
            z = fused_core_contraction(x, matrices, ids, p=P, seed=given, path="triton")
        runs.append((z.detach(), *_grads(z, (x, rel, W))))
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)
    masks = tucker_triton.triton_core_dropout_masks(torch.tensor(seed, device=device), 6, 8, DROP_LEVELS, device)
    assert torch.equal(masks, tucker_triton.triton_core_dropout_masks(seed, 6, 8, DROP_LEVELS, device))
    assert torch.equal(masks.cpu(), philox_keep(seed, 6, 8, DROP_LEVELS))


def test_seed_tensor_refuses_what_the_kernels_cannot_read(device):
    t = tucker_triton.seed_tensor(5, device)
    assert t.dtype == torch.int64 and t.shape == (1,) and t.device.type == device.type and int(t) == 5
    assert tucker_triton.seed_tensor(t, device).data_ptr() == t.data_ptr()  # passed through, not copied
    assert tucker_triton.seed_tensor(t, torch.device(device.type)).data_ptr() == t.data_ptr()  # cuda == cuda:0
    with pytest.raises(ValueError, match=r"seed must lie in \[0, 2\^63\), got -1"):
        tucker_triton.seed_tensor(-1, device)
    with pytest.raises(ValueError, match="one int64 element on .*got torch.int32 of shape \\(2,\\)"):
        tucker_triton.seed_tensor(torch.zeros(2, dtype=torch.int32, device=device), device, "here")
    with pytest.raises(ValueError, match="here: a seed tensor must be one int64 element on meta"):
        tucker_triton.seed_tensor(torch.zeros(1, dtype=torch.int64), "meta", "here")


def test_a_training_head_on_the_triton_path_draws_its_seed_on_the_device(device, monkeypatch):
    """No host-side random draw (a CUDA graph would replay it): the seed comes from the device's generator."""

    def host_draw():
        raise AssertionError("the Triton path drew its seed on the host")

    monkeypatch.setattr(tucker, "draw_core_seed", host_draw)
    head = TuckerHead(8, 4, input_dropout=0.0, hidden_dropout=0.0, contraction_path="triton")
    head = head.double().to(device).train()
    e = torch.randn(6, 8, dtype=torch.float64, device=device)
    rel = torch.randn(3, 4, dtype=torch.float64, device=device, requires_grad=True)
    ids = torch.tensor([0, 2, 2, 1, 0, 2], device=device)
    for kwargs in (dict(relation_ids=ids, relation_weights=rel), dict(r=rel[ids])):
        torch.manual_seed(11)
        if device.type == "cuda":
            torch.cuda.manual_seed_all(11)
        expected = tucker.draw_core_seed_tensor(device)
        torch.manual_seed(11)
        if device.type == "cuda":
            torch.cuda.manual_seed_all(11)
        with HostSyncAudit() as audit:
            head(e, **kwargs).sum().backward()
        assert not audit.sites
        seed = head.last_core_seed
        assert isinstance(seed, torch.Tensor) and seed.device.type == device.type and torch.equal(seed, expected)


def test_a_capture_ready_training_step_decides_nothing_on_the_host(device, monkeypatch):
    """``core_contraction_path="triton"``, ``mi_pair_draw="device"``, every relation's matrices: forward, loss,
    backward, Adam and the CLUB step read nothing on the host, random draws included (what a CUDA graph needs)."""
    if device.type == "cuda":
        pytest.skip("the audited step runs on CPU tensors (kernels interpreted); on a GPU sync_check.py audits it")
    from test_host_sync import _trained_step

    from pykeen_momok.datasets.synthetic import SyntheticMMKG

    monkeypatch.setattr(tucker, "_groups_on_the_host", lambda x: not torch.is_grad_enabled())  # as on CUDA
    audit = HostSyncAudit(host_side=True)
    model = _trained_step(
        SyntheticMMKG(),
        audit,
        relation_matrices="all",
        core_dropout=P,
        core_contraction_path="triton",
        mi_pair_draw="device",
    )
    assert not audit.sites, f"host-side operations in the training step: {dict(audit.sites)}"
    heads = [*model.interaction.heads, model.interaction.joint_head]
    assert all(head.last_core_path == "triton" and isinstance(head.last_core_seed, torch.Tensor) for head in heads)


def test_the_device_seed_on_cpu_is_the_host_seed():
    """On CPU both draws read the same generator the same way: one RNG state, one seed (masks stay reproducible)."""
    torch.manual_seed(5)
    host = tucker.draw_core_seed()
    torch.manual_seed(5)
    assert int(tucker.draw_core_seed_tensor("cpu")) == host
    with pytest.raises(ValueError, match="path must be 'torch' or 'triton'"):
        core_dropout_masks(torch.tensor([host]), 2, 4, P, path="other")
    torch.testing.assert_close(
        core_dropout_masks(torch.tensor([host]), 2, 4, P), core_dropout_masks(host, 2, 4, P)
    )  # the torch path reads a given tensor


# path setting --------------------------------------------------------------------------------------------------


def test_path_setting_order_and_validation(monkeypatch):
    monkeypatch.delenv(tucker.CORE_CONTRACTION_PATH_ENV, raising=False)
    # the kernels have not run on a GPU yet: nothing takes them unless asked
    assert get_core_contraction_path() == "torch"
    monkeypatch.setenv(tucker.CORE_CONTRACTION_PATH_ENV, "torch")
    assert get_core_contraction_path() == "torch"
    set_core_contraction_path("triton")
    assert get_core_contraction_path() == "triton"  # the function's setting wins over the environment
    set_core_contraction_path(None)
    monkeypatch.setenv(tucker.CORE_CONTRACTION_PATH_ENV, "cuda-fast")
    with pytest.raises(ValueError, match="PYKEEN_MOMOK_TUCKER_PATH.*'cuda-fast'.*expected one of"):
        get_core_contraction_path()
    with pytest.raises(ValueError, match="set_core_contraction_path.*'fast'"):
        set_core_contraction_path("fast")
    with pytest.raises(ValueError, match="TuckerHead"):
        TuckerHead(4, 3, contraction_path="triton-ish")
    with pytest.raises(ValueError, match="fused_core_contraction"):
        fused_core_contraction(torch.randn(2, 3), torch.randn(1, 3, 3), torch.zeros(2, dtype=torch.long), path="gpu")
    with pytest.raises(ValueError, match="path must be 'torch' or 'triton'"):
        core_dropout_masks(1, 2, 3, 0.4, path="auto")


def test_auto_takes_torch_on_cpu_without_timing():
    """Even where the interpreter could run the kernels, "auto" never takes them on CPU (and times nothing)."""
    x, rel, W, ids = _problem(torch.float64, B=6, d=8)
    head = TuckerHead(8, W.shape[0], contraction_path="auto").double().train()
    head(x, ids, rel)
    assert head.last_core_path == "torch"
    assert core_contraction_choices() == {}


def test_head_pickled_before_the_path_setting_still_trains():
    """Heads in models pickled by earlier versions have no ``contraction_path``/``last_core_path``: class defaults."""
    import pickle

    head = TuckerHead(6, 4)
    del head.__dict__["contraction_path"], head.__dict__["last_core_path"]  # what such an old pickle holds
    head = pickle.loads(pickle.dumps(head)).train()
    assert head(torch.randn(5, 6), torch.tensor([0, 1, 0, 1, 1]), torch.randn(2, 4)).shape == (5, 6)
    assert head.contraction_path is None and head.last_core_path == "torch"


def test_triton_path_without_interpreter_on_cpu_says_why(monkeypatch):
    monkeypatch.setattr(tucker_triton, "INTERPRETED", False)
    ok, reason = tucker_triton.triton_availability("cpu")
    assert not ok and "TRITON_INTERPRET=1" in reason
    x, rel, W, ids = _problem(torch.float64, B=4, d=8)
    head = TuckerHead(8, W.shape[0], contraction_path="triton").double().train()
    with pytest.raises(RuntimeError, match="cannot run on cpu.*TRITON_INTERPRET=1"):
        head(x, ids, rel)
    head.eval()  # without masks no kernel is needed
    assert head(x, ids, rel).shape == (4, 8)


def test_kernel_argument_checks(device):
    x, m = torch.randn(4, 8, device=device), torch.randn(2, 8, 8, device=device)
    index = torch.tensor([0, 1, 1, 0], device=device)
    with pytest.raises(ValueError, match=r"expected x \(B, d\) and matrices \(U, d, d\)"):
        tucker_triton.triton_core_contraction(x, torch.randn(2, 8, 7, device=device), index, 1, DROP_LEVELS)
    with pytest.raises(ValueError, match="integer index of shape"):
        tucker_triton.triton_core_contraction(x, m, index.float(), 1, DROP_LEVELS)
    with pytest.raises(TypeError, match="must share one of"):
        tucker_triton.triton_core_contraction(x, m.double(), index, 1, DROP_LEVELS)
    with pytest.raises(ValueError, match="drop_levels"):
        tucker_triton.triton_core_contraction(x, m, index, 1, 1 << 16)
    with pytest.raises(ValueError, match="seed"):
        tucker_triton.triton_core_contraction(x, m, index, -1, DROP_LEVELS)
    with pytest.raises(ValueError, match="power of two"):
        tucker_triton.TritonBlockSizes(row=24)
    with pytest.raises(ValueError, match=r"expected x \(B, d\), r \(B, d_r\) and core \(d_r, d, d\)"):
        tucker_triton.triton_core_contraction_per_query(x, torch.randn(4, 3), torch.randn(3, 8, 7), 1, DROP_LEVELS)
    with pytest.raises(TypeError, match="x and r, core must share"):
        r3, w3 = torch.randn(4, 3, device=device), torch.randn(3, 8, 8, device=device)
        tucker_triton.triton_core_contraction_per_query(x, r3.double(), w3, 1, DROP_LEVELS)
    with pytest.raises(ValueError, match="tl.dot needs query >= 16"):
        tucker_triton.TritonGemmBlockSizes(query=8)


# CUDA: the compiled kernels at a larger shape, default tiles, and the "auto" timing --------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the kernels compile for CUDA only)")
def test_cuda_kernels_match_oracle_and_auto_times_both_paths():
    """Compiled kernels at default tiles (both contractions) and the "auto" timing; float32 at TF32 off."""
    device = torch.device("cuda")
    ok, reason = tucker_triton.triton_availability(device)
    assert ok, reason
    assert not tucker_triton.INTERPRETED, "TRITON_INTERPRET=1 is set: this test is for the compiled kernels"
    x, rel, W, ids = _on(device, *_problem(torch.float32, B=70, d=40, d_r=8, R=5))
    uniq, index = torch.unique(ids, return_inverse=True)
    matrices = torch.mm(rel[uniq], W.view(W.shape[0], -1)).view(-1, 40, 40)
    seed = (1 << 40) + 3
    masks = core_dropout_masks(seed, 70, 40, P, device=device, path="triton")
    assert torch.equal(masks.cpu(), philox_keep(seed, 70, 40, DROP_LEVELS))
    scale = core_dropout_threshold(P)[2]
    expected = per_query_core_contraction(x, rel[ids], W, masks, scale)
    for piece in (64, 7):
        blocks = tucker_triton.TritonBlockSizes(piece=piece)
        z = tucker_triton.triton_core_contraction(x, matrices, index, seed, DROP_LEVELS, blocks) * scale
        torch.testing.assert_close(z, expected, rtol=1e-4, atol=1e-4)
        for a, b in zip(_grads(z, (x, rel, W)), _grads(expected, (x, rel, W)), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    r = rel[ids] * torch.linspace(0.5, 1.5, 70, device=device).unsqueeze(1)
    z = tucker_triton.triton_core_contraction_per_query(x, r, W, seed, DROP_LEVELS) * scale
    expected = per_query_core_contraction(x, r, W, masks, scale)
    torch.testing.assert_close(z, expected, rtol=1e-4, atol=1e-4)
    for a, b in zip(_grads(z, (x, rel, W)), _grads(expected, (x, rel, W)), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    head = TuckerHead(40, 8).to(device).train()  # "auto": times both paths once per shape and contraction
    head(torch.randn(70, 40, device=device), ids, rel.detach())
    choice, times = core_contraction_choices()[("distinct", str(device), "float32", 70, 40)]
    assert choice == head.last_core_path and set(times) == {"torch", "triton"}
    head(torch.randn(70, 40, device=device), r=r.detach().requires_grad_())
    choice, times = core_contraction_choices()[("per-query", str(device), "float32", 70, 40)]
    assert choice == head.last_core_path and set(times) == {"torch", "triton"}


# compiled, without a GPU: every kernel through Triton's whole pipeline for Hopper (sm_90) -------------------------

COMPILE_SCRIPT = """
import sys
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from pykeen_momok.nn import tucker_triton as tt

assert not tt.INTERPRETED
INDEX_POINTERS = {"index_ptr", "order_ptr", "piece_start_ptr", "piece_end_ptr", "first_piece_ptr", "seed_ptr"}
TILES = dict(BLOCK_Q=2, BLOCK_I=32, BLOCK_J=32, BLOCK=1024)
GEMM_TILES = dict(BLOCK_Q=32, BLOCK_I=8, BLOCK_J=32, BLOCK_K=32)


def signature(fn, dtype, constants):
    out = {}
    for name in fn.arg_names:
        if name in constants:
            out[name] = "constexpr"
        elif name in INDEX_POINTERS:
            out[name] = "*i64"
        elif name == "partial_ptr" or (name == "out_ptr" and fn.__name__ == "_grad_m_kernel"):
            out[name] = "*fp32"  # the pieces' partial sums, in the accumulator dtype
        elif name == "out_ptr" and fn.__name__ == "_mask_kernel":
            out[name] = "*i8"
        elif name.endswith("_ptr"):
            out[name] = "*" + dtype
        else:
            out[name] = "i32"
    return out


failures = []
for spec in sys.argv[1:]:  # dtype:precision of the tl.dot kernels
    dtype, precision = spec.split(":")
    variants = [(tt._product_kernel, dict(TILES, TRANSPOSED=t)) for t in (False, True)]
    variants += [(tt._grad_m_kernel, dict(TILES)), (tt._sum_pieces_kernel, dict(TILES)), (tt._mask_kernel, dict(TILES))]
    gemm = dict(GEMM_TILES, PRECISION=precision)
    variants += [(tt._pq_product_kernel, dict(gemm, TRANSPOSED=t)) for t in (False, True)]
    variants += [(tt._pq_grad_r_kernel, gemm), (tt._pq_grad_w_kernel, gemm)]
    for fn, constants in variants:
        constants = {k: v for k, v in dict(constants, ACC=tl.float32).items() if k in fn.arg_names}
        try:
            source = ASTSource(fn=fn, signature=signature(fn, dtype, constants), constexprs=constants)
            triton.compile(source, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4))
        except Exception as error:
            failures.append(f"{fn.__name__} {dtype} {constants}: {type(error).__name__}: {error}")
print("\\n".join(failures) or "all compiled")
sys.exit(1 if failures else 0)
"""


def test_kernels_compile_for_a_hopper_gpu():
    """The interpreter is lenient where the compiler is not (types, layouts, tl.dot shapes): compile every kernel for
    sm_90 down to the GPU binary, no GPU needed. float32 with TF32 products: the tensor-core path of the tl.dot
    kernels, the riskier layout (~15 s; float64, bfloat16, float16 and IEEE float32 compiled too when this was
    written, ~40 s more)."""
    import subprocess
    import sys

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the other tests compile and run the kernels on it")
    triton_backends = pytest.importorskip("triton.backends")
    if "nvidia" not in getattr(triton_backends, "backends", {}):
        pytest.skip("this triton has no NVIDIA backend to compile with")
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-c", COMPILE_SCRIPT, "fp32:tf32"], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "all compiled" in done.stdout
