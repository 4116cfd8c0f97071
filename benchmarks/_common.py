"""Shared pieces of the benchmark scripts: MKG-Y with the benchmark's features, models, LCWA batches, timing.

Import this module *after* :func:`configure_threads` has run in the script (it imports torch).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import pathlib
import platform
import resource
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

#: the published width of MKG-Y's image features (the authors' archive); the benchmark draws random ones
IMAGE_DIM = 383
#: MoMoK's reference sizes on MKG-Y (method doc, "Reference hyperparameters")
REFERENCE = dict(embedding_dim=300, relation_dim=256, num_experts=3)
#: the reference pooling layouts on MKG-Y: images used as they are, MiniLM text pooled 384 -> 256
ADAPTERS = {"image": "identity", "text": "mkg-text"}
DEFAULT_DATASET_DIR = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "MKG-Y"


def rss_gb() -> float:
    """The resident set size of this process now, in GB (``/proc/self/statm``)."""
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9


def max_rss_gb() -> float:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` in GB (KiB on Linux).

    Caution: Linux carries this value over ``fork`` and ``execve``, so in a child process it is at least the
    parent's peak at the time of the fork; :func:`peak_rss_gb` is the child's own.
    """
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def peak_rss_gb() -> float:
    """The peak resident set size of this process image, in GB (``VmHWM`` of ``/proc/self/status``)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e9
    return max_rss_gb()


def machine_info() -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = dict(
        python=platform.python_version(),
        torch=torch.__version__,
        cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
        platform=platform.platform(),
    )
    try:
        info["loadavg_1_5_15"] = list(os.getloadavg())
    except OSError:  # pragma: no cover
        pass
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(Exception):
        import pykeen.version

        info["pykeen"] = pykeen.version.get_version()
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name()
    return info


# -- data -----------------------------------------------------------------------------------------------------


def load_mkgy(dataset_dir: str | os.PathLike, seed: int = 0):
    """MKG-Y's training/validation/testing factories with inverse triples, image and text modalities.

    Text: the shared 384-d MiniLM name embeddings. Image: random N(0, 1) features of the published 383-d
    shape, seeded (the authors' image matrix is not in the shared folder). The files are only read.

    :return: ``(training, validation, testing)``, the training factory a ``MultiModalTriplesFactory``
        with modalities ``image`` then ``text``
    """
    from pykeen_momok.datasets.benchmarks import MKGY
    from pykeen_momok.triples import ModalityFeatures

    directory = pathlib.Path(dataset_dir).expanduser().resolve()
    dataset = MKGY(directory=directory, image_features=None, text_features="minilm", progress=False)
    training, validation, testing = dataset.training, dataset.validation, dataset.testing
    text = training.modalities["text"]
    generator = torch.Generator().manual_seed(seed)
    image = ModalityFeatures(
        features=torch.randn(training.num_entities, IMAGE_DIM, generator=generator),
        present=torch.ones(training.num_entities, dtype=torch.bool),
    )
    training = training.with_modalities({"image": image, "text": text})
    return training, validation, testing


def add_step_arguments(parser, default_dataset: str = "mkgy") -> None:
    """``--dataset-dir``, ``--device`` and ``--dataset`` (MKG-Y at the reference sizes, or the demo graph)."""
    parser.add_argument("--dataset-dir", default=str(DEFAULT_DATASET_DIR), help="the MKG-Y folder (read only)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--dataset",
        choices=["synthetic", "mkgy"],
        default=default_dataset,
        help="MKG-Y at the reference sizes (d 300, d_r 256), or the demo graph (tiny sizes, for checks)",
    )


# -- models ---------------------------------------------------------------------------------------------------


def build_momok(training, device: torch.device, seed: int = 0, **kwargs):
    """MoMoK at the reference sizes (``kwargs`` override), loss MoMoKLoss, on ``device``."""
    from pykeen_momok.losses import MoMoKLoss
    from pykeen_momok.model import MoMoK

    torch.manual_seed(seed)
    options = dict(REFERENCE, adapters=ADAPTERS, mi_estimator_lr=5e-4)
    options.update(kwargs)
    model = MoMoK(triples_factory=training, loss=MoMoKLoss(), random_seed=seed, **options)
    return model.to(device)


def tucker_heads(model) -> list:
    """Every Tucker head of a MoMoK, the joint one (where there is one) last."""
    heads = list(model.interaction.heads)
    if model.interaction.joint:
        heads.append(model.interaction.joint_head)
    return heads


def set_per_query(model, per_query: bool) -> None:
    """Switch a MoMoK between its normal path and the reference's way, on the same weights.

    ``per_query=True`` is exactly ``MoMoK(fused=False)`` with ``recompute_candidates = False``: every Tucker head
    builds one ``d x d`` matrix per query and drops it out with ``F.dropout``, and all activations are kept
    for the backward pass, as the reference implementation does.
    """
    for head in tucker_heads(model):
        head.fused = not per_query
    model.recompute_candidates = not per_query


def set_contraction_path(model, path: str | None) -> None:
    """Pin the masked core contraction of every Tucker head of a MoMoK to ``path`` (``None``: the process setting).

    ``"torch"`` / ``"triton"`` / ``"auto"``: see :mod:`pykeen_momok.nn.tucker` (the base-modality heads' distinct
    relation matrices and the joint head's per-query relation vectors each have their own Triton kernels).
    """
    for head in tucker_heads(model):
        head.contraction_path = path


def build_tucker(training, device: torch.device, seed: int = 0, embedding_dim: int = 300, relation_dim: int = 256):
    """PyKEEN's own TuckER at the same sizes (its default loss, dropouts and batch norms)."""
    from pykeen.models import TuckER

    torch.manual_seed(seed)
    model = TuckER(triples_factory=training, embedding_dim=embedding_dim, relation_dim=relation_dim, random_seed=seed)
    return model.to(device)


# -- training steps -------------------------------------------------------------------------------------------


def autocast_context(device: torch.device, dtype: str):
    """``torch.autocast`` for ``dtype="bf16"``/``"fp16"``, a no-op for ``"fp32"``."""
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[dtype])


def sync(device: torch.device) -> None:
    """Wait for queued device work (CUDA), so that wall-clock timings are complete."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def lcwa_pairs(training) -> int:
    """The number of LCWA training instances: unique (h, r) pairs of the factory (with inverse triples)."""
    mapped = training._add_inverse_triples_if_necessary(mapped_triples=training.mapped_triples)
    return int(torch.unique(mapped[:, :2], dim=0).shape[0])


@dataclass
class StepTimes:
    """Wall-clock seconds of one training step, by part."""

    forward: float  # scores + loss (incl. the MI penalty)
    backward: float
    optimizer: float  # optimizer.step()
    estimator: float  # model.post_parameter_update(): MoMoK's CLUB estimator step
    total: float = field(init=False)

    def __post_init__(self) -> None:
        self.total = self.forward + self.backward + self.optimizer + self.estimator


#: the Adam of both optimisers of a :class:`Trainer` (the model's and MoMoK's CLUB estimator's), by name: PyTorch's
#: fused kernel (what the configs and recipes ask for, and the estimator's default), its multi-tensor ``foreach``
#: updates (its default on CUDA), or its default for the device (what the figures before December 2026 used);
#: ``capturable``: the fused kernel with its step counts and learning-rate terms on the device, as a step captured
#: as a CUDA graph needs (PyTorch refuses the others inside a capture; CUDA only)
ADAMS: dict[str, dict[str, bool]] = {
    "fused": dict(fused=True),
    "foreach": dict(foreach=True),
    "default": {},
    "capturable": dict(fused=True, capturable=True),
}


class Trainer:
    """One model, its Adam optimiser and PyKEEN's LCWA loop, stepping over seeded LCWA batches.

    A step is what PyKEEN's LCWA training loop does per batch: forward (1-N scores, loss, regularization
    term), backward, ``optimizer.step()``, ``optimizer.zero_grad()``, ``model.post_parameter_update()``.
    The batches are ready on the device, as the batched LCWA loop leaves them (pairs copied, the dense target
    scattered there: :func:`pykeen_momok.lcwa.dense_targets`); building them is timed apart
    (``train_epoch.py``'s ``batch_build_s``), and no step copies a ``B x E`` target from the host.
    """

    def __init__(
        self,
        model,
        training,
        device: torch.device,
        lr: float = 5e-4,
        dtype: str = "fp32",
        seed: int = 0,
        adam: str = "fused",
    ):
        from pykeen.training import LCWATrainingLoop

        from pykeen_momok.lcwa import BatchedLCWAInstances

        self.model, self.device, self.dtype = model, device, dtype
        params = model.get_grad_params() if hasattr(model, "get_grad_params") else model.parameters()
        if adam not in ADAMS:
            raise ValueError(f"adam must be one of {sorted(ADAMS)}, got {adam!r}")
        self.optimizer = torch.optim.Adam(params, lr=lr, **ADAMS[adam])
        estimator = getattr(model, "mutual_information", None)
        if estimator is not None:  # the estimator's Adam the same way (it has no state yet)
            estimator.optimizer = torch.optim.Adam(estimator.estimator.parameters(), lr=estimator.lr, **ADAMS[adam])
        self.loop = LCWATrainingLoop(model=model, triples_factory=training, optimizer=self.optimizer)
        self.instances = BatchedLCWAInstances.from_triples_factory(training)
        self.seed = seed
        self._batches: dict[int, Iterator] = {}

    def batch(self, batch_size: int) -> dict[str, torch.Tensor]:
        """The next batch of ``batch_size`` LCWA instances on the device (a seeded shuffle, repeated as needed)."""
        iterator = self._batches.get(batch_size)
        if iterator is None:
            iterator = self._batches[batch_size] = self._iterate(batch_size)
        return next(iterator)

    def _iterate(self, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        from pykeen_momok.lcwa import dense_targets

        generator = torch.Generator().manual_seed(self.seed + batch_size)
        while True:
            order = torch.randperm(len(self.instances), generator=generator)
            for start in range(0, len(order) - batch_size + 1, batch_size):
                items = order[start : start + batch_size].tolist()
                batch = dense_targets(self.instances.__getitems__(items), self.device)
                yield {"pairs": batch["pairs"].to(self.device), "target": batch["target"]}

    def _forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with autocast_context(self.device, self.dtype):
            return self.loop._process_batch(batch, 0, batch["pairs"].shape[0], label_smoothing=0.0, slice_size=None)

    def _update(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def step(self, batch: dict[str, torch.Tensor]) -> StepTimes:
        """One training step on ``batch``, its phases timed apart (the device synchronised between them)."""
        model, device = self.model, self.device
        model.train()
        sync(device)
        t0 = time.perf_counter()
        loss = self._forward(batch)
        sync(device)
        t1 = time.perf_counter()
        loss.backward()
        loss_value = loss.item()
        del loss
        model.post_forward_pass()
        sync(device)
        t2 = time.perf_counter()
        self._update()
        sync(device)
        t3 = time.perf_counter()
        model.post_parameter_update()
        sync(device)
        t4 = time.perf_counter()
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"non-finite loss {loss_value}")
        return StepTimes(forward=t1 - t0, backward=t2 - t1, optimizer=t3 - t2, estimator=t4 - t3)

    def train_step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One training step as the loop takes it, nothing read on the host; the loss, detached (on the device)."""
        loss = self._forward(batch)
        loss.backward()
        detached = loss.detach()
        del loss
        self.model.post_forward_pass()
        self._update()
        self.model.post_parameter_update()
        return detached

    def steps_back_to_back(self, batches: Sequence[dict[str, torch.Tensor]]) -> float:
        """Seconds per step of training steps run back to back, one wait for the device at the end.

        What the batched LCWA loop does with ``read_loss="epoch"`` (the default on CUDA): no read of the loss
        between steps, so the host queues the next step while the device runs this one. The phased
        :meth:`step` instead waits after every phase: its total holds each phase's launch latency.
        """
        model, device = self.model, self.device
        model.train()
        sync(device)
        start = time.perf_counter()
        total = None
        for batch in batches:
            loss = self.train_step(batch)
            total = loss if total is None else total + loss
        sync(device)
        seconds = (time.perf_counter() - start) / max(len(batches), 1)
        if total is not None and not math.isfinite(total.item()):
            raise FloatingPointError(f"non-finite loss sum {total.item()}")
        return seconds


def median(values: Sequence[float]) -> float:
    """The median (``nan`` for no values)."""
    return statistics.median(values) if values else float("nan")


def write_results(
    out_path: str | os.PathLike,
    result: dict[str, Any],
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str] | None = None,
) -> tuple[pathlib.Path, pathlib.Path]:
    """Write ``result`` as JSON to ``out_path`` and ``rows`` as CSV next to it.

    :param columns: the CSV columns (keys of a row not among them are left out); default: the first row's keys

    :return: the JSON and CSV paths
    """
    path = pathlib.Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    csv_path = path.with_suffix(".csv")
    with csv_path.open("w", newline="") as file:
        fieldnames = list(columns if columns is not None else rows[0])
        writer = csv.DictWriter(file, fieldnames=fieldnames, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path, csv_path
