"""``MoMoK(autocast_dtype="bfloat16")``: bfloat16 training forwards, float32 weights, loss, penalty and evaluation."""

from __future__ import annotations

import collections
import os

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pykeen_momok.datasets.synthetic import SyntheticMMKG
from pykeen_momok.losses import MoMoKLoss
from pykeen_momok.model import MoMoK

PRODUCTS = frozenset({"aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm"})


class ProductDtypes(TorchDispatchMode):
    """Counts matrix products by the dtype of their first operand."""

    def __init__(self) -> None:
        super().__init__()
        self.dtypes: collections.Counter[torch.dtype] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: D105
        if func._schema.name in PRODUCTS:
            self.dtypes[args[0].dtype] += 1
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def dataset():
    """The synthetic multi-modal graph (image and text, so four heads)."""
    os.environ.setdefault("PYKEEN_HOME", "/tmp/pykeen-momok-tests")
    return SyntheticMMKG()


def _model(dataset, **options) -> MoMoK:
    torch.manual_seed(0)
    return MoMoK(
        triples_factory=dataset.training, loss=MoMoKLoss(), embedding_dim=16, relation_dim=8, random_seed=0, **options
    )


def _targets(dataset, hr: torch.Tensor) -> torch.Tensor:
    labels = torch.zeros(hr.shape[0], dataset.training.num_entities)
    mapped = dataset.training.mapped_triples
    for row, (h, r) in enumerate(hr.tolist()):
        labels[row, mapped[(mapped[:, 0] == h) & (mapped[:, 1] == r), 2]] = 1.0
    return labels


def test_bfloat16_training_forward(dataset):
    """Products in bfloat16 (the core contractions too), float32 logits into the loss, float32 gradients."""
    model = _model(dataset, autocast_dtype="bfloat16").train()
    hr = dataset.training.mapped_triples[:48, :2]
    with ProductDtypes() as products:
        scores = model.score_t(hr)
        head_logits = model.head_logits_record.find(scores)
        loss = model.loss.process_lcwa_scores(scores, _targets(dataset, hr)) + model.collect_regularization_term()
    assert scores.dtype == head_logits.dtype == loss.dtype == torch.float32
    assert head_logits.shape == (4, 48, dataset.training.num_entities)
    # everything but the CLUB penalty (float32 on purpose: a difference of log-likelihoods) runs in bfloat16
    assert products.dtypes[torch.bfloat16] > 4 * products.dtypes[torch.float32] > 0, products.dtypes
    loss.backward()
    grads = [p.grad for p in model.get_grad_params() if p.grad is not None]
    assert grads and all(p.dtype == torch.float32 for p in model.parameters())
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    model.post_parameter_update()  # the estimator's own step, float32


def test_core_contraction_runs_in_bfloat16(dataset):
    """The Tucker contractions (the step's largest products) take autocast's dtype, not a float32 BatchNorm's."""
    model = _model(dataset, autocast_dtype="bfloat16").train()
    seen = []
    from pykeen_momok.nn import tucker

    original = tucker._DistinctCoreContraction.forward

    def spy(ctx, x, matrices, *args):
        seen.append((x.dtype, matrices.dtype))
        return original(ctx, x, matrices, *args)

    tucker._DistinctCoreContraction.forward = staticmethod(spy)
    try:
        model.score_t(dataset.training.mapped_triples[:16, :2])
    finally:
        tucker._DistinctCoreContraction.forward = staticmethod(original)
    assert seen and set(seen) == {(torch.bfloat16, torch.bfloat16)}


def test_evaluation_stays_float32(dataset):
    """In evaluation the option changes nothing: float32 products, the same scores as without it."""
    plain, low = _model(dataset), _model(dataset, autocast_dtype="bfloat16")
    low.load_state_dict(plain.state_dict())
    hr = dataset.testing.mapped_triples[:32, :2]
    with torch.no_grad(), ProductDtypes() as products:
        a = plain.eval().score_t(hr)
        b = low.eval().score_t(hr)
        c = low.predict_t(hr)
    assert set(products.dtypes) == {torch.float32}
    assert torch.equal(a, b) and c.dtype == torch.float32


def test_generic_path_autocasts_in_training(dataset):
    """PyKEEN's generic scoring paths (score_h here) take the option too and hand float32 scores on."""
    model = _model(dataset, autocast_dtype="bfloat16").train()
    with ProductDtypes() as products:
        scores = model.score_h(dataset.training.mapped_triples[:8, 1:])
    assert scores.dtype == torch.float32
    assert products.dtypes[torch.bfloat16] > 0


@pytest.mark.parametrize("value", ["float16", "fp32", torch.bfloat16])
def test_bad_autocast_dtype(dataset, value):
    """Only ``None`` and ``"bfloat16"``; float16 is refused with the reason."""
    with pytest.raises(ValueError, match="autocast_dtype must be None") as info:
        _model(dataset, autocast_dtype=value)
    if value == "float16":
        assert "gradient scaler" in str(info.value)


def test_models_pickled_before_the_options_still_score(dataset):
    """A model saved before ``autocast_dtype`` and ``relation_matrices`` existed loads and scores (class defaults)."""
    import pickle

    model = _model(dataset)
    del model.interaction.autocast_dtype, model.relation_matrices  # what an older pickle lacks
    assert "autocast_dtype" not in vars(model.interaction) and "relation_matrices" not in vars(model)
    old = pickle.loads(pickle.dumps(model))
    hr = dataset.testing.mapped_triples[:8, :2]
    with torch.no_grad():
        torch.testing.assert_close(old.eval().score_t(hr), model.eval().score_t(hr))
    assert old.train().score_t(hr).shape == (8, dataset.training.num_entities)
    assert old.interaction.autocast_dtype is None and old.relation_matrices == "auto"
