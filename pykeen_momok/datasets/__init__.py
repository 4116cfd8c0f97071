"""Multi-modal datasets: a user's own folder, the MMKGC benchmarks and the built-in synthetic graph."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pykeen.datasets.base import Dataset

__all__ = ["builtin_datasets"]


def builtin_datasets() -> list[type[Dataset]]:
    """Return the dataset classes this package registers with PyKEEN."""
    from .benchmarks import DB15K, KVC16K, MKGW, MKGY, FB15k237IMG
    from .synthetic import SyntheticMMKG

    return [SyntheticMMKG, DB15K, MKGW, MKGY, FB15k237IMG, KVC16K]
