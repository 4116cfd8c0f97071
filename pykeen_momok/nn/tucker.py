"""The Tucker head: core contraction with a per-query dropout on the relation matrix.

Reference (``layers/layer.py``, ``TuckERLayer``; order verified against it)::

    x = BN0(e)                                   # (B, d)
    x = Dropout(0.3)(x)
    M = (r @ W.view(d_r, d * d)).view(B, d, d)  # one d x d matrix per query
    M = Dropout(0.4)(M)                          # "core dropout": an independent mask per query
    z = bmm(x.view(B, 1, d), M).view(B, d)
    z = BN1(z)
    z = Dropout(0.5)(z)

The caller scores candidates as ``z @ cand.T``. ``W`` (``(d_r, d, d)``) is Xavier-uniform initialised
(``nn.init.xavier_uniform_`` on the 3-d tensor: ``fan_in = d * d``, ``fan_out = d_r * d``).

Done naively, the core dropout forces a ``(B, d, d)`` tensor (plus its dropout mask, both kept for the
backward pass): 256 MiB each for ``B = 1024, d = 256`` in float32, per head. The fused path here
computes exactly the same function with O(chunk) extra memory:

* the relation matrices ``M_u = r_u W`` are built only for the ``U`` distinct relations of the batch
  (ordinary autograd, ``(U, d, d)``);
* :class:`_DistinctCoreContraction` computes ``z_b = scale * x_b (mask_b * M_{u(b)})`` in chunks of
  queries, generating each chunk's masks from a counter-based seed (``base_seed + chunk_index``) and,
  in the backward pass, *regenerating* them instead of saving them; it saves only ``x``, ``M_u`` and the
  index;
* where the relation vectors are per query (``r: (B, d_r)``, e.g. a fused relation with its own dropout),
  :class:`_PerQueryCoreContraction` builds each chunk's ``r_c W`` on the fly, in forward and backward
  alike, and saves only ``x``, ``r`` and ``W``; its GEMMs run over blocks of whole chunks
  (:data:`DEFAULT_GEMM_BYTES`), so that ``W`` is not re-read for every few queries (the masks stay per chunk);
* without masks (evaluation, or a core dropout of 0) nothing is per query: each distinct matrix is
  contracted with its queries in one GEMM ``(n_u, d) @ (d, d)``, forward and backward.

Masks. For a chunk, a torch :class:`~torch.Generator` on the tensor's device is seeded with
``base_seed + chunk_index``; it fills ``ceil(c*d*d/4)`` int64 words with 64 uniform random bits each,
reinterpreted as ``c*d*d`` uniform int16 values ``u``. An entry is *dropped* iff
``u < -32768 + k`` with ``k = round(p * 65536)``, so the realised drop probability is exactly
``p_eff = k / 65536`` (``|p_eff - p| <= 2^-17``) and kept entries are scaled by ``1 / (1 - p_eff)``
(see :func:`core_dropout_threshold`). ``base_seed`` is drawn from the global (CPU) torch RNG in every
training forward, so the whole computation is deterministic under :func:`torch.manual_seed`. Masks depend
on the seed, ``d``, the chunk size (a function of ``d`` and the chunk byte budget only, not of the batch
size or dtype) and the device type (CPU and CUDA generators differ). :func:`core_dropout_masks` rebuilds
them. On CUDA the gradient of ``M_u`` is accumulated with ``index_add_`` (atomic adds): bitwise
reproducible gradients there need :func:`torch.use_deterministic_algorithms`.

Paths. The masked distinct-relation contraction (training with core dropout) has two implementations: ``"torch"``,
the chunked PyTorch one above, and ``"triton"``, the kernels of :mod:`pykeen_momok.nn.tucker_triton` (masks drawn
from Triton's Philox inside the contraction; same dropout rate, scale and placement, other random bits; no atomics).
``"torch"`` is the default: the Triton kernels have not yet run on a GPU (only in Triton's interpreter and compiled
without one), so nothing takes them unless asked. ``"auto"`` takes ``"torch"`` on every device but CUDA; on CUDA with
triton installed it times both once per ``(contraction, device, dtype, B, d)`` on first use (fixed seeds, the global
RNG untouched) and keeps the faster (:func:`core_contraction_choices`). The setting:
:func:`set_core_contraction_path`, else the environment variable ``PYKEEN_MOMOK_TUCKER_PATH``, else ``"torch"``; a
:class:`TuckerHead` may override it (``contraction_path=``).
The per-query contraction (relation vectors per query: the joint head) has the same two paths and its own
``"auto"`` choice; its Triton kernels rebuild the tiles of ``r_b W`` they need with ``tl.dot``. Evaluation and a
core dropout of 0 always take the PyTorch code (no per-query masks, so per-relation GEMMs).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CORE_CONTRACTION_PATHS",
    "CORE_CONTRACTION_PATH_ENV",
    "TuckerHead",
    "autocast_disabled",
    "autocast_state",
    "core_contraction_choices",
    "get_core_contraction_path",
    "reads_wait_for_device",
    "set_core_contraction_path",
    "core_dropout_threshold",
    "core_dropout_masks",
    "default_chunk_size",
    "default_gemm_chunks",
    "draw_core_seed",
    "draw_core_seed_tensor",
    "fused_core_contraction",
    "fused_core_contraction_per_query",
]

logger = logging.getLogger(__name__)

#: number of levels of the int16 random values used for the masks
_LEVELS = 1 << 16
_INT16_MIN = -(1 << 15)

#: default byte budget of one chunk of (c, d, d) float32 matrices, per device type. A chunk is a few kernel launches
#: forward and backward, so on CUDA the budget sets the launch count: at d = 300, B = 1024 a budget of 32 MiB made
#: 11 chunks per head and 1,722 operations per MoMoK step, 128 MiB makes 3 chunks and 1,274 (512 MiB: 1,168), for
#: a transient of about 1.75x the budget in the forward pass and up to 3x in the backward pass, per head
#: (``benchmarks/step_ops.py --chunk-mib``). CPU keeps its 4 MiB.
DEFAULT_CHUNK_BYTES: dict[str, int] = {"cuda": 128 << 20, "cpu": 4 << 20}
_FALLBACK_CHUNK_BYTES = 16 << 20
#: default byte budget of the (n, d, d) block that one GEMM ``r_n W`` of the per-query path builds; a block is
#: a whole number of mask chunks, so the masks (and the results) do not depend on it. Small blocks make the
#: GEMM re-read all of ``W`` (``d_r * d * d`` floats) for a few queries only: at d = 300 on a 2-core CPU one
#: 4 MiB chunk (11 queries) runs at ~45 GFLOP/s, a 32 MiB block at ~80.
DEFAULT_GEMM_BYTES: dict[str, int] = {"cuda": 128 << 20, "cpu": 32 << 20}


#: the implementations of the masked distinct-relation contraction, and ``"auto"`` (see the module docstring)
CORE_CONTRACTION_PATHS = ("auto", "torch", "triton")
#: the environment variable read when :func:`set_core_contraction_path` has not been called (or was reset)
CORE_CONTRACTION_PATH_ENV = "PYKEEN_MOMOK_TUCKER_PATH"
#: repeats per path of the "auto" timing (after one untimed warm-up run each)
AUTO_TIMING_REPEATS = 3

_path_setting: str | None = None
#: the "auto" choices made so far: ``(contraction, device, dtype, B, d) -> (path, {path: median seconds})``
_auto_choices: dict[tuple[str, str, str, int, int], tuple[str, dict[str, float]]] = {}


def _checked_path(path: str, where: str) -> str:
    if path not in CORE_CONTRACTION_PATHS:
        raise ValueError(f"{where}: unknown core contraction path {path!r}; expected one of {CORE_CONTRACTION_PATHS}")
    return path


def set_core_contraction_path(path: str | None) -> None:
    """Set the process-wide core contraction path of the Tucker heads (those without their own ``contraction_path``).

    :param path: ``"auto"``, ``"torch"`` or ``"triton"``; ``None`` goes back to :data:`CORE_CONTRACTION_PATH_ENV`
        (or ``"torch"`` where it is unset)
    """
    global _path_setting
    _path_setting = None if path is None else _checked_path(path, "set_core_contraction_path")


def get_core_contraction_path() -> str:
    """The process-wide path: :func:`set_core_contraction_path`'s, else ``$PYKEEN_MOMOK_TUCKER_PATH``'s, else torch.

    ``"torch"`` until the Triton kernels have been checked on a GPU: ``"auto"`` would pick them by speed alone.
    """
    if _path_setting is not None:
        return _path_setting
    value = os.environ.get(CORE_CONTRACTION_PATH_ENV, "").strip()
    return _checked_path(value, f"environment variable {CORE_CONTRACTION_PATH_ENV}") if value else "torch"


def core_contraction_choices(clear: bool = False) -> dict[tuple[str, str, str, int, int], tuple[str, dict[str, float]]]:
    """The choices ``"auto"`` has made: ``(contraction, device, dtype, B, d) -> (path, {path: median seconds})``.

    ``contraction`` is ``"distinct"`` (relation ids) or ``"per-query"`` (relation vectors per query); the seconds
    are of one forward + backward of the masked contraction on each path timed (none where triton is unavailable).

    :param clear: forget them afterwards (the next training forward of each shape times the paths again)
    """
    choices = dict(_auto_choices)
    if clear:
        _auto_choices.clear()
    return choices


def _triton_module():
    """:mod:`pykeen_momok.nn.tucker_triton`, imported on first use (it imports triton)."""
    from . import tucker_triton

    return tucker_triton


def triton_unavailable_reason(device: torch.device | str) -> str:
    """Why the Triton path cannot run on ``device`` (``""`` where it can); never raises for a missing triton."""
    try:
        module = _triton_module()
    except ImportError as error:  # pragma: no cover - the module itself guards its triton import
        return f"pykeen_momok.nn.tucker_triton failed to import: {error}"
    return module.triton_availability(device)[1]


def core_dropout_threshold(p: float) -> tuple[int, float, float]:
    """Quantise a dropout rate to the int16 mask threshold.

    :param p: the nominal drop probability, ``0 <= p <= 1``
    :return: ``(threshold, p_eff, scale)``: an entry is dropped iff its uniform int16 value is
        ``< threshold`` (``threshold = -32768 + round(p * 65536)``); ``p_eff`` is the exact realised drop
        probability and ``scale = 1 / (1 - p_eff)`` (``0.0`` when everything is dropped)
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must lie in [0, 1], got {p}")
    k = int(round(p * _LEVELS))
    p_eff = k / _LEVELS
    scale = 0.0 if k >= _LEVELS else _LEVELS / (_LEVELS - k)
    return _INT16_MIN + k, p_eff, scale


def default_chunk_size(dim: int, device: torch.device | str | None = None, chunk_bytes: int | None = None) -> int:
    """Return the number of queries per chunk: ``max(1, chunk_bytes // (4 * dim * dim))``.

    The size is counted in float32 matrices whatever the dtype, so that the masks do not depend on it.

    :param dim: the entity dimension ``d``
    :param device: the device (its type picks the default budget from :data:`DEFAULT_CHUNK_BYTES`)
    :param chunk_bytes: an explicit byte budget, overriding the default
    """
    if chunk_bytes is None:
        kind = torch.device(device).type if device is not None else "cpu"
        chunk_bytes = DEFAULT_CHUNK_BYTES.get(kind, _FALLBACK_CHUNK_BYTES)
    return max(1, int(chunk_bytes) // (4 * dim * dim))


def default_gemm_chunks(
    chunk_size: int, dim: int, device: torch.device | str | None = None, gemm_bytes: int | None = None
) -> int:
    """Return the number of mask chunks per GEMM block of the per-query path (at least 1).

    :param chunk_size: queries per mask chunk
    :param dim: the entity dimension ``d``
    :param device: the device (its type picks the default budget from :data:`DEFAULT_GEMM_BYTES`)
    :param gemm_bytes: an explicit byte budget, overriding the default
    """
    if gemm_bytes is None:
        kind = torch.device(device).type if device is not None else "cpu"
        gemm_bytes = DEFAULT_GEMM_BYTES.get(kind, _FALLBACK_CHUNK_BYTES)
    return max(1, int(gemm_bytes) // (4 * dim * dim * chunk_size))


def draw_core_seed() -> int:
    """Draw a base seed in ``[0, 2^62)`` from the global CPU torch RNG (the ``"torch"`` path's, on every device)."""
    return int(torch.randint(0, 1 << 62, (1,), dtype=torch.int64).item())


def draw_core_seed_tensor(device: torch.device | str) -> torch.Tensor:
    """Draw a base seed in ``[0, 2^62)`` on ``device`` from its default generator (the ``"triton"`` path's).

    Nothing is read on the host, so the draw neither waits for the device nor is fixed when a training step is
    captured as a CUDA graph (PyTorch advances the default CUDA generator at every replay). On CPU it is the value
    :func:`draw_core_seed` would draw from the same RNG state.

    :return: shape ``(1,)``, int64
    """
    return torch.randint(0, 1 << 62, (1,), dtype=torch.int64, device=device)


def _base_seed(path: str, seed: int | torch.Tensor | None, device: torch.device) -> int | torch.Tensor:
    """The masks' base seed on ``path``: ``seed``, else drawn where the path reads it.

    The Triton kernels read it on the device (a tensor), the ``"torch"`` path seeds its generators on the host (an
    int; a given tensor is read, which waits for the device).
    """
    if seed is None:
        return draw_core_seed_tensor(device) if path == "triton" else draw_core_seed()
    if path == "torch" and isinstance(seed, torch.Tensor):
        return int(seed.item())
    return seed


def _chunk_keep_mask(
    generator: torch.Generator, seed: int, chunk_index: int, count: int, dim: int, threshold: int, device: torch.device
) -> torch.Tensor:
    """Return the *keep* mask (True = kept) of one chunk, shape ``(count, dim, dim)``.

    Masks are applied with ``mul_`` (several times faster than ``masked_fill_`` on CPU).
    """
    generator.manual_seed(seed + chunk_index)
    n = count * dim * dim
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device)
    words.random_(-(1 << 63), None, generator=generator)
    return (words.view(torch.int16)[:n] >= threshold).view(count, dim, dim)


def _chunks(num: int, chunk_size: int):
    for index, start in enumerate(range(0, num, chunk_size)):
        yield index, start, min(start + chunk_size, num)


def _segments(index: torch.Tensor, num_groups: int):
    """Yield ``(u, rows)`` for every ``u`` in ``[0, num_groups)`` that occurs in ``index``: the rows where it does."""
    order = torch.argsort(index, stable=True)
    counts = torch.bincount(index, minlength=num_groups).tolist()
    start = 0
    for u, count in enumerate(counts):
        if count:
            yield u, order[start : start + count]
            start += count


def _blocks(num: int, chunk_size: int, chunks_per_block: int):
    """Yield ``(lo, hi, chunks)``: blocks of whole mask chunks.

    ``chunks`` holds ``(index, lo, hi)`` within ``[lo, hi)``.
    """
    chunks = list(_chunks(num, chunk_size))
    for i in range(0, len(chunks), chunks_per_block):
        part = chunks[i : i + chunks_per_block]
        yield part[0][1], part[-1][2], part


def autocast_state(device_type: str) -> tuple[bool, torch.dtype | None]:
    """Whether autocast is on for ``device_type``, and its dtype; ``(False, None)`` for unknown device types."""
    try:
        if torch.is_autocast_enabled(device_type):
            return True, torch.get_autocast_dtype(device_type)
    except (RuntimeError, TypeError, ValueError):  # device types autocast does not know
        pass
    return False, None


def autocast_disabled(device_type: str):
    """A context without autocast on ``device_type`` (a no-op where autocast is off or unknown there).

    For code that must run in its inputs' dtype under a caller's autocast (the contractions here, their backward
    passes, the CLUB estimator's float32 penalty).
    """
    if autocast_state(device_type)[0]:
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def _working_dtype(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """The tensors in the dtype a contraction runs in: autocast's where it is on, else their promoted one.

    Under autocast the inputs arrive as a mix (a BatchNorm may keep float32 where a product gave bfloat16); the
    contraction is the step's largest product, so it runs in autocast's dtype as ``torch.bmm`` would.
    Float64 inputs stay float64 (autocast leaves them alone too).
    """
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    on, autocast_dtype = autocast_state(tensors[0].device.type)
    if on and dtype != torch.float64:
        dtype = autocast_dtype
    return [t.to(dtype) for t in tensors]


def core_dropout_masks(
    seed: int | torch.Tensor,
    num_queries: int,
    dim: int,
    p: float,
    device: torch.device | str | None = None,
    chunk_size: int | None = None,
    start: int = 0,
    count: int | None = None,
    path: str = "torch",
) -> torch.Tensor:
    """Rebuild the *keep* masks the fused contraction uses for queries ``[start, start + count)``.

    :param seed: the base seed of the forward pass (e.g. :attr:`TuckerHead.last_core_seed`: an int on the
        ``"torch"`` path, a one-element tensor on the ``"triton"`` path)
    :param num_queries: the batch size ``B`` the masks were drawn for
    :param dim: the entity dimension ``d``
    :param p: the nominal dropout rate
    :param device: the device the masks were drawn on
    :param chunk_size: the chunk size used (default: :func:`default_chunk_size` for ``dim`` and ``device``)
    :param start: first query
    :param count: number of queries (default: up to ``num_queries``)
    :param path: the path that drew them (:attr:`TuckerHead.last_core_path`): ``"torch"``, or ``"triton"``
        (masks independent of chunking and device; materialised for all ``num_queries``, so for small shapes)
    :return: BoolTensor ``(count, d, d)``, True where the entry is kept
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    if chunk_size is None:
        chunk_size = default_chunk_size(dim, device)
    if count is None:
        count = num_queries - start
    threshold, _, _ = core_dropout_threshold(p)
    if path == "triton":
        masks = _triton_module().triton_core_dropout_masks(seed, num_queries, dim, threshold - _INT16_MIN, device)
        return masks[start : start + count]
    if path != "torch":
        raise ValueError(
            f"core_dropout_masks: path must be 'torch' or 'triton' (the path that drew them), got {path!r}"
        )
    seed = _base_seed("torch", seed, device)
    generator = torch.Generator(device=device)
    parts = []
    for index, lo, hi in _chunks(num_queries, chunk_size):
        if hi <= start or lo >= start + count:
            continue
        keep = _chunk_keep_mask(generator, seed, index, hi - lo, dim, threshold, device)
        parts.append(keep[max(start, lo) - lo : min(start + count, hi) - lo])
    if not parts:
        return torch.empty(0, dim, dim, dtype=torch.bool, device=device)
    return torch.cat(parts, dim=0)


def reads_wait_for_device(device: torch.device) -> bool:
    """Whether the host reading tensor data on ``device`` (``torch.unique``'s size, ``.item()``) waits for it: CUDA."""
    return device.type == "cuda"


def _groups_on_the_host(x: torch.Tensor) -> bool:
    """Whether the mask-free contraction groups the queries by relation on the host (one GEMM per relation).

    Not on CUDA while gradients are recorded (training with a core dropout of 0): counting the groups
    (``bincount(...).tolist()``) would make every training step wait for the device, so the queries are
    contracted in chunks there, as with masks. Evaluation, and every other device, groups.
    """
    return not reads_wait_for_device(x.device) or not torch.is_grad_enabled()


class _DistinctCoreContraction(torch.autograd.Function):
    """``z_b = scale * x_b @ (mask_b * M[index_b])`` in chunks; masks regenerated in backward.

    Without masks there is nothing per query: with ``grouped`` the rows of each distinct matrix are contracted
    with it in one GEMM ``(n_u, d) @ (d, d)``, in forward and backward alike (see :func:`_groups_on_the_host`);
    without, in chunks of queries as with masks.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        x: torch.Tensor,
        matrices: torch.Tensor,
        index: torch.Tensor,
        seed: int,
        threshold: int | None,
        scale: float,
        chunk_size: int,
        grouped: bool = True,
    ) -> torch.Tensor:
        num, dim = x.shape
        out = x.new_empty(num, dim)
        grouped = grouped and threshold is None
        if grouped:
            for u, rows in _segments(index, matrices.shape[0]):
                out.index_copy_(0, rows, torch.mm(x.index_select(0, rows), matrices[u]))
        else:
            generator = torch.Generator(device=x.device) if threshold is not None else None
            for ci, lo, hi in _chunks(num, chunk_size):
                m = matrices.index_select(0, index[lo:hi])
                if generator is not None:
                    m.mul_(_chunk_keep_mask(generator, seed, ci, hi - lo, dim, threshold, x.device))
                torch.bmm(x[lo:hi].unsqueeze(1), m, out=out[lo:hi].unsqueeze(1))
        if scale != 1.0:
            out.mul_(scale)
        ctx.save_for_backward(x, matrices, index)
        ctx.seed, ctx.threshold, ctx.scale, ctx.chunk_size = seed, threshold, scale, chunk_size
        ctx.grouped = grouped
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        with autocast_disabled(grad_out.device.type):
            return _DistinctCoreContraction._backward(ctx, grad_out)

    @staticmethod
    def _backward(ctx, grad_out: torch.Tensor):
        x, matrices, index = ctx.saved_tensors
        need_x, need_m = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        num, dim = x.shape
        threshold, seed = ctx.threshold, ctx.seed
        g = grad_out.contiguous()
        if ctx.scale != 1.0:
            g = g * ctx.scale
        grad_x = torch.empty_like(x) if need_x else None
        grad_m = torch.zeros_like(matrices) if need_m else None
        if ctx.grouped:
            for u, rows in _segments(index, matrices.shape[0]):
                g_u = g.index_select(0, rows)
                if need_x:
                    grad_x.index_copy_(0, rows, torch.mm(g_u, matrices[u].t()))
                if need_m:
                    torch.mm(x.index_select(0, rows).t(), g_u, out=grad_m[u])
            return grad_x, grad_m, None, None, None, None, None, None
        generator = torch.Generator(device=x.device) if threshold is not None else None
        for ci, lo, hi in _chunks(num, ctx.chunk_size):
            idx = index[lo:hi]
            keep = None
            if generator is not None:
                keep = _chunk_keep_mask(generator, seed, ci, hi - lo, dim, threshold, x.device)
            g_c = g[lo:hi]
            if need_x:
                m = matrices.index_select(0, idx)
                if keep is not None:
                    m.mul_(keep)
                # grad_x_b = (mask_b * M_b) @ g_b
                torch.bmm(m, g_c.unsqueeze(2), out=grad_x[lo:hi].unsqueeze(2))
            if need_m:
                outer = x[lo:hi].unsqueeze(2) * g_c.unsqueeze(1)  # (c, d, d): x_b g_b^T
                if keep is not None:
                    outer.mul_(keep)
                grad_m.index_add_(0, idx, outer)
        return grad_x, grad_m, None, None, None, None, None, None


class _PerQueryCoreContraction(torch.autograd.Function):
    """``z_b = scale * x_b @ (mask_b * (r_b W))`` in chunks; ``r_c W`` and masks rebuilt in backward.

    The GEMMs ``r W`` (and, in backward, ``r^T G``) run over blocks of ``gemm_chunks`` whole mask chunks, so that
    ``W`` is read once per block rather than once per (small) chunk; each chunk's mask is the same as with one
    chunk per block. When both ``x`` and ``r`` need gradients, backward gets them from one batched product
    ``t_b = (keep_b * g_b) W^T`` (``(d, d_r)`` per query) rather than rebuilding ``r W`` and multiplying
    ``G W^T``: three ``B d_r d^2`` products per step, as the per-query way needs, instead of four.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        x: torch.Tensor,
        r: torch.Tensor,
        core: torch.Tensor,
        seed: int,
        threshold: int | None,
        scale: float,
        chunk_size: int,
        gemm_chunks: int = 1,
    ) -> torch.Tensor:
        num, dim = x.shape
        flat = core.reshape(core.shape[0], dim * dim)
        out = x.new_empty(num, dim)
        generator = torch.Generator(device=x.device) if threshold is not None else None
        for lo, hi, chunks in _blocks(num, chunk_size, gemm_chunks):
            m = torch.mm(r[lo:hi], flat).view(hi - lo, dim, dim)
            if generator is not None:
                for ci, c_lo, c_hi in chunks:
                    m[c_lo - lo : c_hi - lo].mul_(
                        _chunk_keep_mask(generator, seed, ci, c_hi - c_lo, dim, threshold, x.device)
                    )
            torch.bmm(x[lo:hi].unsqueeze(1), m, out=out[lo:hi].unsqueeze(1))
        if scale != 1.0:
            out.mul_(scale)
        ctx.save_for_backward(x, r, core)
        ctx.seed, ctx.threshold, ctx.scale, ctx.chunk_size = seed, threshold, scale, chunk_size
        ctx.gemm_chunks = gemm_chunks
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        with autocast_disabled(grad_out.device.type):
            return _PerQueryCoreContraction._backward(ctx, grad_out)

    @staticmethod
    def _backward(ctx, grad_out: torch.Tensor):
        x, r, core = ctx.saved_tensors
        need_x, need_r, need_w = ctx.needs_input_grad[:3]
        num, dim = x.shape
        flat = core.reshape(core.shape[0], dim * dim)
        threshold, seed = ctx.threshold, ctx.seed
        g = grad_out.contiguous()
        if ctx.scale != 1.0:
            g = g * ctx.scale
        grad_x = torch.empty_like(x) if need_x else None
        grad_r = torch.empty_like(r) if need_r else None
        grad_flat = torch.zeros_like(flat) if need_w else None
        core_t = core.permute(1, 2, 0)  # (d, d, d_r) view: core_t[i, j, k] = W[k, i, j]
        generator = torch.Generator(device=x.device) if threshold is not None else None
        for lo, hi, chunks in _blocks(num, ctx.chunk_size, ctx.gemm_chunks):
            keep = (
                [
                    (c_lo - lo, c_hi - lo, _chunk_keep_mask(generator, seed, ci, c_hi - c_lo, dim, threshold, x.device))
                    for ci, c_lo, c_hi in chunks
                ]
                if generator is not None
                else []
            )
            g_c = g[lo:hi]
            if need_x and need_r:
                # Both from one batched product instead of two GEMMs (rebuilding r W, then G W^T):
                # t[i, b, k] = sum_j keep_b[i, j] g_b[j] W[k, i, j], then
                # grad_x_b[i] = sum_k r_b[k] t[i, b, k] and grad_r_b[k] = sum_i x_b[i] t[i, b, k].
                n = hi - lo
                gt = x.new_empty(dim, n, dim)  # gt[i, b, j] = keep_b[i, j] g_b[j]
                if keep:
                    for a, b, k in keep:
                        torch.mul(k.permute(1, 0, 2), g_c[a:b].unsqueeze(0), out=gt[:, a:b])
                else:
                    gt.copy_(g_c.unsqueeze(0).expand(dim, n, dim))
                t = torch.bmm(gt, core_t).transpose(0, 1)  # (n, d, d_r)
                del gt
                torch.bmm(t, r[lo:hi].unsqueeze(2), out=grad_x[lo:hi].unsqueeze(2))
                torch.bmm(x[lo:hi].unsqueeze(1), t, out=grad_r[lo:hi].unsqueeze(1))
                del t
            elif need_x:
                m = torch.mm(r[lo:hi], flat).view(hi - lo, dim, dim)
                for a, b, k in keep:
                    m[a:b].mul_(k)
                torch.bmm(m, g_c.unsqueeze(2), out=grad_x[lo:hi].unsqueeze(2))
                del m
            if need_w or (need_r and not need_x):
                outer = x[lo:hi].unsqueeze(2) * g_c.unsqueeze(1)  # dL/dM_b (n, d, d)
                for a, b, k in keep:
                    outer[a:b].mul_(k)
                outer = outer.view(hi - lo, dim * dim)
                if need_r and not need_x:
                    torch.mm(outer, flat.t(), out=grad_r[lo:hi])
                if need_w:
                    grad_flat.addmm_(r[lo:hi].t(), outer)
        grad_w = grad_flat.view_as(core) if need_w else None
        return grad_x, grad_r, grad_w, None, None, None, None, None


def _dropout_args(p: float, training: bool) -> tuple[int | None, float]:
    """``(threshold, scale)`` of the core dropout (:func:`core_dropout_threshold`); ``(None, 1.0)`` without masks."""
    if not training or p == 0.0:
        return None, 1.0
    threshold, _, scale = core_dropout_threshold(p)
    return threshold, scale


def fused_core_contraction(
    x: torch.Tensor,
    matrices: torch.Tensor,
    index: torch.Tensor,
    p: float = 0.0,
    training: bool = True,
    seed: int | None = None,
    chunk_size: int | None = None,
    path: str = "torch",
) -> torch.Tensor:
    """``z_b = x_b @ dropout_b(M[index_b])`` without materialising ``(B, d, d)`` or saving masks.

    :param x: shape ``(B, d)``
    :param matrices: the distinct relation matrices ``M_u``, shape ``(U, d, d)`` (differentiable)
    :param index: shape ``(B,)`` long, values in ``[0, U)``
    :param p: core dropout rate (applied only if ``training``)
    :param training: whether to apply the dropout
    :param seed: the base seed (default: drawn when dropout is active, with :func:`draw_core_seed` for the
        ``"torch"`` path and :func:`draw_core_seed_tensor` on ``x``'s device for the ``"triton"`` path)
    :param chunk_size: queries per chunk of the ``"torch"`` path (default: :func:`default_chunk_size`)
    :param path: the masked contraction's implementation: ``"torch"``, ``"triton"`` or ``"auto"`` (module
        docstring); without masks (evaluation, ``p = 0``) every path runs the same per-relation GEMMs
    :return: shape ``(B, d)``
    """
    return _fused_core_contraction(x, matrices, index, p, training, seed, chunk_size, path)[0]


def _fused_core_contraction(
    x, matrices, index, p, training, seed, chunk_size, path
) -> tuple[torch.Tensor, str | None, int | torch.Tensor | None]:
    """:func:`fused_core_contraction`, the path that drew the masks and their base seed (``None`` without masks)."""
    _checked_path(path, "fused_core_contraction")
    threshold, scale = _dropout_args(p, training)
    if chunk_size is None:
        chunk_size = default_chunk_size(x.shape[-1], x.device)
    if threshold is not None and scale == 0.0:  # p = 1: everything dropped
        if seed is None:
            draw_core_seed()  # as before: the CPU random stream of a run does not depend on p
        return x.new_zeros(x.shape) + 0.0 * (x.sum() + matrices.sum()), None, None
    x, matrices = _working_dtype(x, matrices)  # read autocast's state before it is switched off
    with autocast_disabled(x.device.type):
        if threshold is None:
            grouped = _groups_on_the_host(x)
            z = _DistinctCoreContraction.apply(x, matrices, index, 0, threshold, scale, chunk_size, grouped)
            return z, None, None
        if path == "auto":

            def run(path_, seed__, leaves):
                return _masked_distinct(path_, leaves[0], leaves[1], index, seed__, threshold, scale, chunk_size)

            path = _auto_path("distinct", run, (x, matrices))
        seed = _base_seed(path, seed, x.device)
        return _masked_distinct(path, x, matrices, index, seed, threshold, scale, chunk_size), path, seed


def _masked_distinct(path, x, matrices, index, seed, threshold, scale, chunk_size) -> torch.Tensor:
    """The masked distinct-relation contraction on ``path`` (``"torch"`` or ``"triton"``), scaled."""
    if path == "triton":
        z = _triton_module().triton_core_contraction(x, matrices, index, seed, threshold - _INT16_MIN)
        return z * scale if scale != 1.0 else z  # scale after the product (and on the gradient first), as below
    return _DistinctCoreContraction.apply(x, matrices, index, seed, threshold, scale, chunk_size)


def _masked_per_query(path, x, r, core, seed, threshold, scale, chunk_size, gemm_chunks) -> torch.Tensor:
    """The masked per-query contraction on ``path`` (``"torch"`` or ``"triton"``), scaled."""
    if path == "triton":
        z = _triton_module().triton_core_contraction_per_query(x, r, core, seed, threshold - _INT16_MIN)
        return z * scale if scale != 1.0 else z
    return _PerQueryCoreContraction.apply(x, r, core, seed, threshold, scale, chunk_size, gemm_chunks)


def _auto_path(contraction: str, run, leaves: tuple[torch.Tensor, ...]) -> str:
    """The ``"auto"`` choice: ``"torch"`` off CUDA or without triton, else the faster one, timed once per shape.

    :param contraction: ``"distinct"`` or ``"per-query"`` (part of the key)
    :param run: ``run(path, seed, leaves)``: the masked contraction on ``path`` with ``leaves`` as its float inputs
    :param leaves: the float inputs, ``x`` first
    """
    x = leaves[0]
    device = x.device
    if device.type != "cuda":
        return "torch"
    key = (contraction, str(device), str(x.dtype).removeprefix("torch."), int(x.shape[0]), int(x.shape[1]))
    if key in _auto_choices:
        return _auto_choices[key][0]
    reason = triton_unavailable_reason(device)
    if reason:
        logger.info("core contraction %s: torch (Triton unavailable: %s)", key, reason)
        _auto_choices[key] = ("torch", {})
        return "torch"
    times: dict[str, float] = {}
    for path in ("torch", "triton"):
        try:
            times[path] = _time_masked(functools.partial(run, path), leaves)
        except Exception as error:  # a kernel that fails to compile on this GPU must not stop training
            if path == "torch":
                raise
            logger.warning("core contraction %s: the Triton path failed while being timed, using torch: %r", key, error)
    choice = min(times, key=times.__getitem__)
    _auto_choices[key] = (choice, times)
    logger.info(
        "core contraction %s: %s (forward + backward, median of %d: %s)",
        key,
        choice,
        AUTO_TIMING_REPEATS,
        ", ".join(f"{path} {seconds * 1e3:.2f} ms" for path, seconds in times.items()),
    )
    return choice


def _time_masked(run, leaves: tuple[torch.Tensor, ...]) -> float:
    """Median seconds of one forward + backward of ``run(seed, leaves)``, on detached copies of the inputs.

    A fixed seed (0): the global RNG is not touched, so a run draws the same random numbers whatever is timed.
    """
    leaves = tuple(leaf.detach().requires_grad_() for leaf in leaves)
    grad = torch.ones_like(leaves[0])

    def step() -> None:
        with torch.enable_grad():
            torch.autograd.grad(run(0, leaves), leaves, grad)

    step()  # warm-up: Triton compiles its kernels here, the allocator settles
    seconds = []
    for _ in range(AUTO_TIMING_REPEATS):
        torch.cuda.synchronize(leaves[0].device)
        start = time.perf_counter()
        step()
        torch.cuda.synchronize(leaves[0].device)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def fused_core_contraction_per_query(
    x: torch.Tensor,
    r: torch.Tensor,
    core: torch.Tensor,
    p: float = 0.0,
    training: bool = True,
    seed: int | None = None,
    chunk_size: int | None = None,
    gemm_chunks: int | None = None,
    path: str = "torch",
) -> torch.Tensor:
    """``z_b = x_b @ dropout_b((r_b W).view(d, d))`` in chunks, with per-query relation vectors.

    :param x: shape ``(B, d)``
    :param r: shape ``(B, d_r)``
    :param core: ``W``, shape ``(d_r, d, d)``
    :param gemm_chunks: mask chunks per GEMM block of the ``"torch"`` path (default: :func:`default_gemm_chunks`);
        does not change the masks
    :param path: ``"torch"``, ``"triton"`` or ``"auto"``, as for :func:`fused_core_contraction`; without masks
        every path runs the PyTorch code
    :return: shape ``(B, d)``; the same masks as :func:`fused_core_contraction` for equal seed, chunking and path
    """
    return _fused_core_contraction_per_query(x, r, core, p, training, seed, chunk_size, gemm_chunks, path)[0]


def _fused_core_contraction_per_query(
    x, r, core, p, training, seed, chunk_size, gemm_chunks, path
) -> tuple[torch.Tensor, str | None, int | torch.Tensor | None]:
    """:func:`fused_core_contraction_per_query`, the path that drew the masks and their seed (``None`` without)."""
    _checked_path(path, "fused_core_contraction_per_query")
    threshold, scale = _dropout_args(p, training)
    if chunk_size is None:
        chunk_size = default_chunk_size(x.shape[-1], x.device)
    if gemm_chunks is None:
        gemm_chunks = default_gemm_chunks(chunk_size, x.shape[-1], x.device)
    gemm_chunks = max(1, int(gemm_chunks))
    if threshold is not None and scale == 0.0:
        if seed is None:
            draw_core_seed()  # as before: the CPU random stream of a run does not depend on p
        return x.new_zeros(x.shape) + 0.0 * (x.sum() + r.sum() + core.sum()), None, None
    x, r, core = _working_dtype(x, r, core)  # read autocast's state before it is switched off
    with autocast_disabled(x.device.type):
        if threshold is None:
            z = _PerQueryCoreContraction.apply(x, r, core, 0, threshold, scale, chunk_size, gemm_chunks)
            return z, None, None
        if path == "auto":

            def run(path_, seed__, leaves):
                return _masked_per_query(path_, *leaves, seed__, threshold, scale, chunk_size, gemm_chunks)

            path = _auto_path("per-query", run, (x, r, core))
        seed = _base_seed(path, seed, x.device)
        return _masked_per_query(path, x, r, core, seed, threshold, scale, chunk_size, gemm_chunks), path, seed


class TuckerHead(nn.Module):
    """One Tucker scoring head: ``BN0 -> drop -> x @ core_drop(r W) -> BN1 -> drop``.

    :param entity_dim: ``d``
    :param relation_dim: ``d_r``
    :param input_dropout: dropout after BN0 (reference 0.3)
    :param core_dropout: per-query dropout on the ``d x d`` relation matrix (reference 0.4)
    :param hidden_dropout: dropout after BN1 (reference 0.5)
    :param fused: use the memory-saving fused contraction (default); ``False``: the reference's plain
        per-query way (``(B, d, d)`` tensor + ``nn.functional.dropout``), same maths, other random masks
    :param chunk_bytes: byte budget of a chunk (default per device type, :data:`DEFAULT_CHUNK_BYTES`)
    :param max_relation_matrix_bytes: with relation ids, build the matrices ``(U, d, d)`` of the ``U`` relation rows
        given only while they take at most this many bytes; above, fall back to the per-query chunked path
    :param contraction_path: ``"auto"``, ``"torch"`` or ``"triton"`` for the masked distinct-relation contraction
        (module docstring); ``None`` (default): the process-wide setting (:func:`get_core_contraction_path`) at
        each forward. Ignored with ``fused=False``.
    """

    #: the base seed of the core dropout masks of the last fused training forward (None before): an int on the
    #: ``"torch"`` path, a one-element int64 tensor on the device on the ``"triton"`` path
    last_core_seed: int | torch.Tensor | None
    #: the path that drew those masks, ``"torch"`` or ``"triton"`` (for :func:`core_dropout_masks`; None before);
    #: class-level defaults of this and ``contraction_path`` keep heads pickled before they existed loadable
    last_core_path: str | None = None
    #: the head's own contraction path, or None for the process-wide setting
    contraction_path: str | None = None

    def __init__(
        self,
        entity_dim: int,
        relation_dim: int,
        input_dropout: float = 0.3,
        core_dropout: float = 0.4,
        hidden_dropout: float = 0.5,
        fused: bool = True,
        chunk_bytes: int | None = None,
        max_relation_matrix_bytes: int = 256 << 20,
        contraction_path: str | None = None,
    ) -> None:
        super().__init__()
        core_dropout_threshold(core_dropout)  # validate
        if contraction_path is not None:
            _checked_path(contraction_path, "TuckerHead(contraction_path=...)")
        self.contraction_path = contraction_path
        self.entity_dim = entity_dim
        self.relation_dim = relation_dim
        self.core = nn.Parameter(torch.empty(relation_dim, entity_dim, entity_dim))
        self.bn0 = nn.BatchNorm1d(entity_dim)
        self.bn1 = nn.BatchNorm1d(entity_dim)
        self.input_dropout = nn.Dropout(input_dropout)
        self.core_dropout = float(core_dropout)
        self.hidden_dropout = nn.Dropout(hidden_dropout)
        self.fused = fused
        self.chunk_bytes = chunk_bytes
        self.max_relation_matrix_bytes = max_relation_matrix_bytes
        self.last_core_seed = None
        self.last_core_path = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform core (as the reference), fresh BatchNorms."""
        nn.init.xavier_uniform_(self.core)
        self.bn0.reset_parameters()
        self.bn1.reset_parameters()

    def extra_repr(self) -> str:  # noqa: D102
        return (
            f"entity_dim={self.entity_dim}, relation_dim={self.relation_dim}, "
            f"core_dropout={self.core_dropout}, fused={self.fused}"
            + (f", contraction_path={self.contraction_path!r}" if self.contraction_path is not None else "")
        )

    def chunk_size(self, device: torch.device | str) -> int:
        """Queries per chunk on ``device`` (see :func:`default_chunk_size`)."""
        return default_chunk_size(self.entity_dim, device, self.chunk_bytes)

    def contract(
        self,
        x: torch.Tensor,
        relation_ids: torch.Tensor | None = None,
        relation_weights: torch.Tensor | None = None,
        r: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The core contraction with core dropout only: ``z_b = x_b @ core_drop((r_b W).view(d, d))``.

        :param x: shape ``(B, d)``
        :param relation_ids: shape ``(B,)`` long, rows of ``relation_weights`` ``(U, d_r)``: every row's matrix
            ``r_u W`` is built (while the ``U`` matrices fit :attr:`max_relation_matrix_bytes`, else the per-query
            path takes over), so pass the rows the batch uses, e.g. its distinct relations; or
        :param r: per-query relation vectors ``(B, d_r)``
        :return: shape ``(B, d)``
        """
        if (r is None) == (relation_ids is None or relation_weights is None):
            raise ValueError("pass either relation_ids and relation_weights, or r")
        d, d_r = self.entity_dim, self.relation_dim
        p = self.core_dropout
        if not self.fused:
            if r is None:
                r = relation_weights.index_select(0, relation_ids)
            m = torch.mm(r, self.core.view(d_r, d * d)).view(-1, d, d)
            m = F.dropout(m, p=p, training=self.training)
            return torch.bmm(x.unsqueeze(1), m).squeeze(1)
        chunk = self.chunk_size(x.device)
        path = self.contraction_path if self.contraction_path is not None else get_core_contraction_path()
        per_query = False
        if r is not None:
            per_query = torch.is_grad_enabled() and (r.requires_grad or x.requires_grad or self.core.requires_grad)
            if not per_query:  # inference: per-query rows usually repeat (one per relation); deduplicate them
                unique_r, index = torch.unique(r, dim=0, return_inverse=True)
        elif relation_weights.shape[0] * d * d * x.element_size() > self.max_relation_matrix_bytes:
            r, per_query = relation_weights.index_select(0, relation_ids), True
        else:
            # a matrix for every row given: the caller passes the rows the batch needs (MoMoK: its distinct
            # relations, or all of them), so nothing here waits for the device as torch.unique would
            unique_r, index = relation_weights, relation_ids
        if per_query:
            z, drawn_by, seed = _fused_core_contraction_per_query(
                x, r, self.core, p, self.training, None, chunk, None, path
            )
        else:
            matrices = torch.mm(unique_r, self.core.view(d_r, d * d)).view(-1, d, d)
            z, drawn_by, seed = _fused_core_contraction(x, matrices, index, p, self.training, None, chunk, path)
        if drawn_by is not None:
            self.last_core_path, self.last_core_seed = drawn_by, seed
        return z

    def forward(
        self,
        e: torch.Tensor,
        relation_ids: torch.Tensor | None = None,
        relation_weights: torch.Tensor | None = None,
        r: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Compute the query vectors.

        :param e: the query entities' modality embeddings, shape ``(B, d)``
        :param relation_ids: shape ``(B,)`` long, indices into ``relation_weights``
        :param relation_weights: the relation embeddings whose matrices to build, ``(U, d_r)`` (see :meth:`contract`)
        :param r: alternatively, per-query relation vectors ``(B, d_r)``
        :return: ``z``, shape ``(B, d)``; candidate scores are ``z @ cand.T``
        """
        x = self.bn0(e)
        x = self.input_dropout(x)
        z = self.contract(x, relation_ids=relation_ids, relation_weights=relation_weights, r=r)
        z = self.bn1(z)
        return self.hidden_dropout(z)
