#!/usr/bin/env python
"""The Tucker heads' masked core contraction alone: PyTorch chunked path vs Triton kernels vs the per-query way.

For each head width ``d`` (MKG-Y at the reference sizes: structure 300, image 383, text 256) and a batch of
``B`` queries over ``U`` distinct relations, times forward and forward + backward of

- ``torch``: :func:`pykeen_momok.nn.tucker.fused_core_contraction` on its chunked PyTorch path;
- ``triton@QxIxJ``: the same on the Triton kernels (``nn/tucker_triton.py``) with tiles ``Q x I x J`` (one entry
  per ``--blocks`` value: a small sweep for tuning; the kernels were written without a GPU, so untuned);
- ``per-query``: the reference's way: ``M[index]`` (``B x d x d``), ``F.dropout`` on it, ``bmm`` (all kept for
  backward).

and the same for the joint head's contraction, whose relation vectors differ per query (``--joint-dims``, d = d_r:
300 on MKG-Y): ``torch`` (:func:`~pykeen_momok.nn.tucker.fused_core_contraction_per_query`), ``triton@QxIxJxK``
(the ``tl.dot`` kernels, ``--gemm-blocks``) and ``per-query`` (``r W`` for all queries, ``F.dropout``, ``bmm``).

Also the extra device memory each one needs (CUDA: peak allocated above the inputs), and on CUDA a correctness
check of the Triton forward against the per-query product with the kernel's own masks (``--check``)::

    python benchmarks/tucker_kernels.py --device cuda --out benchmarks/results/tucker_kernels.json

On CPU the Triton kernels run only under ``TRITON_INTERPRET=1`` and are then orders of magnitude slower (a check
of the script, not a measurement): ``--device cpu --batch 8 --dims 16 --joint-dims 16 --relations 3 --repeats 2``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede the first torch import

import argparse  # noqa: E402
import functools  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from pykeen_momok.nn import tucker  # noqa: E402

import _common as common  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse_blocks(text: str):
    """``"QxIxJ"`` (e.g. ``2x32x32``) or ``"QxIxJ/piece/warps"`` to :class:`TritonBlockSizes`."""
    from pykeen_momok.nn.tucker_triton import TritonBlockSizes

    head, *rest = text.split("/")
    try:
        query, row, col = (int(v) for v in head.lower().split("x"))
        piece = int(rest[0]) if rest else TritonBlockSizes.piece
        warps = int(rest[1]) if len(rest) > 1 else TritonBlockSizes.num_warps
        return TritonBlockSizes(query=query, row=row, col=col, piece=piece, num_warps=warps)
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"bad --blocks value {text!r} (expected QxIxJ[/piece[/warps]]): {error}"
        ) from error


def parse_gemm_blocks(text: str):
    """``"QxIxJxK"`` or ``"QxIxJxK/warps"`` to :class:`TritonGemmBlockSizes`."""
    from pykeen_momok.nn.tucker_triton import TritonGemmBlockSizes

    head, *rest = text.split("/")
    try:
        query, row, col, k = (int(v) for v in head.lower().split("x"))
        warps = int(rest[0]) if rest else TritonGemmBlockSizes.num_warps
        return TritonGemmBlockSizes(query=query, row=row, col=col, k=k, num_warps=warps)
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"bad --gemm-blocks value {text!r} (expected QxIxJxK[/warps]): {error}"
        ) from error


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda[:i] or cpu")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--batch", type=int, default=1024, help="queries B")
    parser.add_argument("--dims", type=int, nargs="+", default=[300, 383, 256], help="head widths d")
    parser.add_argument("--relations", type=int, default=56, help="distinct relations U in the batch (MKG-Y: 56)")
    parser.add_argument("--p", type=float, default=0.4, help="core dropout")
    parser.add_argument("--blocks", nargs="+", default=["2x32x32", "4x32x32", "1x64x64", "2x16x64", "4x16x32/128"],
                        help="Triton tiles QxIxJ[/piece[/warps]] to time")  # fmt: skip
    parser.add_argument("--joint-dims", type=int, nargs="*", default=[300], help="joint head widths d (= d_r)")
    parser.add_argument(
        "--gemm-blocks",
        nargs="*",
        default=["32x8x32x32/8", "16x8x32x32/4", "64x4x32x32/8", "32x16x16x64/8"],
        help="tiles QxIxJxK[/warps] of the per-query (joint head) kernels to time",
    )
    parser.add_argument("--repeats", type=int, default=20, help="timed runs (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (Triton compiles in the first)")
    parser.add_argument("--no-per-query", action="store_true", help="skip the per-query way (B x d x d tensors)")
    parser.add_argument(
        "--check",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compare the Triton forward with the per-query product on its masks (default: on CUDA)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/tucker_kernels.json")
    return parser


def per_query_way(x, matrices, index, p):
    """The reference's way: one ``d x d`` matrix per query, ``F.dropout`` on it, then the product."""
    m = F.dropout(matrices.index_select(0, index), p=p, training=True)
    return torch.bmm(x.unsqueeze(1), m).squeeze(1)


def per_query_relation_way(x, r, core, p):
    """The reference's way with relation vectors per query (the joint head): ``r W`` for all, ``F.dropout``, product."""
    dim = x.shape[1]
    m = F.dropout(torch.mm(r, core.view(core.shape[0], dim * dim)).view(-1, dim, dim), p=p, training=True)
    return torch.bmm(x.unsqueeze(1), m).squeeze(1)


def timed(fn, device: torch.device, repeats: int, warmup: int) -> dict[str, float]:
    """Median / min seconds of ``fn()`` and the peak extra device memory (CUDA) of one call."""
    for _ in range(warmup):
        fn()
    common.sync(device)
    peak_gb = float("nan")
    if device.type == "cuda":
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        common.sync(device)
        peak_gb = (torch.cuda.max_memory_allocated(device) - base) / 1e9
    seconds = []
    for _ in range(repeats):
        common.sync(device)
        start = time.perf_counter()
        fn()
        common.sync(device)
        seconds.append(time.perf_counter() - start)
    return dict(median_s=common.median(seconds), min_s=min(seconds), extra_gb=peak_gb)


def main() -> None:
    args = get_parser().parse_args()
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    check = args.check if args.check is not None else device.type == "cuda"
    reason = tucker.triton_unavailable_reason(device)
    blocks = [parse_blocks(text) for text in args.blocks] if not reason else []
    gemm_blocks = [parse_gemm_blocks(text) for text in args.gemm_blocks] if not reason else []
    if reason:
        print(f"Triton path skipped: {reason}", flush=True)
    print(f"machine: {common.machine_info()}", flush=True)
    generator = torch.Generator().manual_seed(args.seed)
    threshold, _, scale = tucker.core_dropout_threshold(args.p)
    drop_levels = threshold + (1 << 15)
    rows: list[dict[str, Any]] = []

    def randn(*shape, std=1.0):
        return (torch.randn(*shape, generator=generator) * std).to(device, dtype)

    for dim in args.dims:  # the base-modality heads: distinct relation matrices
        x, grad = randn(args.batch, dim).requires_grad_(), randn(args.batch, dim)
        matrices = randn(args.relations, dim, dim, std=dim**-0.5).requires_grad_()
        index = torch.randint(0, args.relations, (args.batch,), generator=generator).to(device)
        inputs = (x, matrices, index)
        ways = {"torch": functools.partial(tucker.fused_core_contraction, *inputs, p=args.p, seed=1, path="torch")}
        for block in blocks:
            name = f"triton@{block.query}x{block.row}x{block.col}/{block.piece}/{block.num_warps}"
            ways[name] = functools.partial(
                _scaled, tucker_triton().triton_core_contraction, inputs, drop_levels, scale, block
            )
        if not args.no_per_query:
            ways["per-query"] = functools.partial(per_query_way, *inputs, args.p)
        base = dict(contraction="distinct", d=dim, d_r="", batch=args.batch, relations=args.relations, dtype=args.dtype)
        rows += time_ways(ways, (x, matrices), grad, base, device, args)
        if check and blocks:
            z = _scaled(tucker_triton().triton_core_contraction, inputs, drop_levels, scale, blocks[0])
            rows.append(_check(z, x, matrices[index], args.p, scale, base))
    for dim in args.joint_dims:  # the joint head: relation vectors per query, core (d, d, d)
        x, grad = randn(args.batch, dim).requires_grad_(), randn(args.batch, dim)
        r = randn(args.batch, dim).requires_grad_()
        core = randn(dim, dim, dim, std=dim**-1.0).requires_grad_()
        inputs = (x, r, core)
        per_query = tucker.fused_core_contraction_per_query
        ways = {"torch": functools.partial(per_query, *inputs, p=args.p, seed=1, path="torch")}
        for block in gemm_blocks:
            name = f"triton@{block.query}x{block.row}x{block.col}x{block.k}/{block.num_warps}"
            entry = tucker_triton().triton_core_contraction_per_query
            ways[name] = functools.partial(_scaled, entry, inputs, drop_levels, scale, block)
        if not args.no_per_query:
            ways["per-query"] = functools.partial(per_query_relation_way, *inputs, args.p)
        base = dict(contraction="per-query", d=dim, d_r=dim, batch=args.batch, relations="", dtype=args.dtype)
        rows += time_ways(ways, inputs, grad, base, device, args)
        if check and gemm_blocks:
            z = _scaled(tucker_triton().triton_core_contraction_per_query, inputs, drop_levels, scale, gemm_blocks[0])
            with torch.no_grad():
                matrices = torch.mm(r.double(), core.double().view(dim, -1)).view(-1, dim, dim)
            rows.append(_check(z, x, matrices, args.p, scale, base))
    result = dict(benchmark="tucker_kernels", args=vars(args), machine=common.machine_info(), rows=rows)
    columns = ["contraction", "way", "d", "d_r", "batch", "relations", "dtype", "forward_s", "forward_min_s",
               "step_s", "step_min_s", "step_extra_gb", "max_abs_error", "status"]  # fmt: skip
    path, csv_path = common.write_results(args.out, result, rows, columns)
    print(f"wrote {path} and {csv_path}")


def time_ways(ways, leaves, grad, base, device, args) -> list[dict[str, Any]]:
    """Forward and forward + backward (gradients of ``leaves``) of each way; a failing way is recorded, not fatal."""
    rows = []
    for name, forward in ways.items():
        row: dict[str, Any] = dict(base, way=name)
        try:
            with torch.no_grad():
                fwd = timed(forward, device, args.repeats, args.warmup)

            def step(forward=forward):
                torch.autograd.grad(forward(), leaves, grad)

            both = timed(step, device, args.repeats, args.warmup)
            row.update(forward_s=fwd["median_s"], forward_min_s=fwd["min_s"], step_s=both["median_s"],
                       step_min_s=both["min_s"], step_extra_gb=both["extra_gb"], status="ok")  # fmt: skip
        except Exception as error:  # one failing way (a tile that does not compile) must not stop the others
            row.update(status=f"failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}")
        rows.append(row)
        _print(row)
    return rows


def tucker_triton():
    """:mod:`pykeen_momok.nn.tucker_triton` (imports triton), once the Triton path is known to be available."""
    from pykeen_momok.nn import tucker_triton as module

    return module


def _scaled(entry, inputs, drop_levels, scale, blocks):
    """A Triton entry point with seed 1, scaled as :mod:`pykeen_momok.nn.tucker` scales it."""
    return entry(*inputs, 1, drop_levels, blocks) * scale


def _check(z, x, matrices, p, scale, base) -> dict[str, Any]:
    """Max |Triton forward - the product with the per-query matrices and the kernel's masks|, in float64."""
    batch, dim = x.shape
    with torch.no_grad():
        keep = tucker.core_dropout_masks(1, batch, dim, p, device=x.device, path="triton")
        expected = torch.bmm(x.double().unsqueeze(1), matrices.double() * keep * scale).squeeze(1)
        error = (z.double() - expected).abs().max().item()
    ok = error < 1e-3 * max(1.0, expected.abs().max().item())
    row = dict(
        base, way="check: triton vs per-query, same masks", max_abs_error=error, status="ok" if ok else "MISMATCH"
    )
    _print(row)
    return row


def _print(row: dict[str, Any]) -> None:
    label = f"  {row['contraction']:>9} d={row['d']:>4} {row['way']:>26}"
    if "max_abs_error" in row:
        print(f"{label}: max abs error {row['max_abs_error']:.2e} ({row['status']})", flush=True)
    elif row["status"] != "ok":
        print(f"{label}: {row['status']}", flush=True)
    else:
        forward, step, extra = row["forward_s"] * 1e3, row["step_s"] * 1e3, row["step_extra_gb"]
        print(f"{label}: forward {forward:8.3f} ms, forward+backward {step:8.3f} ms, extra memory {extra:.3f} GB")


if __name__ == "__main__":
    main()
