"""How much of GRPO's gain over its SFT start is a shift of the label bias, and how much is more.

A binary classifier's accuracy moves when its decision threshold moves: a warm-up SFT that answers
"negative" too often gains accuracy from any update that answers "positive" more often, learned or
not. This script scores the test documents with the SFT adapter and with each GRPO adapter (the
genclf scorer, mean log-prob per label token, as ``genclf-bench train`` does), moves the SFT model's
threshold so that its share of positive answers equals the GRPO adapter's, and splits GRPO's gain:

    bias = acc(SFT at GRPO's positive share) - acc(SFT)        rest = acc(GRPO) - acc(SFT at that share)

It also prints the best accuracy any SFT threshold reaches (an oracle: it looks at the labels).
Binary label sets only (a share of positive answers fixes one threshold), and runs trained on
plain-text prompts (``data.chat_template: false``, as the shipped SST-2 configs are).

    python scripts/grpo_bias_split.py --dataset sst2 runs/bench_train_sst2/sft runs/bench_train_sst2/grpo
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np


def bias_split(sft_margin: Any, grpo_margin: Any, gold: Any) -> dict[str, float]:
    """Accuracies of the SFT and GRPO margins (score of label 1 minus label 0) and GRPO's gain split.

    The SFT threshold for GRPO's share ``q`` of label-1 answers is the (1 - q) quantile of the SFT
    margins, so ties aside the SFT model then answers label 1 on the same share of documents.
    """
    sft, grpo, gold = (np.asarray(x, dtype=np.float64) for x in (sft_margin, grpo_margin, gold))
    if not (sft.shape == grpo.shape == gold.shape) or sft.ndim != 1 or sft.size == 0:
        raise ValueError(f"need three equal, non-empty 1-D arrays, not shapes {sft.shape}, {grpo.shape}, {gold.shape}")
    if not (np.all(np.isfinite(sft)) and np.all(np.isfinite(grpo))):
        raise ValueError("a margin is NaN or infinite")

    def acc(margin: np.ndarray, threshold: float = 0.0) -> float:
        return float(np.mean((margin > threshold) == (gold == 1)))

    share = float(np.mean(grpo > 0))
    if share in (0.0, 1.0):  # GRPO answers one label everywhere; so does the SFT model at that share
        shifted = float(np.mean(gold == int(share)))
    else:
        shifted = acc(sft, float(np.quantile(sft, 1.0 - share)))
    oracle = max(acc(sft, float(t)) for t in np.unique(np.concatenate([sft, [sft.min() - 1.0]])))
    return {
        "sft_acc": acc(sft), "sft_positive_share": float(np.mean(sft > 0)),
        "grpo_acc": acc(grpo), "grpo_positive_share": share,
        "sft_at_grpo_share_acc": shifted, "sft_best_threshold_acc": oracle,
        "bias_points": 100.0 * (shifted - acc(sft)), "rest_points": 100.0 * (acc(grpo) - shifted),
    }


def _margins(adapter: str, prompts: Sequence[Any]) -> np.ndarray:
    from genclf_harness.training.config import ModelConfig
    from genclf_harness.training.evaluation import score_labels
    from genclf_harness.training.modeling import load_for_training

    model, tokenizer, _ = load_for_training(ModelConfig(init_from=adapter))
    model.eval()
    scores = score_labels(model, tokenizer, prompts, chat=False)["mean_token"]
    return scores[:, 1] - scores[:, 0]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sft", help="the SFT run's output folder (its LoRA adapter)")
    parser.add_argument("grpo", nargs="+", help="GRPO output folders trained from it")
    parser.add_argument("--dataset", default="sst2", help="a binary data set (default: sst2)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--strategy", default="zero", help="the prompt strategy the runs trained on")
    args = parser.parse_args(argv)

    from genclf_harness.training.config import DataConfig
    from genclf_harness.training.examples import load_classifier_data

    data = load_classifier_data(DataConfig(dataset=args.dataset, strategy=args.strategy, chat_template=False,
                                           eval_split=args.split, max_train_examples=1, max_eval_examples=None),
                                chat=False)
    if len(data.label_set.names) != 2:
        parser.error(f"{args.dataset} has {len(data.label_set.names)} labels; the split needs a binary label set")
    prompts = data.render(data.eval_rows)
    gold = np.array([p.gold for p in prompts])
    sft = _margins(args.sft, prompts)
    for path in args.grpo:
        print(json.dumps({"sft": args.sft, "grpo": path, "documents": len(gold),
                          **{k: round(v, 4) for k, v in bias_split(sft, _margins(path, prompts), gold).items()}}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
