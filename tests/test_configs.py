"""Every config in ``configs/``, run through the machinery of ``pykeen experiments run``.

- Each benchmark config trains for one epoch on a slice of its real dataset (``../shared/data``, skipped
  when absent) through :func:`pykeen.pipeline.pipeline_from_config`, the function ``pykeen experiments run``
  calls. Only the dataset folder, the epoch count, the stopper's frequency and what a slice smaller than one
  batch needs are changed (:func:`one_epoch_on_slice`); the test asserts that nothing else differs from the file.
- The demo config ``configs/momok_synthetic.json`` is the MoMoK run of ``pykeen-momok demo``, which
  ``tests/test_demo.py`` trains in full (40 epochs) and checks against TuckER; here it is checked to be that run.
- The real ``pykeen experiments run`` command (a fresh interpreter, its own ``PYKEEN_HOME``) keeps the config's
  seed with ``--keep-seed`` and drops it without.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import logging
import math
import os
import pathlib
import re
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import pykeen.pipeline
import pytest
import torch
from click.testing import CliRunner
from pykeen.datasets import dataset_resolver
from pykeen.experiments.cli import experiments
from pykeen.models import Model
from pykeen.pipeline import pipeline_from_config
from pykeen.training.callbacks import TrainingCallback

from pykeen_momok.cli import run_demo
from pykeen_momok.datasets.base import read_triples_file
from pykeen_momok.datasets.benchmarks import MMKGBenchmark
from pykeen_momok.features import read_id_map, read_label_list
from pykeen_momok.lcwa import dense_targets
from pykeen_momok.recipes import merge

from conftest import shared_dataset_dir

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"
DEMO_CONFIG = CONFIGS / "momok_synthetic.json"
#: the top-level configs (``configs/hpo/`` holds HPO configs, which ``pykeen experiments optimize`` runs)
BENCHMARK_CONFIGS = sorted(path.name for path in CONFIGS.glob("momok_*.json") if path != DEMO_CONFIG)

#: training batches a slice gives a config whose recipe learns within an epoch (the fast recipe)
FULL_BATCHES = 3
#: LCWA training instances of a slice for the paper recipe: less than one of its batches (1,024). Its model
#: (d = 200-300, d_r = 256, ~70 M parameters) costs ~10 s per full batch on a 2-core CPU, and its per-head
#: BCE shows no ranking signal in an epoch anyway (README, "Quality"): one smaller step shows that it trains.
SUB_BATCH_INSTANCES = 256
#: MRR z-score (against the expectation of random ranking over each query's filtered candidates) that the
#: fast recipe must beat after one epoch on its slice
MIN_Z_MRR = 3.0


# slices of the shared benchmark folders ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BenchmarkSlice:
    """A folder laid out like a shared benchmark folder, holding its most frequent entities."""

    directory: pathlib.Path
    num_entities: int
    #: triples per split, keyed like :attr:`MMKGBenchmark.split_files`
    num_triples: Mapping[str, int]
    #: LCWA training instances: distinct (head, relation) pairs, inverse triples included
    num_instances: int


@functools.cache
def _read_splits(dataset_cls: type[MMKGBenchmark], source: pathlib.Path) -> dict[str, np.ndarray]:
    """The label triples of each split, shape ``(n, 3)``, read once per dataset and session."""
    return {
        key: read_triples_file(source / name, dataset_cls.triples_format_name)
        for key, name in dataset_cls.split_files.items()
    }


def _slice_order(training: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Entity labels by falling training degree (ties: label order), and where each training triple enters.

    :param training: label triples, shape ``(n, 3)``
    :return: the labels in slice order, shape ``(E,)``; each triple's position in that order, the larger of its
        head's and its tail's, shape ``(n,)`` (a slice of the first ``k`` entities holds the triples below ``k``);
        each triple's (head, relation) and (tail, relation) pair ids, shape ``(n, 2)``
    """
    labels, ids = np.unique(training[:, [0, 2]], return_inverse=True)
    ids = ids.reshape(-1, 2)
    degree = np.bincount(ids.ravel(), minlength=len(labels))
    order = np.argsort(-degree, kind="stable")
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    relation_labels, relations = np.unique(training[:, 1], return_inverse=True)
    head_pairs = ids[:, 0] * len(relation_labels) + relations.reshape(-1)
    tail_pairs = ids[:, 1] * len(relation_labels) + relations.reshape(-1)
    # a (tail, relation) pair is the (head, inverse relation) pair of the inverse triple: negative ids keep
    # the two kinds apart
    pairs = np.stack([head_pairs, -1 - tail_pairs], axis=1)
    return labels[order], position[ids].max(axis=1), pairs


def _instances(entry: np.ndarray, pairs: np.ndarray, k: int) -> int:
    return len(np.unique(pairs[entry < k]))


def make_slice(
    dataset_cls: type[MMKGBenchmark], source: pathlib.Path, target: pathlib.Path, *, min_instances: int
) -> BenchmarkSlice:
    """Write the smallest slice of ``source`` by entity degree with at least ``min_instances`` LCWA instances.

    The slice holds the most frequent training entities, the triples of every split among them, their lines
    of the id files (renumbered in the original order), their rows of the MiniLM text features and their lines
    of the image index and name files: the benchmark class reads it like the full folder.

    :raises ValueError: if the whole training split has fewer instances than asked for
    """
    splits = _read_splits(dataset_cls, source)
    ranked, entry, pairs = _slice_order(splits["training"])
    if _instances(entry, pairs, len(ranked)) < min_instances:
        raise ValueError(f"{source}: the whole training split has fewer than {min_instances} LCWA instances")
    low, high = 2, len(ranked)
    while low < high:  # instances grow with the number of entities kept
        middle = (low + high) // 2
        if _instances(entry, pairs, middle) >= min_instances:
            high = middle
        else:
            low = middle + 1
    kept = set(ranked[:low].tolist())
    target.mkdir(parents=True)
    num_triples = {}
    relations: set[str] = set()
    dot = dataset_cls.triples_format_name == "dot"
    for key, name in dataset_cls.split_files.items():
        triples = splits[key]
        inside = np.fromiter((h in kept and t in kept for h, t in triples[:, [0, 2]]), bool, len(triples))
        num_triples[key] = int(inside.sum())
        relations.update(triples[inside, 1].tolist())
        lines = (" ".join(row) + " .\n" if dot else "\t".join(row) + "\n" for row in triples[inside].tolist())
        (target / name).write_text("".join(lines), encoding="utf-8")
    for name, labels in ((dataset_cls.entity2id_file, kept), (dataset_cls.relation2id_file, relations)):
        if name is not None:
            in_order = [label for label in read_id_map(source / name) if label in labels]
            (target / name).write_text("".join(f"{label}\t{i}\n" for i, label in enumerate(in_order)), encoding="utf-8")
    matrix_name, labels_name = dataset_cls.minilm_files
    if (source / matrix_name).is_file():
        labels = read_label_list(source / labels_name)
        rows = [i for i, label in enumerate(labels) if label in kept]
        np.save(target / matrix_name, np.load(source / matrix_name)[rows])
        (target / labels_name).write_text("".join(labels[i] + "\n" for i in rows), encoding="utf-8")
    for name in (dataset_cls.image_index_file, dataset_cls.entity_text_file):  # "label<TAB>..." lines
        if name is not None and (source / name).is_file():
            # split at line ends only: str.splitlines() would also split names holding U+2028
            lines = (source / name).read_text(encoding="utf-8").split("\n")
            inside = [line for line in lines if line.split("\t", 1)[0] in kept]
            (target / name).write_text("".join(line + "\n" for line in inside), encoding="utf-8")
    return BenchmarkSlice(target, len(kept), num_triples, _instances(entry, pairs, low))


def test_make_slice_keeps_the_most_frequent_entities_and_the_triples_among_them(tmp_path) -> None:
    """On a hand-made folder: degrees a 4, b 3, c 2, d 1 (training); one instance more brings in the next entity."""
    folder = tmp_path / "MKG-Y"
    folder.mkdir()
    (folder / "train.txt").write_text("a r b .\na r c .\nb s c .\na s b .\nd r a .\n")
    (folder / "valid.txt").write_text("b r a .\nd q c .\n")  # q: a relation outside every slice below
    (folder / "test.txt").write_text("c r a .\n")
    (folder / "entity2id.txt").write_text("d 0\nc 1\nb 2\na 3\n")
    (folder / "relation2id.txt").write_text("s 0\nq 1\nr 2\n")
    np.save(folder / "text_minilm.npy", np.arange(8, dtype=np.float16).reshape(4, 2))
    (folder / "text_minilm_entities.txt").write_text("a\nb\nc\nd\n")
    dataset_cls = dataset_resolver.lookup("MKG-Y")
    # a, b: triples a-r-b, a-s-b: pairs (a,r), (b,r^-1), (a,s), (b,s^-1) = 4 instances
    two = make_slice(dataset_cls, folder, tmp_path / "two", min_instances=4)
    assert (two.num_entities, two.num_instances) == (2, 4)
    assert two.num_triples == {"training": 2, "validation": 1, "testing": 0}
    assert (two.directory / "entity2id.txt").read_text() == "b\t0\na\t1\n"  # the original order, renumbered
    assert (two.directory / "relation2id.txt").read_text() == "s\t0\nr\t1\n"
    assert (two.directory / "valid.txt").read_text() == "b r a .\n"
    assert np.load(two.directory / "text_minilm.npy").tolist() == [[0, 1], [2, 3]]
    three = make_slice(dataset_cls, folder, tmp_path / "three", min_instances=5)
    assert three.num_entities == 3 and three.num_triples["training"] == 4
    assert (three.directory / "test.txt").read_text() == "c r a .\n"
    with pytest.raises(ValueError, match="fewer than 100 LCWA instances"):
        make_slice(dataset_cls, folder, tmp_path / "all", min_instances=100)


# one epoch of a config on a slice --------------------------------------------------------------------------


class FirstBatchRecorder(TrainingCallback):
    """Record every batch loss, and what it takes to recompute the first batch's loss exactly.

    That is the batch, the parameters before the first step and torch's random state before the first forward
    pass: with both restored, the model draws the same dropout masks and gating noise again.
    """

    def __init__(self) -> None:
        super().__init__()
        self.batch_losses: list[float] = []
        self.first_batch: dict[str, torch.Tensor] | None = None
        self.initial_state: dict[str, Any] | None = None
        self.initial_rng: torch.Tensor | None = None

    def pre_batch(self, **kwargs: Any) -> None:  # noqa: D102
        if self.initial_rng is None:
            self.initial_rng = torch.get_rng_state()
            self.initial_state = copy.deepcopy(self.model.state_dict())

    def on_batch(self, epoch: int, batch, batch_loss: float, **kwargs: Any) -> None:  # noqa: D102
        self.batch_losses.append(batch_loss)
        if self.first_batch is None:
            if "target" not in batch:  # the batched LCWA loop's batch: its targets as coordinates
                batch = dense_targets(batch)
            self.first_batch = {key: value.clone() for key, value in batch.items() if value is not None}

    def first_batch_loss(self, model: Model, state: Mapping[str, Any], label_smoothing: float) -> float:
        """The training loss of the first batch under ``state``, as PyKEEN's LCWA loop computes it.

        The batch holds ``pairs`` (head and relation ids, shape ``(B, 2)``) and ``target`` (their tails as 0/1
        labels over all entities, shape ``(B, E)``); the loss is the loss object's LCWA loss of ``score_t`` plus the
        model's regularisation term (MoMoK: mu * CLUB). ``model`` keeps ``state`` afterwards.
        """
        assert self.first_batch is not None and self.initial_rng is not None, "no batch was trained"
        model.load_state_dict(state)
        model.train()
        torch.set_rng_state(self.initial_rng)
        scores = model.score_t(self.first_batch["pairs"])
        loss = model.loss.process_lcwa_scores(
            predictions=scores,
            labels=self.first_batch["target"],
            label_smoothing=label_smoothing,
            num_entities=model.num_entities,
        )
        return (loss + model.collect_regularization_term()).item()


def _differences(original: Any, changed: Any, path: str = "") -> set[str]:
    """The key paths at which two JSON-like values differ, e.g. ``{"training_kwargs.num_epochs"}``.

    A missing ``*_kwargs`` object is an empty one: its added keys are named one by one.
    """
    if isinstance(original, Mapping) or isinstance(changed, Mapping):
        original, changed = original or {}, changed or {}
        return {
            difference
            for key in set(original) | set(changed)
            for difference in _differences(original.get(key), changed.get(key), f"{path}.{key}" if path else key)
        }
    return set() if original == changed else {path}


def one_epoch_on_slice(config: dict[str, Any], data: BenchmarkSlice, tmp_path: pathlib.Path) -> dict[str, Any]:
    """The config, changed to train one epoch on ``data`` (and nothing else), as ``pykeen experiments run`` reads it.

    - ``dataset_kwargs``: the slice's folder, ``verify="none"`` (the benchmark classes check ``directory=`` files
      against the published checksums, which a slice cannot match; the class itself is kept, for its file
      layout, feature discovery, pooling layouts and validation choice, which ``MultiModalDataset`` lacks), and
      for ``validation="heldout"`` a held-out size of 5 % of the slice (the default 2,000 would empty it);
    - ``num_epochs`` 1;
    - a slice of full batches: the stopper's ``frequency`` 1 (else it never runs) with its best-weights file in
      ``tmp_path`` (PyKEEN otherwise leaves it under ``PYKEEN_HOME/checkpoints`` when training does not stop early);
    - a slice smaller than one batch: ``drop_last=False`` (PyKEEN drops the incomplete batch of a model with
      BatchNorm) and no automatic memory optimisation (its probe would fail on the incomplete batch too). The
      stopper keeps its frequency: these are the paper's ~70 M-parameter models, whose best-weights file (280 MB)
      takes ~6 s to write here, and the stopper code is the same as the fast recipe's.
    """
    config = copy.deepcopy(config)
    settings = config["pipeline"]
    dataset_cls = dataset_resolver.lookup(settings["dataset"])
    dataset_kwargs = settings.setdefault("dataset_kwargs", {})
    dataset_kwargs.update(directory=str(data.directory), verify="none")
    if dataset_kwargs.get("validation", dataset_cls.default_validation) == "heldout":
        dataset_kwargs["heldout_size"] = max(1, data.num_triples["training"] // 20)
    settings["training_kwargs"]["num_epochs"] = 1
    if data.num_instances < settings["training_kwargs"]["batch_size"]:
        settings["training_kwargs"]["drop_last"] = False
        settings.setdefault("training_loop_kwargs", {})["automatic_memory_optimization"] = False
    elif "stopper" in settings:
        # a path object: PyKEEN 1.11.1's EarlyStopper calls .is_file() on it (so a JSON config cannot set it)
        settings.setdefault("stopper_kwargs", {}).update(frequency=1, best_model_path=tmp_path / "best-weights.pt")
    return config


@pytest.mark.parametrize("name", BENCHMARK_CONFIGS)
def test_benchmark_config_one_epoch_on_a_slice(name: str, tmp_path: pathlib.Path) -> None:
    """The config trains (its step lowers the loss), evaluates on the slice, and the fast recipe ranks above random."""
    original = json.loads((CONFIGS / name).read_text(encoding="utf-8"))
    settings = original["pipeline"]
    dataset_cls = dataset_resolver.lookup(settings["dataset"])
    source = shared_dataset_dir(dataset_cls.folder_name)
    batch_size = settings["training_kwargs"]["batch_size"]
    # the fast recipe's softmax cross-entropy ranks within an epoch; the paper's per-head BCE does not
    learns_in_one_epoch = settings["loss_kwargs"]["head_loss"] == "softmax"
    # DB15K holds 5 % of the slice's training triples out: ask for that much more
    wanted = math.ceil(FULL_BATCHES * batch_size * 1.1) if learns_in_one_epoch else SUB_BATCH_INSTANCES
    data = make_slice(dataset_cls, source, tmp_path / "slice", min_instances=wanted)
    config = one_epoch_on_slice(original, data, tmp_path)
    validates = data.num_instances >= batch_size
    changes = {"dataset_kwargs.directory", "dataset_kwargs.verify", "training_kwargs.num_epochs"}
    if validates:
        changes |= {"stopper_kwargs.frequency", "stopper_kwargs.best_model_path"}
    else:
        changes |= {"training_kwargs.drop_last", "training_loop_kwargs.automatic_memory_optimization"}
    if "heldout_size" in config["pipeline"]["dataset_kwargs"]:
        changes.add("dataset_kwargs.heldout_size")
    assert _differences(original, config) == {f"pipeline.{path}" for path in changes}

    recorder = FirstBatchRecorder()
    config["pipeline"]["training_kwargs"]["callbacks"] = recorder  # an observer: it changes nothing it sees
    result = pipeline_from_config(config)
    print(
        f"MEASURED {name}: slice of {data.num_entities} entities, {dict(data.num_triples)} triples, "
        f"{data.num_instances} instances; batch losses {recorder.batch_losses}; train {result.train_seconds:.1f} s, "
        f"evaluate {result.evaluate_seconds:.1f} s"
    )

    # it trained: one epoch, every batch loss finite, and the trained model's loss on the first batch (same
    # dropout masks) is below the initial model's, whose recomputation matches what the loop recorded
    assert len(result.losses) == 1 and all(math.isfinite(loss) for loss in recorder.batch_losses)
    expected_batches = FULL_BATCHES if learns_in_one_epoch else 1
    assert len(recorder.batch_losses) == expected_batches, recorder.batch_losses
    label_smoothing = settings["training_kwargs"].get("label_smoothing", 0.0)
    trained_state = copy.deepcopy(result.model.state_dict())
    before = recorder.first_batch_loss(result.model, recorder.initial_state, label_smoothing)
    after = recorder.first_batch_loss(result.model, trained_state, label_smoothing)
    print(f"MEASURED {name}: first batch loss {before:.6f} before training, {after:.6f} after")
    assert before == pytest.approx(recorder.batch_losses[0], rel=1e-5)
    assert after < before

    # the stopper validated once, on the slice's validation split (not at all where its frequency was kept)
    assert len(result.stopper.results) == (1 if validates else 0)
    assert all(math.isfinite(value) for value in result.stopper.results)
    # filtered ranks of every test triple of the slice, both sides, among the slice's entities
    metrics = result.metric_results
    assert metrics.get_metric("both.realistic.count") == 2 * data.num_triples["testing"]
    assert 1.0 <= metrics.get_metric("both.realistic.arithmetic_mean_rank") <= data.num_entities
    assert 1.0 / data.num_entities <= metrics.get_metric("both.realistic.inverse_harmonic_mean_rank") <= 1.0
    z_mrr = metrics.get_metric("both.realistic.z_inverse_harmonic_mean_rank")
    print(f"MEASURED {name}: MRR {metrics.get_metric('both.realistic.inverse_harmonic_mean_rank'):.4f}, z {z_mrr:.2f}")
    if learns_in_one_epoch:
        assert z_mrr > MIN_Z_MRR


# the demo config ---------------------------------------------------------------------------------------------


def test_demo_config_is_the_demo_run_that_test_demo_trains_in_full(monkeypatch) -> None:
    """``configs/momok_synthetic.json`` holds exactly the settings ``run_demo`` trains MoMoK with.

    ``tests/test_demo.py::test_demo_momok_beats_tucker_on_cold_entities`` runs that training in full (40 epochs)
    and checks its ranks against TuckER's; so the config is run in full there, not a second time here.
    """
    calls: list[dict[str, Any]] = []

    class RecordedRun:  # what run_demo reads of a pipeline result
        def get_metric(self, key: str) -> float:
            return 0.0

    def record(**kwargs: Any) -> RecordedRun:
        calls.append(kwargs)
        return RecordedRun()

    monkeypatch.setattr(pykeen.pipeline, "pipeline", record)
    run_demo()
    assert [call["model"] for call in calls] == ["MoMoK", "TuckER"]
    momok = dict(calls[0])
    momok = merge(momok, dict(training_kwargs=dict(num_epochs=momok.pop("epochs"))))
    assert momok == json.loads(DEMO_CONFIG.read_text(encoding="utf-8"))["pipeline"]


# the real command line: pykeen experiments run [--keep-seed] ---------------------------------------------------


def _replicate_results(directory: pathlib.Path) -> dict[str, Any]:
    """The ``results.json`` of the one replicate ``pykeen experiments run -d directory`` wrote."""
    (path,) = directory.rglob("results.json")
    return json.loads(path.read_text(encoding="utf-8"))


def test_experiments_run_keeps_the_seed_only_with_keep_seed(tmp_path: pathlib.Path, caplog) -> None:
    """The demo config (one epoch, a sixth of its graph) keeps its seed 42 with ``--keep-seed`` only.

    With ``--keep-seed`` the command (in a fresh interpreter, as a user runs it after ``pip install``) gives the
    losses and ranks of ``pipeline_from_config`` run here with the file's seed; without it, PyKEEN's command drops
    the seed (it says so) and the losses differ.
    """
    config = json.loads(DEMO_CONFIG.read_text(encoding="utf-8"))
    config["pipeline"]["training_kwargs"]["num_epochs"] = 1
    config["pipeline"]["dataset_kwargs"] = dict(num_colours=10, num_shapes=10)  # 100 of the 600 entities
    path = tmp_path / "momok_synthetic_1_epoch.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    home = tmp_path / "pykeen-home"
    # the same torch thread count as here: float sums, hence losses, depend on it
    env = {**os.environ, "PYKEEN_HOME": str(home), "PYSTOW_HOME": str(home)}
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    command = ["experiments", "run", str(path), "--keep-seed", "-d", str(tmp_path / "kept")]
    completed = subprocess.run(
        [sys.executable, "-m", "pykeen", *command], capture_output=True, text=True, env=env, timeout=600
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    kept = _replicate_results(tmp_path / "kept")

    reference = pipeline_from_config(copy.deepcopy(config))
    mrr = "both.realistic.inverse_harmonic_mean_rank"
    assert kept["losses"] == pytest.approx(reference.losses, rel=1e-6)
    assert kept["metrics"]["both"]["realistic"]["inverse_harmonic_mean_rank"] == pytest.approx(
        reference.get_metric(mrr), rel=1e-6
    )

    with caplog.at_level(logging.INFO, logger="pykeen.pipeline.api"):
        invoked = CliRunner().invoke(experiments, ["run", str(path), "-d", str(tmp_path / "dropped")])
    assert invoked.exit_code == 0, invoked.output + repr(invoked.exception)
    assert "Ignoring random_seed=42" in caplog.text
    drawn = re.search(r"No random seed is specified\. Setting to (\d+)\.", caplog.text)
    assert drawn is not None and int(drawn.group(1)) != 42, caplog.text[-2000:]
    dropped = _replicate_results(tmp_path / "dropped")
    print(f"MEASURED losses with --keep-seed {kept['losses']}, without (seed {drawn.group(1)}) {dropped['losses']}")
    # runs with one seed agree to 1e-6 (above); this one does not
    assert dropped["losses"] != pytest.approx(kept["losses"], rel=1e-6)
