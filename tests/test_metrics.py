"""Classification scores against hand-computed values."""

import math

import pytest
import torch

from pyebm.metrics import classification_metrics


def test_scores_match_a_hand_computed_example():
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.55, 0.45]])
    y = torch.tensor([0, 1, 1, 0])
    m = classification_metrics(probs, y, num_bins=2)
    # confidences 0.9, 0.6, 0.7, 0.55, all in bin (0.5, 1]; correct 1, 0, 1, 1: |mean conf - acc| = |0.6875 - 0.75|
    assert m["ece"] == pytest.approx(100 * 0.0625)
    assert m["acc"] == pytest.approx(75.0)
    assert m["nll"] == pytest.approx(-(math.log(0.9) + math.log(0.4) + math.log(0.7) + math.log(0.55)) / 4)
    assert m["brier"] == pytest.approx((2 * 0.1**2 + 2 * 0.6**2 + 2 * 0.3**2 + 2 * 0.45**2) / 4)


def test_bins_are_right_closed_and_weighted_by_size():
    probs = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.8, 0.2]])  # conf 0.5 falls in (0, 0.5], not (0.5, 1]
    y = torch.tensor([1, 0, 1])  # the tie predicts class 0: wrong
    m = classification_metrics(probs, y, num_bins=2)
    assert m["ece"] == pytest.approx(100 * (1 / 3 * 0.5 + 2 / 3 * abs(0.9 - 0.5)))


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="probs must be"):
        classification_metrics(torch.ones(3, 2) / 2, torch.zeros(4, dtype=torch.long))
