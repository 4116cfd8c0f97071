"""MoMoK as a PyKEEN model.

In training, the score methods return the mean of the heads' logits and record the per-head logits in
the model's :class:`~pykeen_momok.losses.HeadLogitsRecord` when the loss is a
:class:`~pykeen_momok.losses.MoMoKLoss`, which reads them there (:mod:`pykeen_momok.losses` says how);
in evaluation they return the joint decision.
"""

from __future__ import annotations

import logging
import math
import numbers
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from pykeen.models import ERModel
from pykeen.nn.representation import Embedding, Representation
from pykeen.triples import KGInfo
from torch import nn
from torch.utils.checkpoint import checkpoint

from .losses import HeadLogitsRecord, MoMoKLoss
from .nn.adapters import FeatureTableInitializer, LinearAdapter, ModalityAdapter, PoolingAdapter
from .nn.club import PAIR_DRAWS
from .nn.experts import EXPERT_INITS
from .nn.interaction import MoMoKInteraction, autocast_dtype_named, full_precision
from .nn.tucker import autocast_state, reads_wait_for_device
from .training import MutualInformationTerm
from .triples import MultiModalTriplesFactory

__all__ = ["FeatureTableInitializer", "MoMoK", "RECOMMENDED_PIPELINE_KWARGS", "RELATION_MATRICES"]

logger = logging.getLogger(__name__)

#: What ``pipeline()`` needs besides model and dataset to train MoMoK as the paper does (PyKEEN 1.11.1's
#: ``pipeline()`` ignores ``loss_default`` and defaults to sLCWA). ``"batchedlcwa"`` is PyKEEN's LCWA loop with its
#: batches built in one step (:mod:`pykeen_momok.lcwa`): the same training, faster; ``"lcwa"`` works as well.
RECOMMENDED_PIPELINE_KWARGS: Mapping[str, Any] = dict(loss="MoMoKLoss", training_loop="batchedlcwa")

#: which relations' core matrices ``r W`` a batch builds, ``MoMoK(relation_matrices=...)``: ``"batch"`` its
#: distinct relations (found with ``torch.unique``, which waits for the device), ``"all"`` every relation (no
#: wait, more matrices where a batch uses few relations), ``"auto"`` "all" on CUDA when there are no more
#: relations than queries in the batch, else "batch". The scores are the same either way.
RELATION_MATRICES = ("auto", "batch", "all")

_HINT = (
    "For the paper's objective call pipeline(model='MoMoK', dataset=..., loss='MoMoKLoss', "
    "training_loop='batchedlcwa') "
    "(see pykeen_momok.RECOMMENDED_PIPELINE_KWARGS)."
)


def _check_int(name: str, value: Any, low: int) -> None:
    # bool is an int subclass: embedding_dim=True is a mistake, not 1
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_real(name: str, value: Any, allowed: str, ok: Callable[[float], bool]) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or not ok(value):
        raise ValueError(f"{name} must be a finite number {allowed}, got {value!r}")


def _check_parameters(
    *,
    embedding_dim: Any,
    relation_dim: Any,
    num_experts: Any,
    mi_weight: Any,
    mi_estimator_lr: Any,
    mi_hidden_dim: Any,
    input_dropout: Any,
    core_dropout: Any,
    hidden_dropout: Any,
    fusion_dropout: Any,
    expert_dropout: Any,
    fusion_heads: Any,
    gating_noise_epsilon: Any,
    expert_init: Any,
    relation_matrices: Any,
    autocast_dtype: Any,
    mi_pair_draw: Any,
    flags: Mapping[str, Any],
) -> None:
    """Check MoMoK's hyperparameters before anything is built (a bad one would otherwise fail late, or never).

    :raises ValueError: naming the first parameter outside its range, and the range
    """
    _check_int("embedding_dim", embedding_dim, 1)
    _check_int("relation_dim", relation_dim, 1)
    _check_int("num_experts", num_experts, 1)
    _check_int("fusion_heads", fusion_heads, 1)
    if mi_hidden_dim is not None:
        _check_int("mi_hidden_dim", mi_hidden_dim, 2)  # the CLUB estimator's smallest hidden layer
    _check_real("mi_weight", mi_weight, ">= 0", lambda x: x >= 0)
    _check_real("mi_estimator_lr", mi_estimator_lr, "> 0", lambda x: x > 0)
    _check_real("gating_noise_epsilon", gating_noise_epsilon, ">= 0", lambda x: x >= 0)
    for name, value in (
        ("input_dropout", input_dropout),
        ("core_dropout", core_dropout),
        ("hidden_dropout", hidden_dropout),
        ("fusion_dropout", fusion_dropout),
        ("expert_dropout", expert_dropout),
    ):
        _check_real(name, value, "in [0, 1)", lambda x: 0 <= x < 1)
    if mi_hidden_dim is None and embedding_dim < 2:
        raise ValueError(
            f"embedding_dim={embedding_dim} needs mi_hidden_dim >= 2: the hidden size of the mutual-information "
            f"estimator defaults to embedding_dim and must be at least 2"
        )
    if mi_weight > 0 and num_experts < 2:
        raise ValueError(
            f"num_experts={num_experts} leaves no pair of experts for the mutual-information term: pass "
            f"num_experts >= 2, or mi_weight=0 to go without the term"
        )
    if expert_init not in EXPERT_INITS:
        raise ValueError(f"expert_init must be one of {EXPERT_INITS}, got {expert_init!r}")
    if relation_matrices not in RELATION_MATRICES:
        raise ValueError(f"relation_matrices must be one of {RELATION_MATRICES}, got {relation_matrices!r}")
    if mi_pair_draw not in PAIR_DRAWS:
        raise ValueError(f"mi_pair_draw must be one of {PAIR_DRAWS}, got {mi_pair_draw!r}")
    autocast_dtype_named(autocast_dtype)
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, got {value!r}")


class MoMoK(ERModel):
    r"""Mixture of Modality Knowledge Experts (Zhang et al., ICLR 2025).

    Every base modality (the learned structural embedding, plus each feature modality of a
    :class:`~pykeen_momok.triples.MultiModalTriplesFactory`) gets K relation-guided experts and its own
    Tucker head; a fusion layer builds joint entity and relation embeddings for a joint Tucker head.
    Training sums one BCE per head (:class:`~pykeen_momok.losses.MoMoKLoss`) plus
    :math:`\mu` times a CLUB bound on the mutual information between pairs of experts; ranking uses the
    mean of the heads' sigmoid probabilities. With a plain :class:`~pykeen.triples.TriplesFactory` it is a
    mixture-of-experts TuckER over the structure alone.

    Queries are answered as tails only, so the triples factory must have inverse triples.

    Example::

        from pykeen.pipeline import pipeline

        result = pipeline(
            model="MoMoK",
            dataset="SyntheticMMKG",
            loss="MoMoKLoss",
            training_loop="batchedlcwa",
            model_kwargs=dict(embedding_dim=64, relation_dim=64),
            optimizer_kwargs=dict(lr=1e-3, fused=True),
        )
    ---
    citation:
        author: Zhang
        year: 2025
        link: https://arxiv.org/abs/2405.16869
        github: zjukg/MoMoK
    """

    #: Ranges for the hyperparameters the paper tunes (plus the regularisation it fixes)
    hpo_default: ClassVar[Mapping[str, Any]] = dict(
        embedding_dim=dict(type=int, low=100, high=300, step=50),
        relation_dim=dict(type=int, low=128, high=256, step=64),
        num_experts=dict(type=int, low=2, high=6),
        mi_weight=dict(type=float, low=1e-5, high=1e-2, log=True),
        input_dropout=dict(type=float, low=0.0, high=0.5, step=0.1),
        core_dropout=dict(type=float, low=0.0, high=0.5, step=0.1),
        hidden_dropout=dict(type=float, low=0.0, high=0.6, step=0.1),
    )
    #: Not applied by PyKEEN 1.11.1's ``pipeline()``, which ignores it; see :data:`RECOMMENDED_PIPELINE_KWARGS`
    loss_default: ClassVar[type[MoMoKLoss]] = MoMoKLoss
    loss_default_kwargs: ClassVar[Mapping[str, Any]] = dict(label_smoothing=0.1)

    #: In training, recompute the all-entity candidate vectors (experts and fusion over all E entities) in the
    #: backward pass instead of keeping their intermediate tensors (about 0.6 GB on MKG-Y at d = 300) from the
    #: forward pass; the random draws (gating noise, fusion dropout) are replayed, so values and gradients
    #: are the same. Set to False on an instance to trade that memory for the recomputation time.
    recompute_candidates: bool = True
    #: which relations' core matrices a batch builds (``__init__``'s ``relation_matrices``); the class-level default
    #: keeps models pickled before the option existed loadable
    relation_matrices: str = "auto"

    def __init__(
        self,
        *,
        triples_factory: KGInfo,
        embedding_dim: int = 256,
        relation_dim: int = 256,
        num_experts: int = 3,
        mi_weight: float = 1e-4,
        mi_estimator_lr: float = 5e-4,
        mi_hidden_dim: int | None = None,
        mi_estimator_fused: bool = True,
        mi_pair_draw: str = "host",
        modalities: Sequence[str] | None = None,
        adapters: str | Mapping[str, str] | None = None,
        normalize_features: bool = True,
        trainable_features: bool = True,
        input_dropout: float = 0.3,
        core_dropout: float = 0.4,
        hidden_dropout: float = 0.5,
        fusion_dropout: float = 0.2,
        fusion_heads: int = 2,
        expert_dropout: float = 0.0,
        expert_init: str = "normal",
        gating_noise: bool = True,
        gating_noise_epsilon: float = 0.01,
        fused: bool = True,
        recompute_candidates: bool = True,
        core_contraction_path: str | None = None,
        relation_matrices: str = "auto",
        autocast_dtype: str | None = None,
        **kwargs,
    ) -> None:
        r"""Initialize the model.

        :param triples_factory: the training factory; a :class:`~pykeen_momok.triples.MultiModalTriplesFactory`
            contributes its modalities. Must have inverse triples.
        :param embedding_dim: ``d``, the structural and joint dimension (reference: 256; MKG-W 200, MKG-Y 300)
        :param relation_dim: ``d_r``, the per-modality relation dimension (reference: 256)
        :param num_experts: ``K``, experts per modality (reference: 3)
        :param mi_weight: :math:`\mu`, the weight of the expert mutual-information penalty (reference: 1e-4)
        :param mi_estimator_lr: learning rate of the CLUB estimator's own Adam optimiser; the reference uses
            the model's learning rate (5e-4, this default), so set both to the same value when you change it
        :param mi_hidden_dim: hidden size of the CLUB estimator (``None``: its default)
        :param mi_estimator_fused: the CLUB estimator's Adam runs PyTorch's fused kernel (one pass over its parameters
            per update instead of several per tensor: on a GPU a handful of kernel launches per step fewer); ``False``:
            PyTorch's default Adam. The same update, other rounding in the last bits. The main optimiser is PyKEEN's:
            ``optimizer_kwargs=dict(lr=..., fused=True)`` does the same for it (the configs and recipes do so)
        :param mi_pair_draw: where the mutual-information term draws its pair of experts at every step: ``"host"``
            (the reference's way: the global CPU RNG, the default) or ``"device"`` (the model's device, its default
            generator: the same distribution, other draws; nothing random decided on the host, as a training step
            captured as a CUDA graph needs); see :class:`~pykeen_momok.nn.club.ExpertMIRegularizer`
        :param modalities: which of the factory's modalities to use (``None``: all, ``[]``: structure only; with
            ``None`` on a :class:`~pykeen_momok.triples.MultiModalTriplesFactory` without modalities, a warning)
        :param adapters: per modality, ``"linear"`` (a learned projection to ``embedding_dim``, the default
            for user data) or a reference pooling layout (``"db15k-image"``, ``"text-12x64"``, ``"mkg-text"``,
            ``"identity"``). Default: the layout the dataset names in ``metadata["pooling"]``, else ``"linear"``.
            One name (e.g. ``"linear"``) applies to every modality used.
        :param normalize_features: L2-normalise feature rows before the adapter (the reference does)
        :param trainable_features: fine-tune the feature tables (the reference does). With ``False`` they stay
            as given: entities that are rarely or never a positive (cold entities) are otherwise only ever
            pushed down as candidates, and their features lose what they said about them.
        :param input_dropout: Tucker input dropout (reference 0.3)
        :param core_dropout: per-query dropout on each relation-specific core matrix (reference 0.4)
        :param hidden_dropout: Tucker hidden dropout (reference 0.5)
        :param fusion_dropout: dropout on the fusion layers' inputs (reference 0.2)
        :param fusion_heads: heads of the fusion layers (reference 2)
        :param expert_dropout: dropout inside the whitening experts (reference 0)
        :param expert_init: ``"normal"``: expert matrices drawn from N(0, 0.02^2), as the reference does;
            ``"identity"``: identity plus that noise. With the reference's near-zero experts a feature modality's
            head is a product of several near-zero factors and learns nothing for thousands of steps (the
            reference shows no ranking signal for its first ~700 steps on MKG-Y); ``"identity"`` starts it at
            once. See :class:`~pykeen_momok.nn.experts.ModalityExperts`.
        :param gating_noise: noisy gating in training (reference: on)
        :param gating_noise_epsilon: floor of the gating noise scale (reference 0.01)
        :param fused: use the fused core contraction (``False``: the reference's per-query contraction; the
            same mathematics, slower, for benchmarks)
        :param recompute_candidates: see :attr:`recompute_candidates`; ``False`` saves the recomputation time where
            the memory is there (small dimensions)
        :param core_contraction_path: how the Tucker heads contract their cores with the per-query core dropout in
            training: ``"torch"`` (PyTorch), ``"triton"`` (the fused Triton kernels, CUDA, or on CPU with
            ``TRITON_INTERPRET=1``), ``"auto"`` (the faster of the two, timed once per shape; always ``"torch"`` off
            CUDA); ``None``: the process-wide setting (:func:`~pykeen_momok.nn.tucker.set_core_contraction_path`,
            else ``$PYKEEN_MOMOK_TUCKER_PATH``, else ``"torch"``). Set it explicitly for reproducible masks on a GPU.
        :param relation_matrices: which relations' core matrices a batch builds: ``"batch"`` (its distinct
            relations), ``"all"`` (every relation: no ``torch.unique``, so the step does not wait for the device),
            ``"auto"`` (default: ``"all"`` on CUDA when the graph has no more relations than a batch has queries and
            every head's matrices for all of them fit its byte budget, else ``"batch"``); see
            :data:`RELATION_MATRICES`. Scores, masks and gradients are the same.
        :param autocast_dtype: ``"bfloat16"``: training forwards under bfloat16 autocast (a training-recipe
            option, not the paper's: float32 master weights, the logits cast to float32 for the loss, the CLUB
            penalty and evaluation in float32); ``None`` (default): float32 throughout, as the reference
        :param kwargs: passed to :class:`~pykeen.models.ERModel` (``loss``, ``random_seed``, ...)
        :raises ValueError: for a parameter outside its range (the message states the range), without inverse
            triples, or for unknown modality names or adapters
        """
        _check_parameters(
            embedding_dim=embedding_dim,
            relation_dim=relation_dim,
            num_experts=num_experts,
            mi_weight=mi_weight,
            mi_estimator_lr=mi_estimator_lr,
            mi_hidden_dim=mi_hidden_dim,
            input_dropout=input_dropout,
            core_dropout=core_dropout,
            hidden_dropout=hidden_dropout,
            fusion_dropout=fusion_dropout,
            expert_dropout=expert_dropout,
            fusion_heads=fusion_heads,
            gating_noise_epsilon=gating_noise_epsilon,
            expert_init=expert_init,
            relation_matrices=relation_matrices,
            autocast_dtype=autocast_dtype,
            mi_pair_draw=mi_pair_draw,
            flags=dict(
                normalize_features=normalize_features,
                trainable_features=trainable_features,
                gating_noise=gating_noise,
                fused=fused,
                recompute_candidates=recompute_candidates,
                mi_estimator_fused=mi_estimator_fused,
            ),
        )
        # numpy integers pass the check, but PyKEEN's shapes need Python ints
        embedding_dim, relation_dim, num_experts, fusion_heads = map(
            int, (embedding_dim, relation_dim, num_experts, fusion_heads)
        )
        if not triples_factory.create_inverse_triples:
            raise ValueError(
                "MoMoK answers (?, r, t) as (t, r^-1, ?) and needs inverse triples: create the triples factory or "
                "dataset with create_inverse_triples=True (the pykeen_momok datasets do so by default), e.g. "
                "pipeline(..., dataset_kwargs=dict(create_inverse_triples=True))."
            )
        available: Mapping[str, Any] = getattr(triples_factory, "modalities", None) or {}
        names = list(available) if modalities is None else list(modalities)
        unknown = [name for name in names if name not in available]
        if unknown:
            raise ValueError(f"unknown modalities {unknown}; the triples factory has {sorted(available)}")
        if not names and modalities is None and isinstance(triples_factory, MultiModalTriplesFactory):
            warnings.warn(
                "MoMoK is built on a multi-modal triples factory that carries no modalities, so it uses the graph "
                "structure alone (a mixture-of-experts TuckER): the dataset found or loaded no feature files. Give "
                "the dataset its feature files (a benchmark dataset: image_features=/text_features=, or directory= "
                "holding them), or pass modalities=[] if a structure-only model is what you want.",
                UserWarning,
                stacklevel=2,
            )
        pooling = dict((getattr(triples_factory, "metadata", None) or {}).get("pooling") or {})
        # one name for every modality used (a config need not know which modalities a dataset has)
        adapters = dict.fromkeys(names, adapters) if isinstance(adapters, str) else dict(adapters or {})
        extra = sorted(set(adapters) - set(names))
        if extra:
            raise ValueError(f"adapters given for modalities that are not used: {extra} (used: {names})")

        feature_representations: list[Representation] = []
        for name in names:
            features = available[name].features.float()
            choice = adapters.get(name, pooling.get(name, "linear"))
            if choice == "linear":
                adapter: ModalityAdapter = LinearAdapter(features.shape[1], embedding_dim, normalize=normalize_features)
            else:
                adapter = PoolingAdapter(features.shape[1], choice, normalize=normalize_features)
            feature_representations.append(adapter.representation(features, trainable=trainable_features))

        num_entities = triples_factory.num_entities
        super().__init__(
            triples_factory=triples_factory,
            interaction=MoMoKInteraction,
            interaction_kwargs=dict(
                entity_dim=embedding_dim,
                relation_dim=relation_dim,
                modality_dims=[representation.shape[0] for representation in feature_representations],
                num_experts=num_experts,
                expert_dropout=expert_dropout,
                expert_init=expert_init,
                gating_noise=gating_noise,
                gating_noise_epsilon=gating_noise_epsilon,
                fusion_heads=fusion_heads,
                fusion_dropout=fusion_dropout,
                input_dropout=input_dropout,
                core_dropout=core_dropout,
                hidden_dropout=hidden_dropout,
                fused=fused,
                core_contraction_path=core_contraction_path,
                autocast_dtype=autocast_dtype,
            ),
            entity_representations=[Embedding, *feature_representations],
            entity_representations_kwargs=[dict(shape=embedding_dim, initializer=nn.init.xavier_normal_)]
            + [None] * len(feature_representations),
            relation_representations=[Embedding] * (2 + len(names)),
            relation_representations_kwargs=[
                dict(shape=1, initializer=nn.init.normal_),
                *(dict(shape=relation_dim, initializer=nn.init.xavier_normal_) for _ in range(1 + len(names))),
            ],
            **kwargs,
        )
        self.modality_names: tuple[str, ...] = ("structure", *names)
        self.mutual_information = MutualInformationTerm(
            dims=self.interaction.dims,
            weight=mi_weight,
            lr=mi_estimator_lr,
            hidden_dim=mi_hidden_dim,
            fused=mi_estimator_fused,
            pair_draw=mi_pair_draw,
        )
        self.recompute_candidates = recompute_candidates
        self.relation_matrices = relation_matrices
        self._candidate_cache: tuple[tuple, list[torch.Tensor]] | None = None
        self._warned_slcwa = False
        #: the per-head logits of the latest training forwards, for a MoMoKLoss (see :meth:`_scores`)
        self.head_logits_record = HeadLogitsRecord()
        # PyKEEN's generic paths (ERModel.score_h / score_r / forward) reach the interaction directly: it hands
        # their per-head logits to the same place as the fast paths do
        self.interaction.logits_sink = self._generic_scores
        self._warned_generic = False
        if not isinstance(self.loss, MoMoKLoss):
            warnings.warn(
                f"MoMoK is trained with {type(self.loss).__name__} on the mean of its heads' logits, not with the "
                f"paper's per-head objective. {_HINT}",
                stacklevel=2,
            )
        logger.info("MoMoK over %d entities with heads %s", num_entities, self.head_names)

    @property
    def head_names(self) -> tuple[str, ...]:
        """The scoring heads, in the order of the per-head logits."""
        return self.modality_names + (("joint",) if self.interaction.joint else ())

    # -- the main optimiser must never update the CLUB estimator -------------------------------------------
    def get_grad_params(self) -> Iterable[nn.Parameter]:  # noqa: D102
        excluded = {id(p) for p in self.mutual_information.parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in excluded]

    def collect_regularization_term(self):  # noqa: D102
        return super().collect_regularization_term() + self.mutual_information.collect()

    def post_parameter_update(self) -> None:  # noqa: D102
        super().post_parameter_update()
        # PyKEEN also calls this from ERModel.__init__, before the estimator exists
        if self.training and "mutual_information" in self._modules:
            self.mutual_information.estimator_step(self._expert_outputs_of)

    def _expert_outputs_of(self, entities: torch.Tensor) -> list[torch.Tensor]:
        return self.interaction.expert_outputs([rep(indices=entities) for rep in self.entity_representations])

    # -- scoring ---------------------------------------------------------------------------------------------
    def _all_relation_matrices(self, relations: torch.Tensor) -> bool:
        """Whether a batch with these relation ids builds every relation's core matrix (see ``relation_matrices``)."""
        if self.relation_matrices == "auto":
            return (
                reads_wait_for_device(relations.device)
                and self.num_relations <= relations.shape[0]
                # where every relation's matrices would not fit, a head contracts per query instead: slower
                and self.interaction.relation_matrices_fit(self.num_relations, self.interaction.heads[0].core.dtype)
            )
        return self.relation_matrices == "all"

    def _queries(self, heads: torch.Tensor, relations: torch.Tensor) -> list[torch.Tensor]:
        """Query vectors per head, shape ``(B, d_head)``, for head entity and relation ids ``(B,)``."""
        if self._all_relation_matrices(relations):
            rows, index = None, relations  # every relation's rows: nothing waits for the device
        else:
            rows, index = torch.unique(relations, return_inverse=True)
        z, expert_outputs = self.interaction.queries(
            [rep(indices=heads) for rep in self.entity_representations],
            self.relation_representations[0](indices=relations),
            [rep(indices=rows) for rep in self.relation_representations[1:]],
            index,
        )
        if self.training and self.mutual_information.weight:
            self.mutual_information.record(expert_outputs, heads)
        return z

    def _candidates(self, entities: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Candidate vectors per head, shape ``(N, d_head)``; all entities when ``entities`` is None.

        In evaluation without gradients the all-entity candidates do not change between batches, so they
        are computed once and reused for as long as no parameter changes (tracked by tensor versions).
        """
        if entities is None and self.training and self.recompute_candidates and torch.is_grad_enabled():
            tables = [rep(indices=None) for rep in self.entity_representations]
            self._candidate_cache = None
            return list(checkpoint(self.interaction.candidates, tables, use_reentrant=False))
        cacheable = entities is None and not self.training and not torch.is_grad_enabled()
        if cacheable:
            key = (
                autocast_state(self.device.type),  # candidates computed under autocast have its dtype
                tuple((p.data_ptr(), p._version) for p in self.parameters()),
            )
            if self._candidate_cache is not None and self._candidate_cache[0] == key:
                return self._candidate_cache[1]
        candidates = self.interaction.candidates([rep(indices=entities) for rep in self.entity_representations])
        self._candidate_cache = (key, candidates) if cacheable else None
        return candidates

    def _scores(self, head_logits: torch.Tensor) -> torch.Tensor:
        """The scores a score method returns for per-head logits ``(H, *shape)``, shape ``shape``.

        Training with a :class:`~pykeen_momok.losses.MoMoKLoss`: the mean logit, with the per-head logits
        recorded for the loss, which is (re)pointed at this model's record here, so that a loss set after
        construction (``model.loss = ...``) works too. Any other loss gets the mean logit and nothing is kept.
        """
        head_logits = full_precision(head_logits)
        loss = self.loss
        if self.training and isinstance(loss, MoMoKLoss):
            loss.head_logits_source = self.head_logits_record
            return self.head_logits_record.record(head_logits)
        return self.interaction.combine(head_logits)

    def _generic_scores(self, head_logits: torch.Tensor) -> torch.Tensor:
        """:meth:`_scores` for PyKEEN's generic paths, which reach the interaction without entity ids."""
        if self.training and self.mutual_information.weight and not self._warned_generic:
            self._warned_generic = True
            warnings.warn(
                "MoMoK is being trained through PyKEEN's generic scoring path (ERModel.score_h / score_r / "
                "forward, e.g. LCWATrainingLoop(target='head')): its queries carry no entity ids, so the "
                "mutual-information term (mi_weight) is left out of these steps. The paper trains tails only, heads "
                "through inverse relations (target='tail', the default).",
                stacklevel=2,
            )
        return self._scores(head_logits)

    def score_hrt(self, hrt_batch: torch.Tensor, *, mode=None) -> torch.Tensor:  # noqa: D102
        if self.training and not self._warned_slcwa:
            self._warned_slcwa = True
            warnings.warn(
                "MoMoK is being trained on individual triples (sLCWA with negative sampling); the paper scores "
                f"every entity per query (1-N, training_loop='batchedlcwa' or 'lcwa'). {_HINT}",
                stacklevel=2,
            )
        with self.interaction.autocast(hrt_batch.device.type):  # not self.device: it walks every parameter
            z = self._queries(hrt_batch[:, 0], hrt_batch[:, 1])
            logits = self.interaction.pair_logits(z, self._candidates(hrt_batch[:, 2]))
        return self._scores(logits.unsqueeze(-1))

    def score_t(self, hr_batch: torch.Tensor, *, slice_size=None, mode=None, tails=None) -> torch.Tensor:  # noqa: D102
        # slice_size is accepted for API compatibility: scoring is a matrix product, with no broadcast to slice
        with self.interaction.autocast(hr_batch.device.type):  # a no-op in evaluation; the batch's device is ours
            z = self._queries(hr_batch[:, 0], hr_batch[:, 1])
            if (tails is None or tails.ndimension() == 1) and not self.training and not torch.is_grad_enabled():
                # evaluation: the joint decision accumulated head by head, without the (H, B, N) logits
                return self.interaction.decision_scores(z, self._candidates(tails))
            if tails is None or tails.ndimension() == 1:
                logits = self.interaction.head_logits(z, self._candidates(tails))
            else:  # per-query candidate lists, shape (B, N)
                logits = torch.stack(
                    [torch.einsum("bd,bnd->bn", zi, ci[tails]) for zi, ci in zip(z, self._candidates(), strict=True)]
                )
        return self._scores(logits)
