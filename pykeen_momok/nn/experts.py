"""Relation-guided modality knowledge experts (ReMoKE).

For one modality with working dimension ``d`` there are ``K`` *parametric whitening* experts

.. math::

    V_i(x) = W_i\\,(\\mathrm{dropout}(x) - b_i), \\qquad W_i \\in \\mathbb{R}^{d \\times d},\\ b_i \\in \\mathbb{R}^d

(``W_i`` initialised :math:`\\mathcal{N}(0, 0.02^2)` as in the reference, or :math:`I + \\mathcal{N}(0, 0.02^2)` with
``init="identity"``; ``b_i`` zero, no bias after the product) and a
noisy gate

.. math::

    g = x U, \\qquad g' = g + \\varepsilon \\odot (\\mathrm{softplus}(x U') + \\epsilon_{noise}),
    \\ \\varepsilon \\sim \\mathcal{N}(0, 1) \\text{ (training only)}

with ``U, U'`` initialised to zero. The gate weights are :math:`\\alpha = \\mathrm{softmax}(g' / \\tau)`
where the caller passes the relation temperature :math:`\\tau = \\sigma(\\theta_r)` for query entities
and nothing (plain softmax) for the candidate entities, as the reference code does.
The modality embedding is :math:`\\sum_i \\alpha_i V_i(x)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EXPERT_INITS", "ModalityExperts"]

#: the initialisations of the expert matrices :class:`ModalityExperts` knows
EXPERT_INITS = ("normal", "identity")


class ModalityExperts(nn.Module):
    """``K`` parametric-whitening experts of one modality with a noisy, temperature-scaled softmax gate.

    All experts are evaluated at once with a single ``einsum`` over the stacked weights.

    :param dim: the modality's working dimension ``d`` (experts map ``d -> d``)
    :param num_experts: ``K``, the number of experts (reference: 3)
    :param expert_dropout: dropout rate on the expert input (reference: 0.0). As in the reference, where
        every expert owns its own dropout layer, each expert sees an independently dropped copy of ``x``.
    :param noisy_gating: add the learned gate noise in training mode (reference: True)
    :param noise_epsilon: the constant added to the noise standard deviation (reference: 0.01)
    :param init: ``"normal"``: :math:`W_i \\sim \\mathcal{N}(0, 0.02^2)` (reference); ``"identity"``:
        :math:`W_i = I + \\mathcal{N}(0, 0.02^2)`, so every expert starts as a plain centring. A feature
        modality's score is a product of several learned matrices (adapter, experts, Tucker core, and the
        candidate side's adapter and experts); starting the experts near zero makes that product's
        gradients vanish, and such a head learns nothing for thousands of steps.
    """

    #: (K, d_out, d_in) expert matrices W_i
    weight: nn.Parameter
    #: (K, d_in) whitening biases b_i
    bias: nn.Parameter
    #: (d, K) clean gate projection U
    w_gate: nn.Parameter
    #: (d, K) noise projection U'
    w_noise: nn.Parameter

    def __init__(
        self,
        dim: int,
        num_experts: int = 3,
        expert_dropout: float = 0.0,
        noisy_gating: bool = True,
        noise_epsilon: float = 0.01,
        init: str = "normal",
    ) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        if num_experts < 1:
            raise ValueError(f"num_experts must be positive, got {num_experts}")
        if not 0.0 <= expert_dropout < 1.0:
            raise ValueError(f"expert_dropout must lie in [0, 1), got {expert_dropout}")
        self.dim = dim
        self.num_experts = num_experts
        self.expert_dropout = float(expert_dropout)
        self.noisy_gating = noisy_gating
        self.noise_epsilon = float(noise_epsilon)
        if init not in EXPERT_INITS:
            raise ValueError(f"init must be one of {EXPERT_INITS}, got {init!r}")
        self.init = init
        self.weight = nn.Parameter(torch.empty(num_experts, dim, dim))
        self.bias = nn.Parameter(torch.zeros(num_experts, dim))
        self.w_gate = nn.Parameter(torch.zeros(dim, num_experts))
        self.w_noise = nn.Parameter(torch.zeros(dim, num_experts))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise: ``W ~ N(0, 0.02^2)`` (plus ``I`` with ``init="identity"``), ``b = 0``, ``U = U' = 0``."""
        with torch.no_grad():
            self.weight.normal_(mean=0.0, std=0.02)
            if self.init == "identity":
                self.weight.add_(torch.eye(self.dim, dtype=self.weight.dtype, device=self.weight.device))
            self.bias.zero_()
            self.w_gate.zero_()
            self.w_noise.zero_()

    def extra_repr(self) -> str:  # noqa: D102
        return (
            f"dim={self.dim}, num_experts={self.num_experts}, expert_dropout={self.expert_dropout}, "
            f"noisy_gating={self.noisy_gating}, noise_epsilon={self.noise_epsilon}, init={self.init!r}"
        )

    def expert_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluate every expert.

        :param x: shape ``(n, d)``
        :return: shape ``(n, K, d)``, entry ``[:, i]`` is :math:`V_i(x) = W_i (\\mathrm{dropout}(x) - b_i)`
        """
        if self.training and self.expert_dropout > 0.0:
            # independent dropout mask per expert, as with one nn.Dropout per expert in the reference
            xk = F.dropout(x.unsqueeze(1).expand(-1, self.num_experts, -1), p=self.expert_dropout, training=True)
            return torch.einsum("nki,koi->nko", xk - self.bias, self.weight)
        # W_i (x - b_i) = W_i x - W_i b_i: one GEMM for all experts, the bias term is (K, d) only
        out = torch.einsum("ni,koi->nko", x, self.weight)
        return out - torch.einsum("ki,koi->ko", self.bias, self.weight)

    def gate_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Return the gate logits ``g'`` of shape ``(n, K)`` (noisy in training mode when enabled)."""
        logits = x @ self.w_gate
        if self.noisy_gating and self.training:
            noise_std = F.softplus(x @ self.w_noise) + self.noise_epsilon
            logits = logits + torch.randn_like(logits) * noise_std
        return logits

    def gates(self, x: torch.Tensor, temperature: torch.Tensor | None = None) -> torch.Tensor:
        """Return the gate weights ``alpha = softmax(g' / temperature)`` of shape ``(n, K)``.

        :param x: shape ``(n, d)``
        :param temperature: shape ``(n, 1)`` (or broadcastable), e.g. ``sigmoid(theta_r)``; ``None``: plain softmax
        """
        logits = self.gate_logits(x)
        if temperature is not None:
            logits = logits / temperature
        return torch.softmax(logits, dim=-1)

    def forward(self, x: torch.Tensor, temperature: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix the experts.

        :param x: modality input, shape ``(n, d)``
        :param temperature: shape ``(n, 1)``: the relation temperature ``sigmoid(theta_r)`` of each row;
            ``None`` for a plain softmax (candidate entities)
        :return: ``(mixed, experts)``: ``sum_i alpha_i V_i(x)`` of shape ``(n, d)`` and the expert outputs
            of shape ``(n, K, d)``
        """
        if x.dim() != 2 or x.shape[-1] != self.dim:
            raise ValueError(f"expected x of shape (n, {self.dim}), got {tuple(x.shape)}")
        alpha = self.gates(x, temperature)
        experts = self.expert_outputs(x)
        # a broadcast product and a sum over K: on CPU about twice as fast as a bmm of (n, 1, K) x (n, K, d)
        mixed = (alpha.unsqueeze(-1) * experts).sum(dim=1)
        return mixed, experts
