"""InfoNCE, RankNet and ListMLE against values computed by hand (plain math, no torch ops)."""

from __future__ import annotations

import math

import pytest
import torch

from resrank.train.losses import (
    info_nce,
    labels_from_order,
    listmle,
    order_from_labels,
    ranknet,
    ranknet_pair_count,
)

R2 = math.sqrt(2.0)
INF = float("inf")


def _ce(logits: list[float], target: int) -> float:
    """-log softmax(logits)[target], by hand."""
    return -logits[target] + math.log(sum(math.exp(x) for x in logits))


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# Two queries, one hard negative each; unnormalised inputs to check the cosine.
Q = torch.tensor([[3.0, 0.0], [0.0, 2.0]])
P = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
N = torch.tensor([[[0.0, 5.0]], [[-1.0, 0.0]]])
# cosines: q0 -> [p0, p1, n0, n1] = [1, 1/sqrt2, 0, -1]; q1 -> [0, 1/sqrt2, 1, 0]


def test_info_nce_matches_hand_computation_with_in_batch_and_hard_negatives() -> None:
    tau = 0.5
    row0 = [1 / tau, (1 / R2) / tau, 0.0, -1 / tau]
    row1 = [0.0, (1 / R2) / tau, 1 / tau, 0.0]
    expected = (_ce(row0, 0) + _ce(row1, 1)) / 2
    got = info_nce(Q, P, N, tau=tau)
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_info_nce_in_batch_only_and_masks() -> None:
    tau = 0.5
    expected = (_ce([2.0, R2], 0) + _ce([0.0, R2], 1)) / 2
    assert info_nce(Q, P, None, tau=tau).item() == pytest.approx(expected, abs=1e-6)

    # padding negative of query 1 (column 3) is ignored by every row
    mask = torch.tensor([[True], [False]])
    expected = (_ce([2.0, R2, 0.0], 0) + _ce([0.0, R2, 2.0], 1)) / 2
    assert info_nce(Q, P, N, tau=tau, neg_mask=mask).item() == pytest.approx(expected, abs=1e-6)

    # row 0 may not treat p1 (column 1) as a negative; own positives are never excluded
    exclude = torch.tensor([[True, True, False, False], [False, True, False, False]])
    expected = (_ce([2.0, 0.0, -2.0], 0) + _ce([0.0, R2, 2.0, 0.0], 1)) / 2
    assert info_nce(Q, P, N, tau=tau, exclude=exclude).item() == pytest.approx(expected, abs=1e-6)


def test_info_nce_gradient_is_finite_with_masked_columns() -> None:
    q = Q.clone().requires_grad_(True)
    loss = info_nce(q, P, N, tau=0.05, neg_mask=torch.tensor([[True], [False]]))
    loss.backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()


def test_ranknet_matches_hand_computation_and_ignores_padding() -> None:
    scores = torch.tensor([[2.0, 1.0, 0.0], [0.5, -INF, -INF]], requires_grad=True)
    labels = torch.tensor([[2.0, 0.0, 1.0], [1.0, 0.0, 3.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    # list 0 pairs with label_i > label_j: (0,1): +1, (0,2): +2, (2,1): -1; list 1 has none
    for tau in (1.0, 0.5):
        expected = (_softplus(-1 / tau) + _softplus(-2 / tau) + _softplus(1 / tau)) / 3
        got = ranknet(scores, labels, mask, tau=tau)
        assert got.item() == pytest.approx(expected, abs=1e-6)
    assert ranknet_pair_count(labels, mask) == 3
    got.backward()
    assert scores.grad is not None and torch.isfinite(scores.grad).all()
    assert scores.grad[1].abs().sum().item() == 0.0


def test_ranknet_without_pairs_is_zero_with_grad() -> None:
    scores = torch.tensor([[1.0, -INF], [0.3, 0.2]], requires_grad=True)
    labels = torch.tensor([[1.0, 0.0], [2.0, 2.0]])  # pair hidden by padding; tied labels
    mask = torch.tensor([[True, False], [True, True]])
    loss = ranknet(scores, labels, mask, tau=0.05)
    assert loss.item() == 0.0
    assert loss.grad_fn is not None
    loss.backward()
    assert scores.grad is not None and torch.isfinite(scores.grad).all()


def test_listmle_matches_hand_computation() -> None:
    order = [2, 0, 1]
    a, b, c = 0.3, -0.2, 1.1
    a1, b1 = 0.7, 0.1
    step_logits = torch.tensor(
        [
            [a, b, c],  # step 0: nothing emitted
            [a1, b1, -INF],  # step 1: passage 2 emitted
            [-INF, 0.4, -INF],  # step 2: only passage 1 left
        ],
        requires_grad=True,
    )
    expected = _ce([a, b, c], 2) + _ce([a1, b1], 0) + 0.0
    got = listmle([step_logits], [order])
    assert got.item() == pytest.approx(expected, abs=1e-6)
    got.backward()
    assert torch.isfinite(step_logits.grad).all()

    tau = 0.5
    expected_tau = _ce([a / tau, b / tau, c / tau], 2) + _ce([a1 / tau, b1 / tau], 0)
    assert listmle([step_logits], [order], tau=tau).item() == pytest.approx(expected_tau, abs=1e-6)


def test_listmle_averages_lists_and_defaults_to_identity_order() -> None:
    two = torch.tensor([[1.0, 0.0], [-INF, 2.0]])
    three = torch.tensor([[0.0, 0.0, 0.0], [-INF, 0.0, 0.0], [-INF, -INF, 5.0]])
    expected = (_ce([1.0, 0.0], 0) + (math.log(3) + math.log(2))) / 2
    assert listmle([two, three]).item() == pytest.approx(expected, abs=1e-6)


def test_listmle_rejects_targets_already_emitted() -> None:
    logits = torch.tensor([[0.0, 0.0], [-INF, 0.0]])
    with pytest.raises(ValueError, match="masked"):
        listmle([logits], [[1, 0]])
    with pytest.raises(ValueError, match="permutation"):
        listmle([logits], [[0, 0]])


def test_teacher_order_label_conversions() -> None:
    assert labels_from_order([2, 0, 1]) == [2.0, 1.0, 3.0]
    assert order_from_labels([2.0, 1.0, 3.0]) == [2, 0, 1]
    assert order_from_labels([0.0, 1.0, 0.0, 1.0]) == [1, 3, 0, 2]  # ties keep list order
