"""MoMoK (Mixture of Modality Knowledge Experts) for multi-modal knowledge graph completion, as a PyKEEN plugin.

Importing this package is cheap: it loads neither torch nor any module of PyKEEN (only PyKEEN's top-level
package, a few lines). Public names are resolved lazily, and :func:`~pykeen_momok.registration.install`
arranges that ``pipeline(model="MoMoK", ...)``, ``loss="MoMoKLoss"``, ``training_loop="batchedlcwa"`` and the
datasets (``"DB15K"``, ``"MKG-W"``, ``"MKG-Y"``, ``"FB15K-237-IMG"``, ``"KVC16K"``, ``"SyntheticMMKG"``) resolve by
name in PyKEEN.
"""

from __future__ import annotations

import importlib
from typing import Any

from .registration import install
from .version import __version__

_LAZY = {
    "MoMoK": "pykeen_momok.model",
    "MoMoKLoss": "pykeen_momok.losses",
    "BatchedLCWATrainingLoop": "pykeen_momok.lcwa",
    "ModalityFeatures": "pykeen_momok.triples",
    "MultiModalTriplesFactory": "pykeen_momok.triples",
    "FeatureSource": "pykeen_momok.features",
    "MultiModalDataset": "pykeen_momok.datasets.base",
    "SyntheticMMKG": "pykeen_momok.datasets.synthetic",
    "DB15K": "pykeen_momok.datasets.benchmarks",
    "MKGW": "pykeen_momok.datasets.benchmarks",
    "MKGY": "pykeen_momok.datasets.benchmarks",
    "FB15k237IMG": "pykeen_momok.datasets.benchmarks",
    "KVC16K": "pykeen_momok.datasets.benchmarks",
}

__all__ = ["install", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


install()
