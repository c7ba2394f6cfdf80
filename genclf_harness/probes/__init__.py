"""Classifiers on frozen features: generative (naive Bayes) against discriminative (logistic regression).

After Zheng et al. (ICML 2023), "Revisiting Discriminative vs. Generative Classifiers: Theory and
Implications": with a shared diagonal variance, naive Bayes is a linear classifier that reaches its
asymptotic error with O(log d) samples, logistic regression with O(d); frozen LLM (or MiniLM)
features let both be compared with prompting the same model.

- `naive_bayes`: `PooledGaussianNB` (the paper's naive Bayes, streaming fit);
- `logistic`: `LogisticProbe` (L-BFGS, C = 1) and `MinMaxScaled` (the scaler fitted on training rows);
- `features`: hidden states of a causal LM over the task's prompts (last token or mean, a chosen
  layer), MiniLM sentence embeddings, and the on-disk `FeatureCache`;
- `curves`: learning curves over training-set sizes with repeats, genclf's calibration and
  conformal metrics of each fit, and the crossing point.

numpy and scikit-learn only (torch and transformers for the features); no lm-eval, no TRL.
"""

from genclf_harness.probes.curves import (
    PROBES,
    CurvePoint,
    crossing_point,
    draw_subset,
    learning_curve,
    make_probe,
    parse_sizes,
    probe_metrics,
    summarize,
)
from genclf_harness.probes.logistic import LogisticProbe, MinMaxScaled, Probe
from genclf_harness.probes.naive_bayes import PooledGaussianNB

__all__ = [
    "PROBES",
    "CurvePoint",
    "LogisticProbe",
    "MinMaxScaled",
    "PooledGaussianNB",
    "Probe",
    "crossing_point",
    "draw_subset",
    "learning_curve",
    "make_probe",
    "parse_sizes",
    "probe_metrics",
    "summarize",
]
