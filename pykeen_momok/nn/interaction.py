"""The MoMoK interaction: relation-guided experts, joint-modality fusion, Tucker heads, joint decision."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence

import torch
from pykeen.nn.modules import Interaction
from torch import nn

from .experts import ModalityExperts
from .fusion import ModalityFusion
from .tucker import TuckerHead

__all__ = ["AUTOCAST_DTYPES", "MoMoKInteraction", "autocast_dtype_named", "full_precision", "joint_decision"]

#: the dtypes a training forward may autocast to (``MoMoKInteraction(autocast_dtype=...)``), by name. Not float16:
#: it needs a gradient scaler, which PyKEEN's training loops do not have.
AUTOCAST_DTYPES: dict[str, torch.dtype] = {"bfloat16": torch.bfloat16}


def joint_decision(head_logits: torch.Tensor) -> torch.Tensor:
    """Multi-modal joint decision (method doc, section 4): the mean of per-head sigmoid probabilities.

    :param head_logits: shape: ``(num_heads, *shape)``
    :return: shape: ``shape``, scores in (0, 1)
    """
    return torch.sigmoid(head_logits).mean(dim=0)


#: shape letters of the non-structural modalities' working vectors (``d`` is the structure's and the joint
#: dimension, ``r`` the per-modality relation dimension, ``s`` the size-1 temperature logit)
MODALITY_SHAPE_LETTERS = "efghijklmnopquvwxyzabc"


def autocast_dtype_named(name: str | None) -> torch.dtype | None:
    """The dtype of ``autocast_dtype=name`` (``None``: float32, no autocast), checked.

    :raises ValueError: naming the choices, for any other value
    """
    if name is not None and name not in AUTOCAST_DTYPES:
        raise ValueError(
            f"autocast_dtype must be None (float32, the reference) or one of {sorted(AUTOCAST_DTYPES)}, got {name!r}; "
            "float16 is not offered: it needs a gradient scaler, which PyKEEN's training loops do not have"
        )
    return None if name is None else AUTOCAST_DTYPES[name]


def full_precision(x: torch.Tensor) -> torch.Tensor:
    """``x`` as float32 if autocast gave it a 16-bit float dtype (losses and ranks want float32), else as it is."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _distinct_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The first row of every distinct value of ``rows`` ``(Q, k)``, and each row's group.

    :return: ``first`` ``(U,)``, the index of each distinct row's first occurrence, and ``index`` ``(Q,)`` with
        ``rows[first][index] == rows``; ``rows[first]`` keeps the gradient path (``torch.unique`` has none)
    """
    distinct, index = torch.unique(rows.detach(), dim=0, return_inverse=True)
    positions = torch.arange(rows.shape[0], device=rows.device)
    first = positions.new_full((distinct.shape[0],), rows.shape[0])
    return first.scatter_reduce_(0, index, positions, reduce="amin"), index


def _accumulated_decision(head_logits: Iterable[torch.Tensor]) -> torch.Tensor:
    """:func:`joint_decision` of logits produced one head at a time, summed in place (no stack, no gradient)."""
    out: torch.Tensor | None = None
    count = 0
    for logits in head_logits:
        probabilities = logits.sigmoid_()
        out = probabilities if out is None else out.add_(probabilities)
        count += 1
    assert out is not None
    return out.div_(count)


def _flatten(xs: Sequence[torch.Tensor], prefix: torch.Size) -> list[torch.Tensor]:
    """Broadcast every ``(*p, k)`` tensor to ``(*prefix, k)`` and flatten it to ``(prod(prefix), k)``."""
    return [x.expand(*prefix, x.shape[-1]).reshape(-1, x.shape[-1]) for x in xs]


class MoMoKInteraction(Interaction):
    r"""Scores MoMoK's heads: one Tucker head per base modality (structure first), plus the joint head.

    For a triple :math:`(h, r, t)` and base modalities :math:`m = 0, \dots, M` (structure first) the heads
    score

    .. math::

        S_m(h, r, t) = z_m(h, r) \cdot e_m(t), \qquad S_J(h, r, t) = z_J(h, r) \cdot e_J(t)

    where the *query* :math:`z_m(h, r)` is the modality's Tucker head applied to the experts' mixture of
    :math:`h` with the relation temperature :math:`\sigma(\theta_r)`, and the *candidate* :math:`e_m(t)` is the
    experts' plain mixture of :math:`t` (:math:`e_J`, :math:`z_J`: the fused joint vectors). The query side
    depends on :math:`(h, r)` only and the candidate side on :math:`t` only, so :meth:`forward` computes each
    once on its own broadcast prefix and scores with one product per head, as PyKEEN's
    :class:`~pykeen.nn.modules.ConvEInteraction` does.

    Representations (``entity_shape``, ``relation_shape``):

    - entities: the structural embedding ``(*, d)`` and every other modality's working vector ``(*, d_m)``
      (its adapter is part of the entity representation, see :mod:`pykeen_momok.nn.adapters`);
    - relations: the temperature logit :math:`\theta_r` ``(*, 1)`` and one ``(*, d_r)`` embedding per base
      modality.

    :meth:`combine` turns the per-head logits into scores: their mean in training (what a loss that knows
    nothing of heads trains on; the model also records them for :class:`~pykeen_momok.losses.MoMoKLoss`),
    the joint decision (mean sigmoid) in evaluation.
    """

    #: Where :meth:`forward` sends its per-head logits ``(H, *prefix)`` to become scores ``prefix`` instead of
    #: :meth:`combine`: :class:`~pykeen_momok.model.MoMoK` points it at the method that also records them for
    #: :class:`~pykeen_momok.losses.MoMoKLoss` in training, so PyKEEN's generic scoring paths train as the fast
    #: paths do.
    logits_sink: Callable[[torch.Tensor], torch.Tensor] | None = None
    #: the training forwards' autocast dtype, or None for float32 (see :meth:`autocast`); the class-level default
    #: keeps interactions pickled before the option existed loadable
    autocast_dtype: torch.dtype | None = None

    def __init__(
        self,
        entity_dim: int,
        relation_dim: int,
        modality_dims: Sequence[int] = (),
        num_experts: int = 3,
        expert_dropout: float = 0.0,
        expert_init: str = "normal",
        gating_noise: bool = True,
        gating_noise_epsilon: float = 0.01,
        fusion_heads: int = 2,
        fusion_dropout: float = 0.2,
        input_dropout: float = 0.3,
        core_dropout: float = 0.4,
        hidden_dropout: float = 0.5,
        fused: bool = True,
        core_contraction_path: str | None = None,
        autocast_dtype: str | None = None,
    ) -> None:
        """Initialize the interaction.

        :param entity_dim: the structural (and joint) dimension ``d``
        :param relation_dim: the per-modality relation dimension ``d_r``
        :param modality_dims: the working dimension ``d_m`` of every non-structural modality
        :param num_experts: ``K`` experts per modality
        :param expert_dropout: dropout inside each whitening expert (reference: 0)
        :param expert_init: initialisation of the expert matrices, ``"normal"`` (reference) or ``"identity"``
        :param gating_noise: whether to add the noisy-gating term in training
        :param gating_noise_epsilon: the noise floor added to the softplus
        :param fusion_heads: number of heads of the fusion layers
        :param fusion_dropout: dropout on the fusion layers' inputs
        :param input_dropout: Tucker input dropout (reference: 0.3)
        :param core_dropout: per-query dropout on the relation-specific core matrix (reference: 0.4)
        :param hidden_dropout: Tucker hidden dropout (reference: 0.5)
        :param fused: use the fused core contraction (``False``: the reference per-query way)
        :param core_contraction_path: ``"auto"``, ``"torch"`` or ``"triton"`` for every Tucker head's masked core
            contraction (see :mod:`pykeen_momok.nn.tucker`); ``None``: the process-wide setting
        :param autocast_dtype: ``"bfloat16"``: training forwards run under :func:`torch.autocast` to it (weights
            stay float32, logits are cast to float32); ``None`` (default, the reference): float32 throughout.
            Evaluation is always float32: bfloat16 keeps 8 significant bits, so near scores would tie in the ranks.
        :raises ValueError: for more modalities than there are shape letters, or an unknown ``autocast_dtype``
        """
        super().__init__()
        self.autocast_dtype = autocast_dtype_named(autocast_dtype)
        if len(modality_dims) > len(MODALITY_SHAPE_LETTERS):
            raise ValueError(f"at most {len(MODALITY_SHAPE_LETTERS)} feature modalities, got {len(modality_dims)}")
        self.dims = [entity_dim, *modality_dims]
        self.entity_shape = ("d", *MODALITY_SHAPE_LETTERS[: len(modality_dims)])
        self.relation_shape = ("s", *("r" * len(self.dims)))
        self.experts = nn.ModuleList(
            ModalityExperts(
                dim,
                num_experts=num_experts,
                expert_dropout=expert_dropout,
                init=expert_init,
                noisy_gating=gating_noise,
                noise_epsilon=gating_noise_epsilon,
            )
            for dim in self.dims
        )
        tucker = dict(
            input_dropout=input_dropout,
            core_dropout=core_dropout,
            hidden_dropout=hidden_dropout,
            fused=fused,
            contraction_path=core_contraction_path,
        )
        self.heads = nn.ModuleList(TuckerHead(dim, relation_dim, **tucker) for dim in self.dims)
        # With a single modality the "joint" head would repeat the structural one.
        self.joint = len(self.dims) > 1
        if self.joint:
            self.entity_fusion = ModalityFusion(self.dims, entity_dim, num_heads=fusion_heads, dropout=fusion_dropout)
            self.relation_fusion = ModalityFusion(
                [relation_dim] * len(self.dims), entity_dim, num_heads=fusion_heads, dropout=fusion_dropout
            )
            self.joint_head = TuckerHead(entity_dim, entity_dim, **tucker)

    def autocast(self, device_type: str) -> contextlib.AbstractContextManager:
        """:func:`torch.autocast` to :attr:`autocast_dtype` in training; a no-op without one and in evaluation."""
        if self.autocast_dtype is None or not self.training:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device_type, dtype=self.autocast_dtype)

    def relation_matrices_fit(self, count: int, dtype: torch.dtype = torch.float32) -> bool:
        """Whether ``count`` relations' core matrices ``(count, d_m, d_m)`` fit every base head's byte budget.

        A head over its budget (:attr:`~pykeen_momok.nn.tucker.TuckerHead.max_relation_matrix_bytes`) contracts per
        query instead. ``dtype``: the matrices' (the model's float dtype).
        """
        size = torch.empty((), dtype=dtype).element_size()
        return all(count * head.entity_dim**2 * size <= head.max_relation_matrix_bytes for head in self.heads)

    @property
    def num_heads(self) -> int:
        """The number of scoring heads (base modalities, plus the joint one when there are several)."""
        return len(self.dims) + int(self.joint)

    def reset_parameters(self) -> None:  # noqa: D102
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def queries(
        self,
        h: Sequence[torch.Tensor],
        theta: torch.Tensor,
        r: Sequence[torch.Tensor],
        r_index: torch.Tensor,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Compute each head's query vector for a batch of (head, relation) pairs.

        :param h: per base modality, shape ``(B, d_m)``: the query entities' working vectors
        :param theta: shape ``(B, 1)``: the relation temperature logits
        :param r: per base modality, shape ``(U, d_r)``: embeddings of the U distinct relations of the batch
        :param r_index: shape ``(B,)``: row of each query's relation in ``r``
        :return: the query vectors ``z`` per head, shape ``(B, d_head)``, and the experts' outputs per base
            modality, shape ``(B, K, d_m)`` (for the mutual-information term)
        """
        temperature = torch.sigmoid(theta)
        embedded, expert_outputs = [], []
        for experts, x in zip(self.experts, h, strict=True):
            e, outputs = experts(x, temperature=temperature)
            embedded.append(e)
            expert_outputs.append(outputs)
        z = [head(e, r_index, rel) for head, e, rel in zip(self.heads, embedded, r, strict=True)]
        if self.joint:
            # The relation fusion has its own dropout, drawn per query as in the reference, so the joint
            # head's relation vector differs per query and its core is contracted per query.
            fused_relation = self.relation_fusion([rel[r_index] for rel in r])
            z.append(self.joint_head(self.entity_fusion(embedded), r=fused_relation))
        return z, expert_outputs

    def candidates(self, t: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Candidate vectors per head, shape ``(N, d_head)``: experts without temperature, then fusion."""
        embedded = [experts(x)[0] for experts, x in zip(self.experts, t, strict=True)]
        if self.joint:
            embedded.append(self.entity_fusion(embedded))
        return embedded

    def expert_outputs(self, h: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The experts' outputs per base modality, shape ``(B, K, d_m)``."""
        return [experts.expert_outputs(x) for experts, x in zip(self.experts, h, strict=True)]

    @staticmethod
    def head_logits(z: Sequence[torch.Tensor], candidates: Sequence[torch.Tensor]) -> torch.Tensor:
        """All-candidates logits as matrix products, shape ``(H, B, N)`` (no ``B x N x d`` broadcast)."""
        return torch.stack([zi @ ci.t() for zi, ci in zip(z, candidates, strict=True)])

    @staticmethod
    def decision_scores(z: Sequence[torch.Tensor], candidates: Sequence[torch.Tensor]) -> torch.Tensor:
        """All-candidates joint decision, shape ``(B, N)``, without gradients.

        The same values as ``joint_decision(head_logits(z, candidates))``, accumulated head by head in place:
        no ``(H, B, N)`` stack and no second copy of it for the sigmoid.
        """
        if torch.is_grad_enabled():
            raise RuntimeError("decision_scores works in place; call it under torch.no_grad()")
        return _accumulated_decision(torch.mm(zi, ci.t()) for zi, ci in zip(z, candidates, strict=True))

    @staticmethod
    def pair_logits(z: Sequence[torch.Tensor], candidates: Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits of matched query/candidate rows, shape ``(H, B)``."""
        return torch.stack([(zi * ci).sum(dim=-1) for zi, ci in zip(z, candidates, strict=True)])

    def combine(self, head_logits: torch.Tensor) -> torch.Tensor:
        """Per-head logits ``(H, *shape)`` to scores, shape ``shape``: mean logit (training) or joint decision."""
        if self.training:
            return head_logits.mean(dim=0)
        return joint_decision(head_logits)

    def _query_candidate_pairs(
        self, h: Sequence[torch.Tensor], r: Sequence[torch.Tensor], t: Sequence[torch.Tensor]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per head: queries ``(*q_prefix, d_head)`` and candidates ``(*t_prefix, d_head)``.

        See :meth:`score_heads` for the arguments.
        """
        # PyKEEN passes a single representation as a bare tensor (structure-only models)
        h, t = ([x] if isinstance(x, torch.Tensor) else x for x in (h, t))
        query_prefix = torch.broadcast_shapes(h[0].shape[:-1], r[0].shape[:-1])
        h_rows, r_rows = _flatten(h, query_prefix), _flatten(r, query_prefix)
        first, index = _distinct_rows(torch.cat(r_rows[1:], dim=-1))
        z, _ = self.queries(h_rows, r_rows[0], [rows[first] for rows in r_rows[1:]], index)
        candidate_prefix = t[0].shape[:-1]
        candidates = self.candidates([x.reshape(-1, x.shape[-1]) for x in t])
        return [
            (zi.view(*query_prefix, -1), ci.view(*candidate_prefix, -1)) for zi, ci in zip(z, candidates, strict=True)
        ]

    def score_heads(
        self, h: Sequence[torch.Tensor], r: Sequence[torch.Tensor], t: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """Per-head logits of broadcast triples, shape ``(H, *prefix)``.

        The queries are computed once per element of the broadcast ``(h, r)`` prefix (the Tucker cores
        contracted once per distinct relation), the candidates once per element of the ``t`` prefix.

        :param h: per base modality, shape ``(*h_prefix, d_m)``
        :param r: the temperature logits ``(*r_prefix, 1)``, then per base modality ``(*r_prefix, d_r)``
        :param t: per base modality, shape ``(*t_prefix, d_m)``
        :return: shape ``(H, *prefix)`` with ``prefix`` the broadcast of the three prefixes
        """
        return torch.stack([torch.einsum("...d,...d->...", z, c) for z, c in self._query_candidate_pairs(h, r, t)])

    def forward(self, h: Sequence[torch.Tensor], r: Sequence[torch.Tensor], t: Sequence[torch.Tensor]) -> torch.Tensor:
        """Score broadcast triples (see :meth:`score_heads` for the shapes), combined by :meth:`combine`.

        :return: shape ``prefix``
        """
        if not self.training and not torch.is_grad_enabled():
            # evaluation: the joint decision accumulated head by head, without the (H, *prefix) logits
            pairs = self._query_candidate_pairs(h, r, t)
            return _accumulated_decision(torch.einsum("...d,...d->...", z, c) for z, c in pairs)
        with self.autocast(r[0].device.type):
            logits = full_precision(self.score_heads(h, r, t))
        return self.combine(logits) if self.logits_sink is None else self.logits_sink(logits)
