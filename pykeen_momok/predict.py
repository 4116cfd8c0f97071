"""Trained-model folders (``pykeen-momok train``): load them, evaluate them, and predict with each head's probability.

A folder holds what PyKEEN's :meth:`~pykeen.pipeline.PipelineResult.save_to_directory` writes
(``trained_model.pkl``, ``training_triples/``, ``results.json``, ``metadata.json``) plus :data:`CLI_FILE`, which
says how to rebuild the dataset (:class:`DatasetSpec`) and with which settings the model was trained.

.. warning::
    ``trained_model.pkl`` is a whole pickled model (``torch.save`` of the module), and so are PyKEEN's
    ``training_triples/base.pth`` metadata: loading them can run code. Load only folders you trust.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = [
    "CLI_FILE",
    "METRICS",
    "DatasetSpec",
    "Prediction",
    "Predictor",
    "TrainedFolderError",
    "UnknownLabelError",
    "check_dataset_matches",
    "evaluate_model",
    "load_model",
    "load_training_factory",
    "read_cli_file",
]

#: the file ``pykeen-momok train`` adds to PyKEEN's results folder
CLI_FILE = "momok_cli.json"
#: version of :data:`CLI_FILE`'s layout
CLI_FILE_VERSION = 1
MODEL_FILE = "trained_model.pkl"
TRAINING_TRIPLES = "training_triples"
#: the metrics reported by ``evaluate``: name -> PyKEEN's rank-based metric
METRICS: Mapping[str, str] = {
    "MRR": "inverse_harmonic_mean_rank",
    "H@1": "hits_at_1",
    "H@3": "hits_at_3",
    "H@10": "hits_at_10",
}
#: the sides of the evaluation, in the order reported (``both``: head and tail ranks together)
SIDES = ("head", "tail", "both")


class TrainedFolderError(ValueError):
    """A folder is not a (complete) trained-model folder, or does not fit the dataset given."""


class UnknownLabelError(ValueError):
    """An entity or relation label that the trained model does not know."""

    def __init__(self, kind: str, label: str, suggestions: Sequence[str], known: Sequence[str] = ()) -> None:
        """Remember the label, its kind (``"entity"``/``"relation"``), close matches, and (few) known labels."""
        self.kind, self.label, self.suggestions = kind, label, list(suggestions)
        if self.suggestions:
            hint = f"; did you mean {', '.join(map(repr, self.suggestions))}?"
        elif known:
            hint = f"; known: {', '.join(map(repr, known))}"
        else:
            hint = ""
        super().__init__(f"unknown {kind} {label!r}{hint}")


# the dataset a folder was trained on -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """How to build a dataset: a PyKEEN dataset name, or a folder as :meth:`MultiModalDataset.from_directory` reads.

    ``kwargs`` go to the dataset class (``name``) or to ``from_directory`` (``directory``); they must be JSON values.
    """

    name: str | None = None
    directory: str | None = None
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:  # noqa: D105
        if (self.name is None) == (self.directory is None):
            raise ValueError("a dataset is given by exactly one of a name and a directory")

    def describe(self) -> str:
        """A short description for messages."""
        what = f"dataset {self.name!r}" if self.name is not None else f"folder {self.directory!r}"
        return what + (f" with {json.dumps(dict(self.kwargs), sort_keys=True)}" if self.kwargs else "")

    def build(self):
        """Build (and load) the dataset.

        :raises ValueError, TypeError, OSError: as the dataset class raises them (unknown keyword arguments, missing
            or malformed files)
        """
        if self.directory is not None:
            from .datasets.base import MultiModalDataset

            dataset = MultiModalDataset.from_directory(self.directory, **self.kwargs)
        else:
            from pykeen.datasets import get_dataset

            dataset = get_dataset(dataset=self.name, dataset_kwargs=dict(self.kwargs) or None)
        dataset.training  # noqa: B018 -- a lazy dataset reads its files here: fail now, not later
        return dataset

    def to_json(self) -> dict[str, Any]:  # noqa: D102
        out: dict[str, Any] = {"name": self.name} if self.name is not None else {"directory": self.directory}
        out["kwargs"] = dict(self.kwargs)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DatasetSpec:  # noqa: D102
        return cls(name=data.get("name"), directory=data.get("directory"), kwargs=dict(data.get("kwargs") or {}))


def read_cli_file(folder: str | pathlib.Path) -> dict[str, Any]:
    """Read a folder's :data:`CLI_FILE`.

    :raises TrainedFolderError: if it is missing or unreadable
    """
    path = pathlib.Path(folder) / CLI_FILE
    if not path.is_file():
        raise TrainedFolderError(
            f"{str(folder)!r} has no {CLI_FILE} (written by `pykeen-momok train`): give the dataset with --dataset or "
            f"--directory"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TrainedFolderError(f"{str(path)!r} cannot be read: {error}") from None
    if not isinstance(data, dict) or data.get("version") != CLI_FILE_VERSION or "dataset" not in data:
        raise TrainedFolderError(f"{str(path)!r} is not a {CLI_FILE} of version {CLI_FILE_VERSION}")
    return data


# loading -----------------------------------------------------------------------------------------------


def _require(folder: pathlib.Path, name: str) -> pathlib.Path:
    if not folder.is_dir():
        raise TrainedFolderError(f"{str(folder)!r} is not a folder")
    path = folder / name
    if not path.exists():
        raise TrainedFolderError(
            f"{str(folder)!r} is not a trained-model folder: it has no {name} (`pykeen-momok train --out` writes one)"
        )
    return path


def load_model(folder: str | pathlib.Path, device: str | torch.device | None = None):
    """Load a folder's ``trained_model.pkl`` (a whole pickled model: load only folders you trust), in eval mode.

    :param device: where to put the model (None: the CPU)
    """
    path = _require(pathlib.Path(folder), MODEL_FILE)
    device = torch.device(device) if device is not None else torch.device("cpu")
    # A whole-model pickle can run code when loaded: callers say so to their users (only trusted folders).
    model = torch.load(path, map_location=device, weights_only=False)  # unsafe-ok
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "predict_t"):
        raise TrainedFolderError(f"{str(path)!r} does not hold a PyKEEN model, but a {type(model).__name__}")
    model = model.to(device)
    model.eval()
    return model


def load_training_factory(folder: str | pathlib.Path):
    """The training triples and label-to-id maps PyKEEN stored in ``training_triples/`` (without the features)."""
    from pykeen.triples import TriplesFactory

    path = _require(pathlib.Path(folder), TRAINING_TRIPLES)
    return TriplesFactory.from_path_binary(path)


def check_dataset_matches(dataset, factory, model, describe: str) -> None:
    """Refuse a dataset whose entities, relations or training triples are not those the model was trained on.

    :raises TrainedFolderError: saying what differs
    """
    training = dataset.training
    for kind, ours, theirs in (
        ("entities", training.entity_to_id, factory.entity_to_id),
        ("relations", training.relation_to_id, factory.relation_to_id),
    ):
        if dict(ours) != dict(theirs):
            missing = sorted(set(theirs) - set(ours))[:5]
            raise TrainedFolderError(
                f"the {describe} does not have the {kind} the model was trained on ({len(ours)} {kind} with their ids, "
                f"the model has {len(theirs)}"
                + (f"; e.g. missing: {', '.join(map(repr, map(str, missing)))}" if missing else "; ids differ")
                + ")"
            )

    def rows(triples: torch.Tensor) -> torch.Tensor:
        return torch.unique(triples.cpu(), dim=0)  # sorted, without duplicates

    if not torch.equal(rows(training.mapped_triples), rows(factory.mapped_triples)):
        raise TrainedFolderError(
            f"the {describe} has other training triples than the model was trained on ({training.num_triples} vs "
            f"{factory.num_triples}): another seed, split or version of the data?"
        )
    if training.num_entities != model.num_entities or training.num_relations != model.num_relations:
        raise TrainedFolderError(
            f"the {describe} has {training.num_entities} entities and {training.num_relations} relations (with "
            f"inverses), the model {model.num_entities} and {model.num_relations}"
        )


# evaluation --------------------------------------------------------------------------------------------


def evaluate_model(
    model,
    dataset,
    split: str = "testing",
    *,
    batch_size: int | None = None,
    use_tqdm: bool = True,
) -> dict[str, Any]:
    """Rank-based evaluation of one split, filtered by every other split, realistic ranks, both sides.

    :param split: ``"testing"`` or ``"validation"``; the triples of the other splits (and the split's own) are
        filtered out of the ranking (for ``"testing"`` as PyKEEN's pipeline does: training and validation)
    :return: ``{"split", "num_triples", "metrics": {side: {"MRR", "H@1", "H@3", "H@10"}}}`` with sides
        ``head``, ``tail`` and ``both``
    :raises ValueError: for an unknown split, or a dataset without it
    """
    from pykeen.evaluation import RankBasedEvaluator

    if split not in ("testing", "validation"):
        raise ValueError(f"split must be 'testing' or 'validation', got {split!r}")
    factories = dataset.factory_dict
    if factories.get(split) is None:
        raise ValueError(f"the dataset has no {split} split")
    others = [factory.mapped_triples for key, factory in factories.items() if key != split and factory is not None]
    evaluator = RankBasedEvaluator(filtered=True)
    results = evaluator.evaluate(
        model,
        factories[split].mapped_triples,
        batch_size=batch_size,
        use_tqdm=use_tqdm,
        additional_filter_triples=others,
    )
    metrics = {
        side: {name: float(results.get_metric(f"{side}.realistic.{key}")) for name, key in METRICS.items()}
        for side in SIDES
    }
    return {"split": split, "num_triples": int(factories[split].num_triples), "metrics": metrics}


# prediction --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One ranked candidate: its rank, id and label, the joint decision and each head's sigmoid probability."""

    rank: int
    id: int
    label: str
    score: float
    heads: Mapping[str, float]
    known: bool

    def to_json(self) -> dict[str, Any]:  # noqa: D102
        return dataclasses.asdict(self) | {"heads": dict(self.heads)}


def _lookup(kind: str, label: str, mapping: Mapping[str, int]) -> int:
    if label in mapping:
        return int(mapping[label])
    labels = [str(x) for x in mapping]
    # case slips first (difflib scores them low on short labels), then the closest spellings
    folded = label.casefold()
    close = [x for x in labels if x.casefold() == folded]
    close += [x for x in difflib.get_close_matches(label, labels, n=5, cutoff=0.6) if x not in close]
    # without a close match, a short list is shown whole
    raise UnknownLabelError(kind, label, close[:5], known=sorted(labels) if len(labels) <= 20 else ())


class Predictor:
    """Top-k tails of ``(h, r, ?)`` and heads of ``(?, r, t)`` of a trained MoMoK, with each head's probability.

    ``score`` is what the model ranks by in evaluation (``score_t``; heads through the inverse relation as
    PyKEEN's ``predict_h`` does): the joint decision, the mean of the heads' sigmoid probabilities. ``heads`` holds
    each of those probabilities, by :attr:`MoMoK.head_names <pykeen_momok.MoMoK.head_names>`.
    """

    def __init__(self, model, factory) -> None:
        """Wrap a model (in eval mode from now on) and its training factory (labels, known triples)."""
        if not all(hasattr(model, name) for name in ("_queries", "_candidates", "head_names")):
            raise TrainedFolderError(
                f"the folder holds a {type(model).__name__}, not a MoMoK model: per-head probabilities need MoMoK"
            )
        if not model.use_inverse_triples:
            raise TrainedFolderError("the model was trained without inverse relations; MoMoK needs them")
        self.model = model.eval()
        self.factory = factory
        self.entity_labels = [str(label) for label, _ in sorted(factory.entity_to_id.items(), key=lambda kv: kv[1])]
        self.relation_to_id = {str(k): int(v) for k, v in factory.relation_to_id.items()}
        self.entity_to_id = {str(k): int(v) for k, v in factory.entity_to_id.items()}

    @classmethod
    def from_folder(cls, folder: str | pathlib.Path, device: str | torch.device | None = None) -> Predictor:
        """Load a trained-model folder (a whole pickled model: load only folders you trust)."""
        return cls(load_model(folder, device=device), load_training_factory(folder))

    @property
    def head_names(self) -> tuple[str, ...]:
        """The model's scoring heads, in order."""
        return tuple(self.model.head_names)

    @property
    def num_entities(self) -> int:  # noqa: D102
        return self.model.num_entities

    def entity_id(self, label: str) -> int:
        """The id of an entity label; :class:`UnknownLabelError` with close matches if there is none."""
        return _lookup("entity", label, self.entity_to_id)

    def relation_id(self, label: str) -> int:
        """The id of a relation label; :class:`UnknownLabelError` with close matches if there is none."""
        return _lookup("relation", label, self.relation_to_id)

    @torch.no_grad()
    def head_probabilities(self, entity: int, relation: int, *, inverse: bool) -> torch.Tensor:
        """Each head's sigmoid probability for every candidate, shape ``(H, E)``.

        :param entity: the given entity's id (the head of ``(h, r, ?)``, the tail of ``(?, r, t)``)
        :param relation: the relation's id (as in the training factory, without inverses)
        :param inverse: ``False`` for the tails of ``(entity, relation, ?)``, ``True`` for the heads of
            ``(?, relation, entity)``
        """
        model = self.model
        model.eval()
        batch = torch.tensor([[entity, relation]], dtype=torch.long)
        # the model's own relation ids: 2r for r, 2r + 1 for its inverse (PyKEEN's relation inverter)
        batch = model.relation_inverter.map(batch=batch, index=1, invert=inverse).to(model.device)
        z = model._queries(batch[:, 0], batch[:, 1])
        logits = model.interaction.head_logits(z, model._candidates(None))  # (H, 1, E)
        return torch.sigmoid(logits[:, 0].float()).cpu()

    def known_mask(self, entity: int, relation: int, *, inverse: bool) -> torch.Tensor:
        """Which candidates complete a training triple, shape ``(E,)``."""
        triples = self.factory.mapped_triples
        given, wanted = (2, 0) if inverse else (0, 2)
        rows = (triples[:, 1] == relation) & (triples[:, given] == entity)
        mask = torch.zeros(self.num_entities, dtype=torch.bool)
        mask[triples[rows, wanted]] = True
        return mask

    def predict(
        self,
        *,
        relation: str,
        head: str | None = None,
        tail: str | None = None,
        k: int = 10,
        filter_known: bool = False,
    ) -> list[Prediction]:
        """The ``k`` best tails of ``(head, relation, ?)`` or heads of ``(?, relation, tail)``, best first.

        :param filter_known: leave out candidates that complete a training triple (fewer than ``k`` may remain)
        :raises UnknownLabelError: for a label the model does not know
        :raises ValueError: unless exactly one of ``head`` and ``tail`` is given, or for ``k < 1``
        """
        if (head is None) == (tail is None):
            raise ValueError("give exactly one of head (to predict tails) and tail (to predict heads)")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        inverse = head is None
        entity = self.entity_id(tail if inverse else head)  # type: ignore[arg-type]
        relation_id = self.relation_id(relation)
        probabilities = self.head_probabilities(entity, relation_id, inverse=inverse)
        decision = probabilities.mean(dim=0)
        known = self.known_mask(entity, relation_id, inverse=inverse)
        ranking = decision.double().clone()
        if filter_known:
            ranking[known] = -math.inf
        available = int(torch.isfinite(ranking).sum())
        # a stable sort: ties keep id order
        order = torch.sort(ranking, descending=True, stable=True).indices[: min(k, available)]
        names = self.head_names
        return [
            Prediction(
                rank=rank,
                id=int(i),
                label=self.entity_labels[int(i)],
                score=float(decision[i]),
                heads={name: float(probabilities[h, i]) for h, name in enumerate(names)},
                known=bool(known[i]),
            )
            for rank, i in enumerate(order.tolist(), start=1)
        ]
