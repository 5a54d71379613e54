"""Scores of probabilistic classifiers: accuracy, negative log-likelihood, calibration error, Brier score."""

from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = ["classification_metrics"]


def classification_metrics(probs: torch.Tensor, y: torch.Tensor, num_bins: int = 15) -> dict[str, float]:
    r"""Accuracy, NLL, expected calibration error and Brier score of predicted class probabilities.

    .. math::

        \mathrm{ECE} = \sum_b \frac{|B_b|}{n}\,\bigl|\overline{\mathrm{conf}}(B_b) - \overline{\mathrm{acc}}(B_b)\bigr|,

    with the predictions binned by confidence :math:`\max_c p_c` into ``num_bins`` equal-width bins of (0, 1].

    Parameters
    ----------
    probs : torch.Tensor
        ``(n, classes)`` predicted probabilities (rows summing to one).
    y : torch.Tensor
        ``(n,)`` integer labels.
    num_bins : int
        Confidence bins of the ECE.

    Returns
    -------
    dict
        ``acc`` (%), ``nll`` (nats per example, probabilities clamped at 1e-12), ``ece`` (%) and ``brier``
        (squared error summed over classes, averaged over examples).
    """
    if probs.ndim != 2 or y.shape != probs.shape[:1]:
        raise ValueError(f"probs must be (n, classes) and y (n,); got {tuple(probs.shape)} and {tuple(y.shape)}.")
    probs = probs.detach().double().clamp_min(1e-12)
    conf, pred = probs.max(1)
    correct = (pred == y).double()
    edges = torch.linspace(0, 1, num_bins + 1, dtype=conf.dtype, device=conf.device)[1:-1]
    bins = torch.bucketize(conf, edges)  # bin b holds conf in (b/B, (b+1)/B]
    gap = torch.bincount(bins, weights=conf - correct, minlength=num_bins)  # n_b (mean conf - mean acc)
    ece = float(gap.abs().sum() / len(y))
    onehot = F.one_hot(y, probs.shape[1]).double()
    return {"acc": float(correct.mean()) * 100, "nll": float(-probs[torch.arange(len(y)), y].log().mean()),
            "ece": ece * 100, "brier": float(((probs - onehot) ** 2).sum(1).mean())}
