"""Modality input adapters: how a fixed feature matrix becomes a modality's working vectors.

MoMoK copies each non-structural modality's feature matrix ``X_m`` (``(E, f)``) into a *trainable*
embedding table (fine-tuned, not frozen). An adapter decides

1. what initialises that table (:meth:`ModalityAdapter.init_table`, applied once to the whole matrix), and
2. what is applied to looked-up table rows on every forward pass (:meth:`ModalityAdapter.forward`).

:meth:`ModalityAdapter.representation` assembles both into the modality's PyKEEN entity representation, whose
rows are the modality's working vectors: an :class:`~pykeen.nn.representation.Embedding` over the table, inside a
:class:`~pykeen.nn.representation.TransformedRepresentation` when the adapter is not the identity (as PyKEEN's
literal models assemble theirs), so the interaction never sees raw feature rows.

Two adapters are provided, resolvable by name through :data:`adapter_resolver`:

``"pooling"`` (:class:`PoolingAdapter`)
    the reference code's fixed per-dataset reshape + average pooling (after L2-normalising every row, as
    the reference ``train.py`` does); the table holds the pooled vectors, forward is the identity.
``"linear"`` (:class:`LinearAdapter`)
    the table holds the raw features, forward applies a learned ``nn.Linear`` projection (with bias) to the
    working dimension: the general default for user data of any width.

Reference pooling layouts (:data:`POOLING_LAYOUTS`, see :func:`reference_pool`):

================  =======  ===========  ==================================  =======
layout            in       view (h, w)  pooling                             out
================  =======  ===========  ==================================  =======
``db15k-image``   4096     64 x 64      ``AvgPool2d(4, stride=4)``          256
``text-12x64``    768      12 x 64      ``AdaptiveAvgPool2d((4, 64))``      256
``mkg-text``      384      12 x 32      ``AdaptiveAvgPool2d((4, 64))``      256 (up-samples the width)
``tiva-image``    2048     32 x 64      ``AdaptiveAvgPool2d((4, 64))``      256
``identity``      any      --           none                                in
================  =======  ===========  ==================================  =======

Dataset aliases: DB15K text, KVC16K image/text and FB15K-237 image/text use ``text-12x64``; MKG-W/Y images
use ``identity`` (383 as is); WN9 images use ``db15k-image``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch
import torch.nn.functional as F
from class_resolver import ClassResolver
from pykeen.nn.init import PretrainedInitializer
from pykeen.nn.representation import Embedding, Representation, TransformedRepresentation
from torch import nn

__all__ = [
    "FeatureTableInitializer",
    "PoolingLayout",
    "POOLING_LAYOUTS",
    "l2_normalize_rows",
    "reference_pool",
    "ModalityAdapter",
    "PoolingAdapter",
    "LinearAdapter",
    "adapter_resolver",
]


@dataclass(frozen=True)
class PoolingLayout:
    """A fixed reshape + 2-d average pooling of each feature row.

    :param in_dim: required feature width ``f`` (``None``: any width, only for the identity)
    :param view: ``(h, w)`` with ``h * w == in_dim``: each row is viewed as an ``h x w`` image
    :param kind: ``"avg"`` (``AvgPool2d(kernel, stride)``), ``"adaptive"`` (``AdaptiveAvgPool2d(output)``)
        or ``"identity"``
    :param kernel: the kernel size (``"avg"`` only); the stride equals the kernel
    :param output: the output size ``(h', w')`` (``"adaptive"`` only)
    """

    in_dim: int | None
    view: tuple[int, int] | None = None
    kind: str = "identity"
    kernel: int | None = None
    output: tuple[int, int] | None = None

    def out_dim(self, in_dim: int) -> int:
        """Return the pooled width for features of width ``in_dim``."""
        self.check(in_dim)
        if self.kind == "identity":
            return in_dim
        assert self.view is not None
        if self.kind == "avg":
            assert self.kernel is not None
            h, w = self.view
            return ((h - self.kernel) // self.kernel + 1) * ((w - self.kernel) // self.kernel + 1)
        assert self.output is not None
        return self.output[0] * self.output[1]

    def check(self, in_dim: int) -> None:
        """Raise :class:`ValueError` if features of width ``in_dim`` do not fit this layout."""
        if self.in_dim is not None and in_dim != self.in_dim:
            raise ValueError(
                f"this pooling layout needs features of width {self.in_dim} (viewed as {self.view[0]}x"
                f"{self.view[1]}), got width {in_dim}; use the 'identity' layout or a linear adapter"
                if self.view is not None
                else f"this pooling layout needs features of width {self.in_dim}, got {in_dim}"
            )


_TEXT_12X64 = PoolingLayout(in_dim=768, view=(12, 64), kind="adaptive", output=(4, 64))
_DB15K_IMAGE = PoolingLayout(in_dim=4096, view=(64, 64), kind="avg", kernel=4)
_MKG_TEXT = PoolingLayout(in_dim=384, view=(12, 32), kind="adaptive", output=(4, 64))
_TIVA_IMAGE = PoolingLayout(in_dim=2048, view=(32, 64), kind="adaptive", output=(4, 64))
_IDENTITY = PoolingLayout(in_dim=None)

#: Registry of the reference code's pooling layouts (read-only), with per-dataset aliases.
POOLING_LAYOUTS: Mapping[str, PoolingLayout] = MappingProxyType(
    {
        "identity": _IDENTITY,
        "db15k-image": _DB15K_IMAGE,
        "text-12x64": _TEXT_12X64,
        "mkg-text": _MKG_TEXT,
        "tiva-image": _TIVA_IMAGE,
        # aliases, named after the reference datasets
        "db15k-text": _TEXT_12X64,
        "mkg-image": _IDENTITY,
        "kvc16k-image": _TEXT_12X64,
        "kvc16k-text": _TEXT_12X64,
        "fb15k237-image": _TEXT_12X64,
        "fb15k237-text": _TEXT_12X64,
        "wn9-image": _DB15K_IMAGE,
    }
)


def _get_layout(layout: str | PoolingLayout) -> PoolingLayout:
    if isinstance(layout, PoolingLayout):
        return layout
    try:
        return POOLING_LAYOUTS[layout]
    except KeyError:
        raise ValueError(f"unknown pooling layout {layout!r}; known: {sorted(POOLING_LAYOUTS)}") from None


def l2_normalize_rows(features: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Divide every row by its Euclidean norm (``x / max(||x||_2, eps)``; all-zero rows stay zero).

    Each row is first divided by its largest absolute value: the squares of finite float32 values above
    ~1e19 overflow to inf (and the row would become 0), and those of values below ~1e-19 underflow to 0
    (and the row would not be scaled to unit length). The result is the same up to rounding.

    :param features: shape ``(n, f)``
    :param eps: the smallest norm divided by, after that scaling (only all-zero rows are below it)
    :return: shape ``(n, f)``
    """
    scale = features.abs().amax(dim=-1, keepdim=True)
    # all-zero rows keep their scale 1 (and stay zero)
    scaled = features / torch.where(scale > 0, scale, torch.ones_like(scale))
    return F.normalize(scaled, p=2.0, dim=-1, eps=eps)


def reference_pool(features: torch.Tensor, layout: str | PoolingLayout) -> torch.Tensor:
    """Apply a reference reshape + average pooling to every row of a feature matrix.

    This does *not* normalise; the reference L2-normalises rows first (see :func:`l2_normalize_rows`,
    :meth:`PoolingAdapter.init_table`).

    :param features: shape ``(n, f)``, floating point
    :param layout: a key of :data:`POOLING_LAYOUTS` or a :class:`PoolingLayout`
    :return: shape ``(n, f')`` with ``f' = layout.out_dim(f)``
    :raises ValueError: unknown layout, or ``f`` does not fit it
    """
    spec = _get_layout(layout)
    if features.dim() != 2:
        raise ValueError(f"expected a feature matrix of shape (n, f), got shape {tuple(features.shape)}")
    spec.check(features.shape[1])
    if spec.kind == "identity":
        return features
    if not features.is_floating_point():
        raise ValueError(f"pooling needs floating point features, got {features.dtype}")
    assert spec.view is not None
    n = features.shape[0]
    images = features.reshape(n, 1, *spec.view)
    if spec.kind == "avg":
        assert spec.kernel is not None
        pooled = F.avg_pool2d(images, kernel_size=spec.kernel, stride=spec.kernel)
    elif spec.kind == "adaptive":
        assert spec.output is not None
        pooled = F.adaptive_avg_pool2d(images, output_size=spec.output)
    else:  # pragma: no cover - guarded by the dataclass users
        raise ValueError(f"unknown pooling kind {spec.kind!r}")
    return pooled.reshape(n, -1)


class FeatureTableInitializer(PretrainedInitializer):
    """Initialise a feature table with a *copy* of the given tensor, at every reset.

    PyKEEN 1.11.1's :class:`~pykeen.nn.init.PretrainedInitializer` hands out its own tensor, so the
    embedding's weight then shares its storage; ``Model.reset_parameters_()`` (which every training loop
    calls before training) first resets the inner ``nn.Embedding`` in place with ``normal_`` and so overwrites
    the "pretrained" tensor itself, and the representation's own reset then copies that noise back:
    the features would be replaced by random values without any error.

    The price: the initializer keeps its own copy of each table, so a table is held twice in memory and in
    whole-model pickles (PyKEEN's ``trained_model.pkl``).
    """

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return super().__call__(x).clone()


class ModalityAdapter(nn.Module):
    """Base class: maps a feature matrix to a table initialiser, and table rows to working vectors.

    Subclasses set ``in_dim`` (feature width ``f``), ``table_dim`` (width of the trainable table) and
    ``out_dim`` (the modality's working dimension).
    """

    in_dim: int
    table_dim: int
    out_dim: int

    def init_table(self, features: torch.Tensor) -> torch.Tensor:
        """Return what initialises the trainable embedding table.

        :param features: shape ``(E, in_dim)``
        :return: shape ``(E, table_dim)``
        """
        raise NotImplementedError

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """Map looked-up table rows ``(n, table_dim)`` to working vectors ``(n, out_dim)``."""
        raise NotImplementedError

    #: whether :meth:`forward` returns its input (then the representation is the table itself)
    is_identity: bool = False

    def representation(self, features: torch.Tensor, trainable: bool = True) -> Representation:
        """The modality's entity representation: working vectors ``(E, out_dim)`` from a trainable table.

        :param features: the feature matrix, shape ``(E, in_dim)``
        :param trainable: whether the table is fine-tuned (the reference does)
        :return: an :class:`~pykeen.nn.representation.Embedding` over :meth:`init_table` (identity adapters),
            else a :class:`~pykeen.nn.representation.TransformedRepresentation` applying this adapter to it
        """
        table = self.init_table(features)
        base = Embedding(
            max_id=table.shape[0],
            shape=table.shape[1],
            initializer=FeatureTableInitializer(tensor=table),
            trainable=trainable,
        )
        if self.is_identity:
            return base
        # unique=False: PyKEEN would otherwise call torch.unique on every lookup's ids (it infers unique=True for a
        # transformed representation), and on a GPU that waits for the device; the adapter is cheap per row
        return TransformedRepresentation(transformation=self, base=base, unique=False)


class PoolingAdapter(ModalityAdapter):
    """The reference path: L2-normalise rows, pool once into the table; identity on every forward.

    :param in_dim: feature width ``f``
    :param layout: a key of :data:`POOLING_LAYOUTS` (default ``"identity"``)
    :param normalize: L2-normalise rows before pooling (reference: yes)
    """

    def __init__(self, in_dim: int, layout: str = "identity", normalize: bool = True) -> None:
        super().__init__()
        self.layout = layout
        self.spec = _get_layout(layout)
        self.in_dim = in_dim
        self.out_dim = self.spec.out_dim(in_dim)
        self.table_dim = self.out_dim
        self.normalize = normalize

    def extra_repr(self) -> str:  # noqa: D102
        return f"in_dim={self.in_dim}, layout={self.layout!r}, out_dim={self.out_dim}, normalize={self.normalize}"

    def init_table(self, features: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if features.dim() != 2 or features.shape[1] != self.in_dim:
            raise ValueError(f"expected features of shape (E, {self.in_dim}), got {tuple(features.shape)}")
        if self.normalize:
            features = l2_normalize_rows(features)
        return reference_pool(features, self.spec).clone()

    is_identity = True

    def forward(self, rows: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return rows


class LinearAdapter(ModalityAdapter):
    """A learned projection ``rows @ A^T + c`` (``nn.Linear`` with bias) applied on every forward.

    The trainable table is initialised with the features themselves (optionally L2-normalised).

    :param in_dim: feature width ``f``
    :param out_dim: working dimension
    :param normalize: L2-normalise rows for the table initialiser (default: no, the raw features)
    """

    def __init__(self, in_dim: int, out_dim: int, normalize: bool = False) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.table_dim = in_dim
        self.out_dim = out_dim
        self.normalize = normalize
        self.linear = nn.Linear(in_dim, out_dim, bias=True)

    def init_table(self, features: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if features.dim() != 2 or features.shape[1] != self.in_dim:
            raise ValueError(f"expected features of shape (E, {self.in_dim}), got {tuple(features.shape)}")
        if self.normalize:
            features = l2_normalize_rows(features)
        return features.clone()

    def forward(self, rows: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.linear(rows)


#: Resolves ``"pooling"`` / ``"linear"`` (or the classes) to adapters; the default is ``"linear"``.
adapter_resolver: ClassResolver[ModalityAdapter] = ClassResolver(
    [PoolingAdapter, LinearAdapter],
    base=ModalityAdapter,
    default=LinearAdapter,
    suffix="Adapter",
)
