"""The MoMoK interaction: relation-guided experts, joint-modality fusion, Tucker heads, joint decision."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pykeen.nn.modules import Interaction
from torch import nn

from .experts import ModalityExperts
from .fusion import ModalityFusion
from .tucker import TuckerHead

__all__ = ["MoMoKInteraction", "joint_decision"]


def joint_decision(head_logits: torch.Tensor) -> torch.Tensor:
    """Multi-modal joint decision (method doc, section 4): the mean of per-head sigmoid probabilities.

    :param head_logits: shape: ``(num_heads, *shape)``
    :return: shape: ``shape``, scores in (0, 1)
    """
    return torch.sigmoid(head_logits).mean(dim=0)


class MoMoKInteraction(Interaction):
    r"""Scores MoMoK's heads: one Tucker head per base modality (structure first), plus the joint head.

    Entity representations arrive as one tensor per base modality: the structural embedding
    ``(n, d)`` and, for every other modality, its (trainable) feature table row ``(n, f_m)``, which the
    modality's adapter turns into the working vector ``(n, d_m)``. Relation representations are the
    temperature logit :math:`\theta_r` ``(n, 1)`` and one ``(n, d_r)`` embedding per base modality.

    :meth:`combine` turns the per-head logits into scores: their mean in training (what a loss that knows
    nothing of heads trains on; the model also records them for :class:`~pykeen_momok.losses.MoMoKLoss`),
    the joint decision (mean sigmoid) in evaluation.
    """

    def __init__(
        self,
        entity_dim: int,
        relation_dim: int,
        modality_dims: Sequence[int],
        adapters: Sequence[nn.Module],
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
    ) -> None:
        """Initialize the interaction.

        :param entity_dim: the structural (and joint) dimension ``d``
        :param relation_dim: the per-modality relation dimension ``d_r``
        :param modality_dims: the working dimension ``d_m`` of every non-structural modality
        :param adapters: one input adapter per non-structural modality (``out_dim == d_m``)
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
        """
        super().__init__()
        if len(adapters) != len(modality_dims):
            raise ValueError(f"{len(adapters)} adapters for {len(modality_dims)} modalities")
        self.dims = [entity_dim, *modality_dims]
        self.entity_shape = tuple(f"m{i}" for i in range(len(self.dims)))
        self.relation_shape = ("g", *(f"r{i}" for i in range(len(self.dims))))
        self.adapters = nn.ModuleList([nn.Identity(), *adapters])
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
        tucker = dict(input_dropout=input_dropout, core_dropout=core_dropout, hidden_dropout=hidden_dropout, fused=fused)
        self.heads = nn.ModuleList(TuckerHead(dim, relation_dim, **tucker) for dim in self.dims)
        # With a single modality the "joint" head would repeat the structural one.
        self.joint = len(self.dims) > 1
        if self.joint:
            self.entity_fusion = ModalityFusion(self.dims, entity_dim, num_heads=fusion_heads, dropout=fusion_dropout)
            self.relation_fusion = ModalityFusion(
                [relation_dim] * len(self.dims), entity_dim, num_heads=fusion_heads, dropout=fusion_dropout
            )
            self.joint_head = TuckerHead(entity_dim, entity_dim, **tucker)

    @property
    def num_heads(self) -> int:
        """The number of scoring heads (base modalities, plus the joint one when there are several)."""
        return len(self.dims) + int(self.joint)

    def reset_parameters(self) -> None:  # noqa: D102
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def working_vectors(self, x: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Apply each modality's adapter: raw rows ``(n, f_m)`` to working vectors ``(n, d_m)``."""
        return [adapter(rows) for adapter, rows in zip(self.adapters, x, strict=True)]

    def queries(
        self,
        h: Sequence[torch.Tensor],
        theta: torch.Tensor,
        r: Sequence[torch.Tensor],
        r_index: torch.Tensor,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Compute each head's query vector for a batch of (head, relation) pairs.

        :param h: per base modality, shape ``(B, f_m)``: the query entities' raw rows
        :param theta: shape ``(B, 1)``: the relation temperature logits
        :param r: per base modality, shape ``(U, d_r)``: embeddings of the U distinct relations of the batch
        :param r_index: shape ``(B,)``: row of each query's relation in ``r``
        :return: the query vectors ``z`` per head, shape ``(B, d_head)``, and the experts' outputs per base
            modality, shape ``(B, K, d_m)`` (for the mutual-information term)
        """
        temperature = torch.sigmoid(theta)
        embedded, expert_outputs = [], []
        for experts, x in zip(self.experts, self.working_vectors(h), strict=True):
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
        embedded = [experts(x)[0] for experts, x in zip(self.experts, self.working_vectors(t), strict=True)]
        if self.joint:
            embedded.append(self.entity_fusion(embedded))
        return embedded

    def expert_outputs(self, h: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The experts' outputs per base modality, shape ``(B, K, d_m)``."""
        return [
            experts.expert_outputs(x) for experts, x in zip(self.experts, self.working_vectors(h), strict=True)
        ]

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
        out: torch.Tensor | None = None
        for zi, ci in zip(z, candidates, strict=True):
            probabilities = torch.mm(zi, ci.t()).sigmoid_()
            out = probabilities if out is None else out.add_(probabilities)
        assert out is not None
        return out.div_(len(z))

    @staticmethod
    def pair_logits(z: Sequence[torch.Tensor], candidates: Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits of matched query/candidate rows, shape ``(H, B)``."""
        return torch.stack([(zi * ci).sum(dim=-1) for zi, ci in zip(z, candidates, strict=True)])

    def combine(self, head_logits: torch.Tensor) -> torch.Tensor:
        """Per-head logits ``(H, *shape)`` to scores, shape ``shape``: mean logit (training) or joint decision."""
        if self.training:
            return head_logits.mean(dim=0)
        return joint_decision(head_logits)

    def forward(self, h, r, t):  # noqa: D102
        # The generic broadcasting entry point of PyKEEN's Interaction: every (h, r, t) combination of
        # the broadcast shape is scored as its own triple. MoMoK's model uses the faster methods above.
        prefix = torch.broadcast_shapes(h[0].shape[:-1], r[0].shape[:-1], t[0].shape[:-1])

        def flat(xs):
            return [x.expand(*prefix, x.shape[-1]).reshape(-1, x.shape[-1]) for x in xs]

        h, r, t = flat(h), flat(r), flat(t)
        z, _ = self.queries(h, r[0], r[1:], torch.arange(h[0].shape[0], device=h[0].device))
        return self.combine(self.pair_logits(z, self.candidates(t)).view(-1, *prefix))
