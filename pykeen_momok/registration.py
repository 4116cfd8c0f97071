"""The one place that talks to PyKEEN's resolvers.

PyKEEN 1.11.1 reads entry points for datasets only (group ``pykeen.datasets``), and registers our datasets
from them itself. MoMoK, MoMoKLoss and the batched LCWA training loop are added here, with the resolvers' public
``register``, to ``pykeen.models.model_resolver``, ``pykeen.losses.loss_resolver`` and
``pykeen.training.training_loop_resolver``, which exist only once those modules are *completely* imported. Our
package is imported by the user, or by PyKEEN loading those entry points while ``pykeen.datasets`` is being
imported, which is usually while ``pykeen.models`` is being imported too (it imports ``pykeen.datasets`` through
``pykeen.triples.leakage`` long before it builds its resolver).

So :func:`install` (run by ``import pykeen_momok``) does at once what can be done, and waits for the rest
on one thing Python guarantees: a submodule is bound as an attribute of its package right after its body
has run ("The import system", Submodules, in the language reference), however it was imported. While
something is left to do, the ``pykeen`` and ``pykeen_momok`` package objects get a subclass of
:class:`types.ModuleType` whose ``__setattr__`` calls :func:`install_what_is_ready` after each such
binding; once nothing is left, they get :class:`types.ModuleType` back. What waits for what:

- MoMoK and MoMoKLoss are registered once ``pykeen.models`` is complete (``pykeen.losses`` is by then) and
  neither ``pykeen_momok.model`` nor ``pykeen_momok.losses`` is half imported (``import pykeen_momok.model``
  as the first import completes ``pykeen.models`` before ``MoMoK`` exists; its own binding comes later);
- :class:`~pykeen_momok.lcwa.BatchedLCWATrainingLoop` is registered (``"batchedlcwa"``) once ``pykeen.training`` is
  complete (PyKEEN's models do not import it; ``pykeen.pipeline`` does), and not while our ``lcwa`` module is
  half imported;
- ``get_dataset`` of our datasets goes to our own cache (:func:`patch_dataset_cache`) once
  ``pykeen.datasets.utils`` is complete. This is the one private PyKEEN name touched, on the releases it
  was written for only (:data:`PATCHED_PYKEEN_RELEASES`); every other dataset reaches PyKEEN's function
  exactly as before.

``tests/test_registration.py`` and ``tests/test_imports.py`` check every import order in fresh interpreters.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
import types
import warnings
from collections.abc import Callable
from typing import Any

from class_resolver import ClassResolver

__all__ = [
    "install",
    "install_what_is_ready",
    "register_model_and_loss",
    "register_training_loop",
    "patch_dataset_cache",
    "is_momok_dataset",
    "PATCHED_PYKEEN_RELEASES",
]

logger = logging.getLogger(__name__)


def register_model_and_loss(model_resolver: ClassResolver | None = None) -> None:
    """Register MoMoK in PyKEEN's model resolver and its loss in the loss resolver (idempotent).

    Call it only once ``pykeen.models`` is completely imported (:func:`install_what_is_ready` checks).
    """
    from pykeen.losses import loss_resolver

    from .losses import MoMoKLoss
    from .model import MoMoK

    if model_resolver is None:
        from pykeen.models import model_resolver
    _register(model_resolver, MoMoK)
    _register(loss_resolver, MoMoKLoss)


def register_training_loop(training_loop_resolver: ClassResolver | None = None) -> None:
    """Register :class:`~pykeen_momok.lcwa.BatchedLCWATrainingLoop` (``"batchedlcwa"``) with PyKEEN (idempotent).

    Call it only once ``pykeen.training`` is completely imported (:func:`install_what_is_ready` checks).
    """
    from .lcwa import BatchedLCWATrainingLoop

    if training_loop_resolver is None:
        from pykeen.training import training_loop_resolver
    _register(training_loop_resolver, BatchedLCWATrainingLoop)


def _register(resolver: ClassResolver, cls: type) -> None:
    key = resolver.normalize_cls(cls)
    existing = resolver.lookup_dict.get(key)
    if existing is cls:
        return
    if existing is not None and existing.__qualname__ == cls.__qualname__ and existing.__module__ == cls.__module__:
        return  # the same class seen through a reload
    resolver.register(cls)


def _register_if_ready() -> bool:
    """Register model and loss if PyKEEN and our modules allow it now; return whether that is done."""
    models = sys.modules.get("pykeen.models")
    if not hasattr(models, "model_resolver"):
        return False
    for name, attribute in (("pykeen_momok.losses", "MoMoKLoss"), ("pykeen_momok.model", "MoMoK")):
        module = sys.modules.get(name)
        if module is not None and not hasattr(module, attribute):
            return False  # half imported: its binding to pykeen_momok calls us again
    register_model_and_loss(models.model_resolver)
    return True


def _register_training_loop_if_ready() -> bool:
    """Register the batched LCWA loop if ``pykeen.training`` is complete; return whether that is done."""
    training = sys.modules.get("pykeen.training")
    if not hasattr(training, "training_loop_resolver"):
        return False
    module = sys.modules.get("pykeen_momok.lcwa")
    if module is not None and not hasattr(module, "BatchedLCWATrainingLoop"):
        return False  # half imported: its binding to pykeen_momok calls us again
    register_training_loop(training.training_loop_resolver)
    return True


def _patch_if_ready() -> bool:
    """Route our datasets to our cache if ``pykeen.datasets.utils`` is complete; return whether that is done."""
    utils = sys.modules.get("pykeen.datasets.utils")
    if not hasattr(utils, "_cached_get_dataset"):
        return False
    patch_dataset_cache(utils)
    return True


#: The PyKEEN releases whose private ``pykeen.datasets.utils._cached_get_dataset`` :func:`patch_dataset_cache`
#: was written and tested against (``setup.cfg`` pins PyKEEN to them).
PATCHED_PYKEEN_RELEASES = ("1.11.",)
_CACHED_GET_DATASET_PARAMETERS = ("dataset", "dataset_kwargs", "force")


def _pykeen_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pykeen")
    except PackageNotFoundError:  # pragma: no cover -- we are called from PyKEEN's own import
        return "unknown"


def _patch_refused(original: Callable[..., Any]) -> str | None:
    """Why :func:`patch_dataset_cache` must leave ``original`` alone (None when it is the function we know)."""
    version = _pykeen_version()
    if not version.startswith(PATCHED_PYKEEN_RELEASES):
        return f"PyKEEN {version} is not one of the releases {PATCHED_PYKEEN_RELEASES} it was written for"
    try:
        parameters = tuple(inspect.signature(original).parameters)
    except (TypeError, ValueError):
        parameters = ()
    if parameters != _CACHED_GET_DATASET_PARAMETERS:
        return f"pykeen.datasets.utils._cached_get_dataset takes {parameters}, not {_CACHED_GET_DATASET_PARAMETERS}"
    return None


def is_momok_dataset(cls: Any) -> bool:
    """Whether a dataset class is ours: defined in this package, or a subclass of ``MultiModalDataset``."""
    if not isinstance(cls, type):
        return False
    if cls.__module__ == "pykeen_momok" or cls.__module__.startswith("pykeen_momok."):
        return True
    base = sys.modules.get("pykeen_momok.datasets.base")  # not imported: no class can derive from it yet
    return base is not None and issubclass(cls, base.MultiModalDataset)


def patch_dataset_cache(utils: types.ModuleType) -> None:
    """Send ``get_dataset`` of *our* datasets to :func:`pykeen_momok.datasets.cache.get_dataset_cached`.

    PyKEEN 1.11.1 keys its dataset cache by keyword arguments alone, while what our datasets hold depends on
    files (see :mod:`pykeen_momok.datasets.cache`), and it rebuilds a cached dataset with
    ``create_inverse_triples=False`` unless told. PyKEEN has no public hook for this, so its private
    ``pykeen.datasets.utils._cached_get_dataset`` (which ``get_dataset`` calls by name) is wrapped:

    - every dataset that is not ours goes to PyKEEN's function with exactly the arguments it was given;
    - the wrapper is installed only on the PyKEEN releases in :data:`PATCHED_PYKEEN_RELEASES`, and only if the
      function has the signature we know; otherwise nothing is replaced and a warning says what that means.
    """
    original = utils._cached_get_dataset
    if getattr(original, "_momok_wrapped", False):
        return
    refused = _patch_refused(original)
    if refused is not None:
        logger.warning(
            f"pykeen_momok: {refused}, so PyKEEN's dataset cache is left as it is. get_dataset() then caches the "
            f"MoMoK datasets by keyword arguments only: a change of their files goes unseen (pass force=True in "
            f"dataset_kwargs, or build the dataset class directly)"
        )
        return

    @functools.wraps(original)
    def _cached_get_dataset(dataset, dataset_kwargs, force=False):
        from pykeen.datasets import dataset_resolver

        try:
            cls = dataset_resolver.lookup(dataset)
        except (KeyError, ValueError, TypeError):
            cls = None  # PyKEEN's function says what is wrong with the name
        if not is_momok_dataset(cls):
            return original(dataset, dataset_kwargs, force=force)
        from .datasets.cache import get_dataset_cached

        return get_dataset_cached(cls, dataset_kwargs, force=force)

    _cached_get_dataset._momok_wrapped = True  # type: ignore[attr-defined]
    utils._cached_get_dataset = _cached_get_dataset


#: what :func:`install` has left to do
_pending = {
    "register": _register_if_ready,
    "training loop": _register_training_loop_if_ready,
    "dataset cache": _patch_if_ready,
}


def install_what_is_ready() -> bool:
    """Do what is left of :func:`install` and can be done now; return whether nothing is left."""
    for name, step in list(_pending.items()):
        if name in _pending and step():
            _pending.pop(name, None)
    return not _pending


class _CallsBackOnSubmodules(types.ModuleType):
    """A package object that calls :func:`install_what_is_ready` when a submodule has been imported."""

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if isinstance(value, types.ModuleType) and value.__name__ == f"{self.__name__}.{name}":
            try:
                done = install_what_is_ready()
            except Exception as error:  # an import of PyKEEN must not fail because of this plugin
                warnings.warn(
                    f"pykeen_momok could not register itself with PyKEEN: {error!r}", RuntimeWarning, stacklevel=2
                )
                done = True
            if done:
                _stop_waiting()


_PACKAGES = ("pykeen", "pykeen_momok")


def _stop_waiting() -> None:
    for package in _PACKAGES:
        module = sys.modules.get(package)
        if type(module) is _CallsBackOnSubmodules:
            module.__class__ = types.ModuleType


def install() -> None:
    """Make MoMoK and its loss resolvable by name, and send our datasets to our cache, now or once PyKEEN allows.

    Idempotent. Imports PyKEEN's top-level package (a few lines: its version), none of its modules.
    """
    import pykeen  # noqa: F401

    if install_what_is_ready():
        _stop_waiting()
        return
    for package in _PACKAGES:
        module = sys.modules[package]
        if type(module) is types.ModuleType:
            module.__class__ = _CallsBackOnSubmodules
        elif type(module) is not _CallsBackOnSubmodules:
            logger.warning(
                f"pykeen_momok: the {package} package is a {type(module).__name__}, so this plugin cannot wait "
                f"for PyKEEN's imports: call pykeen_momok.install() again after importing pykeen.models (and "
                f"pykeen.training, for training_loop='batchedlcwa')"
            )
