"""``genclf-bench probes``: generative vs discriminative probes on frozen features, beside prompting.

For each data set and feature kind (`genclf_harness.probes.features`: the default model's hidden
state at the last prompt token or its mean, MiniLM sentence embeddings) the two probes of Zheng et
al. (2023) are fitted on training subsets of growing size, ``--repeats`` draws each
(`genclf_harness.probes.curves`): naive Bayes with a shared diagonal variance and logistic
regression (L-BFGS, C = 1), both on min-max scaled features. The table gives each probe's mean test
accuracy (and standard deviation) per size, which wins, and the crossing point: the size from which
logistic regression is at least as accurate. Beside it, the same model prompted on the same test
rows: zero-shot label scoring with the genclf prompt (`genclf_harness.backends.scorer.HFScorer`,
summed log-likelihood) and the same scores after prior matching (transductive, no labels).

Features are cached on disk per (model, data set, split, pooling, layer, rows), so a second run
(more sizes, more repeats) encodes nothing. ``--json`` writes every fit's figures (accuracy,
macro-F1, ECE, NLL, prior-matched accuracy, conformal coverage and set size).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from genclf_harness.cli.errors import UsageError

DATASETS = "agnews,sst2"
FEATURES = "default_last,default_mean,minilm"
SIZES = "20,50,100,200,500,1000,full"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--datasets", default=DATASETS, help=f"comma-separated data sets (default {DATASETS})")
    parser.add_argument("--features", default=FEATURES,
                        help=f"comma-separated: default_last, default_mean (add _L<layer>), minilm (default {FEATURES})")
    parser.add_argument("--sizes", default=SIZES, help=f"training-set sizes, 'full' = the whole split (default {SIZES})")
    parser.add_argument("--repeats", type=int, default=5, help="draws per size (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    parser.add_argument("--pretrained", default="default", help="the causal LM (default: the embedded default model)")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"], help="model dtype (default bfloat16)")
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per forward pass (default 16)")
    parser.add_argument("--limit-train", type=int, default=None, help="the first N training rows (default: all)")
    parser.add_argument("--limit-test", type=int, default=None, help="the first N test rows (default: all)")
    parser.add_argument("--cache-dir", default=None, help="feature cache (default $GENCLF_CACHE_DIR/features)")
    parser.add_argument("--no-prompting", action="store_true", help="leave out the zero-shot scoring rows")
    parser.add_argument("--json", default=None, help="also write every fit's figures to this JSON file")


def run(args: argparse.Namespace) -> int:
    from genclf_harness.data import get_spec
    from genclf_harness.probes.features import FeatureSpec

    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    if not datasets:
        raise UsageError("--datasets names no data set")
    try:
        features = [FeatureSpec.parse(f) for f in args.features.split(",") if f.strip()]
    except ValueError as err:
        raise UsageError(f"--features: {err}") from None
    if not features or args.repeats < 1 or args.batch_size < 1:
        raise UsageError("--features must name a feature kind, --repeats and --batch-size must be at least 1")
    for limit in (args.limit_train, args.limit_test):
        if limit is not None and limit < 2:
            raise UsageError("--limit-train and --limit-test must be at least 2")
    specs = {name: get_spec(name) for name in datasets}  # an unknown data set fails before any model work
    model = _Model(args)
    results: dict[str, Any] = {"datasets": {}}
    for name, spec in specs.items():
        results["datasets"][name] = measure(args, spec, features, model)
        print_dataset(name, results["datasets"][name])
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=1)
    return 0


class _Model:
    """The causal LM, loaded on first use and shared by the features and the prompted rows."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._loaded: tuple[Any, Any, str] | None = None

    def get(self) -> tuple[Any, Any, str]:
        if self._loaded is None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            from genclf_harness.backends.default_model import resolve_pretrained
            from genclf_harness.probes.features import model_tag

            path = str(resolve_pretrained(self.args.pretrained))
            model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, self.args.dtype)).eval()
            self._loaded = (model, AutoTokenizer.from_pretrained(path), f"{model_tag(path)}-{self.args.dtype}")
        return self._loaded


def measure(args: argparse.Namespace, spec: Any, features: list[Any], model: _Model) -> dict[str, Any]:
    from genclf_harness.data import load_split
    from genclf_harness.probes import learning_curve, parse_sizes
    from genclf_harness.probes.curves import crossing_point, summarize

    if spec.train_split == spec.eval_split:
        raise UsageError(f"{spec.name}: the probes need a training split apart from the evaluated one")
    train = load_split(spec.name, spec.train_split)[: args.limit_train]
    test = load_split(spec.name, spec.eval_split)[: args.limit_test]
    train_y = np.array([row["label"] for row in train])
    test_y = np.array([row["label"] for row in test])
    sizes = parse_sizes(args.sizes, len(train))
    out: dict[str, Any] = {"train_rows": len(train), "test_rows": len(test), "sizes": sizes, "features": {}}
    for feature in features:
        train_x = _features(args, spec, spec.train_split, train, feature, model)
        test_x = _features(args, spec, spec.eval_split, test, feature, model)
        points = learning_curve(train_x, train_y, test_x, test_y, spec.num_labels, sizes, repeats=args.repeats,
                                seed=args.seed)
        summary = summarize(points)
        crossing, note = crossing_point(summary)
        out["features"][feature.name] = {
            "dimension": int(train_x.shape[1]), "crossing": crossing, "crossing_note": note,
            "summary": {f"{probe}@{size}": list(value) for (probe, size), value in summary.items()},
            "points": [p.to_dict() for p in points],
        }
    if not args.no_prompting:
        out["prompting"] = prompted(spec, test, model)
    return out


def _features(args: argparse.Namespace, spec: Any, split: str, rows: list[Any], feature: Any, model: _Model) -> np.ndarray:
    from genclf_harness.probes.features import (
        FeatureCache,
        FeatureSpec,
        causal_features,
        minilm_features,
        probe_texts,
    )

    cache = FeatureCache(args.cache_dir)
    texts = probe_texts(spec, rows, feature)
    if feature.source == "minilm":
        return cache.get_or_compute("all-MiniLM-L6-v2", spec.name, split, feature, texts,
                                    lambda: minilm_features(texts))
    lm, tokenizer, tag = model.get()
    found = cache.load(tag, spec.name, split, feature, texts)
    if found is not None:
        return found
    encoded = causal_features(texts, lm, tokenizer, layer=feature.layer, batch_size=args.batch_size)
    for pooling, values in encoded.items():  # both poolings come from one forward pass: keep both
        cache.save(tag, spec.name, split, FeatureSpec(feature.source, pooling, feature.layer), texts, values)
    return encoded[feature.pooling]


def prompted(spec: Any, rows: list[Any], model: _Model) -> dict[str, float]:
    """Zero-shot label scoring of the test rows with the genclf prompt: raw and prior-matched accuracy."""
    from genclf_harness import calibration as cal
    from genclf_harness.backends.protocol import LabelPrompt
    from genclf_harness.backends.scorer import HFScorer
    from genclf_harness.prompts import PromptStrategy

    lm, tokenizer, _ = model.get()
    prompter = PromptStrategy().bind(spec)
    rendered = [prompter.render(row) for row in rows]
    results = HFScorer(lm, tokenizer).score([LabelPrompt(p.prompt, tuple(" " + c for c in p.choices)) for p in rendered])
    logprobs = np.array([r.logprobs for r in results])
    gold = np.array([p.gold for p in rendered])
    prior = cal.fit("prior", logprobs).apply(logprobs)
    return {"zero_shot_acc": cal.accuracy(logprobs, gold), "zero_shot_prior_acc": cal.accuracy(prior, gold),
            "zero_shot_ece": cal.expected_calibration_error(logprobs, gold)}


def print_dataset(name: str, result: dict[str, Any]) -> None:
    print(f"\n## {name}: {result['train_rows']} training rows, {result['test_rows']} test rows")
    for feature, found in result["features"].items():
        summary = found["summary"]
        print(f"\n{feature} (d = {found['dimension']}): crossing at "
              f"{found['crossing'] if found['crossing'] is not None else '-'} ({found['crossing_note']})")
        print("| size | NB acc | LR acc | better |")
        print("|---|---|---|---|")
        for size in result["sizes"]:
            nb, lr = summary.get(f"nb@{size}"), summary.get(f"lr@{size}")
            if nb is None or lr is None:
                continue
            better = "NB" if nb[0] > lr[0] else "LR" if lr[0] > nb[0] else "tie"
            print(f"| {size} | {nb[0]:.3f} ± {nb[1]:.3f} | {lr[0]:.3f} ± {lr[1]:.3f} | {better} |")
    if "prompting" in result:
        p = result["prompting"]
        print(f"\nprompted, same test rows: zero-shot {p['zero_shot_acc']:.3f}, prior-matched "
              f"{p['zero_shot_prior_acc']:.3f}")
