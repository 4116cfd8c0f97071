"""The one place that talks to PyKEEN's resolvers.

PyKEEN 1.11.1 reads entry points for datasets only (group ``pykeen.datasets``), not for models or
losses. Our dataset entry points import this package, and importing it calls :func:`install`, which
registers :class:`~pykeen_momok.model.MoMoK` and :class:`~pykeen_momok.losses.MoMoKLoss` as soon as
``pykeen.models`` is *completely* imported. Three situations occur, depending on which PyKEEN module
the user imported first:

1. ``pykeen.models`` is already complete: register at once.
2. ``pykeen.models`` is not imported yet (e.g. the user imported ``pykeen.datasets`` or ``pykeen.nn``
   first): a one-shot meta-path finder wraps the loader of ``pykeen.models`` and registers right
   after the module body has run.
3. ``pykeen.models`` is *being* imported: this is the usual case, because ``pykeen.models`` imports
   ``pykeen.datasets`` (through ``pykeen.triples.leakage``) long before it creates ``model_resolver``
   at the end of its body. No import hook can run "after" a module that is already executing, so we
   hand the partially initialised module a one-shot stand-in for the name ``ClassResolver`` it is about
   to call; the stand-in restores the real class, builds the resolver exactly as PyKEEN asked, and
   adds our classes to it. ``tests/test_registration.py`` checks every import order in fresh
   interpreters.

The same hooks send :func:`pykeen.datasets.get_dataset` of *our* datasets to our own dataset cache
(:func:`patch_dataset_cache`, :mod:`pykeen_momok.datasets.cache`): PyKEEN keys its cache by keyword
arguments alone. That wraps a private PyKEEN function, so it is done only on the PyKEEN releases it was
tested with, and every other dataset reaches PyKEEN's function exactly as before.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import inspect
import logging
import sys
import types
from collections.abc import Callable
from typing import Any

from class_resolver import ClassResolver

__all__ = [
    "install",
    "register_model_and_loss",
    "register_if_ready",
    "register_datasets_if_ready",
    "patch_dataset_cache",
    "is_momok_dataset",
    "PATCHED_PYKEEN_RELEASES",
]

logger = logging.getLogger(__name__)

_MODELS = "pykeen.models"


def register_model_and_loss(model_resolver: ClassResolver | None = None) -> None:
    """Register MoMoK in PyKEEN's model resolver and its loss in the loss resolver (idempotent).

    When our own ``model``/``losses`` module is still being imported (it imports PyKEEN, which can call
    back here), this does nothing: that module registers itself on its last line instead.
    """
    for name, attribute in (("pykeen_momok.model", "MoMoK"), ("pykeen_momok.losses", "MoMoKLoss")):
        module = sys.modules.get(name)
        if module is not None and not hasattr(module, attribute):
            return
    from pykeen.losses import loss_resolver

    from .losses import MoMoKLoss
    from .model import MoMoK

    if model_resolver is None:
        from pykeen.models import model_resolver
    _register(model_resolver, MoMoK)
    _register(loss_resolver, MoMoKLoss)


def register_if_ready() -> None:
    """Register model and loss now if ``pykeen.models`` is complete (else :func:`install`'s hooks will)."""
    models = sys.modules.get(_MODELS)
    if models is not None and hasattr(models, "model_resolver"):
        register_model_and_loss(models.model_resolver)


def register_datasets_if_ready(*classes: type) -> None:
    """Register dataset classes now if ``pykeen.datasets`` is complete.

    Normally PyKEEN registers them from our entry points. But when one of our dataset modules is imported
    *before* ``pykeen.datasets``, PyKEEN loads the entry points while that module is still half imported,
    fails on it and moves on; the module then calls this on its last line.
    """
    datasets = sys.modules.get("pykeen.datasets")
    resolver = getattr(datasets, "dataset_resolver", None)
    if resolver is not None:
        for cls in classes:
            _register(resolver, cls)


def _register(resolver: ClassResolver, cls: type) -> None:
    key = resolver.normalize_cls(cls)
    existing = resolver.lookup_dict.get(key)
    if existing is cls:
        return
    if existing is not None and existing.__qualname__ == cls.__qualname__ and existing.__module__ == cls.__module__:
        return  # the same class seen through a reload
    resolver.register(cls)


class _ResolverFactoryStandIn:
    """Stands in for ``ClassResolver`` in a partially imported ``pykeen.models`` (see module docstring)."""

    def __init__(self, namespace: dict[str, Any], original: type[ClassResolver]) -> None:
        self._namespace = namespace
        self._original = original

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)

    def from_subclasses(self, *args: Any, **kwargs: Any) -> ClassResolver:
        self._namespace["ClassResolver"] = self._original
        resolver = self._original.from_subclasses(*args, **kwargs)
        register_model_and_loss(resolver)
        return resolver


class _AfterImportFinder(importlib.abc.MetaPathFinder):
    """One-shot finder that runs a callback right after a given module has been executed."""

    def __init__(self, fullname: str, callback: Callable[[types.ModuleType], None]) -> None:
        self.fullname = fullname
        self.callback = callback

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.fullname:
            return None
        _remove_finder(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        callback = self.callback

        class _Loader(importlib.abc.Loader):
            def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
                return loader.create_module(spec)

            def exec_module(self, module: types.ModuleType) -> None:
                loader.exec_module(module)
                callback(module)

        spec.loader = _Loader()
        return spec


def _remove_finder(finder: importlib.abc.MetaPathFinder) -> None:
    try:
        sys.meta_path.remove(finder)
    except ValueError:
        pass


def _when_complete(fullname: str, marker: str, callback: Callable[[types.ModuleType], None]) -> bool:
    """Run ``callback(module)`` once ``fullname`` is imported and defines ``marker``.

    :returns: whether the callback ran already
    """
    module = sys.modules.get(fullname)
    if module is not None and hasattr(module, marker):
        callback(module)
        return True
    if module is None and not any(
        isinstance(f, _AfterImportFinder) and f.fullname == fullname for f in sys.meta_path
    ):
        sys.meta_path.insert(0, _AfterImportFinder(fullname, callback))
    return False


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


def install() -> None:
    """Make MoMoK and its loss resolvable by name, now or as soon as PyKEEN allows.

    The datasets are registered by PyKEEN itself from the ``pykeen.datasets`` entry points; here we only
    send ``get_dataset`` of our datasets to our own cache (:func:`patch_dataset_cache`).
    """
    models = sys.modules.get(_MODELS)
    if models is not None and not hasattr(models, "model_resolver"):
        namespace = vars(models)
        original = namespace.get("ClassResolver")
        if original is ClassResolver:
            namespace["ClassResolver"] = _ResolverFactoryStandIn(namespace, original)
        else:  # an unknown PyKEEN layout: fall back to the first lookup after the import completes
            logger.warning("pykeen_momok: could not hook pykeen.models; call pykeen_momok.install() after importing it")
    else:
        _when_complete(_MODELS, "model_resolver", lambda module: register_model_and_loss(module.model_resolver))
    _when_complete("pykeen.datasets.utils", "_cached_get_dataset", patch_dataset_cache)
