#!/usr/bin/env python
"""How long an LCWA training batch takes to build: PyKEEN's loader vs the batched one, MKG-Y (issue 8).

For each batch size, one epoch of batches from each way, as the training loops get them (shuffled
``DataLoader``, PyKEEN's defaults otherwise, main process), up to the dense ``(B, E)`` target on ``--device``:

- ``pykeen``: :class:`~pykeen.triples.instances.LCWAInstances` (one sparse row densified per pair, stacked by
  the default collate), then the dense target copied to the device;
- ``batched``: :class:`~pykeen_momok.lcwa.BatchedLCWAInstances` (one vectorised slice per batch), the
  coordinates copied, the target scattered on the device (:func:`~pykeen_momok.lcwa.dense_targets`);
- ``coordinates``: the batched loader's batches alone, no dense target (the host's share of ``batched``: on a GPU
  the rest is a few-kilobyte copy and a scatter; on a CPU, allocating and zeroing ``B x E`` floats).

Per way: seconds per batch (median of ``--repeats`` epochs, each epoch's mean), per epoch, and over
``--projection-epochs`` (2,000: the paper's MKG-Y run), next to nothing else (no model step)::

    PYKEEN_HOME=/tmp/pkh python benchmarks/lcwa_batches.py --dataset-dir ../shared/data/MKG-Y --threads 1 \\
        --out benchmarks/results/lcwa_batches.json
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede the first torch import

import argparse  # noqa: E402
import pathlib  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import torch  # noqa: E402
from pykeen.triples.instances import LCWAInstances  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from pykeen_momok.lcwa import BatchedLCWAInstances, collate_batched, dense_targets  # noqa: E402

import _common as common  # noqa: E402


def epoch_seconds(loader: DataLoader, to_device, device: torch.device) -> tuple[float, int]:
    """Wall-clock seconds of one epoch of batches, each ending as a dense target on ``device``; and the count."""
    common.sync(device)
    start = time.perf_counter()
    count = 0
    for batch in loader:
        target = to_device(batch)
        count += 1
    del target
    common.sync(device)
    return time.perf_counter() - start, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset-dir", default=str(common.DEFAULT_DATASET_DIR), help="the MKG-Y folder (read only)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1024, 256])
    parser.add_argument("--repeats", type=int, default=3, help="epochs per way and batch size (median)")
    parser.add_argument("--projection-epochs", type=int, default=2000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="benchmarks/results/lcwa_batches.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    training, _, _ = common.load_mkgy(args.dataset_dir)
    pin = device.type == "cuda"  # PyKEEN's training loops pin batches where there is an accelerator
    ways = {
        "pykeen": (
            LCWAInstances.from_triples_factory(training),
            {},
            lambda batch: batch["target"].to(device, non_blocking=pin),
        ),
        "batched": (
            BatchedLCWAInstances.from_triples_factory(training),
            dict(collate_fn=collate_batched),
            lambda batch: dense_targets(batch, device)["target"],
        ),
        # the host's share of "batched": its coordinates, no dense target (what a GPU adds to it is a scatter)
        "coordinates": (BatchedLCWAInstances.from_triples_factory(training), dict(collate_fn=collate_batched), len),
    }
    results = dict(machine=common.machine_info(), device=str(device), entities=training.num_entities, rows=[])
    for batch_size in args.batch_sizes:
        row = dict(batch_size=batch_size)
        for name, (instances, extra, to_device) in ways.items():
            loader = DataLoader(instances, batch_size=batch_size, shuffle=True, pin_memory=pin, **extra)
            epoch_seconds(loader, to_device, device)  # warm-up (allocations, page faults)
            epochs = [epoch_seconds(loader, to_device, device) for _ in range(args.repeats)]
            per_batch = statistics.median(seconds / count for seconds, count in epochs)
            row[f"{name}_batch_ms"] = per_batch * 1e3
            row[f"{name}_epoch_s"] = statistics.median(seconds for seconds, _ in epochs)
            row[f"{name}_projection_min"] = row[f"{name}_epoch_s"] * args.projection_epochs / 60
            row["batches"] = epochs[0][1]
        row["speedup"] = row["pykeen_batch_ms"] / row["batched_batch_ms"]
        results["rows"].append(row)
        print(
            f"batch {batch_size:5d} ({row['batches']} per epoch), ms per batch / s per epoch / min over "
            f"{args.projection_epochs} epochs: "
            + ", ".join(
                f"{name} {row[f'{name}_batch_ms']:.2f} / {row[f'{name}_epoch_s']:.3f} / "
                f"{row[f'{name}_projection_min']:.1f}"
                for name in ways
            )
            + f"; PyKEEN / batched {row['speedup']:.1f}x",
            flush=True,
        )
    path, csv_path = common.write_results(args.out, results, results["rows"])
    print(f"wrote {path} and {csv_path}")


if __name__ == "__main__":
    main()
