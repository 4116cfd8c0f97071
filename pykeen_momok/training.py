"""The mutual-information term and the estimator's own optimisation step (method doc, section 5).

PyKEEN's training loops know nothing of a second optimiser. MoMoK wires it in through two hooks that
every PyKEEN loop (LCWA and sLCWA alike) already calls, so a plain ``pipeline(...)`` call trains the
estimator with nothing for the user to remember:

- ``Model.collect_regularization_term()`` after each forward pass: adds ``mu * mean_m CLUB_m``;
- ``Model.post_parameter_update()`` right after each ``optimizer.step()``: the estimator's own Adam step
  on expert outputs recomputed, without gradients, from the *updated* model (as the reference does).

The estimator lives inside the model (so its weights are in ``state_dict`` and in PyKEEN checkpoints),
its Adam state rides along as the module's ``extra_state``, and ``MoMoK.get_grad_params`` leaves its
parameters out of the main optimiser.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .nn.club import ExpertMIRegularizer
from .nn.tucker import autocast_disabled

__all__ = ["MutualInformationTerm"]


class MutualInformationTerm(nn.Module):
    """``weight * mean_m CLUB(V_{m,i}; V_{m,j})`` plus the CLUB estimator's own optimiser."""

    def __init__(
        self,
        dims: Sequence[int],
        weight: float,
        lr: float,
        hidden_dim: int | None = None,
        fused: bool = True,
        pair_draw: str = "host",
    ) -> None:
        """Initialize the term.

        :param dims: the working dimension of each base modality whose experts are disentangled
        :param weight: the weight :math:`\\mu` of the penalty in the model's loss
        :param lr: the learning rate of the estimator's Adam optimiser (reference: the model's)
        :param hidden_dim: the estimator's hidden size (``None``: the regularizer's default)
        :param fused: the estimator's Adam runs PyTorch's fused kernel (``Adam(fused=True)``: one pass over every
            parameter per update, on CPU and CUDA alike); ``False``: PyTorch's default implementation (one tensor
            at a time on CPU, multi-tensor ``foreach`` on CUDA). The same update, other rounding in the last bits.
        :param pair_draw: where the estimator draws its expert pairs, ``"host"`` or ``"device"``
            (:class:`~pykeen_momok.nn.club.ExpertMIRegularizer`)
        """
        super().__init__()
        hidden_dims = None if hidden_dim is None else [hidden_dim] * len(dims)
        self.estimator = ExpertMIRegularizer(list(dims), hidden_dims=hidden_dims, pair_draw=pair_draw)
        self.weight = weight
        self.lr = lr
        # fused=None, not False: an explicit False would also turn off CUDA's foreach default
        self.optimizer = torch.optim.Adam(self.estimator.parameters(), lr=lr, fused=True if fused else None)
        self._penalties: list[torch.Tensor] = []
        self._queries: list[torch.Tensor] = []

    def record(self, expert_outputs: Sequence[torch.Tensor], query_entities: torch.Tensor) -> None:
        """Remember one forward pass: its penalty (with gradient) and its query entities.

        The penalty is computed in the estimator's dtype, also under a caller's autocast (a difference of
        log-likelihoods, which 16-bit floats would round away).
        """
        dtype = next(self.estimator.parameters()).dtype
        with autocast_disabled(query_entities.device.type):
            self._penalties.append(self.estimator([o.to(dtype) for o in expert_outputs]))
        self._queries.append(query_entities.detach())

    def collect(self) -> torch.Tensor | float:
        """The weighted penalty of the passes since the last call (mean over passes)."""
        if not self._penalties:
            return 0.0
        penalty = torch.stack(self._penalties).mean()
        self._penalties.clear()
        return self.weight * penalty

    def estimator_step(
        self, expert_outputs_of: Callable[[torch.Tensor], Sequence[torch.Tensor]]
    ) -> torch.Tensor | None:
        """Take one estimator step on the remembered query entities, then forget them.

        :param expert_outputs_of: maps entity ids ``(n,)`` to the experts' outputs per base modality
            ``(n, K, d_m)``; called under ``torch.no_grad()``, so the model cannot receive gradients
        :return: the estimator's loss (a detached scalar tensor on the model's device), or ``None`` when there was
            nothing to learn from
        """
        self._penalties.clear()
        if not self._queries:
            return None
        queries = torch.cat(self._queries)
        self._queries.clear()
        with torch.no_grad():
            outputs = [o.detach() for o in expert_outputs_of(queries)]
        with torch.enable_grad():
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.estimator.estimator_loss(outputs)
            loss.backward()
            self.optimizer.step()
        # the main loss also leaves gradients on the estimator; they must not leak into later steps
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()  # not .item(): that would make every training step wait for the device

    def get_extra_state(self) -> Any:  # noqa: D102
        return {"optimizer": self.optimizer.state_dict()}

    def set_extra_state(self, state: Any) -> None:  # noqa: D102
        # a copy: Optimizer.load_state_dict keeps the given tensors where no cast is needed, so loading another live
        # model's state_dict() would share (and step) one Adam state between the two; parameters are copied too
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
