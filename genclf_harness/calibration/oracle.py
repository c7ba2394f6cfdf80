"""An oracle for analysis only: class offsets chosen WITH the gold labels to maximise accuracy.

It bounds what any offset-based calibration (all methods of this package) could reach on a set;
it is not a calibration method and must never be reported as one.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from genclf_harness.calibration._arrays import FloatArray, IntArray, as_labels, as_scores, centred


def oracle_offsets(
    logprobs: npt.ArrayLike, labels: npt.ArrayLike, *, max_sweeps: int = 5
) -> FloatArray:
    """Offsets ``b`` (K,) that maximise ``accuracy(logprobs + b, labels)``, by coordinate ascent.

    Starting from ``b = 0``, each class k in turn gets its exactly best offset with the others
    fixed: document n is predicted k iff ``b_k > t_n = max_{j != k}(s_nj + b_j) - s_nk``, so
    accuracy is piecewise constant in ``b_k`` with breakpoints ``t_n``; counting the documents
    of class k above ``b_k`` and the others (correct without k) below it, at one point inside
    each interval, finds the best. A class's offset moves only on a strict gain, so accuracy
    never falls below the raw accuracy. Sweeps repeat until none changes (at most
    ``max_sweeps``); the result is a local optimum of a non-convex problem, a lower bound on the
    best offsets' accuracy. Cost: ``O(sweeps * K * N * K)``.
    """
    scores = as_scores(logprobs, "logprobs")
    gold = as_labels(labels, scores.shape[0], scores.shape[1])
    offsets = np.zeros(scores.shape[1])
    for _ in range(max_sweeps):
        changed = False
        for label in range(scores.shape[1]):
            changed |= _improve_class(scores, gold, offsets, label)
        if not changed:
            break
    return centred(offsets)


def oracle_accuracy(
    logprobs: npt.ArrayLike, labels: npt.ArrayLike, *, max_sweeps: int = 5
) -> float:
    """Accuracy after `oracle_offsets` (label-informed: an upper reference, not a result)."""
    scores = as_scores(logprobs, "logprobs")
    gold = as_labels(labels, scores.shape[0], scores.shape[1])
    offsets = oracle_offsets(scores, gold, max_sweeps=max_sweeps)
    return float(np.mean((scores + offsets).argmax(axis=1) == gold))


def _improve_class(scores: FloatArray, gold: IntArray, offsets: FloatArray, label: int) -> bool:
    """Set ``offsets[label]`` to its best value given the others; True if it changed."""
    if scores.shape[1] == 1:
        return False
    shifted = scores + offsets
    current = int(np.sum(shifted.argmax(axis=1) == gold))
    others = shifted.copy()
    others[:, label] = -np.inf
    thresholds = others.max(axis=1) - scores[:, label]
    wins_above = np.sort(thresholds[gold == label])
    wins_below = np.sort(thresholds[(gold != label) & (others.argmax(axis=1) == gold)])

    breakpoints = np.unique(thresholds)
    candidates = np.concatenate(
        [
            [breakpoints[0] - 1.0],
            (breakpoints[:-1] + breakpoints[1:]) / 2.0,
            [breakpoints[-1] + 1.0],
        ]
    )
    correct = np.searchsorted(wins_above, candidates, side="left") + (
        wins_below.shape[0] - np.searchsorted(wins_below, candidates, side="right")
    )
    best = int(correct.max())
    if best <= current:
        return False
    # Among equally good intervals, move the offset as little as possible.
    tied = candidates[correct == best]
    previous = offsets[label]
    offsets[label] = tied[np.argmin(np.abs(tied - previous))]
    # Breakpoints closer than float resolution can make a midpoint an exact tie, where argmax's
    # tie-breaking decides; keep the move only if the real accuracy rose.
    if int(np.sum((scores + offsets).argmax(axis=1) == gold)) <= current:
        offsets[label] = previous
        return False
    return True
