"""A MoMoK training step asks nothing of the device's data on the host (issue 8, item 3).

The audit (``benchmarks/_host_sync.py``) records, on CPU, every data-dependent aten operation (on a GPU each makes
the host wait for the device) with the pykeen_momok function that asked for it.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import sys

import pytest
import torch
from pykeen.training import LCWATrainingLoop
from pykeen.training.callbacks import TrainingCallback
from pykeen.triples.instances import LCWAInstances

from pykeen_momok import model as model_module
from pykeen_momok.datasets.synthetic import SyntheticMMKG
from pykeen_momok.lcwa import BatchedLCWATrainingLoop
from pykeen_momok.losses import MoMoKLoss
from pykeen_momok.model import MoMoK
from pykeen_momok.nn import tucker

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))

from _host_sync import HostSyncAudit  # noqa: E402


@pytest.fixture(scope="module")
def dataset():
    """The synthetic multi-modal graph (image and text modalities, so a joint head too)."""
    os.environ.setdefault("PYKEEN_HOME", "/tmp/pykeen-momok-tests")
    return SyntheticMMKG()


def _trained_step(dataset, audit: HostSyncAudit | None = None, steps: int = 2, **options) -> MoMoK:
    """``steps`` LCWA training steps as PyKEEN's loop takes them; the last one under ``audit``."""
    torch.manual_seed(0)
    model = MoMoK(
        triples_factory=dataset.training, loss=MoMoKLoss(), embedding_dim=16, relation_dim=8, random_seed=0, **options
    )
    optimizer = torch.optim.Adam(model.get_grad_params(), lr=1e-3)
    loop = LCWATrainingLoop(model=model, triples_factory=dataset.training, optimizer=optimizer)
    instances = LCWAInstances.from_triples_factory(dataset.training)
    index = torch.arange(64)
    batch = {
        "pairs": torch.as_tensor(instances.pairs[index]),
        "target": torch.as_tensor(instances.compressed[index.numpy()].toarray(), dtype=torch.float32),
    }
    model.train()
    for step in range(steps):
        with audit if audit is not None and step == steps - 1 else contextlib.nullcontext():
            loss = loop._process_batch(batch, 0, 64, label_smoothing=0.0, slice_size=None)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            model.post_parameter_update()
    return model


@pytest.mark.parametrize("core_dropout", [0.4, 0.0])
def test_a_training_step_with_all_relation_matrices_never_waits_for_the_device(dataset, core_dropout, monkeypatch):
    """``relation_matrices="all"`` (what ``"auto"`` takes on CUDA): forward, loss, backward, Adam, CLUB step.

    Without core dropout (the fast recipes) the heads' contraction has no masks; on CUDA it then contracts chunks
    of queries instead of counting each relation's queries on the host: that choice is made here as on CUDA.
    """
    monkeypatch.setattr(tucker, "_groups_on_the_host", lambda x: not torch.is_grad_enabled())
    audit = HostSyncAudit()
    _trained_step(dataset, audit, relation_matrices="all", core_dropout=core_dropout)
    assert not audit.sites, f"data-dependent operations in the training step: {dict(audit.sites)}"


def test_the_host_side_draws_of_the_reference_way(dataset):
    """By default a step draws its core-dropout seeds and CLUB pairs on the host (no GPU wait, but a CUDA graph
    would replay them): the audit with ``host_side=True`` finds both; the Triton path with ``mi_pair_draw="device"``
    draws none (``tests/test_nn_tucker_triton.py``)."""
    audit = HostSyncAudit(host_side=True)
    _trained_step(dataset, audit, relation_matrices="all", core_dropout=0.4)
    assert {site for site, _ in audit.sites} == {
        "pykeen_momok/nn/tucker.py:draw_core_seed",
        "pykeen_momok/nn/club.py:_pair_indices",
    }
    audit = HostSyncAudit(host_side=True)
    _trained_step(dataset, audit, relation_matrices="all", core_dropout=0.4, mi_pair_draw="device")
    assert {site for site, _ in audit.sites} == {"pykeen_momok/nn/tucker.py:draw_core_seed"}


def test_without_core_dropout_the_cpu_counts_groups(dataset):
    """On the CPU (no waiting) the mask-free contraction groups queries per relation: the audit sees the counts."""
    audit = HostSyncAudit()
    _trained_step(dataset, audit, relation_matrices="all", core_dropout=0.0)
    assert {site for site, _ in audit.sites} == {"pykeen_momok/nn/tucker.py:_segments"}


def test_the_audit_sees_the_batch_relations_unique(dataset):
    """The same step with ``relation_matrices="batch"`` finds its one ``torch.unique`` (so the audit can fail)."""
    audit = HostSyncAudit()
    _trained_step(dataset, audit, relation_matrices="batch")
    assert dict(audit.sites) == {("pykeen_momok/model.py:_queries", "aten::_unique2"): 1}


def test_the_audit_counts_item_and_tolist_of_our_code(dataset, monkeypatch):
    """``.item()`` and ``.tolist()`` called from pykeen_momok are recorded by function."""
    from pykeen_momok import training

    original = training.MutualInformationTerm.estimator_step

    def with_item(self, expert_outputs_of):
        loss = original(self, expert_outputs_of)
        loss.item()
        loss.reshape(1).tolist()
        return loss

    monkeypatch.setattr(training.MutualInformationTerm, "estimator_step", with_item)
    audit = HostSyncAudit()
    _trained_step(dataset, audit, relation_matrices="all")
    assert dict(audit.sites) == {  # with_item is not ours: the innermost pykeen_momok frame is its caller
        ("pykeen_momok/model.py:post_parameter_update", "aten::_local_scalar_dense"): 1,
        ("pykeen_momok/model.py:post_parameter_update", "Tensor.tolist"): 1,
    }


def test_all_and_batch_relation_matrices_train_the_same(dataset):
    """Building every relation's core matrix changes no score, mask or gradient (all dropouts on)."""
    models = [_trained_step(dataset, steps=3, relation_matrices=choice) for choice in ("all", "batch")]
    for (name, a), (_, b) in zip(models[0].state_dict().items(), models[1].state_dict().items(), strict=True):
        if torch.is_tensor(a):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    hr = dataset.testing.mapped_triples[:32, :2]
    with torch.no_grad():
        scores = [model.eval().score_t(hr) for model in models]
    torch.testing.assert_close(scores[0], scores[1], rtol=1e-5, atol=1e-6)


def test_relation_matrices_choice(dataset, monkeypatch):
    """``"auto"``: every relation's matrix only where reads wait (CUDA), for batches with at least as many queries
    as relations, while all heads' matrices fit their budgets; ``"all"`` / ``"batch"`` always; bad values named."""
    model = MoMoK(triples_factory=dataset.training, embedding_dim=8, relation_dim=4, loss=MoMoKLoss())
    relations = torch.zeros(model.num_relations, dtype=torch.long)
    assert not model._all_relation_matrices(relations)  # CPU: torch.unique costs nothing to wait for
    monkeypatch.setattr(model_module, "reads_wait_for_device", lambda device: True)  # as on CUDA
    assert model._all_relation_matrices(relations)
    assert not model._all_relation_matrices(relations[1:])  # more relations than queries
    for head in model.interaction.heads:  # d = 8: 256 bytes a float32 matrix
        head.max_relation_matrix_bytes = model.num_relations * 8 * 8 * 4 - 1
    assert not model._all_relation_matrices(relations)
    model.relation_matrices = "all"
    assert model._all_relation_matrices(relations[:1])
    model.relation_matrices = "batch"
    assert not model._all_relation_matrices(relations)
    with pytest.raises(ValueError, match=r"relation_matrices must be one of \('auto', 'batch', 'all'\)"):
        MoMoK(triples_factory=dataset.training, embedding_dim=8, relation_dim=4, relation_matrices="some")


class _Batches(TrainingCallback):
    """Counts the training batches."""

    count = 0

    def on_batch(self, epoch: int, batch, batch_loss, **kwargs) -> None:  # noqa: D102
        self.count += 1


@pytest.mark.parametrize("read_loss", ["epoch", "batch"])
def test_a_training_epoch_reads_the_loss_once(dataset, monkeypatch, read_loss):
    """A whole epoch through the batched LCWA loop, PyKEEN's code audited too: with ``read_loss="epoch"`` the one
    read is the epoch's loss; PyKEEN's way checks and reads it after every batch (so the audit can fail)."""
    import pykeen

    import pykeen_momok

    monkeypatch.setattr(tucker, "_groups_on_the_host", lambda x: not torch.is_grad_enabled())
    torch.manual_seed(0)
    model = MoMoK(
        triples_factory=dataset.training,
        loss=MoMoKLoss(),
        embedding_dim=16,
        relation_dim=8,
        random_seed=0,
        relation_matrices="all",
        core_dropout=0.0,
    )
    loop = BatchedLCWATrainingLoop(
        model=model,
        triples_factory=dataset.training,
        optimizer="adam",
        automatic_memory_optimization=False,
        read_loss=read_loss,
        epoch_cleanup="light",
    )
    audit, counter = HostSyncAudit(packages=(pykeen_momok, pykeen)), _Batches()
    with audit:
        losses = loop.train(dataset.training, num_epochs=1, batch_size=256, use_tqdm=False, callbacks=counter)
    batches = counter.count
    assert batches > 10
    assert len(losses) == 1 and isinstance(losses[0], float)
    if read_loss == "epoch":
        assert dict(audit.sites) == {("pykeen_momok/lcwa.py:_train_epoch", "aten::_local_scalar_dense"): 1}
    else:
        assert dict(audit.sites) == {
            # bool(torch.isfinite(loss)) and loss.item()
            ("pykeen/training/training_loop.py:_forward_pass", "aten::_local_scalar_dense"): 2 * batches,
        }
