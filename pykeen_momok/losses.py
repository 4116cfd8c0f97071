"""MoMoK's training objective: one loss per head, summed (method doc, section 4): the paper's BCE, or a softmax CE.

How the per-head logits reach the loss
--------------------------------------
A PyKEEN training loop gives its loss the scores the model's score methods return, and nothing else.
In training, :class:`~pykeen_momok.model.MoMoK` returns the *mean* of its heads' logits, so that every
PyKEEN loss trains it on that mean. For :class:`MoMoKLoss`, which needs each head's logits, the model
keeps the per-head logits of its training forwards in a :class:`HeadLogitsRecord` and hands that record
to its loss (:attr:`MoMoKLoss.head_logits_source`; the loss never imports the model). The loss looks up
the per-head logits of the very scores it is given. What PyKEEN 1.11.1 does between score method and
loss, and how each case is recognised:

- LCWA (``training/lcwa.py``): ``score_t`` (``score_h`` too in the symmetric loop) returns ``(B, E)``
  scores, passed as they are to ``process_lcwa_scores``: *the same tensor*;
- sLCWA (``training/slcwa.py``): ``score_hrt`` of the positives, ``(B, 1)``, then of the negatives,
  ``(N, 1)``, ``.view``-ed to ``(B, K)`` (or ``(M,)`` when a filterer dropped some: the negatives are
  filtered *before* they are scored, so no score is ever dropped); then PyKEEN's pointwise
  ``process_slcwa_scores`` ``.view(-1)``-s both and concatenates them: *views*, then a *concatenation*.

A tensor that shares the memory of recorded scores (same first element, same number of elements, both
contiguous: the returned tensor or any view or reshape of it) gets that forward's per-head logits; a
tensor equal, value for value, to the flattened concatenation of the most recent forwards, in the order
they ran, gets their concatenated per-head logits. Nothing else matches: scores that cannot be traced
back (another model's, evaluation scores, a copy in another order) make :class:`MoMoKLoss` fail, saying
why, rather than train on the wrong logits. A lookup removes what it found (and anything older).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pykeen.losses import BCEWithLogitsLoss

__all__ = ["MoMoKLoss", "HEAD_LOSSES", "HeadLogitsRecord"]


class HeadLogitsRecord:
    """The per-head logits of a model's latest training forwards, until a loss takes them (see module docstring).

    A plain object, not a module: nothing of it is in a ``state_dict``, and pickling (PyKEEN's
    ``trained_model.pkl``) or copying keeps no recorded tensor.
    """

    #: how many forwards are kept: sLCWA scores positives and negatives in two forwards before its loss runs;
    #: older ones are dropped (the loss takes what it reads, so normally nothing is left over)
    capacity: ClassVar[int] = 2

    def __init__(self) -> None:
        """Initialize an empty record."""
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # (scores returned, per-head logits)

    def __len__(self) -> int:
        return len(self._pending)

    def __getstate__(self) -> dict[str, Any]:
        return {"_pending": []}

    def record(self, head_logits: torch.Tensor) -> torch.Tensor:
        """Keep ``head_logits`` and return the scores a model returns for them: their mean over heads.

        :param head_logits: shape: ``(num_heads, *shape)``
        :return: shape: ``shape``, the mean logit
        """
        scores = head_logits.mean(dim=0)
        self._pending = [*self._pending, (scores, head_logits)][-self.capacity :]
        return scores

    def clear(self) -> None:
        """Forget every recorded forward."""
        self._pending = []

    def find(self, scores: torch.Tensor) -> torch.Tensor | None:
        """The per-head logits behind ``scores``, shape ``(num_heads, *scores.shape)``, or None; keeps them."""
        found = self._find(scores)
        return None if found is None else found[1]

    def take(self, scores: torch.Tensor) -> torch.Tensor | None:
        """As :meth:`find`, and forget what was found and every forward recorded before it."""
        found = self._find(scores)
        if found is None:
            return None
        del self._pending[: found[0] + 1]
        return found[1]

    def _find(self, scores: torch.Tensor) -> tuple[int, torch.Tensor] | None:
        for index in range(len(self._pending) - 1, -1, -1):
            returned, heads = self._pending[index]
            if _same_elements(scores, returned):
                return index, heads.reshape(heads.shape[0], *scores.shape)
        for start in range(len(self._pending)):  # concatenations of the latest forwards, longest first
            part = self._pending[start:]
            if sum(returned.numel() for returned, _ in part) != scores.numel():
                continue
            flat = torch.cat([returned.reshape(-1) for returned, _ in part])
            if flat.dtype == scores.dtype and flat.device == scores.device and _identical(flat, scores.reshape(-1)):
                heads = torch.cat([h.reshape(h.shape[0], -1) for _, h in part], dim=1)
                return len(self._pending) - 1, heads.reshape(heads.shape[0], *scores.shape)
        return None


def _same_elements(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` and ``b`` hold the same elements of the same memory in the same order."""
    return (
        a.numel() == b.numel()
        and a.dtype == b.dtype
        and a.device == b.device
        and a.is_contiguous()
        and b.is_contiguous()
        and a.data_ptr() == b.data_ptr()
    )


def _identical(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` and ``b`` are equal element for element (NaN equal to NaN)."""
    return bool(torch.isclose(a, b, rtol=0.0, atol=0.0, equal_nan=True).all())


#: the per-head objectives :class:`MoMoKLoss` knows
HEAD_LOSSES = ("bce", "softmax")


class MoMoKLoss(BCEWithLogitsLoss):
    r"""The sum over MoMoK's heads of one loss per head: the paper's BCE, or a 1-vs-all softmax cross-entropy.

    With ``head_loss="bce"`` (the paper's, the default), over the ``E`` candidates of each query:

    .. math::

        \mathcal{L} = \sum_{m \in M \cup \{J\}} \operatorname{BCE}(\sigma(S_m), y'), \qquad
        y' = (1 - \epsilon) y + 1 / E

    The smoothing is the reference code's (it adds :math:`1/E` to every target), not PyKEEN's
    :func:`pykeen.losses.apply_label_smoothing`.

    With ``head_loss="softmax"`` (a training recipe, not the paper's: the "1-vs-all" cross-entropy of
    Lacroix et al., 2018, applied to every head), each head's logits over the candidates are a softmax
    distribution, trained towards the query's positives normalised to sum to one and smoothed towards the
    uniform distribution:

    .. math::

        \mathcal{L} = -\sum_{m \in M \cup \{J\}} \sum_{t} \tilde y_t \log \operatorname{softmax}(S_m)_t,
        \qquad \tilde y = (1 - \epsilon) \frac{y}{\lVert y \rVert_1} + \frac{\epsilon}{E}

    The model and its joint decision (the mean of the heads' sigmoids) are unchanged: only the gradient
    each head receives differs. Its reduction is over queries (``"mean"`` or ``"sum"``); with BCE it is
    over all query-candidate pairs. The softmax objective needs 1-N scoring (``training_loop="batchedlcwa"`` or
    ``"lcwa"``).
    A non-zero ``label_smoothing`` given to the training loop (``training_kwargs``) overrides the
    constructor's value.

    The per-head logits come from :attr:`head_logits_source`, which the MoMoK model sets (see the module
    docstring); scores whose heads it cannot find raise a :class:`TypeError`. sLCWA goes through PyKEEN's
    own pointwise ``process_slcwa_scores`` (flatten, concatenate, labels, weights), which then calls
    :meth:`process_lcwa_scores` here.
    ---
    name: MoMoK multi-head binary cross entropy
    """

    #: replaces the synonym inherited from BCEWithLogitsLoss, which would clash in ``loss_resolver``
    synonyms: ClassVar[set[str]] = {"MoMoK BCE"}

    hpo_default: ClassVar[Mapping[str, Any]] = dict(
        label_smoothing=dict(type=float, low=0.0, high=0.3, step=0.05),
    )

    #: where the per-head logits of the scores come from; MoMoK sets it to its own record at every training
    #: forward (a plain attribute, not a submodule: the loss holds no reference to the model itself)
    head_logits_source: HeadLogitsRecord | None = None

    def __init__(self, reduction: str = "mean", label_smoothing: float = 0.1, head_loss: str = "bce") -> None:
        r"""Initialize the loss.

        :param reduction: how to reduce each head's loss (``"mean"`` or ``"sum"``): over all query-candidate
            pairs with ``"bce"``, over queries with ``"softmax"``
        :param label_smoothing: the smoothing :math:`\epsilon` (reference: 0.1)
        :param head_loss: ``"bce"``, the paper's per-head binary cross-entropy, or ``"softmax"``, a 1-vs-all
            softmax cross-entropy per head (much faster to train; see the class docstring)
        :raises ValueError: for a smoothing outside ``[0, 1)``, an unknown reduction or head loss
        """
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        super().__init__(reduction=reduction)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if head_loss not in HEAD_LOSSES:
            raise ValueError(f"head_loss must be one of {HEAD_LOSSES}, got {head_loss!r}")
        self.label_smoothing = label_smoothing
        self.head_loss = head_loss

    def _multi_head(
        self,
        head_scores: torch.Tensor,
        labels: torch.Tensor,
        label_smoothing: float | None,
        num_entities: int | None,
        weights: torch.Tensor | None,
    ) -> torch.Tensor:
        """Sum over heads of the smoothed BCE; ``head_scores``: ``(H, *shape)``, ``labels``: ``shape``."""
        epsilon = label_smoothing if label_smoothing else self.label_smoothing
        if self.head_loss == "softmax":
            return self._softmax_heads(head_scores, labels, epsilon, weights)
        if epsilon:
            labels = (1.0 - epsilon) * labels + 1.0 / (num_entities or labels.shape[-1])
        # one head at a time: the (B, E) loss transient of all heads at once was the training peak of memory
        return sum(
            F.binary_cross_entropy_with_logits(scores, labels, weight=weights, reduction=self.reduction)
            for scores in head_scores
        )

    def _softmax_heads(
        self, head_scores: torch.Tensor, labels: torch.Tensor, epsilon: float, weights: torch.Tensor | None
    ) -> torch.Tensor:
        """Sum over heads of the 1-vs-all softmax cross-entropy.

        :param head_scores: shape ``(H, B, E)``
        :param labels: shape ``(B, E)``
        """
        if labels.ndimension() != 2:
            raise ValueError(
                "MoMoKLoss(head_loss='softmax') needs 1-N scores of shape (batch, num_entities): train with "
                f"training_loop='batchedlcwa' or 'lcwa' (got labels of shape {tuple(labels.shape)})"
            )
        if weights is not None:
            raise ValueError("MoMoKLoss(head_loss='softmax') does not support per-label weights")
        targets = F.normalize(labels, p=1, dim=-1)
        return sum(
            F.cross_entropy(scores, targets, label_smoothing=epsilon, reduction=self.reduction)
            for scores in head_scores
        )

    def process_lcwa_scores(  # noqa: D102
        self,
        predictions: torch.Tensor,
        labels: torch.Tensor,
        label_smoothing: float | None = None,
        num_entities: int | None = None,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self._multi_head(self._head_logits(predictions), labels, label_smoothing, num_entities, weights)

    def _head_logits(self, scores: torch.Tensor) -> torch.Tensor:
        """The per-head logits behind ``scores``, shape ``(num_heads, *scores.shape)``."""
        source = self.head_logits_source
        heads = None if source is None else source.take(scores)
        if heads is None:
            raise TypeError(
                "MoMoKLoss needs the per-head logits of the scores it is given, and finds none for these "
                + (
                    "(no model has handed it its per-head logits: use MoMoKLoss only as the loss of a MoMoK model)"
                    if source is None
                    else "(they are not the training scores of its MoMoK model, a view of them, or PyKEEN's "
                    "concatenation of its latest ones; see pykeen_momok.losses)"
                )
            )
        return heads
