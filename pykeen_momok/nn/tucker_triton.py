"""Triton kernels of the Tucker head's core contraction with per-query core dropout (optional: ``pykeen-momok[gpu]``).

For a batch of queries ``b`` with the distinct relation matrices ``M_u`` (``(U, d, d)``, built by the caller)
and the index ``u(b)``, the kernels compute::

    z_b = scale * x_b @ (keep_b * M_{u(b)})                        # forward, (B, d)
    dx_b = keep_b * M_{u(b)} @ g_b          (g = scale * dL/dz)     # backward
    dM_u = sum_{b : u(b) = u} keep_b * (x_b g_b^T)

The keep masks ``keep_b`` (``(d, d)`` per query) are never stored: every kernel draws them where it uses them,
from Triton's counter-based Philox generator (``tl.randint``, 10 rounds) keyed by the base ``seed``, with the
counter ``(b * d + i) * d + j`` (the entry's position in the virtual ``(B, d, d)`` mask). An entry is dropped
iff the upper 16 bits of its random word are ``< drop_levels`` (``drop_levels = round(p * 65536)``): the same
realised rate ``p_eff = drop_levels / 65536`` and scale ``1 / (1 - p_eff)`` as the PyTorch fused path
(:func:`pykeen_momok.nn.tucker.core_dropout_threshold`), though other random bits, so other masks. The masks
depend only on the seed, the query's row in the batch, ``d`` and the entry: not on block sizes, dtype or device.
:func:`triton_core_dropout_masks` materialises them (for tests and small shapes).

Determinism: no atomics. ``dM`` is a per-relation reduction: the queries are sorted by relation (stable), each
relation's queries are cut into pieces of at most :attr:`TritonBlockSizes.piece` queries, each piece is summed
in query order by one program, and the pieces of a relation are added in order by a second kernel. Under a fixed
seed, forward and backward are bitwise reproducible on one device and block configuration.

No host waits: the piece tables are built on the device (sort, ``searchsorted``, ``cumsum``) into a number of
slots the host knows from the shapes alone (:func:`_pieces`), so nothing in forward or backward reads tensor data
on the host and the launches of a training step can be queued ahead of the device. The seed, too, is read on the
device: the kernels load it from a one-element int64 tensor (:func:`seed_tensor`) rather than taking it as a launch
argument. A training step on this path draws that tensor on the device
(:func:`pykeen_momok.nn.tucker.draw_core_seed_tensor`), so nothing random is decided on the host, and a step
captured as a CUDA graph (whose launch arguments are fixed at capture) draws new masks at every replay.

This module imports ``triton`` when it is itself imported; :mod:`pykeen_momok.nn.tucker` imports it only when
the Triton path is asked for (or timed by the ``"auto"`` choice on CUDA), so the package works without triton.
Triton compiles for CUDA tensors. CPU tensors run only under Triton's interpreter, which must be switched on
(``TRITON_INTERPRET=1``) *before* this module is imported: it decides at kernel definition. The interpreter is
for tests; it is orders of magnitude slower than the PyTorch path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

try:  # optional dependency: the package works without it (see pykeen_momok.nn.tucker)
    import triton
    import triton.language as tl
except ImportError as error:  # pragma: no cover - exercised where triton is absent
    triton = None
    tl = None
    _IMPORT_ERROR: ImportError | None = error
else:
    _IMPORT_ERROR = None

__all__ = [
    "INTERPRETED",
    "TritonBlockSizes",
    "DEFAULT_BLOCKS",
    "triton_availability",
    "triton_core_contraction",
    "triton_core_dropout_masks",
    "seed_tensor",
]

#: whether the kernels were defined under Triton's interpreter (``TRITON_INTERPRET=1`` when this module was imported)
INTERPRETED: bool = triton is not None and os.environ.get("TRITON_INTERPRET", "0") == "1"
#: whether Triton's own library (``tl.randint``...) was defined under the interpreter: triton decides when *it* is
#: first imported, so ``TRITON_INTERPRET=1`` set after that gives interpreted kernels calling compiled helpers
_LIBRARY_INTERPRETED: bool = triton is not None and type(tl.randint).__name__ == "InterpretedFunction"

#: dtypes the kernels read and write; accumulation is float32 (float64 for float64 inputs)
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_tiles(sizes, powers_of_two: tuple[str, ...], positive: tuple[str, ...]) -> None:
    """Refuse tile sizes that are no powers of two (``tl.arange`` needs them) or counts below 1."""
    kind = type(sizes).__name__
    for name in powers_of_two:
        value = getattr(sizes, name)
        if value < 1 or value & (value - 1):
            raise ValueError(f"{kind}.{name} must be a power of two >= 1, got {value}")
    for name in positive:
        if getattr(sizes, name) < 1:
            raise ValueError(f"{kind}.{name} must be >= 1, got {getattr(sizes, name)}")


@dataclass(frozen=True)
class TritonBlockSizes:
    """Tile sizes of the kernels (powers of two, except ``piece`` and ``num_warps``).

    :param query: queries per tile (``BLOCK_Q``)
    :param row: rows ``i`` of the ``d x d`` matrix per tile (``BLOCK_I``)
    :param col: columns ``j`` per tile (``BLOCK_J``)
    :param piece: at most this many queries of one relation are reduced by one program of the ``dM`` kernel;
        relations with more queries are split into pieces that a second kernel adds in order
    :param num_warps: warps per program (ignored by the interpreter)
    """

    query: int = 2
    row: int = 32
    col: int = 32
    piece: int = 64
    num_warps: int = 4

    def __post_init__(self) -> None:
        _check_tiles(self, ("query", "row", "col"), ("piece", "num_warps"))
        if self.query * self.row * self.col < 16:
            raise ValueError(
                f"TritonBlockSizes: a tile needs at least 16 elements (query * row * col), got {self.query}, "
                f"{self.row}, {self.col}"
            )


#: the tile sizes used when none are given (not tuned on a GPU yet: ``benchmarks/tucker_kernels.py`` sweeps them)
DEFAULT_BLOCKS = TritonBlockSizes()


@dataclass(frozen=True)
class TritonGemmBlockSizes:
    """Tile sizes of the per-query kernels, whose inner products ``r_b W`` are ``tl.dot`` GEMM tiles (powers of two).

    :param query: queries per tile (``BLOCK_Q``, at least 16: the smallest ``tl.dot`` side)
    :param row: rows ``i`` per tile (``BLOCK_I``)
    :param col: columns ``j`` per tile (``BLOCK_J``; ``row * col`` at least 16)
    :param k: relation dimensions per GEMM step (``BLOCK_K``, at least 16)
    :param num_warps: warps per program (ignored by the interpreter)
    """

    query: int = 32
    row: int = 8
    col: int = 32
    k: int = 32
    num_warps: int = 8

    def __post_init__(self) -> None:
        _check_tiles(self, ("query", "row", "col", "k"), ("num_warps",))
        if self.query < 16 or self.k < 16 or self.row * self.col < 16:
            raise ValueError(
                f"TritonGemmBlockSizes: tl.dot needs query >= 16, k >= 16 and row * col >= 16, got {self.query}, "
                f"{self.k} and {self.row} * {self.col}"
            )


#: the per-query kernels' tiles when none are given (untuned, as :data:`DEFAULT_BLOCKS`)
DEFAULT_GEMM_BLOCKS = TritonGemmBlockSizes()


def triton_availability(device: torch.device | str) -> tuple[bool, str]:
    """Whether the kernels can run on tensors of ``device``, and if not, why.

    :return: ``(True, "")`` or ``(False, reason)``
    """
    device = torch.device(device)
    if triton is None:
        return False, f"triton is not installed (pip install 'pykeen-momok[gpu]'; import failed: {_IMPORT_ERROR})"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False, "CUDA is not available"
        return True, ""
    if device.type == "cpu":
        if not INTERPRETED:
            return False, (
                "Triton runs CPU tensors only under its interpreter, and pykeen_momok.nn.tucker_triton was imported "
                "without TRITON_INTERPRET=1 (set it before triton is first imported; it is for tests, and slow)"
            )
        if not _LIBRARY_INTERPRETED:
            return False, (
                "TRITON_INTERPRET=1 was set after triton itself was imported, so its library functions are compiled "
                "ones (set it before the first import of triton)"
            )
        return True, ""
    return False, f"device type {device.type!r} is not supported by the Triton kernels (cuda, or cpu interpreted)"


def _check_available(device: torch.device) -> None:
    ok, reason = triton_availability(device)
    if not ok:
        raise RuntimeError(f"the Triton core contraction cannot run on {device}: {reason}")


if triton is not None:

    @triton.jit
    def _keep_tile(seed, q, i, j, dim, drop_levels):
        """Keep mask ``(BQ, BI, BJ)`` of queries ``q`` (int64), rows ``i``, columns ``j``: True = kept."""
        counter = (q[:, None, None] * dim + i[None, :, None]) * dim + j[None, None, :]
        bits = tl.randint(seed, counter).to(tl.uint32, bitcast=True)
        return (bits >> 16).to(tl.int32) >= drop_levels

    @triton.jit
    def _masked_matrix_tile(m_ptr, u, q, q_ok, i, j, dim, seed, drop_levels, ACC: tl.constexpr):
        """``keep_b[i, j] M[u(b), i, j]`` for queries ``q`` (relations ``u``), rows ``i`` and columns ``j``."""
        ok = q_ok[:, None, None] & (i < dim)[None, :, None] & (j < dim)[None, None, :]
        ms = tl.load(m_ptr + (u[:, None, None] * dim + i[None, :, None]) * dim + j[None, None, :], mask=ok, other=0.0)
        return tl.where(_keep_tile(seed, q, i, j, dim, drop_levels), ms.to(ACC), 0.0)

    @triton.jit
    def _product_kernel(
        v_ptr, m_ptr, index_ptr, out_ptr, num, dim, seed_ptr, drop_levels,
        BLOCK_Q: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr, ACC: tl.constexpr,
        TRANSPOSED: tl.constexpr,
    ):  # fmt: skip
        """``out_b = v_b @ (keep_b * M_u(b))`` (forward), or with ``TRANSPOSED`` ``(keep_b * M_u(b)) @ v_b`` (``dx``).

        Each program owns a block of output coordinates (columns ``j``; rows ``i`` when transposed) and sums over
        the other one. Grid ``(cdiv(B, BQ), cdiv(d, BJ))``, transposed ``(cdiv(B, BQ), cdiv(d, BI))``.
        """
        seed = tl.load(seed_ptr)
        q = (tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)).to(tl.int64)
        q_ok = q < num
        u = tl.load(index_ptr + q, mask=q_ok, other=0).to(tl.int64)
        if TRANSPOSED:
            o = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)
            acc = tl.zeros((BLOCK_Q, BLOCK_I), dtype=ACC)
            for j0 in range(0, dim, BLOCK_J):
                j = j0 + tl.arange(0, BLOCK_J)
                vs = tl.load(v_ptr + q[:, None] * dim + j[None, :], mask=q_ok[:, None] & (j < dim)[None, :], other=0.0)
                ms = _masked_matrix_tile(m_ptr, u, q, q_ok, o, j, dim, seed, drop_levels, ACC)
                acc += tl.sum(ms * vs.to(ACC)[:, None, :], axis=2)
        else:
            o = tl.program_id(1) * BLOCK_J + tl.arange(0, BLOCK_J)
            acc = tl.zeros((BLOCK_Q, BLOCK_J), dtype=ACC)
            for i0 in range(0, dim, BLOCK_I):
                i = i0 + tl.arange(0, BLOCK_I)
                vs = tl.load(v_ptr + q[:, None] * dim + i[None, :], mask=q_ok[:, None] & (i < dim)[None, :], other=0.0)
                ms = _masked_matrix_tile(m_ptr, u, q, q_ok, i, o, dim, seed, drop_levels, ACC)
                acc += tl.sum(vs.to(ACC)[:, :, None] * ms, axis=1)
        out = out_ptr + q[:, None] * dim + o[None, :]
        tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=q_ok[:, None] & (o < dim)[None, :])

    @triton.jit
    def _grad_m_kernel(
        x_ptr, g_ptr, order_ptr, piece_start_ptr, piece_end_ptr, out_ptr, dim, seed_ptr, drop_levels,
        BLOCK_Q: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr, ACC: tl.constexpr,
    ):  # fmt: skip
        """``out[p, i, j] = sum_{b in piece p} keep_b[i, j] x[b, i] g[b, j]``, queries in order.

        Grid ``(P, cdiv(d, BI), cdiv(d, BJ))``; piece ``p`` covers ``order[start_p:end_p]`` (queries of one relation;
        none where ``start_p = end_p``: the slot then gets zeros).
        """
        seed = tl.load(seed_ptr)
        p = tl.program_id(0).to(tl.int64)
        i = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)
        j = tl.program_id(2) * BLOCK_J + tl.arange(0, BLOCK_J)
        i_ok = i < dim
        j_ok = j < dim
        start = tl.load(piece_start_ptr + p)
        end = tl.load(piece_end_ptr + p)
        acc = tl.zeros((BLOCK_I, BLOCK_J), dtype=ACC)
        for s in range(start, end, BLOCK_Q):
            pos = s + tl.arange(0, BLOCK_Q)
            pos_ok = pos < end
            q = tl.load(order_ptr + pos, mask=pos_ok, other=0).to(tl.int64)
            xs = tl.load(x_ptr + q[:, None] * dim + i[None, :], mask=pos_ok[:, None] & i_ok[None, :], other=0.0)
            gs = tl.load(g_ptr + q[:, None] * dim + j[None, :], mask=pos_ok[:, None] & j_ok[None, :], other=0.0)
            keep = _keep_tile(seed, q, i, j, dim, drop_levels)
            outer = xs.to(ACC)[:, :, None] * gs.to(ACC)[:, None, :]
            acc += tl.sum(tl.where(keep, outer, 0.0), axis=0)
        out = out_ptr + (p * dim + i[:, None]) * dim + j[None, :]
        tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=i_ok[:, None] & j_ok[None, :])

    @triton.jit
    def _sum_pieces_kernel(partial_ptr, first_piece_ptr, out_ptr, size, BLOCK: tl.constexpr, ACC: tl.constexpr):
        """``out[u] = sum_{p in [first[u], first[u+1])} partial[p]`` in order; grid ``(U, cdiv(d*d, BLOCK))``."""
        u = tl.program_id(0).to(tl.int64)
        offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        ok = offs < size
        lo = tl.load(first_piece_ptr + u)
        hi = tl.load(first_piece_ptr + u + 1)
        acc = tl.zeros((BLOCK,), dtype=ACC)
        for p in range(lo, hi):
            acc += tl.load(partial_ptr + p * size + offs, mask=ok, other=0.0).to(ACC)
        tl.store(out_ptr + u * size + offs, acc.to(out_ptr.dtype.element_ty), mask=ok)

    @triton.jit
    def _mask_kernel(
        out_ptr, num, dim, seed_ptr, drop_levels, BLOCK_Q: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr
    ):
        """The keep masks as int8, ``(B, d, d)``; grid ``(cdiv(B, BQ), cdiv(d, BI), cdiv(d, BJ))``."""
        seed = tl.load(seed_ptr)
        q = (tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)).to(tl.int64)
        i = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)
        j = tl.program_id(2) * BLOCK_J + tl.arange(0, BLOCK_J)
        ok = (q < num)[:, None, None] & (i < dim)[None, :, None] & (j < dim)[None, None, :]
        keep = _keep_tile(seed, q, i, j, dim, drop_levels)
        tl.store(
            out_ptr + (q[:, None, None] * dim + i[None, :, None]) * dim + j[None, None, :], keep.to(tl.int8), mask=ok
        )

    @triton.jit
    def _relation_matrix_tile(
        r_ptr, w_ptr, q, q_ok, i0, j0, dim, rdim,
        BLOCK_Q: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_K: tl.constexpr,
        ACC: tl.constexpr, PRECISION: tl.constexpr,
    ):  # fmt: skip
        """``M[b, i, j] = sum_k r[b, k] W[k, i, j]`` for queries ``q``, rows ``i0 + [0, BI)``, columns ``j0 + [0, BJ)``.

        One ``(BQ, d_r) @ (d_r, BI * BJ)`` product (tensor cores where the dtype allows), as ``(BQ, BI, BJ)``.
        """
        c = tl.arange(0, BLOCK_I * BLOCK_J)
        ic = i0 + c // BLOCK_J
        jc = j0 + c % BLOCK_J
        c_ok = (ic < dim) & (jc < dim)
        acc = tl.zeros((BLOCK_Q, BLOCK_I * BLOCK_J), dtype=ACC)
        for k0 in range(0, rdim, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K)
            k_ok = k < rdim
            rs = tl.load(r_ptr + q[:, None] * rdim + k[None, :], mask=q_ok[:, None] & k_ok[None, :], other=0.0)
            ws = tl.load(
                w_ptr + k[:, None].to(tl.int64) * dim * dim + (ic * dim + jc)[None, :],
                mask=k_ok[:, None] & c_ok[None, :],
                other=0.0,
            )
            acc = tl.dot(rs, ws, acc, input_precision=PRECISION, out_dtype=ACC)
        return tl.reshape(acc, (BLOCK_Q, BLOCK_I, BLOCK_J))

    @triton.jit
    def _masked_outer_tile(
        x_ptr, g_ptr, q, q_ok, i0, j0, dim, seed, drop_levels,
        BLOCK_Q: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr, ACC: tl.constexpr,
    ):  # fmt: skip
        """``keep_b[i, j] x[b, i] g[b, j]`` for queries ``q``, as ``(BQ, BI * BJ)`` (the flat layout of the core)."""
        i = i0 + tl.arange(0, BLOCK_I)
        j = j0 + tl.arange(0, BLOCK_J)
        xs = tl.load(x_ptr + q[:, None] * dim + i[None, :], mask=q_ok[:, None] & (i < dim)[None, :], other=0.0)
        gs = tl.load(g_ptr + q[:, None] * dim + j[None, :], mask=q_ok[:, None] & (j < dim)[None, :], other=0.0)
        keep = _keep_tile(seed, q, i, j, dim, drop_levels)
        outer = tl.where(keep, xs.to(ACC)[:, :, None] * gs.to(ACC)[:, None, :], 0.0)
        return tl.reshape(outer, (BLOCK_Q, BLOCK_I * BLOCK_J))

    @triton.jit
    def _pq_product_kernel(
        v_ptr, r_ptr, w_ptr, out_ptr, num, dim, rdim, seed_ptr, drop_levels,
        BLOCK_Q: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_K: tl.constexpr,
        ACC: tl.constexpr, PRECISION: tl.constexpr, TRANSPOSED: tl.constexpr,
    ):  # fmt: skip
        """``out_b = v_b @ (keep_b * r_b W)`` (forward), or with ``TRANSPOSED`` ``(keep_b * r_b W) @ v_b`` (``dx``).

        As :func:`_product_kernel`, with the tiles of ``r_b W`` built by :func:`_relation_matrix_tile`.
        """
        seed = tl.load(seed_ptr)
        q = (tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)).to(tl.int64)
        q_ok = q < num
        if TRANSPOSED:
            i0 = tl.program_id(1) * BLOCK_I
            o = i0 + tl.arange(0, BLOCK_I)
            acc = tl.zeros((BLOCK_Q, BLOCK_I), dtype=ACC)
            for j0 in range(0, dim, BLOCK_J):
                m = _relation_matrix_tile(
                    r_ptr, w_ptr, q, q_ok, i0, j0, dim, rdim, BLOCK_Q, BLOCK_I, BLOCK_J, BLOCK_K, ACC, PRECISION
                )
                j = j0 + tl.arange(0, BLOCK_J)
                vs = tl.load(v_ptr + q[:, None] * dim + j[None, :], mask=q_ok[:, None] & (j < dim)[None, :], other=0.0)
                m = tl.where(_keep_tile(seed, q, o, j, dim, drop_levels), m, 0.0)
                acc += tl.sum(m * vs.to(ACC)[:, None, :], axis=2)
        else:
            j0 = tl.program_id(1) * BLOCK_J
            o = j0 + tl.arange(0, BLOCK_J)
            acc = tl.zeros((BLOCK_Q, BLOCK_J), dtype=ACC)
            for i0 in range(0, dim, BLOCK_I):
                m = _relation_matrix_tile(
                    r_ptr, w_ptr, q, q_ok, i0, j0, dim, rdim, BLOCK_Q, BLOCK_I, BLOCK_J, BLOCK_K, ACC, PRECISION
                )
                i = i0 + tl.arange(0, BLOCK_I)
                vs = tl.load(v_ptr + q[:, None] * dim + i[None, :], mask=q_ok[:, None] & (i < dim)[None, :], other=0.0)
                m = tl.where(_keep_tile(seed, q, i, o, dim, drop_levels), m, 0.0)
                acc += tl.sum(m * vs.to(ACC)[:, :, None], axis=1)
        out = out_ptr + q[:, None] * dim + o[None, :]
        tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=q_ok[:, None] & (o < dim)[None, :])

    @triton.jit
    def _pq_grad_r_kernel(
        x_ptr, g_ptr, w_ptr, gr_ptr, num, dim, rdim, seed_ptr, drop_levels,
        BLOCK_Q: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_K: tl.constexpr,
        ACC: tl.constexpr, PRECISION: tl.constexpr,
    ):  # fmt: skip
        """``gr[b, k] = sum_ij keep_b[i, j] x[b, i] g[b, j] W[k, i, j]``; grid ``(cdiv(B, BQ), cdiv(d_r, BK))``."""
        seed = tl.load(seed_ptr)
        q = (tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)).to(tl.int64)
        k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
        q_ok = q < num
        k_ok = k < rdim
        c = tl.arange(0, BLOCK_I * BLOCK_J)
        acc = tl.zeros((BLOCK_Q, BLOCK_K), dtype=ACC)
        for i0 in range(0, dim, BLOCK_I):
            for j0 in range(0, dim, BLOCK_J):
                outer = _masked_outer_tile(
                    x_ptr, g_ptr, q, q_ok, i0, j0, dim, seed, drop_levels, BLOCK_Q, BLOCK_I, BLOCK_J, ACC
                )
                ic = i0 + c // BLOCK_J
                jc = j0 + c % BLOCK_J
                ws = tl.load(
                    w_ptr + k[None, :].to(tl.int64) * dim * dim + (ic * dim + jc)[:, None],
                    mask=((ic < dim) & (jc < dim))[:, None] & k_ok[None, :],
                    other=0.0,
                )  # (BI * BJ, BK): W^T
                acc = tl.dot(outer.to(ws.dtype), ws, acc, input_precision=PRECISION, out_dtype=ACC)
        tl.store(
            gr_ptr + q[:, None] * rdim + k[None, :], acc.to(gr_ptr.dtype.element_ty), mask=q_ok[:, None] & k_ok[None, :]
        )

    @triton.jit
    def _pq_grad_w_kernel(
        x_ptr, g_ptr, r_ptr, gw_ptr, num, dim, rdim, seed_ptr, drop_levels,
        BLOCK_Q: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_K: tl.constexpr,
        ACC: tl.constexpr, PRECISION: tl.constexpr,
    ):  # fmt: skip
        """``gW[k, i, j] = sum_b r[b, k] keep_b[i, j] x[b, i] g[b, j]``, queries in order (no atomics).

        Grid ``(cdiv(d_r, BK), cdiv(d, BI), cdiv(d, BJ))``.
        """
        seed = tl.load(seed_ptr)
        k = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
        i0 = tl.program_id(1) * BLOCK_I
        j0 = tl.program_id(2) * BLOCK_J
        k_ok = k < rdim
        acc = tl.zeros((BLOCK_K, BLOCK_I * BLOCK_J), dtype=ACC)
        for b0 in range(0, num, BLOCK_Q):
            q = (b0 + tl.arange(0, BLOCK_Q)).to(tl.int64)
            q_ok = q < num
            outer = _masked_outer_tile(
                x_ptr, g_ptr, q, q_ok, i0, j0, dim, seed, drop_levels, BLOCK_Q, BLOCK_I, BLOCK_J, ACC
            )
            rs = tl.load(r_ptr + q[None, :] * rdim + k[:, None], mask=k_ok[:, None] & q_ok[None, :], other=0.0)  # r^T
            acc = tl.dot(rs, outer.to(rs.dtype), acc, input_precision=PRECISION, out_dtype=ACC)
        c = tl.arange(0, BLOCK_I * BLOCK_J)
        ic = i0 + c // BLOCK_J
        jc = j0 + c % BLOCK_J
        out = gw_ptr + k[:, None].to(tl.int64) * dim * dim + (ic * dim + jc)[None, :]
        tl.store(out, acc.to(gw_ptr.dtype.element_ty), mask=k_ok[:, None] & ((ic < dim) & (jc < dim))[None, :])


def _accumulator(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot``'s input precision: TF32 for float32 only where torch allows it for its own matmuls (default: not)."""
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def _check_drop_levels(drop_levels: int) -> None:
    if not 0 <= drop_levels < 1 << 16:
        raise ValueError(
            f"drop_levels must lie in [0, 65536) (round(p * 65536) of a core dropout p < 1), got {drop_levels}"
        )


def triton_core_dropout_masks(
    seed: int | torch.Tensor,
    num_queries: int,
    dim: int,
    drop_levels: int,
    device: torch.device | str = "cpu",
    blocks: TritonBlockSizes | None = None,
) -> torch.Tensor:
    """Materialise the keep masks the kernels draw for a batch of ``num_queries`` queries (tests, small shapes).

    :param seed: the base seed of the forward pass: an int in ``[0, 2^63)`` or a seed tensor (:func:`seed_tensor`)
    :param num_queries: ``B``
    :param dim: ``d``
    :param drop_levels: ``round(p * 65536)``; an entry is dropped iff the upper 16 bits of its word are below it
    :param device: where to run the mask kernel (the masks do not depend on it)
    :param blocks: tile sizes (the masks do not depend on them)
    :return: BoolTensor ``(B, d, d)``, True where the entry is kept
    """
    device = torch.device(device)
    _check_available(device)
    _check_drop_levels(drop_levels)
    blocks = blocks or DEFAULT_BLOCKS
    seed = seed_tensor(seed, device, "triton_core_dropout_masks")
    out = torch.empty(num_queries, dim, dim, dtype=torch.int8, device=device)
    if num_queries and dim:
        grid = (triton.cdiv(num_queries, blocks.query), triton.cdiv(dim, blocks.row), triton.cdiv(dim, blocks.col))
        _mask_kernel[grid](
            out, num_queries, dim, seed, drop_levels, BLOCK_Q=blocks.query, BLOCK_I=blocks.row, BLOCK_J=blocks.col,
            num_warps=blocks.num_warps,
        )  # fmt: skip
    return out.bool()


def _pieces(index: torch.Tensor, num_groups: int, piece: int):
    """Cut the queries of each relation into pieces of at most ``piece`` queries, on ``index``'s device.

    The tables have ``P`` slots, a number known from the shapes alone, so that no operation waits for the device
    (the counts stay there): a relation with ``c_u > 0`` queries has ``ceil(c_u / piece) = 1 + (c_u - 1) // piece``
    pieces, so the ``U'`` relations present have at most ``U' + (B - U') // piece`` pieces, which grows with
    ``U' <= m = min(U, B)``: ``P = m + (B - m) // piece <= B`` (``>= 1`` for ``B >= 1``). The slots past the real
    number of pieces are empty (``start = end``) and lie in no relation's range.

    :param index: ``(B,)`` int64, values in ``[0, U)``
    :param num_groups: ``U``
    :param piece: the most queries of one piece, ``>= 1``
    :return: ``(order, starts, ends, first_piece)``: ``order`` (``(B,)``) sorts the queries by relation (stable);
        piece ``p`` (``P`` slots, ``starts`` and ``ends`` ``(P,)``) covers ``order[starts[p]:ends[p]]``, queries
        of one relation; relation ``u``'s pieces are ``first_piece[u]:first_piece[u + 1]`` (``(U + 1,)``), in
        query order. All int64.
    """
    num = index.shape[0]
    present = min(num_groups, num)
    num_slots = present + (num - present) // piece
    device = index.device
    sorted_index, order = torch.sort(index, stable=True)
    # offset[u]: relation u's first sorted position (offset[U] = B); not bincount, whose output size is
    # max(index) + 1: the host would read it
    offset = torch.searchsorted(sorted_index, torch.arange(num_groups + 1, dtype=torch.int64, device=device))
    pieces_per = (offset.diff() + (piece - 1)) // piece
    first = torch.zeros(num_groups + 1, dtype=torch.int64, device=device)
    torch.cumsum(pieces_per, dim=0, out=first[1:])
    slot = torch.arange(num_slots, dtype=torch.int64, device=device)
    # the u with first[u] <= slot < first[u + 1] (the last of equal bounds: a relation that has pieces); slots past
    # first[U] land on U, clamped to the last relation, past whose queries they start: empty below
    relation = (torch.searchsorted(first, slot, right=True) - 1).clamp_(max=num_groups - 1)
    lo = offset[relation] + (slot - first[relation]) * piece
    hi = offset[relation + 1]
    return order, torch.minimum(lo, hi), torch.minimum(lo + piece, hi), first


class _TritonDistinctCoreContraction(torch.autograd.Function):
    """``z_b = x_b @ (keep_b * M[index_b])`` (unscaled) with the masks drawn in the kernels, never stored.

    Saves only ``x``, ``M``, ``index`` and the seed tensor (the mask threshold as an attribute); backward redraws
    the masks.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        x: torch.Tensor,
        matrices: torch.Tensor,
        index: torch.Tensor,
        seed: torch.Tensor,
        drop_levels: int,
        blocks,
    ) -> torch.Tensor:
        num, dim = x.shape
        x, matrices, index = x.contiguous(), matrices.contiguous(), index.contiguous()
        out = torch.empty_like(x)
        if num:
            _launch_product(x, matrices, index, out, seed, drop_levels, blocks, transposed=False)
        ctx.save_for_backward(x, matrices, index, seed)
        ctx.drop_levels, ctx.blocks = drop_levels, blocks
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        x, matrices, index, seed = ctx.saved_tensors
        need_x, need_m = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        drop_levels, blocks = ctx.drop_levels, ctx.blocks
        num, dim = x.shape
        g = grad_out.to(x.dtype).contiguous()
        grad_x = grad_m = None
        if need_x:
            grad_x = torch.empty_like(x)
            if num:
                _launch_product(g, matrices, index, grad_x, seed, drop_levels, blocks, transposed=True)
        if need_m:
            if num:
                grad_m = _grad_matrices(x, g, index, matrices.shape[0], seed, drop_levels, blocks)
            else:
                grad_m = torch.zeros_like(matrices)
        return grad_x, grad_m, None, None, None, None


def _launch_product(v, matrices, index, out, seed, drop_levels, blocks, transposed: bool) -> None:
    """:func:`_product_kernel` over the batch: ``v @ (keep * M)`` or, transposed, ``(keep * M) @ v`` into ``out``."""
    num, dim = v.shape
    grid = (triton.cdiv(num, blocks.query), triton.cdiv(dim, blocks.row if transposed else blocks.col))
    _product_kernel[grid](
        v, matrices, index, out, num, dim, seed, drop_levels, BLOCK_Q=blocks.query, BLOCK_I=blocks.row,
        BLOCK_J=blocks.col, ACC=_accumulator(v.dtype), TRANSPOSED=transposed, num_warps=blocks.num_warps,
    )  # fmt: skip


def _grad_matrices(x, g, index, num_groups, seed, drop_levels, blocks) -> torch.Tensor:
    """``dM_u = sum_{b: u(b) = u} keep_b * x_b g_b^T`` by relation, deterministic (see the module docstring).

    Every piece's sum goes to a ``(P, d, d)`` buffer in the accumulator dtype (float64 for float64 inputs, else
    float32), ``P <= min(U, B) + B // piece`` (:func:`_pieces`): at most ``U + B // piece`` matrices of ``d x d``,
    grad_m's count plus ``B // piece`` (float32 for 16-bit inputs: twice their bytes per matrix). A relation of
    one piece could be written in place, but knowing which ones are needs the counts on the host; the detour
    changes no bit (its one partial is cast once, as it was).

    :param x: ``(B, d)``, ``B >= 1``
    :param g: ``(B, d)``, the gradient of the unscaled output
    :param index: ``(B,)`` int64
    :param num_groups: ``U``
    :return: ``(U, d, d)`` in ``x``'s dtype; zero for relations without queries
    """
    dim = x.shape[1]
    order, starts, ends, first = _pieces(index, num_groups, blocks.piece)
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    partial = torch.empty(starts.shape[0], dim, dim, dtype=acc_dtype, device=x.device)
    grid = (starts.shape[0], triton.cdiv(dim, blocks.row), triton.cdiv(dim, blocks.col))
    _grad_m_kernel[grid](
        x, g, order, starts, ends, partial, dim, seed, drop_levels,
        BLOCK_Q=blocks.query, BLOCK_I=blocks.row, BLOCK_J=blocks.col, ACC=_accumulator(x.dtype),
        num_warps=blocks.num_warps,
    )  # fmt: skip
    grad_m = torch.empty(num_groups, dim, dim, dtype=x.dtype, device=x.device)  # every row written below
    block = 1024
    _sum_pieces_kernel[(num_groups, triton.cdiv(dim * dim, block))](
        partial, first, grad_m, dim * dim, BLOCK=block, ACC=_accumulator(x.dtype), num_warps=blocks.num_warps
    )
    return grad_m


class _TritonPerQueryCoreContraction(torch.autograd.Function):
    """``z_b = x_b @ (keep_b * (r_b W))`` (unscaled), neither ``r_b W`` nor the masks ever stored.

    Each kernel rebuilds the tiles of ``r_b W`` it needs with ``tl.dot`` and redraws their masks: four products of
    ``B d_r d^2`` per step (forward, ``dx``, ``dr``, ``dW``; the PyTorch path needs three, but keeps chunks of
    ``B x d x d`` in memory). ``dW`` sums the queries in order in one program per tile: no atomics.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, x: torch.Tensor, r: torch.Tensor, core: torch.Tensor, seed: torch.Tensor, drop_levels: int, blocks
    ) -> torch.Tensor:
        x, r, core = x.contiguous(), r.contiguous(), core.contiguous()
        (num, dim), rdim = x.shape, r.shape[1]
        out = torch.empty_like(x)
        if num:
            grid = (triton.cdiv(num, blocks.query), triton.cdiv(dim, blocks.col))
            options = _gemm_options(x.dtype, blocks)
            _pq_product_kernel[grid](x, r, core, out, num, dim, rdim, seed, drop_levels, TRANSPOSED=False, **options)
        ctx.save_for_backward(x, r, core, seed)
        ctx.drop_levels, ctx.blocks = drop_levels, blocks
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        x, r, core, seed = ctx.saved_tensors
        need_x, need_r, need_w = ctx.needs_input_grad[:3]
        drop_levels, blocks = ctx.drop_levels, ctx.blocks
        (num, dim), rdim = x.shape, r.shape[1]
        g = grad_out.to(x.dtype).contiguous()
        options = _gemm_options(x.dtype, blocks)
        grad_x = torch.empty_like(x) if need_x else None
        grad_r = torch.empty_like(r) if need_r else None
        grad_w = torch.zeros_like(core) if need_w else None
        if num:
            if need_x:
                grid = (triton.cdiv(num, blocks.query), triton.cdiv(dim, blocks.row))
                _pq_product_kernel[grid](
                    g, r, core, grad_x, num, dim, rdim, seed, drop_levels, TRANSPOSED=True, **options
                )
            if need_r:
                grid = (triton.cdiv(num, blocks.query), triton.cdiv(rdim, blocks.k))
                _pq_grad_r_kernel[grid](x, g, core, grad_r, num, dim, rdim, seed, drop_levels, **options)
            if need_w:
                grid = (triton.cdiv(rdim, blocks.k), triton.cdiv(dim, blocks.row), triton.cdiv(dim, blocks.col))
                _pq_grad_w_kernel[grid](x, g, r, grad_w, num, dim, rdim, seed, drop_levels, **options)
        elif need_r:
            grad_r.zero_()
        return grad_x, grad_r, grad_w, None, None, None


def _gemm_options(dtype: torch.dtype, blocks: TritonGemmBlockSizes) -> dict:
    return dict(
        BLOCK_Q=blocks.query, BLOCK_I=blocks.row, BLOCK_J=blocks.col, BLOCK_K=blocks.k, ACC=_accumulator(dtype),
        PRECISION=_dot_precision(dtype), num_warps=blocks.num_warps,
    )  # fmt: skip


def seed_tensor(seed: int | torch.Tensor, device: torch.device | str, name: str = "seed_tensor") -> torch.Tensor:
    """The base seed as the kernels read it: a one-element int64 tensor on ``device``.

    The kernels load the seed on the device rather than taking it as a launch argument, so that a step captured as a
    CUDA graph, whose launch arguments are fixed at capture, draws new masks at every replay when the seed tensor is
    redrawn inside it (:func:`pykeen_momok.nn.tucker.draw_core_seed_tensor`).

    :param seed: an int in ``[0, 2^63)``, or such a tensor (returned as a ``(1,)`` view; its value is not checked:
        that would make the host wait for the device)
    :param device: the kernels' device
    :param name: the caller, for the error messages
    :raises ValueError: an int out of range, or a tensor of another shape, dtype or device
    """
    device = torch.device(device)
    if isinstance(seed, torch.Tensor):
        # torch.device("cuda") != torch.device("cuda:0"): compare the index only where one is given
        other_device = seed.device.type != device.type or device.index not in (None, seed.device.index)
        if seed.dtype != torch.int64 or seed.numel() != 1 or other_device:
            raise ValueError(
                f"{name}: a seed tensor must be one int64 element on {device}, got {seed.dtype} of shape "
                f"{tuple(seed.shape)} on {seed.device}"
            )
        return seed.reshape(1)
    seed = int(seed)
    if not 0 <= seed < 1 << 63:
        raise ValueError(f"{name}: seed must lie in [0, 2^63), got {seed}")
    return torch.full((1,), seed, dtype=torch.int64, device=device)


def _check_common(name: str, x: torch.Tensor, drop_levels: int, others: dict[str, torch.Tensor]) -> None:
    """Dtype, device and threshold checks shared by the two entry points."""
    _check_available(x.device)
    _check_drop_levels(drop_levels)
    if x.dtype not in SUPPORTED_DTYPES or any(t.dtype != x.dtype for t in others.values()):
        dtypes = ", ".join(f"{key} {t.dtype}" for key, t in others.items())
        raise TypeError(
            f"{name}: x and {', '.join(others)} must share one of {SUPPORTED_DTYPES}, got x {x.dtype}, {dtypes}"
        )
    if any(t.device != x.device for t in others.values()):
        devices = ", ".join(f"{key} {t.device}" for key, t in others.items())
        raise ValueError(f"{name}: all inputs must be on one device, got x {x.device}, {devices}")


def triton_core_contraction_per_query(
    x: torch.Tensor,
    r: torch.Tensor,
    core: torch.Tensor,
    seed: int | torch.Tensor,
    drop_levels: int,
    blocks: TritonGemmBlockSizes | None = None,
) -> torch.Tensor:
    """``z_b = x_b @ (keep_b * (r_b W).view(d, d))`` with per-query relation vectors; differentiable in all three.

    The masks are those of :func:`triton_core_contraction` for the same seed and batch. The scale is the caller's.

    :param x: ``(B, d)``
    :param r: ``(B, d_r)``
    :param core: ``W``, ``(d_r, d, d)``
    :param seed: the base seed of the masks: an int in ``[0, 2^63)`` or a seed tensor (:func:`seed_tensor`)
    :param drop_levels: ``round(p * 65536)`` in ``[0, 65536)``
    :param blocks: tile sizes (default :data:`DEFAULT_GEMM_BLOCKS`)
    :return: ``(B, d)``, unscaled
    """
    name = "triton_core_contraction_per_query"
    if x.dim() != 2 or r.dim() != 2 or r.shape[0] != x.shape[0] or core.shape != (r.shape[1], x.shape[1], x.shape[1]):
        raise ValueError(
            f"{name}: expected x (B, d), r (B, d_r) and core (d_r, d, d), got {tuple(x.shape)}, {tuple(r.shape)} and "
            f"{tuple(core.shape)}"
        )
    _check_common(name, x, drop_levels, dict(r=r, core=core))
    blocks = blocks or DEFAULT_GEMM_BLOCKS
    return _TritonPerQueryCoreContraction.apply(x, r, core, seed_tensor(seed, x.device, name), int(drop_levels), blocks)


def triton_core_contraction(
    x: torch.Tensor,
    matrices: torch.Tensor,
    index: torch.Tensor,
    seed: int | torch.Tensor,
    drop_levels: int,
    blocks: TritonBlockSizes | None = None,
) -> torch.Tensor:
    """``z_b = x_b @ (keep_b * M[index_b])`` with the Triton kernels; differentiable in ``x`` and ``matrices``.

    The dropout *scale* is the caller's (``pykeen_momok.nn.tucker`` multiplies the result, and so the gradient,
    by ``1 / (1 - p_eff)``, in the same order as its PyTorch path).

    :param x: ``(B, d)``, one of :data:`SUPPORTED_DTYPES`
    :param matrices: ``(U, d, d)``, same dtype and device as ``x``
    :param index: ``(B,)`` integer, values in ``[0, U)``
    :param seed: the base seed of the masks: an int in ``[0, 2^63)`` or a seed tensor (:func:`seed_tensor`)
    :param drop_levels: ``round(p * 65536)`` in ``[0, 65536)``
    :param blocks: tile sizes (default :data:`DEFAULT_BLOCKS`); the values do not depend on them beyond rounding
    :return: ``(B, d)``, unscaled
    """
    if x.dim() != 2 or matrices.dim() != 3 or matrices.shape[1:] != (x.shape[1], x.shape[1]):
        raise ValueError(
            f"triton_core_contraction: expected x (B, d) and matrices (U, d, d), got {tuple(x.shape)} and "
            f"{tuple(matrices.shape)}"
        )
    if index.shape != (x.shape[0],) or index.dtype.is_floating_point or index.dtype == torch.bool:
        raise ValueError(f"triton_core_contraction: expected an integer index of shape ({x.shape[0]},), got "
                         f"{index.dtype} {tuple(index.shape)}")  # fmt: skip
    _check_common("triton_core_contraction", x, drop_levels, dict(matrices=matrices))
    if index.device != x.device:
        raise ValueError(f"triton_core_contraction: index must be on x's device {x.device}, got {index.device}")
    seed = seed_tensor(seed, x.device, "triton_core_contraction")
    return _TritonDistinctCoreContraction.apply(
        x, matrices, index.long(), seed, int(drop_levels), blocks or DEFAULT_BLOCKS
    )
