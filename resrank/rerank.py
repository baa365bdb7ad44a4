"""Inference: encode passages once per checkpoint, rerank each query's candidates in one pass.

The embedding cache is keyed by checkpoint (sha256 of its weights) and passage text hash,
so a passage shared by several datasets or pools is encoded once per checkpoint. Every
reranked list records its reranker forward passes, processed and generated tokens, and
wall time, which the efficiency tables read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import random
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from resrank import compute
from resrank.config import ResRankConfig
from resrank.data.prepared import read_prepared
from resrank.data.types import Dataset, Run
from resrank.embedding_cache import EmbeddingCache, text_hash
from resrank.errors import ResRankError
from resrank.io import read_trec_run, sha256_file, write_json, write_trec_run

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"


# ------------------------------------------------------------------------- model
def checkpoint_key(cfg: ResRankConfig, checkpoint: str | Path | None) -> str:
    """Identity of what produces embeddings: the weights (file hash, or the untrained model
    names), the encoder's settings (lengths, pooling, prefixes) and the resolved precision."""
    weights = f"untrained|{cfg.reranker.model}" if checkpoint is None else sha256_file(_weights(checkpoint))
    precision = compute.describe(cfg.precision, compute.default_device())
    digest = hashlib.sha256(f"{weights}|{cfg.encoder}|{precision}".encode()).hexdigest()
    return ("untrained-" if checkpoint is None else "") + digest[:32]


def load_model(cfg: ResRankConfig, checkpoint: str | Path | None) -> Any:
    """The model in eval mode on the inference device (the GPU when there is one)."""
    from resrank.model.resrank import ResRankModel

    torch.manual_seed(cfg.seed)
    if checkpoint is None:
        model = ResRankModel.from_config(cfg.encoder, cfg.reranker)
    else:
        model = ResRankModel.from_checkpoint(cfg.encoder, cfg.reranker, _weights(checkpoint))
    model.eval()
    return model.to(compute.default_device())


def autocast(cfg: ResRankConfig, model: Any) -> contextlib.AbstractContextManager[Any]:
    return compute.autocast(cfg.precision, model.device)


def _weights(checkpoint: str | Path) -> Path:
    path = Path(checkpoint)
    weights = path / WEIGHTS if path.is_dir() else path
    if not weights.is_file():
        raise ResRankError(f"{weights}: checkpoint weights not found; train the stage first (`resrank train`)")
    return weights


# ------------------------------------------------------------------ embeddings
def passages_of(dataset: Dataset, run: Run, depth: int | None) -> dict[str, str]:
    """docid -> text of every passage to embed.

    ``depth`` given: the top-``depth`` candidates of each query of ``run`` (what the
    reranker reads). ``depth`` None: the whole corpus (dense retrieval) plus the run's hits.
    """
    available: dict[str, str] = {}
    if dataset.corpus:
        available = {docid: p.contents for docid, p in dataset.corpus.items()}
    elif dataset.candidates:
        available = {c.docid: c.contents for clist in dataset.candidates for c in clist.candidates}
    if depth is None:
        needed = set(available) | {d for docs in run.values() for d in docs}
    else:
        needed = {d for docs in run.values() for d, _ in sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))[:depth]}
    missing = sorted(d for d in needed if d not in available)
    if missing:
        raise ResRankError(
            f"{len(missing)} candidate documents have no text in {dataset.name} (e.g. {missing[0]!r}); "
            "reranking needs passage texts: provide the corpus or a candidate file with texts"
        )
    texts = {d: available[d] for d in needed}
    empty = sorted(d for d, t in texts.items() if not t.strip())
    if empty:
        raise ResRankError(f"{dataset.name}: {len(empty)} passages have empty text (e.g. {empty[0]!r}); "
                           "remove them or provide their text")
    return texts


def encode_dataset(cfg: ResRankConfig, data_dir: Path, first_stage: Path, checkpoint: str | Path | None,
                   out: Path, whole_corpus: bool = False) -> None:
    """Embed the passages reranking (top ``reranker.depth``) or dense retrieval (whole corpus) needs."""
    from safetensors.torch import save_file

    dataset = read_prepared(data_dir)
    run = read_trec_run(first_stage)
    texts = passages_of(dataset, run, None if whole_corpus else cfg.reranker.depth)
    docids = sorted(texts)
    key = checkpoint_key(cfg, checkpoint)
    cache = EmbeddingCache(Path(cfg.results_dir) / cfg.profile / "cache" / "embeddings", key)
    model = None

    def encode(batch: list[str]) -> torch.Tensor:
        nonlocal model
        if model is None:
            model = load_model(cfg, checkpoint)
        with autocast(cfg, model):
            return model.encoder.encode(batch, "passage", batch_size=cfg.encoder.batch_size)

    start = time.perf_counter()
    vectors = cache.get_or_encode([texts[d] for d in docids], encode)
    elapsed = time.perf_counter() - start
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    save_file({"vectors": vectors.contiguous()}, str(tmp), metadata={
        "docids": json.dumps(docids),
        "text_sha1": json.dumps([text_hash(texts[d]) for d in docids]),
        "checkpoint": key,
        "encode_seconds": f"{elapsed:.3f}",
    })
    tmp.replace(out)
    log.info("embedded %d passages of %s in %.1fs", len(docids), dataset.name, elapsed)


def load_embeddings(path: Path, cfg: ResRankConfig, checkpoint: str | Path | None) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    if not path.is_file():
        raise ResRankError(f"{path}: embeddings not found; run `resrank encode` first")
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
        vectors = handle.get_tensor("vectors")
    key = checkpoint_key(cfg, checkpoint)
    if meta.get("checkpoint") != key:
        raise ResRankError(f"{path}: embeddings were made by checkpoint {meta.get('checkpoint')}, not {key}; "
                           "re-run `resrank encode` for this checkpoint")
    docids = json.loads(meta["docids"])
    return {d: vectors[i] for i, d in enumerate(docids)}


# ---------------------------------------------------------------------- rerank
def ordered_candidates(run: Run, depth: int, order: str, qid: str) -> list[str]:
    """The first ``depth`` candidates in first-stage order, or permuted for position studies."""
    ranked = [d for d, _ in sorted(run[qid].items(), key=lambda kv: (-kv[1], kv[0]))][:depth]
    if order == "first-stage":
        return ranked
    if order == "reversed":
        return ranked[::-1]
    if order.startswith("random:"):
        seed = int(order.split(":", 1)[1])
        rng = random.Random(f"{seed}:{qid}")
        shuffled = ranked[:]
        rng.shuffle(shuffled)
        return shuffled
    raise ResRankError(f"--order {order!r}: use first-stage, reversed or random:<seed>")


@torch.inference_mode()
def rerank_dataset(cfg: ResRankConfig, data_dir: Path, first_stage: Path, embeddings: Path,
                   checkpoint: str | Path | None, out_run: Path, out_stats: Path | None = None,
                   encoder_only: bool = False, order: str = "first-stage") -> dict[str, Any]:
    dataset = read_prepared(data_dir)
    run = read_trec_run(first_stage)
    vectors = load_embeddings(embeddings, cfg, checkpoint)
    queries = {q.qid: q.text for q in dataset.queries}
    qids = [q for q in sorted(run) if q in queries]
    if not qids:
        raise ResRankError(f"{first_stage}: no query of the run is in {data_dir}/queries.jsonl")
    depth = cfg.reranker.depth
    model = load_model(cfg, checkpoint)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    reranked: Run = {}
    per_query: dict[str, dict[str, Any]] = {}
    batch = 1 if encoder_only else cfg.reranker.batch_size
    for start in range(0, len(qids), batch):
        chunk = qids[start:start + batch]
        lists = [ordered_candidates(run, depth, order, q) for q in chunk]
        missing = [d for docs in lists for d in docs if d not in vectors]
        if missing:
            raise ResRankError(f"{embeddings}: no embedding for candidate {missing[0]!r}; re-run `resrank encode`")
        embs = [torch.stack([vectors[d] for d in docs]) if docs else torch.empty(0, 0) for docs in lists]
        texts = [queries[q] for q in chunk]
        began = time.perf_counter()
        with autocast(cfg, model):
            stats = _score(model, cfg, texts, embs, encoder_only)
        elapsed = time.perf_counter() - began
        for i, qid in enumerate(chunk):
            scores = stats["scores"][i]
            docs = lists[i]
            if any(not math.isfinite(s) for s in scores):
                raise ResRankError(f"non-finite score for query {qid!r}; the checkpoint may be corrupt")
            reranked[qid] = _with_tail(run[qid], docs, scores)
            per_query[qid] = {
                "n_candidates": len(docs),
                "forward_passes": stats["forward_passes"][i],
                "processed_tokens": stats["processed_tokens"][i],
                "generated_tokens": stats["generated_tokens"][i],
                "latency_s": elapsed / len(chunk),
            }
    write_trec_run(out_run, reranked, tag=cfg.variant if not encoder_only else "encoder")
    summary = _summarise(per_query, batch, cfg, encoder_only, order)
    if out_stats is not None:
        write_json(out_stats, {"summary": summary, "per_query": per_query})
    return summary


def _score(model: Any, cfg: ResRankConfig, queries: list[str], embs: list[torch.Tensor],
           encoder_only: bool) -> dict[str, list[Any]]:
    n = len(queries)
    if encoder_only:
        qvec = model.encoder.encode(queries, "query")
        scores = [(e @ qvec[i]).tolist() if e.numel() else [] for i, e in enumerate(embs)]
        return {"scores": scores, "forward_passes": [0] * n, "processed_tokens": [0] * n,
                "generated_tokens": [0] * n}
    if cfg.reranker.scoring == "autoregressive":
        results = model.rank_autoregressive(queries, embs)
        scores = []
        for res, e in zip(results, embs, strict=True):
            by_index = [0.0] * e.shape[0]
            for pos, idx in enumerate(res.order):
                by_index[idx] = float(res.scores[pos])
            scores.append(by_index)
        return {"scores": scores, "forward_passes": [r.forward_passes for r in results],
                "processed_tokens": [r.processed_tokens if isinstance(r.processed_tokens, int)
                                     else sum(r.processed_tokens) for r in results],
                "generated_tokens": [r.generated_tokens for r in results]}
    output = model(queries, embs)
    scores = [output.scores[i, : e.shape[0]].tolist() for i, e in enumerate(embs)]
    return {"scores": scores, "forward_passes": [output.forward_passes] * n,
            "processed_tokens": list(output.processed_tokens), "generated_tokens": list(output.generated_tokens)}


def _with_tail(first: dict[str, float], docs: list[str], scores: list[float]) -> dict[str, float]:
    """Reranked candidates, then the first stage's remaining hits below them in their order."""
    out = dict(zip(docs, (float(s) for s in scores), strict=True))
    rest = [d for d, _ in sorted(first.items(), key=lambda kv: (-kv[1], kv[0])) if d not in out]
    floor = min(out.values(), default=0.0)
    for i, d in enumerate(rest, start=1):
        out[d] = floor - i
    return out


def _summarise(per_query: dict[str, dict[str, Any]], batch: int, cfg: ResRankConfig, encoder_only: bool,
               order: str) -> dict[str, Any]:
    lat = sorted(v["latency_s"] for v in per_query.values())

    def med(key: str) -> float:
        return statistics.median(v[key] for v in per_query.values())

    return {
        "system": "encoder-only" if encoder_only else cfg.variant,
        "scoring": "cosine-encoder" if encoder_only else cfg.reranker.scoring,
        "order": order,
        "queries": len(per_query),
        "batch_size": batch,
        "median_latency_s": statistics.median(lat),
        "p90_latency_s": lat[min(len(lat) - 1, int(0.9 * len(lat)))],
        "median_candidates": med("n_candidates"),
        "median_forward_passes": med("forward_passes"),
        "median_processed_tokens": med("processed_tokens"),
        "median_generated_tokens": med("generated_tokens"),
        "device": compute.default_device().type,
        "precision": compute.describe(cfg.precision, compute.default_device()),
        "torch_threads": torch.get_num_threads(),
    }


# ---------------------------------------------------------------------- dense
@torch.inference_mode()
def dense_first_stage(cfg: ResRankConfig, data_dir: Path, embeddings: Path | str, checkpoint: str | Path | None,
                      out: Path | str) -> None:
    """Dense retrieval over the whole corpus with the (trained) encoder: the "retrieval" half."""
    from resrank.retrieval.dense import dense_retrieve

    dataset = read_prepared(data_dir)
    if not dataset.corpus:
        raise ResRankError(f"{data_dir}: dense retrieval needs a corpus; this dataset only has candidates")
    vectors = load_embeddings(Path(embeddings), cfg, checkpoint)
    missing = [d for d in dataset.corpus if d not in vectors]
    if missing:
        raise ResRankError(f"{embeddings}: {len(missing)} corpus passages lack embeddings; re-run `resrank encode`")
    docids = sorted(dataset.corpus)
    model = load_model(cfg, checkpoint)
    with autocast(cfg, model):
        qvecs = model.encoder.encode([q.text for q in dataset.queries], "query")
    dvecs = torch.stack([vectors[d] for d in docids])
    run = dense_retrieve(qvecs, [q.qid for q in dataset.queries], dvecs, docids, cfg.retrieval.depth)
    write_trec_run(out, run, tag="dense")


# ------------------------------------------------------------ position study
def position_study(cfg: ResRankConfig, data_dir: Path, first_stage: Path, embeddings: Path,
                   checkpoint: str | Path | None, n_random: int, out: Path) -> dict[str, Any]:
    """nDCG@10 when the same candidates are fed in first-stage order, reversed, and shuffled.

    A one-step model that ignored position would score identically; "lost in the middle"
    effects show up as a drop for reversed or random input orders.
    """
    import tempfile

    from resrank.data.prepared import read_prepared_qrels
    from resrank.eval.metrics import evaluate

    qrels = read_prepared_qrels(data_dir)
    orders = ["first-stage", "reversed", *[f"random:{i}" for i in range(1, n_random + 1)]]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for order in orders:
            run_path = Path(tmp) / "run.trec"
            rerank_dataset(cfg, data_dir, first_stage, embeddings, checkpoint, run_path, order=order)
            result = evaluate(read_trec_run(run_path), qrels, ["ndcg@10"])
            results[order] = {"ndcg@10": result.summary["ndcg@10"], "n_queries": result.n_queries}
    record = {"system": cfg.variant, "dataset": Path(data_dir).name, "orders": results}
    write_json(out, record)
    return record
