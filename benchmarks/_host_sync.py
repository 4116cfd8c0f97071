"""Finding the operations of a MoMoK training step that make the host wait for the device, without a device.

On a GPU, an operation whose result size or value the host needs (``torch.unique``, ``.item()``, ``.tolist()``,
``nonzero``, ``bincount``...) makes the host wait until the queued kernels have run, so the next launches cannot
overlap them. Every aten operation passes through a :class:`~torch.utils._python_dispatch.TorchDispatchMode`, on
CPU as on CUDA, so :class:`HostSyncAudit` records each data-dependent one with the innermost ``pykeen_momok``
frame that asked for it. ``.tolist()`` of a CPU tensor bypasses the dispatcher, so it is counted by wrapping
:meth:`torch.Tensor.tolist`. On CUDA, ``torch.cuda.set_sync_debug_mode`` sees the real waits
(``benchmarks/sync_check.py`` uses both).

What PyTorch does itself is left out (Adam and the data loader's sampler read CPU tensors). PyKEEN's own
operations are left out unless asked for (``HostSyncAudit(packages=(pykeen_momok, pykeen))``): its LCWA loop
calls ``torch.isfinite(loss)`` and ``loss.item()`` once per batch, unless
``BatchedLCWATrainingLoop(read_loss="epoch")``.
"""

from __future__ import annotations

import collections
import pathlib
import sys
import types

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import pykeen_momok

__all__ = ["DATA_DEPENDENT", "HOST_SIDE", "HostSyncAudit"]

PACKAGE = pathlib.Path(pykeen_momok.__file__).resolve().parent  # the default package audited
TORCH_OPTIM = pathlib.Path(torch.optim.__file__).resolve().parent
TORCH_DATA = pathlib.Path(torch.utils.data.__file__).resolve().parent

#: aten operations whose output size or value depends on tensor data: on CUDA each waits for the device
DATA_DEPENDENT = frozenset(
    {
        "aten::_local_scalar_dense",  # .item(), int(t), float(t), bool(t)
        "aten::is_nonzero",
        "aten::item",
        "aten::equal",
        "aten::nonzero",
        "aten::nonzero_static",
        "aten::_unique",
        "aten::_unique2",
        "aten::unique_dim",
        "aten::unique_consecutive",
        "aten::bincount",
        "aten::masked_select",
        "aten::repeat_interleave",
    }
)

#: our host-side random draws on purpose: a base seed for the core dropout masks from the global CPU generator
#: (``torch.randint`` without a device), the CLUB estimator's expert pairs from ``torch.randperm`` on the CPU
HOST_SIDE = frozenset({"pykeen_momok/nn/tucker.py:draw_core_seed", "pykeen_momok/nn/club.py:_pair_indices"})


def _audited_frame(packages: tuple[pathlib.Path, ...]) -> str | None:
    """``file:function`` of the innermost frame in one of ``packages``, or None when the operation is not theirs.

    Operations inside :mod:`torch.optim` and :mod:`torch.utils.data` are PyTorch's, on CPU tensors, also when
    audited code called them: Adam reads its step counters with ``.item()``, the data loader's shuffling sampler
    draws its seed with ``.item()`` and its order with ``.tolist()``.
    """
    frame = sys._getframe(2)
    while frame is not None:
        path = pathlib.Path(frame.f_code.co_filename)
        if TORCH_OPTIM in path.parents or TORCH_DATA in path.parents:
            return None
        for package in packages:
            if package in path.parents:
                return f"{path.relative_to(package.parent)}:{frame.f_code.co_name}"
        frame = frame.f_back
    return None


class HostSyncAudit(TorchDispatchMode):
    """Counts data-dependent operations by the function (of ``packages``: pykeen_momok's) that asked for them.

    :param packages: whose operations to count
    :param host_side: count the :data:`HOST_SIDE` draws too. They read CPU tensors, so they make no GPU wait, but
        a step captured as a CUDA graph would replay their values: ``MoMoK(core_contraction_path="triton",
        mi_pair_draw="device")`` draws on the device instead.
    """

    def __init__(self, packages: tuple[types.ModuleType, ...] = (pykeen_momok,), host_side: bool = False) -> None:
        super().__init__()
        self.sites: collections.Counter[tuple[str, str]] = collections.Counter()
        self._packages = tuple(pathlib.Path(package.__file__).resolve().parent for package in packages)
        self._skipped = frozenset() if host_side else HOST_SIDE
        self._tolist = torch.Tensor.tolist

    def _note(self, operation: str) -> None:
        site = _audited_frame(self._packages)
        if site is not None and site not in self._skipped:
            self.sites[site, operation] += 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: D105
        if func._schema.name in DATA_DEPENDENT:
            self._note(func._schema.name)
        return func(*args, **(kwargs or {}))

    def __enter__(self):  # noqa: D105
        audit, tolist = self, self._tolist

        def counted_tolist(tensor):
            audit._note("Tensor.tolist")
            return tolist(tensor)

        torch.Tensor.tolist = counted_tolist
        return super().__enter__()

    def __exit__(self, *exc):  # noqa: D105
        torch.Tensor.tolist = self._tolist
        return super().__exit__(*exc)
