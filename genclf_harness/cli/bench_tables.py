"""``genclf-bench tables``: tables as classification tasks, UniPredict's way, one table of results.

For each tabular data set (`genclf_harness.data.tabular`; ``python scripts/sklearn_tables.py --out
DIR breast_cancer wine iris`` writes scikit-learn's bundled tables), on the same test rows:

- ``teacher``: gradient boosting with isotonic calibration fitted on the training split
  (`genclf_harness.training.teacher`), the source of the augmented targets;
- ``zero-shot``: the model scores each label word after the UniPredict prompt (summed
  log-likelihood; the softmax over labels is its distribution), raw and prior-matched;
- ``SFT <targets>``: ``genclf-train sft`` (LoRA, plain text) with ``data.targets`` ``label``
  (the label word: genclf's one-hot target), ``onehot`` (UniPredict's one-hot answer) or
  ``augmented`` (the teacher's probabilities); label models are read by scoring the label words
  and by parsing generated answers, distribution models by scoring the K one-hot answers and by
  parsing the generated distribution (`evaluate_distribution_model`).

Accuracy and log-loss (natural log; probabilities clipped at 0.005, half an answer's rounding unit)
for every row; ``unparseable`` for generated answers. The prompt's length is checked against the
model's context first (`check_context_length`).
"""

from __future__ import annotations

import argparse
import gc
import json
from pathlib import Path
from typing import Any

import numpy as np

from genclf_harness.cli.errors import UsageError

DATASETS = "breast_cancer,wine,iris"
TARGETS = "label,augmented"
BASE_OVERRIDES = (
    "data.strategy=zero", "data.chat_template=false", "data.max_eval_examples=null",
    "model.lora_target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]",
    "train.num_train_epochs=3", "train.learning_rate=3.0e-4", "train.per_device_train_batch_size=8",
    "train.max_length=1024", "train.save_steps=1000", "eval.scored=false", "eval.generate=false",
)
"""Under ``--config`` and ``--set``: plain-text prompts (the genclf task's), every test row, and the
evaluation done here (with log-loss) rather than the recipe's."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--datasets", default=DATASETS, help=f"comma-separated tabular data sets (default {DATASETS})")
    parser.add_argument("--targets", default=TARGETS, help=f"SFT runs: label, onehot, augmented (default {TARGETS})")
    parser.add_argument("--config", default=None, help="an SFT config under the defaults (default: none)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override an SFT config field")
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N test rows (default: all)")
    parser.add_argument("--output-dir", default="runs/bench_tables", help="adapters and results (default runs/bench_tables)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")


def run(args: argparse.Namespace) -> int:
    from genclf_harness.data.tabular import tabular_spec_of
    from genclf_harness.training.config import ConfigError, load_config
    from genclf_harness.training.sft import SFTRecipeConfig

    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not datasets or set(targets) - {"label", "onehot", "augmented"}:
        raise UsageError("--datasets must name a tabular data set; --targets is a list of label, onehot, augmented")
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    configs: dict[tuple[str, str], Any] = {}
    for name in datasets:  # every data set and config problem now, before any model loads
        tspec = tabular_spec_of(name)
        for target in targets:
            overrides = [*BASE_OVERRIDES, f"data.dataset={name}", f"data.targets={target}",
                         f"data.train_split={tspec.train_split}", f"data.eval_split={tspec.eval_split}",
                         f"train.output_dir={Path(args.output_dir) / name / target}", *args.set]
            try:
                configs[name, target] = load_config(SFTRecipeConfig, args.config, overrides)
            except ConfigError as err:
                raise UsageError(f"tables: {err}") from None
    rows: list[dict[str, Any]] = []
    for name in datasets:
        rows += measure(name, targets, configs, args.limit)
        print_rows([r for r in rows if r["dataset"] == name])
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=1)
    return 0


def measure(name: str, targets: list[str], configs: dict[tuple[str, str], Any], limit: int | None) -> list[dict[str, Any]]:
    from genclf_harness.data import get_spec, load_split
    from genclf_harness.data.tabular import read_split
    from genclf_harness.prompts import PromptStrategy
    from genclf_harness.prompts.tabular import check_context_length
    from genclf_harness.training.modeling import load_base_model, load_tokenizer
    from genclf_harness.training.sft import train_classifier
    from genclf_harness.training.teacher import TrainingTable, distribution_figures, fit_teacher

    spec = get_spec(name)
    test = load_split(name, spec.eval_split)[:limit]
    gold = np.array([row["label"] for row in test])
    prompts = [PromptStrategy().bind(spec).render(row) for row in test]
    rows = []
    teacher = fit_teacher(TrainingTable.load(name))
    probs = teacher.predict_proba(read_split(name, spec.eval_split))[: len(test)]
    rows.append({"dataset": name, "model": "teacher", "reading": "predict_proba", **distribution_figures(probs, gold)})

    model_config = (configs[name, targets[0]] if targets else _defaults(name)).model
    model, tokenizer = load_base_model(model_config), load_tokenizer(model_config)
    context = getattr(model.config, "max_position_embeddings", None) or 2048
    check_context_length(name, tokenizer, int(context), splits=(spec.train_split, spec.eval_split))
    rows += label_rows(spec, "zero-shot", model, tokenizer, prompts, gold, generate=False)
    del model
    gc.collect()
    for target in targets:
        result = train_classifier(configs[name, target])
        rows += (label_rows(spec, f"SFT {target}", result.model, result.tokenizer, prompts, gold) if target == "label"
                 else distribution_rows(name, f"SFT {target}", result.model, result.tokenizer, prompts, spec.num_labels))
        del result
        gc.collect()
    return rows


def label_rows(spec: Any, stage: str, model: Any, tokenizer: Any, prompts: list[Any], gold: np.ndarray, *,
               generate: bool = True) -> list[dict[str, Any]]:
    """Scored label words (raw, prior-matched) and, with ``generate``, parsed generated answers."""
    from genclf_harness import calibration as cal
    from genclf_harness.training.evaluation import generate_answers, generative_figures, score_labels

    was_training = model.training
    model.eval()
    try:
        scores = score_labels(model, tokenizer, prompts, chat=False)["sum"]
        rows = []
        for reading, logprobs in (("scored", scores), ("scored+prior", cal.fit("prior", scores).apply(scores))):
            rows.append({"dataset": spec.name, "model": stage, "reading": reading, "acc": cal.accuracy(logprobs, gold),
                         "log_loss": cal.negative_log_likelihood(logprobs, gold),
                         "ece": cal.expected_calibration_error(logprobs, gold), "unparseable": None})
        if generate:
            from genclf_harness.prompts import LabelSet

            answers = generate_answers(model, tokenizer, prompts, chat=False)
            figures = generative_figures(answers, gold, LabelSet.of(spec))
            rows.append({"dataset": spec.name, "model": stage, "reading": "generative", "acc": figures["acc"],
                         "log_loss": None, "ece": None, "unparseable": figures["unparseable"]})
    finally:
        model.train(was_training)
    return rows


def _defaults(name: str) -> Any:
    from genclf_harness.training.config import load_config
    from genclf_harness.training.sft import SFTRecipeConfig

    return load_config(SFTRecipeConfig, None, [f"data.dataset={name}", "data.eval_split=null"])


def distribution_rows(dataset: str, stage: str, model: Any, tokenizer: Any, prompts: list[Any],
                      num_classes: int) -> list[dict[str, Any]]:
    from genclf_harness.training.teacher import evaluate_distribution_model

    figures = evaluate_distribution_model(model, tokenizer, prompts, num_classes, chat=False)
    return [{"dataset": dataset, "model": stage, "reading": reading,
             **{k: figures[reading].get(k) for k in ("acc", "log_loss", "ece", "unparseable")}}
            for reading in ("scored", "generative")]


def print_rows(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    print(f"\n## {rows[0]['dataset']}\n")
    print("| model | reading | acc | log-loss | ECE | unparseable |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        cells = [f"{r[k]:.3f}" if isinstance(r.get(k), float) else "–" for k in ("acc", "log_loss", "ece", "unparseable")]
        print(f"| {r['model']} | {r['reading']} | " + " | ".join(cells) + " |")
