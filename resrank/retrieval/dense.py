"""Exact dense first stage: inner-product (or cosine) top-k over precomputed embeddings.

The encoder lives in ``resrank.model.encoder``; this module only ranks vectors, so it is
testable without a model. Scores are computed with torch on the vectors' device (a GPU
when the caller's tensors are there) in query x document chunks, keeping a running top-k,
so memory stays O(chunk) rather than O(Q x D). The search is exact: a flat index, no
approximation. Ties are broken as everywhere in the first stage (docid ascending, scores
strictly decreasing as printed; ``resrank.retrieval.ranking``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from resrank.data.types import Run
from resrank.errors import ResRankError
from resrank.retrieval.ranking import finalize_hits

__all__ = ["dense_retrieve"]

TIE_MARGIN = 8
"""Extra candidates kept beyond the cut so that near-ties at the cut are decided by docid."""


def _as_tensor(x: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    if t.ndim != 2:
        raise ResRankError(f"dense_retrieve: {name} must be a 2-D [n, hidden] array, got shape {tuple(t.shape)}")
    if not torch.is_floating_point(t):
        t = t.float()
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()  # half-precision sums would reorder near-ties between runs
    return t.detach()


def dense_retrieve(
    query_vectors: np.ndarray | torch.Tensor,
    qids: Sequence[str],
    doc_vectors: np.ndarray | torch.Tensor,
    docids: Sequence[str],
    depth: int,
    *,
    metric: Literal["ip", "cosine"] = "ip",
    remove_query_id_hits: bool = False,
    query_chunk: int = 1024,
    doc_chunk: int = 65536,
) -> Run:
    """Top-``depth`` documents per query by inner product (``metric="cosine"`` normalises first).

    ``remove_query_id_hits`` drops a hit whose docid equals the qid (``depth`` stays full).
    """
    q = _as_tensor(query_vectors, "query_vectors")
    d = _as_tensor(doc_vectors, "doc_vectors")
    if q.shape[0] != len(qids):
        raise ResRankError(f"dense_retrieve: {q.shape[0]} query vectors but {len(qids)} query ids")
    if d.shape[0] != len(docids):
        raise ResRankError(f"dense_retrieve: {d.shape[0]} document vectors but {len(docids)} document ids")
    if q.shape[1] != d.shape[1]:
        raise ResRankError(f"dense_retrieve: query dim {q.shape[1]} != document dim {d.shape[1]}")
    if len(set(qids)) != len(qids):
        raise ResRankError("dense_retrieve: duplicate query ids")
    if depth < 1:
        raise ResRankError(f"dense_retrieve: depth must be >= 1, got {depth}")
    if len(docids) == 0:
        return {qid: {} for qid in qids}
    dtype = torch.promote_types(q.dtype, d.dtype)
    q = q.to(device=d.device, dtype=dtype)
    d = d.to(dtype=dtype)
    if metric == "cosine":
        q = torch.nn.functional.normalize(q, dim=1)
        d = torch.nn.functional.normalize(d, dim=1)
    elif metric != "ip":
        raise ResRankError(f"dense_retrieve: unknown metric {metric!r}; use 'ip' or 'cosine'")

    n_docs = d.shape[0]
    k = min(n_docs, depth + (1 if remove_query_id_hits else 0) + TIE_MARGIN)
    run: Run = {}
    with torch.no_grad():
        for qs in range(0, q.shape[0], query_chunk):
            q_block = q[qs : qs + query_chunk]
            best_scores = torch.empty((q_block.shape[0], 0), dtype=dtype, device=d.device)
            best_index = torch.empty((q_block.shape[0], 0), dtype=torch.long, device=d.device)
            for ds in range(0, n_docs, doc_chunk):
                scores = q_block @ d[ds : ds + doc_chunk].T
                top = torch.topk(scores, min(k, scores.shape[1]), dim=1)
                cand_scores = torch.cat([best_scores, top.values], dim=1)
                cand_index = torch.cat([best_index, top.indices + ds], dim=1)
                keep = torch.topk(cand_scores, min(k, cand_scores.shape[1]), dim=1)
                best_scores = keep.values
                best_index = torch.gather(cand_index, 1, keep.indices)
            scores_np = best_scores.cpu().numpy().astype(np.float64)
            index_np = best_index.cpu().numpy()
            for row, qid in enumerate(qids[qs : qs + query_chunk]):
                hits = ((docids[i], s) for i, s in zip(index_np[row].tolist(), scores_np[row].tolist(), strict=True))
                run[qid] = finalize_hits(hits, depth, exclude=qid if remove_query_id_hits else None)
    return run
