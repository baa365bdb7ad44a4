"""The `resrank` command line: a thin layer that parses arguments and calls the library.

Every subcommand takes the profile config (``--config``) where settings matter; bad input
raises ``ResRankError`` which is printed as one line (exit status 2), never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from resrank.errors import DataUnavailableError, ResRankError

log = logging.getLogger("resrank")


# --------------------------------------------------------------------------- data
def cmd_data_prepare(args: argparse.Namespace) -> None:
    from resrank.config import load_config
    from resrank.data.prepared import prepare_dataset

    cfg = load_config(args.config)
    datasets = cfg.raw["datasets"]
    manifest = prepare_dataset(args.dataset, cfg.data_root, args.out, datasets["definitions"],
                               max_queries=datasets["max_queries"].get(args.dataset))
    if manifest.get("available", True):
        log.info("prepared %s: %s", args.dataset, manifest.get("counts"))
    elif args.record_unavailable:
        log.warning("dataset %s not available (recorded in %s): %s", args.dataset, args.out, manifest.get("reason"))
    else:
        import shutil

        shutil.rmtree(args.out, ignore_errors=True)  # nothing half-written is left behind
        raise DataUnavailableError(str(manifest.get("reason")))


def cmd_data_list(args: argparse.Namespace) -> None:
    from resrank.data.registry import dataset_names, get_spec, is_available

    for name in dataset_names():
        ok, reason = is_available(name, args.data_root)
        spec = get_spec(name)
        status = "available" if ok else f"unavailable ({reason})"
        print(f"{name:20s} {spec.source:17s} {status}")


def cmd_data_embedded(args: argparse.Namespace) -> None:
    import json

    from resrank.data.embedded import collection_stats

    print(json.dumps(collection_stats(), indent=2))


# ---------------------------------------------------------------------- retrieval
def cmd_retrieve_bm25(args: argparse.Namespace) -> None:
    from resrank.config import load_config
    from resrank.first_stage import first_stage_run
    from resrank.io import write_trec_run

    cfg = load_config(args.config)
    run = first_stage_run(Path(args.data), cfg.retrieval)
    write_trec_run(args.out, run, tag="bm25")


def cmd_retrieve_dense(args: argparse.Namespace) -> None:
    from resrank.config import load_config
    from resrank.rerank import dense_first_stage

    cfg = load_config(args.config, args.variant)
    dense_first_stage(cfg, Path(args.data), args.embeddings, args.checkpoint, args.out)


def cmd_retrieve_fuse(args: argparse.Namespace) -> None:
    from resrank.config import load_config
    from resrank.io import read_trec_run, write_trec_run
    from resrank.retrieval.fusion import rrf_fuse

    cfg = load_config(args.config)
    fused = rrf_fuse([read_trec_run(p) for p in args.runs], depth=cfg.retrieval.depth, k=args.k)
    write_trec_run(args.out, fused, tag="rrf")


# ------------------------------------------------------------------ train / rerank
def cmd_train(args: argparse.Namespace) -> None:
    import os

    from resrank.config import load_config
    from resrank.train.entry import train_from_prepared

    cfg = load_config(args.config, args.variant)
    nproc = cfg.train.num_processes if args.processes is None else args.processes
    if nproc < 1:
        raise ResRankError(f"--processes must be >= 1, got {nproc}")
    if nproc > 1 and "WORLD_SIZE" not in os.environ:  # not yet under a launcher: become torchrun
        argv = torchrun_argv(args, nproc)
        log.info("launching %d training processes: %s", nproc, " ".join(argv))
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(argv[0], argv)
    datasets = [d for d in (args.datasets or "").split(",") if d]
    train_from_prepared(cfg, args.stage, datasets, Path(args.data_dir), Path(args.runs_dir), Path(args.out),
                        Path(args.init) if args.init else None)


def torchrun_argv(args: argparse.Namespace, nproc: int) -> list[str]:
    """This ``train`` call as ``python -m torch.distributed.run --standalone --nproc_per_node N -m resrank.cli``.

    ``--standalone`` rendezvous on a free local port, so concurrent jobs on one node do not
    collide; each worker sees ``WORLD_SIZE`` and trains instead of launching again (so
    ``--processes`` is not passed on; torchrun's own parser would also take ``--nproc...``
    in the worker's arguments for an abbreviation of ``--nproc-per-node``).
    """
    import torch

    if torch.cuda.is_available() and nproc > torch.cuda.device_count():
        raise ResRankError(
            f"{nproc} training processes requested (train.num_processes / --processes) but only "
            f"{torch.cuda.device_count()} GPU(s) are visible"
        )
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            "-m", "resrank.cli"]
    if args.verbose:
        argv.append("--verbose")
    argv += ["train", "--config", args.config, "--variant", args.variant, "--stage", args.stage,
             "--data-dir", args.data_dir, "--runs-dir", args.runs_dir, "--out", args.out]
    if args.datasets:
        argv += ["--datasets", args.datasets]
    if args.init:
        argv += ["--init", args.init]
    return argv


def cmd_encode(args: argparse.Namespace) -> None:
    from resrank.config import load_config
    from resrank.rerank import encode_dataset

    cfg = load_config(args.config, args.variant)
    encode_dataset(cfg, Path(args.data), Path(args.first_stage), None if args.untrained else args.checkpoint,
                   Path(args.out), whole_corpus=args.whole_corpus)


def cmd_rerank(args: argparse.Namespace) -> None:
    from resrank.config import load_config
    from resrank.rerank import rerank_dataset

    cfg = load_config(args.config, args.variant)
    rerank_dataset(
        cfg,
        data_dir=Path(args.data),
        first_stage=Path(args.first_stage),
        embeddings=Path(args.embeddings),
        checkpoint=None if args.untrained else args.checkpoint,
        out_run=Path(args.out),
        out_stats=Path(args.stats) if args.stats else None,
        encoder_only=args.encoder_only,
        order=args.order,
    )


def cmd_position(args: argparse.Namespace) -> None:
    from resrank.config import load_config
    from resrank.rerank import position_study

    cfg = load_config(args.config, args.variant)
    position_study(cfg, Path(args.data), Path(args.first_stage), Path(args.embeddings),
                   None if args.untrained else args.checkpoint, args.random_orders, Path(args.out))


# ---------------------------------------------------------------------- evaluate
def cmd_evaluate(args: argparse.Namespace) -> None:
    from resrank.config import load_config
    from resrank.data.prepared import read_manifest, read_prepared_qrels
    from resrank.eval.metrics import evaluate, write_metrics_json
    from resrank.io import read_trec_run, sha256_file
    from resrank.provenance import provenance

    cfg = load_config(args.config) if args.config else None
    if args.data:
        qrels = read_prepared_qrels(Path(args.data))
        files = read_manifest(Path(args.data)).get("files", {})
        checksums = {f"{Path(args.data).name}/{name}": info.get("sha256") for name, info in files.items()}
    elif args.qrels:
        from resrank.io import read_trec_qrels

        qrels = read_trec_qrels(args.qrels)
        checksums = {Path(args.qrels).name: sha256_file(args.qrels)}
    else:
        raise ResRankError("evaluate needs --data (a prepared dataset folder) or --qrels (a TREC qrels file)")
    run = read_trec_run(args.run)
    result = evaluate(run, qrels)
    checksums = {**checksums, f"run:{Path(args.run).name}": sha256_file(args.run)}
    prov = provenance(cfg.fingerprint() if cfg else None, checksums)
    if args.out:
        write_metrics_json(args.out, result, system=args.system, dataset=args.dataset, provenance=prov)
    for metric, value in result.summary.items():
        print(f"{args.system}\t{args.dataset}\t{metric}\t{value:.4f}\t{result.n_queries}")


# ----------------------------------------------------------------------- reports
def cmd_report_collect(args: argparse.Namespace) -> None:
    from resrank.reports.collect import collect_metrics

    collect_metrics(args.config, [Path(p) for p in args.metrics], Path(args.out))


def cmd_report_tables(args: argparse.Namespace) -> None:
    from resrank.reports.tables import write_tables

    write_tables(args.config, Path(args.metrics), Path(args.out_dir))


def cmd_report_ablations(args: argparse.Namespace) -> None:
    from resrank.reports.ablations import write_ablation_tables

    write_ablation_tables(args.config, Path(args.out_dir))


def cmd_report_figures(args: argparse.Namespace) -> None:
    from resrank.reports.figures import write_figures

    write_figures(args.config, Path(args.out_dir), [Path(p) for p in args.position])


def cmd_report_notebook(args: argparse.Namespace) -> None:
    from resrank.config import read_config_file, validate
    from resrank.reports.notebook import render_report

    config = validate(read_config_file(args.config), args.config)
    out_dir = Path(config["results_dir"]) / config["profile"]
    render_report(Path(args.notebook), out_dir, config["profile"], Path(args.executed), Path(args.html))


def cmd_bench_efficiency(args: argparse.Namespace) -> None:
    from resrank.bench.runner import efficiency_from_config

    efficiency_from_config(args.config, Path(args.out_dir), Path(args.fig_dir))


def cmd_bench_bm25(args: argparse.Namespace) -> None:
    from resrank.bench.runner import bm25_throughput_from_config

    if args.repeats is not None and args.repeats < 1:
        raise ResRankError(f"--repeats must be >= 1, got {args.repeats}")
    bm25_throughput_from_config(args.config, [Path(d) for d in args.data], Path(args.out_dir), args.repeats,
                                args.rank_bm25_max_documents or None)


# ------------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resrank", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(group: argparse._SubParsersAction, name: str, func: Callable[[argparse.Namespace], None],
            help: str) -> argparse.ArgumentParser:
        p = group.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    def config_arg(p: argparse.ArgumentParser, required: bool = True) -> None:
        p.add_argument("--config", required=required, help="profile config YAML (e.g. config/config.yaml)")

    def variant_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--variant", default="resrank", help="system/variant name from the config's `variants`")

    def checkpoint_args(p: argparse.ArgumentParser) -> None:
        g = p.add_mutually_exclusive_group(required=True)
        g.add_argument("--checkpoint", help="trained stage folder (holding model.safetensors)")
        g.add_argument("--untrained", action="store_true", help="use the configured models before training")

    def model_job_args(p: argparse.ArgumentParser) -> None:
        """What every reranking job reads: config, variant, weights, data, candidates, embeddings."""
        config_arg(p)
        variant_arg(p)
        checkpoint_args(p)
        p.add_argument("--data", required=True, help="prepared dataset folder")
        p.add_argument("--first-stage", required=True, help="TREC run of the candidates")
        p.add_argument("--embeddings", required=True, help="passage embedding file from `resrank encode`")

    data = add(sub, "data", lambda a: None, "prepare and inspect datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    p = add(data_sub, "prepare", cmd_data_prepare, "load a registered dataset and write the prepared layout")
    config_arg(p)
    p.add_argument("--dataset", required=True, help="short name, e.g. dl19, scifact, embedded")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--record-unavailable", action="store_true",
                   help="when the data cannot be reached, write a manifest saying why and exit 0 (default: exit 2)")
    p = add(data_sub, "list", cmd_data_list, "list registered datasets and whether their data is reachable")
    p.add_argument("--data-root", default=None, help="data folder (default: $RESRANK_DATA)")
    add(data_sub, "embedded", cmd_data_embedded, "print counts and fingerprint of the embedded collection")

    retrieve = add(sub, "retrieve", lambda a: None, "first-stage retrieval")
    r_sub = retrieve.add_subparsers(dest="retrieve_command", required=True)
    p = add(r_sub, "bm25", cmd_retrieve_bm25,
            "BM25 over the prepared corpus, or import the dataset's candidate file / published run")
    config_arg(p)
    p.add_argument("--data", required=True, help="prepared dataset folder")
    p.add_argument("--out", required=True, help="output TREC run")
    p = add(r_sub, "dense", cmd_retrieve_dense, "dense retrieval over the corpus with the trained encoder")
    config_arg(p)
    variant_arg(p)
    checkpoint_args(p)
    p.add_argument("--data", required=True)
    p.add_argument("--embeddings", required=True, help="passage embedding file from `resrank encode`")
    p.add_argument("--out", required=True)
    p = add(r_sub, "fuse", cmd_retrieve_fuse, "reciprocal-rank fusion of runs (ranx)")
    config_arg(p)
    p.add_argument("--runs", nargs="+", required=True)
    p.add_argument("--k", type=int, default=60, help="RRF constant")
    p.add_argument("--out", required=True)

    p = add(sub, "train", cmd_train, "train one stage of one variant on prepared datasets")
    config_arg(p)
    variant_arg(p)
    p.add_argument("--stage", required=True, help="stage name from train.stage_order")
    p.add_argument("--datasets", default=None, help="comma-separated training datasets (default: the stage's)")
    p.add_argument("--data-dir", required=True, help="folder of prepared datasets")
    p.add_argument("--runs-dir", required=True, help="folder of first-stage runs (<dataset>/bm25.trec)")
    p.add_argument("--init", default=None, help="previous stage folder to start from")
    p.add_argument("--out", required=True, help="stage folder (checkpoints, loss log, DONE)")
    p.add_argument("--processes", type=int, default=None,
                   help="training processes (default: the config's train.num_processes); more than 1 re-runs "
                        "this command under torchrun, one process per GPU (gloo on CPU)")

    p = add(sub, "encode", cmd_encode, "embed a dataset's passages once per checkpoint (cached on disk)")
    config_arg(p)
    variant_arg(p)
    checkpoint_args(p)
    p.add_argument("--data", required=True)
    p.add_argument("--first-stage", required=True, help="TREC run whose candidates must be embedded")
    p.add_argument("--whole-corpus", action="store_true",
                   help="embed every corpus passage (dense retrieval), not only the top reranker.depth candidates")
    p.add_argument("--out", required=True)

    p = add(sub, "rerank", cmd_rerank, "rerank first-stage candidates in one forward pass per query")
    model_job_args(p)
    p.add_argument("--out", required=True)
    p.add_argument("--stats", default=None, help="JSON with tokens, forward passes and latency per query")
    p.add_argument("--encoder-only", action="store_true", help="cosine of encoder vectors (baseline)")
    p.add_argument("--order", default="first-stage",
                   help="candidate order fed to the reranker: first-stage | reversed | random:<seed>")

    p = add(sub, "position", cmd_position, "nDCG@10 with candidates fed in first-stage, reversed and random orders")
    model_job_args(p)
    p.add_argument("--random-orders", type=int, default=3, help="number of random permutations")
    p.add_argument("--out", required=True, help="JSON with nDCG@10 per input order")

    p = add(sub, "evaluate", cmd_evaluate, "nDCG@10, MAP@100, Recall@100 as trec_eval -c computes them")
    config_arg(p, required=False)
    p.add_argument("--run", required=True)
    p.add_argument("--data", default=None, help="prepared dataset folder (its qrels)")
    p.add_argument("--qrels", default=None, help="TREC qrels file (instead of --data)")
    p.add_argument("--system", default="run")
    p.add_argument("--dataset", default="dataset")
    p.add_argument("--out", default=None, help="metrics JSON (summary, per-query values, provenance)")

    report = add(sub, "report", lambda a: None, "tables, figures and reports from metric files")
    rep_sub = report.add_subparsers(dest="report_command", required=True)
    p = add(rep_sub, "collect", cmd_report_collect, "gather metric files into the tidy metrics.csv")
    config_arg(p)
    p.add_argument("--out", required=True)
    p.add_argument("metrics", nargs="*", help="metric JSON files")
    p = add(rep_sub, "tables", cmd_report_tables, "main and reproduced-vs-published tables (md, csv, tex)")
    config_arg(p)
    p.add_argument("--metrics", required=True, help="metrics.csv")
    p.add_argument("--out-dir", required=True)
    p = add(rep_sub, "ablations", cmd_report_ablations, "ablation and candidate-pool tables with paired t-tests")
    config_arg(p)
    p.add_argument("--out-dir", required=True)
    p = add(rep_sub, "figures", cmd_report_figures, "all report figures (PNG and PDF)")
    config_arg(p)
    p.add_argument("--out-dir", required=True)
    p.add_argument("position", nargs="*", help="position-study JSON files")
    p = add(rep_sub, "notebook", cmd_report_notebook, "execute the report notebook and convert it to HTML")
    config_arg(p)
    p.add_argument("--notebook", default="notebooks/report.ipynb")
    p.add_argument("--executed", required=True, help="executed notebook path")
    p.add_argument("--html", required=True, help="HTML report path")

    bench = add(sub, "bench", lambda a: None, "benchmarks")
    b_sub = bench.add_subparsers(dest="bench_command", required=True)
    p = add(b_sub, "efficiency", cmd_bench_efficiency,
            "latency/tokens of one-step, autoregressive and full-text reranking on one backbone")
    config_arg(p)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--fig-dir", required=True)
    p = add(b_sub, "bm25", cmd_bench_bm25,
            "BM25 index time and queries/second of both backends (bm25s, rank-bm25) on prepared datasets")
    config_arg(p)
    p.add_argument("--data", nargs="*", default=[],
                   help="prepared dataset folders with a corpus (none: an empty table saying so)")
    p.add_argument("--out-dir", required=True, help="tables folder (bm25_throughput.md/.csv/.tex/.json)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed search passes, the fastest reported (default: the config's efficiency.repeats)")
    p.add_argument("--rank-bm25-max-documents", type=int, default=1_000_000,
                   help="skip rank-bm25 on larger corpora (0: no limit)")
    return parser


def limit_threads() -> None:
    """Never run more compute threads than this process may use (Snakemake's OMP_NUM_THREADS
    can exceed the machine's cores when --cores does); must run before torch is imported."""
    import os

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    wanted = int(os.environ.get("OMP_NUM_THREADS") or usable)
    os.environ["OMP_NUM_THREADS"] = str(max(1, min(wanted, usable)))


def main(argv: Sequence[str] | None = None) -> int:
    limit_threads()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        args.func(args)
    except ResRankError as err:
        print(f"resrank: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("resrank: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
