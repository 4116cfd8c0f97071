"""Joint-modality fusion (used for entities and for relations).

For head ``h`` and modality ``m``

.. math::

    v_{h,m} = \\mathrm{ReLU}(\\mathrm{Linear}_{h,m}(\\mathrm{Dropout}(x_m))) \\in \\mathbb{R}^{d}, \\qquad
    \\beta_{h,\\cdot} = \\mathrm{softmax}_m(a^\\top v_{h,m}), \\qquad
    e_J = \\sum_h \\sum_m \\beta_{h,m} v_{h,m}

with one bias-free attention vector ``a`` shared by all heads and modalities (reference
``ModalFusionLayer.ent_attn``) and the heads *summed* (not averaged), as in the reference.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

__all__ = ["ModalityFusion"]


class ModalityFusion(nn.Module):
    """Multi-head attention fusion of any number (>= 1) of modality vectors into one ``out_dim`` vector.

    :param in_dims: the input width ``d_m`` of every modality, in the order ``forward`` receives them
    :param out_dim: the common (output) dimension ``d``
    :param num_heads: number of heads, each with its own per-modality linears (reference: 2)
    :param dropout: dropout on each modality input before its linear (reference: 0.2)
    """

    #: the attention weights of the last forward pass, shape ``(n, num_heads, num_modalities)`` (detached)
    last_attention: torch.Tensor | None

    def __init__(self, in_dims: Sequence[int], out_dim: int, num_heads: int = 2, dropout: float = 0.2) -> None:
        super().__init__()
        in_dims = [int(d) for d in in_dims]
        if not in_dims:
            raise ValueError("at least one modality is needed")
        if num_heads < 1:
            raise ValueError(f"num_heads must be positive, got {num_heads}")
        self.in_dims = tuple(in_dims)
        self.out_dim = out_dim
        self.num_heads = num_heads
        self.dropout = nn.Dropout(p=dropout)
        # projections[h][m]: Linear(d_m, out_dim) with bias
        self.projections = nn.ModuleList(
            nn.ModuleList(nn.Linear(d, out_dim) for d in in_dims) for _ in range(num_heads)
        )
        self.attention = nn.Linear(out_dim, 1, bias=False)
        self.last_attention = None

    def extra_repr(self) -> str:  # noqa: D102
        return f"in_dims={self.in_dims}, out_dim={self.out_dim}, num_heads={self.num_heads}"

    def _heads(self, inputs: Sequence[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Per head: the projected modality vectors ``v`` ``(n, M, d)`` and their attention weights ``(n, M)``."""
        if len(inputs) != len(self.in_dims):
            raise ValueError(f"expected {len(self.in_dims)} modality inputs, got {len(inputs)}")
        for head in self.projections:
            # (n, M, d): one ReLU(Linear(Dropout(x_m))) per modality; dropout drawn per head and modality
            v = torch.stack([torch.relu(lin(self.dropout(x))) for lin, x in zip(head, inputs)], dim=1)
            yield v, torch.softmax(self.attention(v).squeeze(-1), dim=-1)

    def attention_weights(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """The attention weights :math:`\\beta` that :meth:`forward` would use, without fusing (read-only).

        Nothing is stored (:attr:`last_attention` stays as it is). In training mode the inputs' dropout applies,
        as in :meth:`forward`; call it in eval mode for the weights a trained model ranks with.

        :param inputs: one tensor per modality, shapes ``(n, d_m)`` in the order of ``in_dims``
        :return: shape ``(n, num_heads, num_modalities)``, each ``[i, h]`` sums to one
        """
        return torch.stack([beta for _, beta in self._heads(inputs)], dim=1)

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Fuse the modality vectors.

        :param inputs: one tensor per modality, shapes ``(n, d_m)`` in the order of ``in_dims``
        :return: shape ``(n, out_dim)``; the attention weights are kept in :attr:`last_attention`, except while
            ``torch.compile`` traces the call (an attribute set inside an activation checkpoint breaks its graph)
        """
        out: torch.Tensor | None = None
        weights = []
        for v, beta in self._heads(inputs):
            context = (beta.unsqueeze(-1) * v).sum(dim=1)  # (n, d); faster than a bmm of (n, 1, M) x (n, M, d)
            out = context if out is None else out + context
            weights.append(beta.detach())
        if not torch.compiler.is_compiling():
            self.last_attention = torch.stack(weights, dim=1)
        assert out is not None
        return out
