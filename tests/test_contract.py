"""Contract tests of MoMoK and its interaction, in the spirit of PyKEEN's ``tests/cases.py``.

``ModelContract`` checks what every PyKEEN model promises: all ``score_*`` methods agree with each other, with
``forward`` and with PyKEEN's generic :class:`~pykeen.models.ERModel` paths; slicing; prediction through inverse
relations; reset and state round-trip. ``InteractionContract`` checks the interaction's broadcasting against
a triple-by-triple loop. Each subclass is one MoMoK variant (``kwargs``).
"""

from __future__ import annotations

import io
from typing import Any, ClassVar

import pytest
import torch
from pykeen.models import ERModel
from pykeen.utils import check_shapes

from pykeen_momok import MoMoK, MoMoKLoss
from pykeen_momok.datasets.synthetic import SyntheticMMKG
from pykeen_momok.nn.interaction import MoMoKInteraction

#: every dropout off and no gating noise: training-mode scores are then a deterministic function of the batch
DETERMINISTIC = dict(input_dropout=0.0, core_dropout=0.0, hidden_dropout=0.0, fusion_dropout=0.0, gating_noise=False)


@pytest.fixture(scope="module")
def dataset() -> SyntheticMMKG:
    return SyntheticMMKG(
        num_colours=6, num_shapes=7, num_relations=3, triples_per_entity=3, image_dim=12, text_dim=10, seed=5
    )


class ModelContract:
    """What a MoMoK variant must satisfy; subclasses set :attr:`kwargs`."""

    kwargs: ClassVar[dict[str, Any]] = {}
    batch_size: ClassVar[int] = 6

    @pytest.fixture
    def model(self, dataset) -> MoMoK:
        settings = dict(embedding_dim=12, relation_dim=6, num_experts=2, random_seed=0, loss=MoMoKLoss())
        return MoMoK(triples_factory=dataset.training, **{**settings, **self.kwargs})

    @pytest.fixture
    def batch(self, model, dataset) -> torch.Tensor:
        # relation ids with inverses interleaved, as PyKEEN's training and predict_* map them
        return model.relation_inverter.map(batch=dataset.testing.mapped_triples[: self.batch_size], index=1)

    def _all_triples_scores(self, model: MoMoK, batch: torch.Tensor, column: int, num: int) -> torch.Tensor:
        """``(B, num)`` scores of ``batch`` with ``column`` replaced by every id, one score_hrt call per id."""
        scores = []
        for i in range(num):
            triples = batch.clone()
            triples[:, column] = i
            scores.append(model.score_hrt(triples)[:, 0])
        return torch.stack(scores, dim=1)

    def test_shapes_are_checked(self, model):
        """Single-letter shapes, verified by PyKEEN (no ``skip_checks``)."""
        interaction = model.interaction
        assert all(len(letter) == 1 for letter in (*interaction.entity_shape, *interaction.relation_shape))
        assert check_shapes(
            *zip((r.shape for r in model.entity_representations), interaction.entity_shape, strict=True),
            *zip((r.shape for r in model.relation_representations), interaction.relation_shape, strict=True),
        )

    @torch.no_grad()
    def test_generic_paths_agree_with_fast_paths(self, model, batch):
        model.eval()
        torch.testing.assert_close(ERModel.score_t(model, batch[:, :2]), model.score_t(batch[:, :2]))
        torch.testing.assert_close(ERModel.score_hrt(model, batch), model.score_hrt(batch))
        tails = torch.arange(3, 11)
        torch.testing.assert_close(
            ERModel.score_t(model, batch[:, :2], tails=tails), model.score_t(batch[:, :2], tails=tails)
        )

    @torch.no_grad()
    def test_score_methods_agree_with_score_hrt(self, model, batch):
        model.eval()
        num_entities, num_relations = model.num_entities, model.num_relations
        all_t = model.score_t(batch[:, :2])
        torch.testing.assert_close(all_t, self._all_triples_scores(model, batch, 2, num_entities))
        # score_h and score_r are PyKEEN's generic direct scores f(h, r, t) (no inverse relation involved)
        torch.testing.assert_close(model.score_h(batch[:, 1:]), self._all_triples_scores(model, batch, 0, num_entities))
        torch.testing.assert_close(
            model.score_r(batch[:, [0, 2]]), self._all_triples_scores(model, batch, 1, num_relations)
        )
        # forward with explicit broadcasting: (B, 1) queries against (1, N) candidates
        candidates = torch.arange(num_entities)
        forward = model(batch[:, 0:1], batch[:, 1:2], candidates.unsqueeze(0), mode=None)
        torch.testing.assert_close(forward, all_t)

    @torch.no_grad()
    def test_slicing(self, model, batch):
        model.eval()
        full = ERModel.score_t(model, batch[:, :2])
        torch.testing.assert_close(ERModel.score_t(model, batch[:, :2], slice_size=5), full)
        torch.testing.assert_close(model.score_t(batch[:, :2], slice_size=5), full)
        torch.testing.assert_close(
            ERModel.score_h(model, batch[:, 1:], slice_size=4), ERModel.score_h(model, batch[:, 1:])
        )

    @torch.no_grad()
    def test_head_prediction_uses_the_inverse_relation(self, model, dataset):
        """PyKEEN's ``predict_h`` answers ``(?, r, t)`` as ``(t, r^-1, ?)``, MoMoK's only direction."""
        rt = dataset.testing.mapped_triples[: self.batch_size, 1:]
        predicted = model.predict_h(rt)
        mapped_r = 2 * rt[:, 0] + 1  # the inverse of relation r is 2r + 1 in PyKEEN's interleaved ids
        expected = model.score_t(torch.stack([rt[:, 1], mapped_r], dim=1))
        torch.testing.assert_close(predicted, expected)

    def test_training_mode_generic_path(self, dataset):
        """In training (deterministic settings) the generic path gives the fast path's scores and records the heads."""
        settings = dict(embedding_dim=12, relation_dim=6, num_experts=2, random_seed=0, loss=MoMoKLoss())
        model = MoMoK(triples_factory=dataset.training, **{**settings, **self.kwargs, **DETERMINISTIC}).train()
        hr = model.relation_inverter.map(batch=dataset.training.mapped_triples[:8], index=1)[:, :2]
        fast = model.score_t(hr)
        fast_heads = model.head_logits_record.find(fast)
        generic = ERModel.score_t(model, hr)
        torch.testing.assert_close(generic, fast)
        torch.testing.assert_close(model.head_logits_record.find(generic), fast_heads)
        assert fast_heads.shape == (len(model.head_names), 8, model.num_entities)

    @torch.no_grad()
    def test_reset_and_state_round_trip(self, model, batch, dataset):
        model.eval()
        before = model.score_t(batch[:, :2])
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        model.reset_parameters_()
        after_reset = model.score_t(batch[:, :2])
        assert not torch.allclose(after_reset, before)
        buffer.seek(0)
        model.load_state_dict(torch.load(buffer, weights_only=True))
        torch.testing.assert_close(model.score_t(batch[:, :2]), before)


class TestMultiModal(ModelContract):
    """The dataset's pooling layouts (identity for the synthetic features), every head."""


class TestLinearAdapters(ModelContract):
    kwargs = dict(adapters="linear")


class TestStructureOnly(ModelContract):
    kwargs = dict(modalities=[])


class TestPerQueryContraction(ModelContract):
    kwargs = dict(fused=False, modalities=["text"])


class InteractionContract:
    """The interaction alone: broadcast scores equal the triple-by-triple ones."""

    @pytest.fixture
    def interaction(self) -> MoMoKInteraction:
        torch.manual_seed(0)
        return MoMoKInteraction(entity_dim=6, relation_dim=4, modality_dims=[5, 3], num_experts=2).eval()

    def _representations(self, interaction: MoMoKInteraction, prefix: tuple[int, ...], relation: bool):
        dims = [1] + [4] * len(interaction.dims) if relation else interaction.dims
        return [torch.randn(*prefix, dim) for dim in dims]

    @pytest.mark.parametrize(
        "h_prefix, r_prefix, t_prefix",
        [((5,), (5,), (5,)), ((2, 1), (2, 1), (1, 7)), ((1, 4), (3, 1), (3, 1)), ((2, 1, 1), (1, 3, 1), (1, 1, 4))],
    )
    @torch.no_grad()
    def test_broadcast_equals_per_triple(self, interaction, h_prefix, r_prefix, t_prefix):
        h = self._representations(interaction, h_prefix, relation=False)
        r = self._representations(interaction, r_prefix, relation=True)
        t = self._representations(interaction, t_prefix, relation=False)
        scores = interaction(h, r, t)
        prefix = torch.broadcast_shapes(h_prefix, r_prefix, t_prefix)
        assert scores.shape == prefix

        def rows(xs):
            return [x.expand(*prefix, x.shape[-1]).reshape(-1, x.shape[-1]) for x in xs]

        h_rows, r_rows, t_rows = rows(h), rows(r), rows(t)
        one_by_one = torch.stack(
            [
                interaction(
                    [x[i : i + 1] for x in h_rows], [x[i : i + 1] for x in r_rows], [x[i : i + 1] for x in t_rows]
                )[0]
                for i in range(h_rows[0].shape[0])
            ]
        )
        torch.testing.assert_close(scores.reshape(-1), one_by_one)

    @torch.no_grad()
    def test_repeated_relations_share_their_core(self, interaction):
        """Queries whose relation vectors repeat give the same scores as with every relation distinct."""
        h = self._representations(interaction, (6,), relation=False)
        r = self._representations(interaction, (2,), relation=True)
        t = self._representations(interaction, (6,), relation=False)
        repeated = [x.repeat(3, 1) for x in r]
        scores = interaction(h, repeated, t)
        distinct = torch.stack(
            [
                interaction([x[i : i + 1] for x in h], [x[i : i + 1] for x in repeated], [x[i : i + 1] for x in t])[0]
                for i in range(6)
            ]
        )
        torch.testing.assert_close(scores, distinct)


class TestInteraction(InteractionContract):
    pass


@pytest.mark.parametrize("target", ["head", "relation"])
def test_lcwa_targets_through_the_generic_paths(dataset, target):
    """LCWA on heads / relations runs PyKEEN's generic score_h / score_r, with the per-head loss."""
    from pykeen.training import LCWATrainingLoop

    model = MoMoK(
        triples_factory=dataset.training,
        loss=MoMoKLoss(),
        random_seed=0,
        embedding_dim=12,
        relation_dim=6,
        num_experts=2,
    )
    loop = LCWATrainingLoop(
        model=model,
        triples_factory=dataset.training,
        optimizer=torch.optim.Adam(model.get_grad_params(), lr=1e-2),
        target=target,
    )
    with pytest.warns(UserWarning, match="mutual-information term"):
        losses = loop.train(triples_factory=dataset.training, num_epochs=3, batch_size=64, use_tqdm=False)
    assert losses[-1] < losses[0]


def test_core_contraction_path_reaches_every_tucker_head(dataset):
    model = MoMoK(
        triples_factory=dataset.training, random_seed=0, embedding_dim=8, relation_dim=4, core_contraction_path="torch"
    )
    heads = [*model.interaction.heads, model.interaction.joint_head]
    assert [head.contraction_path for head in heads] == ["torch"] * len(heads)
    with pytest.raises(ValueError, match="unknown core contraction path 'cuda'"):
        MoMoK(triples_factory=dataset.training, embedding_dim=8, relation_dim=4, core_contraction_path="cuda")
