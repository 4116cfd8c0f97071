"""MoMoK's training objective: one binary cross-entropy per head, summed (method doc, section 4)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pykeen.losses import BCEWithLogitsLoss

__all__ = ["MoMoKLoss", "HEAD_LOSSES", "HEAD_SCORES_ATTRIBUTE", "attach_head_scores", "get_head_scores"]

#: Name of the attribute under which MoMoK attaches per-head logits to the scores it returns in training.
HEAD_SCORES_ATTRIBUTE = "momok_head_scores"


def attach_head_scores(head_scores: torch.Tensor) -> torch.Tensor:
    """Return the mean over heads of ``head_scores`` with the per-head logits attached to it.

    :param head_scores: shape: ``(num_heads, *shape)``, the logits of each head
    :return: shape: ``shape``; a loss that knows nothing of heads trains on this mean logit, while
        :class:`MoMoKLoss` reads the attached per-head logits (also through one ``.view``, which is what
        PyKEEN's sLCWA loop applies to negative scores)
    """
    scores = head_scores.mean(dim=0)
    setattr(scores, HEAD_SCORES_ATTRIBUTE, head_scores)
    return scores


def get_head_scores(scores: torch.Tensor) -> torch.Tensor:
    """Return the per-head logits behind ``scores``, shape ``(num_heads, *scores.shape)``."""
    for candidate in (scores, scores._base):
        heads = getattr(candidate, HEAD_SCORES_ATTRIBUTE, None) if candidate is not None else None
        if heads is not None:
            return heads.reshape(heads.shape[0], *scores.shape)
    raise TypeError(
        "MoMoKLoss needs the per-head logits that MoMoK attaches to the scores it returns in training mode, "
        "but the scores it got carry none: use MoMoKLoss only with the MoMoK model."
    )


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
    over all query-candidate pairs. The softmax objective needs 1-N scoring (``training_loop="lcwa"``).
    A non-zero ``label_smoothing`` given to the training loop (``training_kwargs``) overrides the
    constructor's value.
    ---
    name: MoMoK multi-head binary cross entropy
    """

    #: replaces the synonym inherited from BCEWithLogitsLoss, which would clash in ``loss_resolver``
    synonyms: ClassVar[set[str]] = {"MoMoK BCE"}

    hpo_default: ClassVar[Mapping[str, Any]] = dict(
        label_smoothing=dict(type=float, low=0.0, high=0.3, step=0.05),
    )

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
        """Sum over heads of the 1-vs-all softmax cross-entropy; ``head_scores``: ``(H, B, E)``, ``labels``: ``(B, E)``."""
        if labels.ndimension() != 2:
            raise ValueError(
                "MoMoKLoss(head_loss='softmax') needs 1-N scores of shape (batch, num_entities): train with "
                f"training_loop='lcwa' (got labels of shape {tuple(labels.shape)})"
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
        return self._multi_head(get_head_scores(predictions), labels, label_smoothing, num_entities, weights)

    def process_slcwa_scores(  # noqa: D102
        self,
        positive_scores: torch.Tensor,
        negative_scores: torch.Tensor,
        label_smoothing: float | None = None,
        batch_filter: torch.Tensor | None = None,
        num_entities: int | None = None,
        pos_weights: torch.Tensor | None = None,
        neg_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        positive = get_head_scores(positive_scores).flatten(start_dim=1)
        negative = get_head_scores(negative_scores).flatten(start_dim=1)
        predictions = torch.cat([positive, negative], dim=1)
        labels = torch.cat([positive.new_ones(positive.shape[1]), negative.new_zeros(negative.shape[1])])
        weights = None
        if pos_weights is not None or neg_weights is not None:
            weights = torch.ones_like(labels)
            if pos_weights is not None:
                weights[: positive.shape[1]] = pos_weights.reshape(-1)
            if neg_weights is not None:
                weights[positive.shape[1] :] = neg_weights.reshape(-1)
        return self._multi_head(predictions, labels, label_smoothing, num_entities, weights)


# Last line on purpose: PyKEEN may call back into the registration while this module is half imported.
from .registration import register_if_ready  # noqa: E402

register_if_ready()
