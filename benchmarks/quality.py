"""Quality benchmark: train named setups on a benchmark for a budget, with learning curves (issue 13).

Each setup is trained through PyKEEN's own training loop; a :class:`CurveStopper` (a PyKEEN ``Stopper``)
evaluates it on validation at regular intervals (filtered, realistic ranks, both sides), keeps the state of
the best validation MRR and stops at the budget. The best-validation state is then tested once. Also
recorded, labelled ``paper_protocol``: the best test value of each metric over the periodic evaluations
(what the reference code reports), next to the validation-selected test figures.

Setups are PyKEEN pipeline dictionaries: ``momok-paper`` and ``momok-fast`` are read from
``configs/momok_<dataset>.json`` and ``configs/momok_<dataset>_fast.json`` (the configs users run); the
baselines are defined below. ``NAME@key=value,key=value`` overrides entries (dotted paths, JSON values),
e.g. ``momok-fast@loss_kwargs.head_loss="bce"`` for an ablation.

Example (the CPU row of the README's table)::

    PYKEEN_HOME=/tmp/pkh python benchmarks/quality.py --dataset MKG-Y --setups momok-fast \\
        --minutes 30 --out benchmarks/results/quality-mkgy
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import pathlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SHARED = pathlib.Path(os.environ.get("MOMOK_SHARED_DATA", ROOT.parent / "shared" / "data"))
#: dataset name -> (config slug, shared folder name)
DATASETS = {
    "MKG-Y": ("mkgy", "MKG-Y"),
    "MKG-W": ("mkgw", "MKG-W"),
    "DB15K": ("db15k", "DB15K"),
    "FB15K-237-IMG": ("fb15k237img", "FB15K-237-IMG"),
    "KVC16K": ("kvc16k", "KVC16K"),
    "SyntheticMMKG": ("synthetic", None),  # generated; for smoke tests of this script
}
METRICS = ("mrr", "hits_at_1", "hits_at_3", "hits_at_10")


def baseline_setups(dataset: str) -> dict[str, dict[str, Any]]:
    """PyKEEN baselines on the same data, LCWA (1-N) like MoMoK.

    ``tucker``: PyKEEN's TuckER at MoMoK's reference sizes with its own default loss (BCE after sigmoid,
    label smoothing 0.1), Adam at the reference learning rate, batch 128 (memory); ``tucker-fast``: TuckER at
    the fast recipe's size, learning rate and batch, with 1-vs-all cross-entropy (smoothing 0.1): the fast
    recipe without MoMoK's experts, modalities and joint decision; ``complex-ce``: ComplEx
    d = 64 with 1-vs-all cross-entropy, Adam 1e-2, batch 512 (PyKEEN's default L2 regulariser; measured in
    issue 13 at 0.208 test MRR after 20 epochs); ``complex-ce-n3``: ComplEx d = 128 with 1-vs-all
    cross-entropy, an N3 (weighted cubic) regulariser and Adagrad 0.1, the recipe of Lacroix et al. (2018).
    The Adam baselines run Adam's fused kernel, as MoMoK's configs do (same update, less time per step).
    """
    slug = DATASETS[dataset][0]
    reference = json.loads((CONFIGS / f"momok_{slug}.json").read_text())["pipeline"]
    dim = reference["model_kwargs"]["embedding_dim"]
    fast_path = CONFIGS / f"momok_{slug}_fast.json"
    fast = json.loads(fast_path.read_text())["pipeline"] if fast_path.is_file() else reference
    fast_dim = fast["model_kwargs"]["embedding_dim"]
    return {
        "tucker": dict(
            model="TuckER",
            model_kwargs=dict(embedding_dim=dim, relation_dim=reference["model_kwargs"]["relation_dim"]),
            training_loop="batchedlcwa",  # PyKEEN's LCWA, batches built as fast as for MoMoK
            optimizer="adam",
            optimizer_kwargs=dict(lr=reference["optimizer_kwargs"]["lr"], fused=True),
            # PyKEEN's generic 1-N path broadcasts B x E x d: at d = 300 on MKG-Y batch 1024 needs > 24 GB,
            # batch 128 about 5.7 GB (benchmarks/README.md)
            training_kwargs=dict(batch_size=128, label_smoothing=0.1),
        ),
        "tucker-fast": dict(
            model="TuckER",
            model_kwargs=dict(embedding_dim=fast_dim, relation_dim=fast_dim),
            loss="crossentropy",
            training_loop="batchedlcwa",  # PyKEEN's LCWA, batches built as fast as for MoMoK
            optimizer="adam",
            optimizer_kwargs=dict(lr=fast["optimizer_kwargs"]["lr"], fused=True),
            training_kwargs=dict(batch_size=fast["training_kwargs"]["batch_size"], label_smoothing=0.1),
        ),
        "complex-ce": dict(
            model="ComplEx",
            model_kwargs=dict(embedding_dim=64),
            loss="crossentropy",
            training_loop="batchedlcwa",  # PyKEEN's LCWA, batches built as fast as for MoMoK
            optimizer="adam",
            optimizer_kwargs=dict(lr=0.01, fused=True),
            training_kwargs=dict(batch_size=512),
        ),
        "complex-ce-n3": dict(
            model="ComplEx",
            model_kwargs=dict(
                embedding_dim=128,
                regularizer="lp",
                regularizer_kwargs=dict(p=3.0, weight=5e-3, normalize=False),
            ),
            loss="crossentropy",
            training_loop="batchedlcwa",  # PyKEEN's LCWA, batches built as fast as for MoMoK
            optimizer="adagrad",
            optimizer_kwargs=dict(lr=0.1),
            training_kwargs=dict(batch_size=1000),
        ),
    }


def momok_setups(dataset: str) -> dict[str, dict[str, Any]]:
    """The MoMoK setups of the shipped configs (``configs/momok_<slug>[_fast|_cpu].json``)."""
    slug = DATASETS[dataset][0]
    setups = {}
    for suffix, name in (("", "momok-paper"), ("_fast", "momok-fast"), ("_cpu", "momok-cpu")):
        path = CONFIGS / f"momok_{slug}{suffix}.json"
        if path.is_file():
            setups[name] = json.loads(path.read_text())["pipeline"]
    return setups


def parse_setup(spec: str, known: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Resolve ``NAME``, ``NAME@key=value,...`` or a path to a PyKEEN experiment JSON to a setup dict."""
    name, _, overrides = spec.partition("@")
    if name.endswith(".json"):
        setup = json.loads(pathlib.Path(name).read_text())["pipeline"]
    elif name in known:
        setup = copy.deepcopy(dict(known[name]))
    else:
        raise SystemExit(f"unknown setup {name!r}; known: {sorted(known)} or a path to a config .json")
    for item in filter(None, overrides.split(",")):
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"override {item!r} of {spec!r} is not key=value")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        *parents, leaf = key.split(".")
        node = setup
        for parent in parents:
            node = node.setdefault(parent, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return setup


def _parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="MKG-Y", choices=sorted(DATASETS))
    parser.add_argument("--dataset-dir", type=pathlib.Path, help="offline folder (default: ../shared/data/<name>)")
    parser.add_argument(
        "--dataset-kwargs",
        type=json.loads,
        default={},
        help='JSON keyword arguments of the dataset, e.g. \'{"validation": "disjoint"}\'',
    )
    parser.add_argument(
        "--setups",
        nargs="+",
        default=["momok-fast", "momok-paper", "tucker", "tucker-fast", "complex-ce", "complex-ce-n3"],
    )
    parser.add_argument("--minutes", type=float, help="training budget per setup (wall-clock, evaluation excluded)")
    parser.add_argument("--epochs", type=int, help="epoch budget per setup (default: the setup's own)")
    parser.add_argument("--eval-every", type=float, default=2.0, help="minutes of training between evaluations")
    parser.add_argument("--eval-every-epochs", type=int, help="evaluate every N epochs instead")
    parser.add_argument("--no-paper-protocol", action="store_true", help="skip the periodic test evaluations")
    parser.add_argument("--eval-batch-size", type=int, default=1024)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--seed", type=int, help="override every setup's random seed")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks" / "results" / "quality")
    parser.add_argument(
        "--merge",
        nargs="+",
        type=pathlib.Path,
        help="no training: combine the runs of earlier result .json files (e.g. setups run side by side in "
        "separate processes) into one table and plot at --out",
    )
    args = parser.parse_args(argv)
    if args.merge:
        return args
    if args.minutes is None and args.epochs is None:
        parser.error("give a budget: --minutes and/or --epochs")
    for name in ("minutes", "eval_every"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {value}")
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}")
    if args.threads < 0:
        parser.error(f"--threads must be 0 (torch's default) or positive, got {args.threads}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    args = _parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import machine_info
    from _quality import load_dataset, train_setup, write_outputs

    known = {**momok_setups(args.dataset), **baseline_setups(args.dataset)}
    setups = {spec: parse_setup(spec, known) for spec in args.setups}
    folder = DATASETS[args.dataset][1]
    directory = args.dataset_dir or (SHARED / folder if folder else None)
    dataset, data_note = load_dataset(args.dataset, directory, args.dataset_kwargs)
    print(f"[quality] {args.dataset}: {data_note}", flush=True)
    runs = []
    for spec, setup in setups.items():
        print(f"[quality] setup {spec}: {json.dumps(setup, sort_keys=True)}", flush=True)
        run = train_setup(
            spec,
            setup,
            dataset,
            minutes=args.minutes,
            epochs=args.epochs,
            eval_every_minutes=None if args.eval_every_epochs else args.eval_every,
            eval_every_epochs=args.eval_every_epochs,
            paper_protocol=not args.no_paper_protocol,
            eval_batch_size=args.eval_batch_size,
            device=args.device,
            seed=args.seed,
        )
        runs.append(run)
        print(f"[quality] {spec}: {run['summary_line']}", flush=True)
    meta = dict(
        dataset=args.dataset,
        data=data_note,
        budget_minutes=args.minutes,
        budget_epochs=args.epochs,
        device=args.device,
        machine=machine_info(),
        command=" ".join(["python", "benchmarks/quality.py", *(argv if argv is not None else sys.argv[1:])]),
    )
    paths = write_outputs(args.out, meta, runs)
    print("[quality] wrote " + ", ".join(str(p) for p in paths), flush=True)
    return 0 if all(math.isfinite(run["test"]["mrr"]) for run in runs) else 1


def merge(paths: Sequence[pathlib.Path], out: pathlib.Path) -> int:
    """Write one table and plot for the runs of several result files (their metadata must agree on the dataset)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _quality import write_outputs

    results = [json.loads(path.read_text()) for path in paths]
    datasets = {result["meta"]["dataset"] for result in results}
    if len(datasets) != 1:
        raise SystemExit(f"--merge: the files hold different datasets {sorted(datasets)}")
    meta = dict(results[0]["meta"], merged_from=[str(path) for path in paths])
    meta["commands"] = [result["meta"]["command"] for result in results]
    runs = [run for result in results for run in result["runs"]]
    written = write_outputs(out, meta, runs)
    print("[quality] wrote " + ", ".join(str(p) for p in written), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
