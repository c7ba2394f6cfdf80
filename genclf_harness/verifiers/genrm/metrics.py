"""Verification metrics on labelled candidates: accuracy at a threshold and AUROC."""

from __future__ import annotations

import math
from collections.abc import Sequence


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve: the chance that a correct solution scores above an incorrect one
    (ties count one half). NaN when only one class is present."""
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores but {len(labels)} labels")
    positives = sum(1 for label in labels if label)
    negatives = len(labels) - positives
    if not positives or not negatives:
        return math.nan
    # Mann-Whitney U from average ranks (ties share their mean rank).
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    start = 0
    while start < len(order):
        stop = start
        while stop + 1 < len(order) and scores[order[stop + 1]] == scores[order[start]]:
            stop += 1
        for position in range(start, stop + 1):
            ranks[order[position]] = (start + stop) / 2 + 1
        start = stop + 1
    rank_sum = sum(rank for rank, label in zip(ranks, labels, strict=True) if label)
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def verification_accuracy(scores: Sequence[float], labels: Sequence[bool], threshold: float = 0.5) -> float:
    """Share of candidates judged right: P(Yes) above ``threshold`` exactly for the correct ones."""
    if not scores:
        raise ValueError("no scores")
    return sum((score > threshold) == bool(label) for score, label in zip(scores, labels, strict=True)) / len(scores)


def balanced_accuracy(scores: Sequence[float], labels: Sequence[bool], threshold: float = 0.5) -> float:
    """Mean of the accuracy on correct and on incorrect candidates (NaN if a class is missing)."""
    pos = [s > threshold for s, label in zip(scores, labels, strict=True) if label]
    neg = [s <= threshold for s, label in zip(scores, labels, strict=True) if not label]
    if not pos or not neg:
        return math.nan
    return (sum(pos) / len(pos) + sum(neg) / len(neg)) / 2
