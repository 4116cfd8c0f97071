"""CLUB mutual-information upper bound, used to disentangle the experts of each modality (ExID).

Following the reference ``CLUBSample`` (``models/modules.py``): a diagonal Gaussian
:math:`q(y|x) = \\mathcal{N}(\\mu(x), \\mathrm{diag}(e^{\\ell(x)}))` with

* :math:`\\mu`: ``Linear(x_dim, h/2) -> ReLU -> Linear(h/2, y_dim)``
* :math:`\\ell` (log-variance): ``Linear(x_dim, h/2) -> ReLU -> Linear(h/2, y_dim) -> Tanh``

and the *sampled* CLUB estimate with negatives from a random permutation of the batch:

.. math::

    \\widehat{I} = \\frac{1}{2n} \\sum_{a=1}^n \\sum_k
        \\Big[-\\frac{(\\mu_k(x_a) - y_{a,k})^2}{e^{\\ell_k(x_a)}}
        + \\frac{(\\mu_k(x_a) - y_{\\pi(a),k})^2}{e^{\\ell_k(x_a)}}\\Big]

The estimator's own training maximises the reference's log-likelihood
:math:`\\frac1n\\sum_a\\sum_k -\\frac{(\\mu_k(x_a) - y_{a,k})^2}{2 e^{\\ell_k(x_a)}}`. Note that the reference
drops the :math:`-\\ell/2` normalisation term of a Gaussian log-density here (the original CLUB code keeps
it); ``variance_term=True`` restores it. It cancels in the bound itself either way.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call

__all__ = ["CLUB", "ExpertMIRegularizer", "PAIR_DRAWS"]

#: where :class:`ExpertMIRegularizer` draws its expert pairs: the global CPU RNG (the reference) or the device's
PAIR_DRAWS = ("host", "device")


class CLUB(nn.Module):
    """Sampled CLUB estimator of an upper bound of ``I(X; Y)``.

    :param x_dim: width of ``x``
    :param y_dim: width of ``y``
    :param hidden_dim: ``h``; both MLPs have one hidden layer of width ``h // 2`` (reference: ``h = dim``)
    :param variance_term: include ``-logvar / 2`` in :meth:`log_likelihood` (reference: no)
    """

    def __init__(self, x_dim: int, y_dim: int, hidden_dim: int, variance_term: bool = False) -> None:
        super().__init__()
        half = hidden_dim // 2
        if half < 1:
            raise ValueError(f"hidden_dim must be at least 2, got {hidden_dim}")
        self.x_dim, self.y_dim, self.hidden_dim = x_dim, y_dim, hidden_dim
        self.variance_term = variance_term
        self.p_mu = nn.Sequential(nn.Linear(x_dim, half), nn.ReLU(), nn.Linear(half, y_dim))
        self.p_logvar = nn.Sequential(nn.Linear(x_dim, half), nn.ReLU(), nn.Linear(half, y_dim), nn.Tanh())

    def mu_logvar(self, x: torch.Tensor, detach_params: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the mean and log-variance of ``q(y|x)``, both ``(n, y_dim)``.

        :param x: shape ``(n, x_dim)``
        :param detach_params: use detached parameters: gradients reach ``x`` but never this estimator
        """
        if not detach_params:
            return self.p_mu(x), self.p_logvar(x)
        mu = functional_call(self.p_mu, {k: v.detach() for k, v in self.p_mu.named_parameters()}, (x,))
        logvar = functional_call(self.p_logvar, {k: v.detach() for k, v in self.p_logvar.named_parameters()}, (x,))
        return mu, logvar

    def log_likelihood(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean over rows of ``sum_k -(mu_k - y_k)^2 / (2 exp(logvar_k))`` (``- logvar_k / 2`` if enabled).

        :param x: shape ``(n, x_dim)``
        :param y: shape ``(n, y_dim)``
        :return: scalar, to be *maximised* by the estimator
        """
        mu, logvar = self.mu_logvar(x)
        ll = -((mu - y) ** 2) / 2.0 / logvar.exp()
        if self.variance_term:
            ll = ll - logvar / 2.0
        return ll.sum(dim=1).mean(dim=0)

    def learning_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The estimator's loss: ``-log_likelihood(x, y)`` (scalar)."""
        return -self.log_likelihood(x, y)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, permutation: torch.Tensor | None = None, detach_params: bool = False
    ) -> torch.Tensor:
        """The sampled CLUB upper-bound estimate (scalar).

        :param x: shape ``(n, x_dim)``
        :param y: shape ``(n, y_dim)``
        :param permutation: shape ``(n,)``, the negatives' order (default: ``torch.randperm(n)`` on ``x``'s device)
        :param detach_params: let no gradient reach this estimator (only ``x`` and ``y`` get gradients)
        """
        mu, logvar = self.mu_logvar(x, detach_params=detach_params)
        if permutation is None:
            permutation = torch.randperm(x.shape[0], device=x.device)
        inv_var = torch.exp(-logvar)
        positive = -((mu - y) ** 2) * inv_var
        negative = -((mu - y.index_select(0, permutation)) ** 2) * inv_var
        return (positive.sum(dim=-1) - negative.sum(dim=-1)).mean() / 2.0


class ExpertMIRegularizer(nn.Module):
    """One :class:`CLUB` per base modality, comparing two randomly chosen distinct experts.

    As in the reference ``MIEstimator`` one pair ``(i, j)`` is drawn per call and shared by all modalities
    (``shared_pair=True``); ``shared_pair=False`` draws a pair per modality. With ``pair_draw="host"`` (the
    reference's way, the default) pairs come from the global CPU torch RNG (``torch.randperm(K)[:2]``) and select
    the experts by Python index; with ``"device"`` they are drawn on the expert outputs' device, from its default
    generator (the first two of ``argsort(rand(K))``: the same distribution, other draws), and gathered with
    ``index_select``. Nothing is then decided on the host, so a training step captured as a CUDA graph draws new
    pairs at every replay (host-drawn ones would be fixed at capture). Either way runs are deterministic under
    :func:`torch.manual_seed`.

    The model step adds ``mu * forward(experts)`` to its loss; the estimator step minimises
    :meth:`estimator_loss` on the same batch's expert outputs with a separate optimiser.

    :param dims: the working dimension of each base modality (expert outputs are ``(n, K, d_m)``)
    :param hidden_dims: the CLUB hidden width per modality (default: ``d_m``, as the reference)
    :param shared_pair: one expert pair for all modalities per call (reference) or one per modality
    :param variance_term: passed to every :class:`CLUB`
    :param pair_draw: where the expert pairs are drawn, ``"host"`` or ``"device"`` (see above)
    """

    #: class-level default: keeps regularizers pickled before the option existed loadable
    pair_draw: str = "host"

    def __init__(
        self,
        dims: Sequence[int],
        hidden_dims: Sequence[int] | None = None,
        shared_pair: bool = True,
        variance_term: bool = False,
        pair_draw: str = "host",
    ) -> None:
        super().__init__()
        if pair_draw not in PAIR_DRAWS:
            raise ValueError(f"pair_draw must be one of {PAIR_DRAWS}, got {pair_draw!r}")
        self.pair_draw = pair_draw
        dims = [int(d) for d in dims]
        if not dims:
            raise ValueError("at least one modality is needed")
        hidden = list(dims) if hidden_dims is None else [int(h) for h in hidden_dims]
        if len(hidden) != len(dims):
            raise ValueError("hidden_dims must have one entry per modality")
        self.dims = tuple(dims)
        self.shared_pair = shared_pair
        self.estimators = nn.ModuleList(CLUB(d, d, h, variance_term=variance_term) for d, h in zip(dims, hidden))

    def _pairs(self, expert_outputs: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per modality, the outputs ``(n, d_m)`` of the two experts drawn for it."""
        indices = self._pair_indices(expert_outputs)
        if self.pair_draw == "host":
            return [(v[:, i], v[:, j]) for v, (i, j) in zip(expert_outputs, indices)]
        return [tuple(v.index_select(1, pair).unbind(1)) for v, pair in zip(expert_outputs, indices)]  # type: ignore[misc]

    def _pair_indices(self, expert_outputs: Sequence[torch.Tensor]) -> list:
        """Per modality, the pair: ``(i, j)`` ints on the host, or a ``(2,)`` int64 tensor on the device."""
        if len(expert_outputs) != len(self.estimators):
            raise ValueError(f"expected {len(self.estimators)} modalities, got {len(expert_outputs)}")
        ks = [t.shape[1] for t in expert_outputs]
        for t, d in zip(expert_outputs, self.dims):
            if t.dim() != 3 or t.shape[2] != d:
                raise ValueError(f"expected expert outputs of shape (n, K, {d}), got {tuple(t.shape)}")
        if min(ks) < 2:
            raise ValueError("the MI regulariser needs at least two experts per modality")
        if self.pair_draw == "device":
            device = expert_outputs[0].device
            if self.shared_pair and len(set(ks)) == 1:
                return [torch.rand(ks[0], device=device).argsort()[:2]] * len(ks)
            return [torch.rand(k, device=device).argsort()[:2] for k in ks]
        if self.shared_pair and len(set(ks)) == 1:
            i, j = torch.randperm(ks[0])[:2].tolist()
            return [(i, j)] * len(ks)
        return [tuple(torch.randperm(k)[:2].tolist()) for k in ks]

    def forward(self, expert_outputs: Sequence[torch.Tensor], detach_estimator: bool = True) -> torch.Tensor:
        """Mean over modalities of the CLUB bound between two distinct experts' outputs.

        :param expert_outputs: per modality, shape ``(n, K, d_m)``
        :param detach_estimator: keep gradients out of the CLUB networks (the model step must not train them)
        :return: scalar
        """
        pairs = self._pairs(expert_outputs)
        values = [club(x, y, detach_params=detach_estimator) for club, (x, y) in zip(self.estimators, pairs)]
        return torch.stack(values).mean()

    def estimator_loss(self, expert_outputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Mean over modalities of the estimators' negative log-likelihood on a fresh expert pair.

        The inputs are detached here, so this loss only ever trains the estimators.

        :param expert_outputs: per modality, shape ``(n, K, d_m)``
        :return: scalar
        """
        pairs = self._pairs(expert_outputs)
        values = [club.learning_loss(x.detach(), y.detach()) for club, (x, y) in zip(self.estimators, pairs)]
        return torch.stack(values).mean()
