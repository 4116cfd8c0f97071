"""The batched LCWA loop builds PyKEEN's batches, and trains exactly as PyKEEN's LCWA loop does."""

from __future__ import annotations

import gc
import logging
import os
import weakref

import numpy as np
import pytest
import torch
from pykeen.pipeline import pipeline
from pykeen.training import LCWATrainingLoop
from pykeen.training.callbacks import TrainingCallback
from pykeen.training.training_loop import NonFiniteLossError
from pykeen.triples.instances import LCWAInstances
from torch.utils.data import default_collate

from pykeen_momok import lcwa
from pykeen_momok.datasets.synthetic import SyntheticMMKG
from pykeen_momok.lcwa import BatchedLCWAInstances, BatchedLCWATrainingLoop, dense_targets


@pytest.fixture(scope="module")
def dataset():
    """The synthetic multi-modal graph, with inverse triples."""
    os.environ.setdefault("PYKEEN_HOME", "/tmp/pykeen-momok-tests")
    return SyntheticMMKG()


def _pykeens_batch(instances: LCWAInstances, items: list[int]) -> dict:
    """What PyKEEN's data loader makes of these items: one ``__getitem__`` each, then the default collate."""
    return default_collate([instances[i] for i in items])


@pytest.mark.parametrize("target", ["head", "relation", "tail"])
@pytest.mark.parametrize("weighted", [False, True])
def test_a_batch_is_pykeens_batch(dataset, target, weighted):
    """Pairs, dense targets and loss weights equal PyKEEN's per-item batch, for shuffled and repeated items."""
    options: dict = dict(target=target)
    if weighted:  # PyKEEN's one loss weighter: a weight per relation (for a relation target: all of them)
        weights = torch.rand(dataset.training.num_relations, generator=torch.Generator().manual_seed(1))
        options.update(loss_weighter="relation", loss_weighter_kwargs=dict(weights=weights))
    ours = BatchedLCWAInstances.from_triples_factory(dataset.training, **options)
    theirs = LCWAInstances.from_triples_factory(dataset.training, **options)
    generator = np.random.default_rng(0)
    for items in (generator.permutation(len(ours))[:97].tolist(), [0], [5, 5, 3], list(range(len(ours)))):
        sparse, expected = ours.__getitems__(items), _pykeens_batch(theirs, items)
        # the whole batch, and a sub-batch of its rows as PyKEEN's sub-batching cuts them
        for start, stop in ((None, None), (len(items) // 3, len(items) // 3 + 2), (len(items) - 1, len(items))):
            batch = dense_targets(sparse, start=start, stop=stop)
            assert set(batch) == set(expected)
            for key, value in expected.items():
                assert batch[key].dtype == value.dtype, key
                torch.testing.assert_close(batch[key], value[start:stop], rtol=0, atol=0, msg=key)


def test_duplicate_triples_count_as_pykeen_counts_them(dataset):
    """A triple given twice is one CSR entry of value 2 for PyKEEN; the batch keeps that value."""
    triples = dataset.training.mapped_triples
    twice = torch.cat([triples[:1], triples])
    kwargs = dict(num_entities=dataset.training.num_entities, num_relations=dataset.training.num_relations)
    ours = BatchedLCWAInstances.from_triples(twice, **kwargs)
    theirs = LCWAInstances.from_triples(twice, **kwargs)
    items = list(range(10))
    target = dense_targets(ours.__getitems__(items))["target"]
    torch.testing.assert_close(target, _pykeens_batch(theirs, items)["target"])
    assert target.max() == 2.0


def _run(dataset, training_loop, training_loop_kwargs=None, callbacks=None, num_epochs=2, **training_kwargs):
    return pipeline(
        dataset=dataset,
        model="MoMoK",
        model_kwargs=dict(embedding_dim=16, relation_dim=8),
        loss="MoMoKLoss",
        training_loop=training_loop,
        training_loop_kwargs=training_loop_kwargs,
        training_kwargs=dict(num_epochs=num_epochs, batch_size=128, callbacks=callbacks, **training_kwargs),
        evaluation_kwargs=dict(batch_size=256),
        random_seed=3,
        device="cpu",
    )


def test_trains_exactly_as_pykeens_lcwa_loop(dataset):
    """By name through ``pipeline``: the same losses, bit for bit the same weights, the same metrics."""
    batched, plain = _run(dataset, "batchedlcwa"), _run(dataset, "lcwa")
    assert isinstance(batched.training_loop, BatchedLCWATrainingLoop)
    assert type(plain.training_loop) is LCWATrainingLoop
    assert batched.losses == plain.losses
    ours, theirs = batched.model.state_dict(), plain.model.state_dict()
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        if torch.is_tensor(value):
            assert torch.equal(ours[key], value), key
    assert batched.get_metric("both.realistic.inverse_harmonic_mean_rank") == plain.get_metric(
        "both.realistic.inverse_harmonic_mean_rank"
    )


def _sub_batched(dataset, loop: str, loop_kwargs=None, **training_kwargs):
    """DistMult (no BatchNorm: sub-batches allowed) trained in sub-batches of 16 of batches of 64."""
    return pipeline(
        dataset=dataset,
        model="DistMult",
        model_kwargs=dict(embedding_dim=8),
        loss="BCEWithLogits",
        training_loop=loop,
        # without the memory optimisation, which would find that whole batches fit and drop the sub-batches
        training_loop_kwargs=dict(automatic_memory_optimization=False, **(loop_kwargs or {})),
        training_kwargs=dict(batch_size=64, sub_batch_size=16, **training_kwargs),
        evaluation_kwargs=dict(batch_size=256),
        random_seed=5,
        device="cpu",
    )


@pytest.mark.parametrize("target", ["head", "relation", "tail"])
def test_weighted_smoothed_sub_batches_train_as_pykeens_loop(dataset, target):
    """Through the batched loop's own scoring: every target, relation loss weights, label smoothing, sub-batches.

    The loop scores its batches itself (PyKEEN's ``_process_batch_static`` less its moves to the device): the
    losses and weights come out bit for bit as PyKEEN's.
    """
    weights = torch.rand(dataset.training.num_relations, generator=torch.Generator().manual_seed(2))
    loop_kwargs = dict(target=target, loss_weighter="relation", loss_weighter_kwargs=dict(weights=weights))
    ours, theirs = (
        _sub_batched(dataset, loop, loop_kwargs, num_epochs=2, label_smoothing=0.1) for loop in ("batchedlcwa", "lcwa")
    )
    assert ours.losses == theirs.losses
    for a, b in zip(ours.model.parameters(), theirs.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_sub_batches_and_worker_processes(dataset, monkeypatch):
    """Sub-batching (a model without BatchNorm) and a worker process (the collate function pickles).

    Each sub-batch gets a dense target of its own rows only, as PyKEEN's loop moves only those to the device.
    """
    shapes: dict[str, list[tuple[int, ...]]] = {}
    original_static, original_dense = LCWATrainingLoop._process_batch_static, lcwa.dense_targets

    def run(loop: str, workers: int):
        seen = shapes[loop] = []

        def recording_static(*args, **kwargs):  # PyKEEN's loop
            seen.append((kwargs["start"], kwargs["stop"], *kwargs["batch"]["target"].shape))
            return original_static(*args, **kwargs)

        def recording_dense(batch, device, start, stop):  # ours
            out = original_dense(batch, device, start, stop)
            seen.append((start, stop, *out["target"].shape))
            return out

        monkeypatch.setattr(LCWATrainingLoop, "_process_batch_static", staticmethod(recording_static))
        monkeypatch.setattr(lcwa, "dense_targets", recording_dense)
        return _sub_batched(dataset, loop, num_epochs=1, num_workers=workers)

    runs = [run("lcwa", 0), run("batchedlcwa", 1)]
    assert runs[0].losses == pytest.approx(runs[1].losses, rel=1e-6)
    for a, b in zip(runs[0].model.parameters(), runs[1].model.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    num_entities = dataset.training.num_entities
    # PyKEEN: the whole batch's target every time, cut to [start, stop) inside; ours: the sub-batch's rows only
    assert {(start, stop) for start, stop, *_ in shapes["lcwa"]} >= {(0, 16), (16, 32), (32, 48), (48, 64)}
    assert {(rows, width) for *_, rows, width in shapes["lcwa"]} >= {(64, num_entities)}
    assert [(start, stop) for start, stop, *_ in shapes["batchedlcwa"]] == [
        (start, stop) for start, stop, *_ in shapes["lcwa"]
    ]
    assert all(
        rows == stop - start <= 16 and width == num_entities for start, stop, rows, width in shapes["batchedlcwa"]
    )


def test_a_sampler_is_refused(dataset):
    """Like PyKEEN's LCWA loop: no batch sampler."""
    loop = BatchedLCWATrainingLoop(
        model=_run(dataset, "batchedlcwa").model, triples_factory=dataset.training, optimizer="adam"
    )
    with pytest.raises(NotImplementedError, match="sampler='schlichtkrull'"):
        loop._create_training_data_loader(dataset.training, sampler="schlichtkrull", batch_size=4)


class _BatchLosses(TrainingCallback):
    """Records what ``on_batch`` is given."""

    def __init__(self) -> None:
        super().__init__()
        self.losses: list = []

    def on_batch(self, epoch: int, batch, batch_loss, **kwargs) -> None:  # noqa: D102
        self.losses.append(batch_loss)


def test_loss_read_once_per_epoch_and_the_light_cleanup_train_the_same(dataset, monkeypatch):
    """``read_loss="epoch"`` and ``epoch_cleanup="light"``: the same weights bit for bit as PyKEEN's LCWA loop.

    The batch losses reach callbacks as 0-d tensors; PyKEEN's end-of-epoch ``gc.collect()`` runs with the objects
    older than the training frozen (and thawed after), and CUDA's cache is not emptied at an epoch's end.
    """
    frozen_during_collect: list[int] = []
    collect = gc.collect
    monkeypatch.setattr(gc, "collect", lambda *a: frozen_during_collect.append(gc.get_freeze_count()) or collect(*a))
    emptied: list[int] = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    recorder = _BatchLosses()
    cheap = _run(
        dataset,
        "batchedlcwa",
        training_loop_kwargs=dict(read_loss="epoch", epoch_cleanup="light"),
        callbacks=recorder,
    )
    # every collection in training runs frozen: the two epoch ends, and one as training starts
    assert len(frozen_during_collect) >= 2 and all(count > 1000 for count in frozen_during_collect)
    assert gc.get_freeze_count() == 0
    emptied_cheap = len(emptied)
    _run(dataset, "batchedlcwa", training_loop_kwargs=dict(read_loss="epoch", epoch_cleanup="full"))
    emptied_full = len(emptied) - emptied_cheap
    assert emptied_full - emptied_cheap == 2  # the same run, less the cache emptied at each of its 2 epoch ends
    plain = _run(dataset, "lcwa")
    assert all(torch.is_tensor(loss) and loss.dim() == 0 and not loss.requires_grad for loss in recorder.losses)
    assert cheap.losses == pytest.approx(plain.losses, rel=1e-6)  # summed in float32 on the device, not in Python
    for key, value in plain.model.state_dict().items():
        if torch.is_tensor(value):
            assert torch.equal(cheap.model.state_dict()[key], value), key


class _CycleEveryEpoch(TrainingCallback):
    """Leaves one unreachable reference cycle behind after every epoch (as evaluations and callbacks may)."""

    def __init__(self) -> None:
        super().__init__()
        self.cycles: list[weakref.ref] = []

    def post_epoch(self, epoch: int, epoch_loss: float, **kwargs) -> None:  # noqa: D102
        cycle = _Node()
        cycle.me = cycle
        self.cycles.append(weakref.ref(cycle))


class _Node:
    me: _Node | None = None


def test_the_light_cleanup_collects_what_training_leaves_between_epochs(dataset):
    """Garbage made after an epoch's end (a callback, a stopper's evaluation) is collected at the next one."""
    callback = _CycleEveryEpoch()
    gc.disable()  # only the loop's own collections: none of the interpreter's automatic ones
    try:
        _run(
            dataset,
            "batchedlcwa",
            training_loop_kwargs=dict(epoch_cleanup="light"),
            callbacks=callback,
            num_epochs=4,
        )
    finally:
        gc.enable()
    alive = [ref() is not None for ref in callback.cycles]
    assert len(alive) == 4 and alive[:3] == [False] * 3  # the last one outlives training (no epoch end after it)


def test_sub_batches_with_the_loss_read_once_per_epoch(dataset):
    """Sub-batch losses scaled as PyKEEN scales them ("mean" reduction), label smoothing on: the same weights."""

    theirs = _sub_batched(dataset, "lcwa", num_epochs=2, label_smoothing=0.1)
    ours = _sub_batched(dataset, "batchedlcwa", dict(read_loss="epoch"), num_epochs=2, label_smoothing=0.1)
    assert ours.losses == pytest.approx(theirs.losses, rel=1e-6)
    for a, b in zip(theirs.model.parameters(), ours.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_loss_settings_auto_by_device_and_checked(dataset, monkeypatch, caplog):
    """``"auto"``: PyKEEN's per-batch reads and full cleanup on the CPU, the cheap ones where reads wait (CUDA),
    said once in the log."""
    model = _run(dataset, "batchedlcwa").model
    loop = BatchedLCWATrainingLoop(model=model, triples_factory=dataset.training, optimizer="adam")
    assert (loop.read_loss, loop.epoch_cleanup) == ("auto", "auto")
    assert not loop._cheap(loop.read_loss, "epoch") and not loop._cheap(loop.epoch_cleanup, "light")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pykeen_momok.lcwa"):
        loop._say_once()
    assert not [r for r in caplog.records if r.name == "pykeen_momok.lcwa"]  # the CPU: PyKEEN's way, nothing to say
    monkeypatch.setattr(lcwa, "reads_wait_for_device", lambda device: True)
    assert loop._cheap(loop.read_loss, "epoch") and loop._cheap(loop.epoch_cleanup, "light")
    loop._said = False
    with caplog.at_level(logging.INFO, logger="pykeen_momok.lcwa"):
        loop._say_once()
        loop._say_once()
    assert [r.getMessage() for r in caplog.records if r.name == "pykeen_momok.lcwa"] == [
        "training on cpu: read_loss='auto' -> 'epoch', epoch_cleanup='auto' -> 'light' (PyKEEN's per-batch loss "
        "reads / full cleanup: read_loss='batch', epoch_cleanup='full')"
    ]
    loop.read_loss = "batch"
    assert not loop._cheap(loop.read_loss, "epoch")
    with pytest.raises(ValueError, match=r"read_loss must be one of \('auto', 'batch', 'epoch'\), got 'step'"):
        BatchedLCWATrainingLoop(model=model, triples_factory=dataset.training, read_loss="step")
    with pytest.raises(ValueError, match=r"epoch_cleanup must be one of \('auto', 'full', 'light'\), got None"):
        BatchedLCWATrainingLoop(model=model, triples_factory=dataset.training, epoch_cleanup=None)


@pytest.mark.parametrize("read_loss", ["batch", "epoch"])
def test_a_non_finite_loss_stops_training(dataset, monkeypatch, read_loss):
    """A NaN loss raises PyKEEN's NonFiniteLossError: at the batch (PyKEEN's way), or at the epoch's end."""
    from pykeen_momok.losses import MoMoKLoss

    original = MoMoKLoss.process_lcwa_scores
    monkeypatch.setattr(MoMoKLoss, "process_lcwa_scores", lambda self, **kw: original(self, **kw) * float("nan"))
    before = gc.get_freeze_count()
    message = "in epoch 1 .*read_loss='epoch'" if read_loss == "epoch" else "^Loss is non-finite.$"
    with pytest.raises(NonFiniteLossError, match=message):
        _run(dataset, "batchedlcwa", training_loop_kwargs=dict(read_loss=read_loss, epoch_cleanup="light"))
    assert gc.get_freeze_count() == before  # thawed on the way out too


def test_the_light_cleanup_keeps_someone_elses_frozen_objects_frozen(dataset):
    """Objects frozen before training stay frozen: the loop then neither freezes nor thaws."""
    marker = [object()]  # a container: tracked by the collector
    gc.freeze()
    try:
        _run(dataset, "batchedlcwa", training_loop_kwargs=dict(epoch_cleanup="light"))
        assert gc.get_freeze_count() > 0
        assert not any(item is marker for item in gc.get_objects())  # still in the permanent generation
    finally:
        gc.unfreeze()
    assert any(item is marker for item in gc.get_objects())  # (the check above can fail)


class _Scripted:
    """Validation results with a scripted metric: what the early stopper reads, in the order given."""

    def __init__(self, values: list[float]):
        self.values = values

    def __call__(self, **kwargs):
        value = self.values.pop(0)
        return type("Results", (), dict(get_metric=lambda self, name: value, to_flat_dict=lambda self: {}))()


@pytest.mark.parametrize(("values", "warned"), [([0.5, 0.9, 0.7], True), ([0.5, 0.7, 0.9], False)])
def test_a_run_past_the_best_validation_says_where_the_best_weights_are(dataset, tmp_path, caplog, values, warned):
    """PyKEEN's EarlyStopper loads its best weights back only when it stops the training: else we say so."""
    from pykeen.evaluation import RankBasedEvaluator
    from pykeen.stoppers import EarlyStopper

    from pykeen_momok import MoMoK

    model = MoMoK(triples_factory=dataset.training, embedding_dim=16, relation_dim=8, random_seed=1)
    evaluator = RankBasedEvaluator()
    evaluator.evaluate = _Scripted(list(values))
    path = tmp_path / "best.pt"
    stopper = EarlyStopper(
        model=model,
        evaluator=evaluator,
        training_triples_factory=dataset.training,
        evaluation_triples_factory=dataset.validation,
        frequency=1,
        patience=10,
        metric="mrr",
        best_model_path=path,
    )
    loop = BatchedLCWATrainingLoop(model=model, triples_factory=dataset.training)
    with caplog.at_level(logging.WARNING, logger="pykeen_momok.lcwa"):
        loop.train(triples_factory=dataset.training, num_epochs=3, batch_size=256, stopper=stopper, use_tqdm=False)
    said = [record.getMessage() for record in caplog.records if "without an early stop" in record.getMessage()]
    assert not stopper.stopped and bool(said) == warned
    if warned:
        assert "best validation mrr (0.9000 at epoch 2)" in said[0] and str(path) in said[0]
        # the file the warning names holds epoch 2's weights, and loads as the warning says
        best = torch.load(path, weights_only=True)
        assert best.keys() == model.state_dict().keys()
        assert any(not torch.equal(best[key], value) for key, value in model.state_dict().items())
        model.load_state_dict(best)
