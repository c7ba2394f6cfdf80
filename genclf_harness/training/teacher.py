"""UniPredict's target augmentation: SFT answers that are a teacher's class probabilities.

Source: Wang, Wang & Sun (2023), "UniPredict: Large Language Models are Universal Tabular
Classifiers", section "Target augmentation", and their code (``preprocessing/xgb.py``,
``preprocess_kaggle_dataset.py``): a gradient-boosted tree classifier, calibrated by isotonic
regression (``CalibratedClassifierCV(method="isotonic")``), predicts the class probabilities of
each training row; the SFT target is ``class 0: 0.83; class 1: 0.17.`` instead of the one-hot
``class 0: 1.0; class 1: 0.0.`` (their ablation; `genclf_harness.prompts.tabular`).

Differences from their code, both for leakage: they fit XGBoost on every row before the train/test
split and then refit on the training rows (``# prevent leak``); here the teacher is scikit-learn's
``GradientBoostingClassifier`` and is only ever fitted on a `TrainingTable`, which can only be
made from the data set's training split (`TrainingTable.load`), never from rows handed in. Their
calibration reuses the training rows (``cv="prefit"``, removed from scikit-learn 1.8); here the
isotonic maps are fitted by stratified k-fold cross-validation on the training split (``cv`` folds,
fewer when a class has fewer rows).

Reading a model trained on such answers (`evaluate_distribution_model`):

- generative: greedy decoding read by `parse_distribution` (every class once, normalised; the
  numeric argmax is the prediction; an unparseable answer is wrong, counted, and gets the uniform
  distribution for the log-loss); probabilities are clipped at ``CLIP`` for the log-loss, since a
  rounded answer says ``0.0``;
- scored: the K one-hot answers are scored after the prompt (summed log-likelihood), and their
  softmax is the distribution: the distribution answer the model finds likeliest.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from genclf_harness.data.specs import DataError
from genclf_harness.data.tabular import TableSplit, TabularSpec, tabular_spec_of

logger = logging.getLogger(__name__)

TARGET_KINDS = ("label", "onehot", "augmented")
CLIP = 0.005
"""Probabilities below half the rounding unit of an answer (0.01) count as this in the log-loss."""
_TOKEN = object()


@dataclass(frozen=True)
class TrainingTable:
    """The training split of a tabular data set: the only thing a teacher can be fitted on.

    Made by `TrainingTable.load` from the data set's ``train_split`` (which must differ from its
    evaluation split); constructing one from other rows is refused.
    """

    spec: TabularSpec
    table: TableSplit
    _token: object = None

    def __post_init__(self) -> None:
        if self._token is not _TOKEN or self.table.split != self.spec.train_split:
            raise TypeError("a TrainingTable is made by TrainingTable.load(<data set>): the training split only")

    @classmethod
    def load(cls, dataset: str, data_dir: str | None = None) -> TrainingTable:
        tspec = tabular_spec_of(dataset, data_dir)
        if tspec.train_split == tspec.eval_split:
            raise DataError(f"data set {dataset!r} is evaluated on its training split {tspec.train_split!r}; a teacher "
                            "fitted on it would have seen the evaluated rows (add a train split).")
        return cls(tspec, tspec.tables[tspec.train_split], _TOKEN)


class Teacher:
    """Gradient-boosted trees with isotonic calibration, fitted on a `TrainingTable` (`fit_teacher`)."""

    def __init__(self, spec: TabularSpec, categories: list[list[str] | None], model: Any) -> None:
        self.spec = spec
        self.categories = categories
        self.model = model

    def encode(self, table: TableSplit) -> np.ndarray:
        """(N, d) floats: numbers as they are, strings as their index among the training split's
        values of that column (sorted; -1 for a value the training split lacks)."""
        columns = []
        for j, known in enumerate(self.categories):
            values = [row[j] for row in table.values]
            if known is None:
                columns.append(np.array(values, dtype=np.float64))
            else:
                index = {value: i for i, value in enumerate(known)}
                columns.append(np.array([index.get(v, -1) for v in values], dtype=np.float64))
        return np.stack(columns, axis=1)

    def predict_proba(self, table: TableSplit) -> np.ndarray:
        """(N, K) class probabilities of any split's rows (K columns even for a class the training
        split lacks: its probability is 0)."""
        if table.dataset != self.spec.name:
            raise ValueError(f"the teacher of {self.spec.name!r} cannot predict rows of {table.dataset!r}")
        probs = np.zeros((len(table.ids), len(self.spec.labels)))
        probs[:, self.model.classes_] = self.model.predict_proba(self.encode(table))
        return probs


def fit_teacher(training: TrainingTable, *, seed: int = 0, cv: int = 5) -> Teacher:
    """Fit the teacher on the training split and nothing else (``training`` is a `TrainingTable`)."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold

    if not isinstance(training, TrainingTable):
        raise TypeError(f"fit_teacher takes a TrainingTable (the training split), not {type(training).__name__}")
    table = training.table
    categories = [None if numeric else sorted({row[j] for row in table.values})
                  for j, numeric in enumerate(table.numeric)]
    teacher = Teacher(training.spec, categories, None)
    features, labels = teacher.encode(table), np.array(table.labels)
    smallest = min(Counter(table.labels).values())
    if smallest < 2:
        raise DataError(f"{table.path}: a label has {smallest} training row; isotonic calibration by cross-validation "
                        "needs at least 2 rows of every label.")
    folds = StratifiedKFold(n_splits=min(cv, smallest), shuffle=True, random_state=seed)
    model = CalibratedClassifierCV(GradientBoostingClassifier(random_state=seed), method="isotonic", cv=folds)
    teacher.model = model.fit(features, labels)
    return teacher


def distribution_targets(kind: str, dataset: str, rows: Sequence[Mapping[str, Any]], *, seed: int = 0,
                         data_dir: str | None = None) -> dict[str, str]:
    """``{row id: answer}`` for training ``rows``: ``onehot`` answers from their gold labels, or
    ``augmented`` answers from a teacher fitted on the training split (rows must be from it)."""
    from genclf_harness.data import get_spec
    from genclf_harness.prompts.tabular import distribution_answer, onehot_answer

    if kind == "onehot":
        num_classes = get_spec(dataset, data_dir).num_labels
        return {str(row["id"]): onehot_answer(int(row["label"]), num_classes) for row in rows}
    if kind != "augmented":
        raise ValueError(f"targets {kind!r}: distribution targets are 'onehot' or 'augmented'")
    training = TrainingTable.load(dataset, data_dir)
    teacher = fit_teacher(training, seed=seed)
    answers = dict(zip(training.table.ids, map(distribution_answer, teacher.predict_proba(training.table)), strict=True))
    missing = [str(row["id"]) for row in rows if str(row["id"]) not in answers]
    if missing:
        raise ValueError(f"augmented targets: row {missing[0]!r} is not a row of {dataset!r}'s training split "
                         f"{training.spec.train_split!r}, the only rows the teacher describes")
    logger.info("Teacher (gradient boosting + isotonic) fitted on %d training rows of %s", len(training.table.ids), dataset)
    return {str(row["id"]): answers[str(row["id"])] for row in rows}


# -- reading a model trained on distribution answers -----------------------------------------------


def distribution_figures(probabilities: np.ndarray, gold: np.ndarray, parsed: np.ndarray | None = None) -> dict[str, Any]:
    """Accuracy (argmax; an unparseable row is wrong), log-loss (natural log, probabilities clipped
    at `CLIP` and renormalised) and ECE of (N, K) ``probabilities``; ``parsed`` marks readable rows."""
    from genclf_harness import calibration as cal

    probs = np.clip(np.asarray(probabilities, dtype=np.float64), CLIP, None)
    logprobs = np.log(probs / probs.sum(axis=1, keepdims=True))
    ok = np.ones(len(gold), dtype=bool) if parsed is None else parsed
    correct = (logprobs.argmax(axis=1) == gold) & ok
    return {"acc": float(correct.mean()), "log_loss": cal.negative_log_likelihood(logprobs, gold),
            "ece": cal.expected_calibration_error(logprobs, gold), "unparseable": float(np.mean(~ok))}


def evaluate_distribution_model(model: Any, tokenizer: Any, prompts: Sequence[Any], num_classes: int, *, chat: bool,
                                scored: bool = True, generate: bool = True, max_new_tokens: int | None = None,
                                batch_size: int = 32, autocast_bf16: bool = False,
                                show_progress: bool = True) -> dict[str, Any]:
    """Scored and generative figures of a model trained on distribution answers (module doc)."""
    from genclf_harness.prompts.tabular import onehot_answer, parse_distribution
    from genclf_harness.training.evaluation import generate_answers, score_labels

    gold = np.array([p.gold for p in prompts], dtype=np.int64)
    answers = tuple(onehot_answer(k, num_classes) for k in range(num_classes))
    figures: dict[str, Any] = {"documents": len(prompts), "chat_template": chat}
    was_training = model.training
    model.eval()
    try:
        if scored:
            candidates = [replace(p, choices=answers) for p in prompts]
            scores = score_labels(model, tokenizer, candidates, chat=chat, autocast_bf16=autocast_bf16,
                                  show_progress=show_progress)["sum"]
            shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
            figures["scored"] = distribution_figures(shifted / shifted.sum(axis=1, keepdims=True), gold)
        if generate:
            texts = generate_answers(model, tokenizer, prompts, chat=chat, batch_size=batch_size,
                                     max_new_tokens=max_new_tokens or 12 * num_classes + 4,
                                     autocast_bf16=autocast_bf16, show_progress=show_progress)
            read = [parse_distribution(text, num_classes) for text in texts]
            uniform = (1.0 / num_classes,) * num_classes
            probs = np.array([r.probabilities or uniform for r in read])
            figures["generative"] = {
                **distribution_figures(probs, gold, np.array([r.probabilities is not None for r in read])),
                "statuses": dict(Counter(r.status for r in read)), "answer_examples": texts[:3],
            }
    finally:
        model.train(was_training)
    return figures


def distribution_eval_fn(data: Any, eval_config: Any) -> Any:
    """`genclf_harness.training.sft.classifier_eval_fn` for ``data.targets`` onehot/augmented."""
    if not data.eval_rows or not (eval_config.scored or eval_config.generate):
        return None
    prompts = data.render(data.eval_rows)

    def evaluate(model: Any, tokenizer: Any) -> dict[str, Any]:
        figures = evaluate_distribution_model(
            model, tokenizer, prompts, data.spec.num_labels, chat=data.chat, scored=eval_config.scored,
            generate=eval_config.generate, batch_size=eval_config.batch_size, autocast_bf16=eval_config.autocast_bf16)
        logger.info("Evaluation (distribution answers): %s", {k: v for k, v in figures.items() if k != "generative"})
        return {"dataset": data.spec.name, "strategy": data.prompter.strategy.name, "targets": "distribution", **figures}

    return evaluate
