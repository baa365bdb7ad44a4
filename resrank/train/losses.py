"""The three training losses of the suite (method.md §2-3), as plain tensor functions.

* ``info_nce``: the encoder's retrieval loss (positive + hard negatives + in-batch negatives).
* ``ranknet``: the reranker's listwise loss on one-step scores (all ordered pairs).
* ``listmle``: the teacher-forced loss of the autoregressive ablation.

Each returns the *mean* over its natural unit (queries, valid pairs, lists); the trainer
rescales micro-batches with ``ranknet_pair_count`` / list counts so that accumulated
gradients equal the full-batch gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def info_nce(
    query_vecs: Tensor,
    pos_vecs: Tensor,
    neg_vecs: Tensor | None = None,
    tau: float = 0.05,
    neg_mask: Tensor | None = None,
    exclude: Tensor | None = None,
) -> Tensor:
    """InfoNCE over ``cos(q, p) / tau`` with the positive as target.

    The candidate columns for every query are the same (in-batch negatives):
    columns ``0..B-1`` are the B positives, then column ``B + b*K + k`` is hard negative
    ``k`` of query ``b``. So query ``b`` competes its own positive (column ``b``) against
    its hard negatives *and* every other query's positive and hard negatives.

    Args:
        query_vecs: ``[B, H]`` query embeddings (normalised here, so cosine either way).
        pos_vecs: ``[B, H]`` one positive per query.
        neg_vecs: ``[B, K, H]`` hard negatives, or None for in-batch negatives only.
        tau: temperature.
        neg_mask: ``[B, K]`` bool, False for padding negatives (queries with fewer than K).
        exclude: ``[B, B + B*K]`` bool, True for columns that must not count as negatives
            of that query (e.g. a passage judged relevant to it that is another query's
            positive). Column ``b`` of row ``b`` is never excluded.
    """
    if query_vecs.ndim != 2 or pos_vecs.shape != query_vecs.shape:
        raise ValueError(
            f"info_nce: expected query/pos [B, H], got {tuple(query_vecs.shape)} / {tuple(pos_vecs.shape)}"
        )
    batch = query_vecs.shape[0]
    q = F.normalize(query_vecs, dim=-1)
    docs = [F.normalize(pos_vecs, dim=-1)]
    if neg_vecs is not None:
        if neg_vecs.ndim != 3 or neg_vecs.shape[0] != batch:
            raise ValueError(f"info_nce: expected neg_vecs [B, K, H], got {tuple(neg_vecs.shape)}")
        docs.append(F.normalize(neg_vecs.reshape(-1, neg_vecs.shape[-1]), dim=-1))
    candidates = torch.cat(docs, dim=0)
    logits = (q @ candidates.T) / tau
    invalid = torch.zeros_like(logits, dtype=torch.bool)
    if neg_vecs is not None and neg_mask is not None:
        invalid[:, batch:] |= ~neg_mask.reshape(1, -1).to(logits.device)
    if exclude is not None:
        invalid |= exclude.to(logits.device)
    diag = torch.arange(batch, device=logits.device)
    invalid[diag, diag] = False
    logits = logits.masked_fill(invalid, float("-inf"))
    return F.cross_entropy(logits, diag)


def ranknet_pair_count(labels: Tensor, mask: Tensor) -> int:
    """Number of ordered pairs (i, j) with both valid and ``label_i > label_j``."""
    return int(_pair_mask(labels, mask).sum().item())


def ranknet(scores: Tensor, labels: Tensor, mask: Tensor, tau: float = 1.0) -> Tensor:
    """RankNet over all ordered pairs of each list, averaged over the batch's valid pairs.

    For every pair with ``label_i > label_j`` (both unmasked): ``softplus(-(s_i - s_j) / tau)``
    = ``-log sigmoid((s_i - s_j) / tau)``. Lists without such a pair contribute nothing;
    a batch without any returns a zero that is still attached to the graph.

    Args:
        scores: ``[B, N]`` scores (padding may be -inf; it is never read).
        labels: ``[B, N]`` graded relevance, or ``n - rank`` for a teacher permutation.
        mask: ``[B, N]`` bool, True for real passages.
        tau: temperature dividing score differences.
    """
    mask = mask.to(torch.bool)
    safe = scores.masked_fill(~mask, 0.0)
    pairs = _pair_mask(labels, mask)
    diff = (safe.unsqueeze(2) - safe.unsqueeze(1)) / tau
    n_pairs = pairs.sum()
    if int(n_pairs.item()) == 0:
        return (safe * 0.0).sum()
    return F.softplus(-diff)[pairs].sum() / n_pairs


def _pair_mask(labels: Tensor, mask: Tensor) -> Tensor:
    mask = mask.to(torch.bool).to(labels.device)
    valid = mask.unsqueeze(2) & mask.unsqueeze(1)
    return valid & (labels.unsqueeze(2) > labels.unsqueeze(1))


def listmle(
    step_logits: Sequence[Tensor],
    orders: Sequence[Sequence[int]] | None = None,
    tau: float = 1.0,
) -> Tensor:
    """Teacher-forced ListMLE, averaged over lists.

    ``step_logits[b]`` is ``[n, n]`` as returned by ``ResRankModel.teacher_forced_logits``:
    row ``t`` holds the logits of decoding step ``t`` after the teacher's first ``t``
    choices were fed back, with those already-emitted passages at -inf. The target of row
    ``t`` is ``orders[b][t]`` (the teacher's passage at step t; identity order when
    ``orders`` is None). Per list: ``-sum_t log_softmax(row_t / tau)[orders[t]]``, i.e. the
    negative log-likelihood of the teacher permutation under the Plackett-Luce model.
    """
    if len(step_logits) == 0:
        raise ValueError("listmle: empty batch")
    losses = []
    for b, logits in enumerate(step_logits):
        n = logits.shape[-1]
        if logits.ndim != 2 or logits.shape[0] != n:
            raise ValueError(f"listmle: list {b}: expected [n, n] step logits, got {tuple(logits.shape)}")
        order = list(range(n)) if orders is None else list(orders[b])
        if sorted(order) != list(range(n)):
            raise ValueError(f"listmle: list {b}: order {order} is not a permutation of range({n})")
        target = torch.tensor(order, device=logits.device)
        logp = torch.log_softmax(logits.float() / tau, dim=-1)
        picked = logp[torch.arange(n, device=logits.device), target]
        if bool(torch.isneginf(picked).any()):
            raise ValueError(
                f"listmle: list {b}: the teacher's target is masked (-inf) at some step; "
                "step logits and orders disagree about which passages were already emitted"
            )
        losses.append(-picked.sum())
    return torch.stack(losses).mean()


def labels_from_order(order: Sequence[int]) -> list[float]:
    """Teacher permutation (passage indices, best first) -> labels ``n - rank`` per passage."""
    n = len(order)
    labels = [0.0] * n
    for rank, idx in enumerate(order):
        labels[idx] = float(n - rank)
    return labels


def order_from_labels(labels: Sequence[float]) -> list[int]:
    """Teacher order from labels: highest label first, ties kept in list (first-stage) order."""
    return sorted(range(len(labels)), key=lambda i: (-labels[i], i))
