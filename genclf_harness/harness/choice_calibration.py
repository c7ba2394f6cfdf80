"""Calibrated metrics for any lm-eval ``multiple_choice`` task, its YAML unchanged.

``genclf-eval --calibrate ...`` (or :func:`calibrate_choice_tasks` on a task dict) wraps every
``output_type: multiple_choice`` task of the run (stock, user-written, given by name, path or
``--include_path``, inside groups such as MMLU's) so that, beside its own metrics (its ``acc`` and
``acc_norm`` are untouched), it reports genclf's: ``macro_f1``, ``ece_width15``, ``brier``, ``gold_nll``,
``majority_share`` of the raw choice distribution and ``acc``/``macro_f1``/``ece_width15``/
``majority_share`` after each calibration that applies (``<metric>_<method>``), each with its
bootstrap stderr and, in the manifest, its paired difference from raw. ``--log_samples`` gets the
per-document choice probabilities (the ``genclf`` field) as for genclf's own tasks.

**What a class is.** Each document's choices are scored by lm-eval as usual; the log-likelihood of
choice ``k`` is column ``k``. When every document has the same choices (letters, Yes/No, a fixed
label list) the classes are those choices; when the choices differ per document (HellaSwag-style
endings, options as text) the classes are the positions, and a calibration corrects a bias towards
a position. The manifest says which (``classes``: ``choices`` with the list, or ``positions``).
Documents with different numbers of choices are calibrated apart, one group per count (each group
fitted on its own documents), and the metrics are computed over all documents together; their
bootstrap stderr is then left out (logged), as the resampling works on one score matrix.

**Which methods apply.** Fitted on the evaluated documents' scores, no labels: ``prior`` (uniform
prior matching), ``prior_em``, ``bc`` (batch calibration); ``pmi`` where every document has the
same choices (each choice scored once after an empty context, as lm-eval's ``acc_mutual_info``
does, and subtracted). From the task's own labelled split
apart from the evaluated one (its training split, else its validation split, else its few-shot
split; the manifest names it): the ``*_ind`` fits on up to ``inductive_docs`` of its documents
(task metadata, default 100, a seeded sample), prompted exactly as the evaluated ones (lm-eval's
own ``fewshot_context`` with the run's settings) and scored once, by the first document's extra
requests; ``prior_train`` and ``prior_train_ind`` (prior matching to that split's label
distribution, every label present); ``bcts_em`` and ``bbse`` (label shift, every label among the
sampled documents). ``auto`` is ``prior_train`` where the task has such a split, else ``prior``
(``metrics.auto_method``). Left out, with the reason in the manifest (``left_out``): ``cc`` and
``dcpmi`` (a content-free document would have to guess which part of an arbitrary prompt is the
input), ``pmi`` where the choices differ per document (each document's would be scored without
context: twice the requests), and the split-based methods where the task has no such split, its documents have another number of
choices, or it lists its inputs as choices (``multiple_input``). A task whose gold answer is a
list (several right choices) is not wrapped.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from genclf_harness.harness import metrics
from genclf_harness.harness.choice_requests import ContextRecorder, base_requests, requests_for

logger = logging.getLogger(__name__)

METHODS = ("prior", "prior_em", "bc", "auto")
"""The calibrations computed for an arbitrary multiple-choice task (fitted on its documents' scores)."""
RAW_METRICS = ("macro_f1", "ece_width15", "brier", "gold_nll", "majority_share")
"""Raw metrics added beside the task's own (its ``acc`` is lm-eval's and stays lm-eval's)."""
CALIBRATED_METRICS = ("acc", "macro_f1", "ece_width15", "majority_share")
SPLIT_METHODS = ("prior_ind", "prior_em_ind", "bc_ind")
TRAIN_PRIOR_METHODS = ("prior_train", "prior_train_ind")
LABEL_SHIFT_METHODS = ("bcts_em", "bbse")
LEFT_OUT: dict[str, str] = {
    "cc": "needs a content-free document: which part of an arbitrary task's prompt is the input cannot be "
          "told without guessing",
    "dcpmi": "needs a content-free document (as cc)",
    "pmi": "needs each choice scored without its context, which the task does not request",
}
DEFAULT_INDUCTIVE_DOCS = 100
INDUCTIVE_SEED = 1234
ABSENT = -1e4
"""The log-probability of a choice a document does not have (exp underflows to exactly 0)."""
HIGHER_IS_BETTER = {"acc": True, "macro_f1": True, "ece_width15": False, "brier": False, "gold_nll": False,
                    "majority_share": False}

CHOICE_TASKS: dict[str, dict[str, Any]] = {}
"""task -> its manifest entry (classes, choice counts, methods, left out), filled as documents are
scored, read by the results manifest."""


def metric_names(methods: Sequence[str] = METHODS) -> list[str]:
    return [*RAW_METRICS, *(f"{m}_{method}" for method in methods for m in CALIBRATED_METRICS)]


def iter_tasks(task_dict: Mapping[Any, Any]) -> Iterator[tuple[str, Any]]:
    """(name, task) for every task in lm-eval's (nested) task dict, groups walked into."""
    for key, value in task_dict.items():
        if isinstance(value, Mapping):
            yield from iter_tasks(value)
        elif value is not None and hasattr(value, "process_results"):
            yield str(getattr(value, "task_name", None) or getattr(value, "config", {}).get("task", key)), value


def calibrate_choice_tasks(task_dict: Mapping[Any, Any]) -> list[str]:
    """Wrap every multiple-choice task of ``task_dict`` (idempotent); returns the names wrapped.

    Raises ``ValueError`` naming the tasks when none is multiple-choice, or when a task's first
    document has fewer than two choices (before any scoring)."""
    wrapped, other = [], []
    for name, task in iter_tasks(task_dict):
        if getattr(task, "OUTPUT_TYPE", None) != "multiple_choice":
            other.append(f"{name} ({getattr(task, 'OUTPUT_TYPE', None)})")
            continue
        if getattr(task, "_genclf_choice_calibration", False) or getattr(task, "genclf_spec", None) is not None:
            wrapped.append(name)  # wrapped before, or a genclf task (calibrated already)
            continue
        if getattr(task, "multiple_target", False):
            logger.warning("--calibrate leaves out %s: its gold answer is a list of right choices", name)
            continue
        _check_first_document(name, task)
        _wrap(name, task)
        wrapped.append(name)
    if other:
        logger.warning("--calibrate: not multiple-choice, left as they are: %s", ", ".join(other))
    if not wrapped:
        raise ValueError(f"--calibrate: no multiple-choice task to calibrate among {', '.join(other) or 'no tasks'}; "
                         "it applies to tasks with output_type: multiple_choice")
    return wrapped


def _check_first_document(name: str, task: Any) -> None:
    docs = task.eval_docs
    if not len(docs):
        raise ValueError(f"--calibrate: task {name} has no documents to evaluate")
    first = docs[0]
    choices = task.doc_to_choice(first)
    if not isinstance(choices, Sequence) or isinstance(choices, str) or len(choices) < 2:
        raise ValueError(f"--calibrate: task {name}'s first document has {len(choices) if isinstance(choices, Sequence) else 0} "
                         "choice(s); calibration needs at least two")


def gold_index(task: Any, doc: Any, choices: Sequence[str]) -> int | None:
    """The gold choice's index, as lm-eval's own multiple-choice scoring reads it (None when out of range)."""
    gold = task.doc_to_text(doc) if getattr(task, "multiple_input", False) else task.doc_to_target(doc)
    if isinstance(gold, str):
        return choices.index(gold) if gold in choices else None
    if isinstance(gold, (int, np.integer)) and not isinstance(gold, bool) and 0 <= int(gold) < len(choices):
        return int(gold)
    return None


def _doc_key(doc: Any) -> str:
    """A stable id of a document (the same on every rank), for the bootstrap's document order."""
    return hashlib.sha1(repr(doc).encode("utf-8", "replace")).hexdigest()[:16]


@dataclasses.dataclass
class _Split:
    """The task's labelled documents apart from the evaluated ones, for the split-based methods."""

    source: str | None = None  # "training", "validation", "few-shot" split, or None
    reason: str = ""
    docs: list[Any] = dataclasses.field(default_factory=list)  # the sampled documents, scored once
    labels: list[int] = dataclasses.field(default_factory=list)
    counts: list[int] | None = None  # label counts over the whole split (every label present) or None


def _labelled_split(name: str, task: Any, choices: int) -> _Split:
    """The split the ``*_ind``, ``prior_train`` and label-shift methods use, or why there is none."""
    config = task.config
    if getattr(task, "multiple_input", False):
        return _Split(reason="the task lists its inputs as choices (multiple_input)")
    candidates = [("training", config.training_split, task.has_training_docs, task.training_docs),
                  ("validation", config.validation_split, task.has_validation_docs, task.validation_docs),
                  ("few-shot", config.fewshot_split, lambda: config.fewshot_split is not None, task.fewshot_docs)]
    for source, split, has, read in candidates:
        if split is None or split == config.test_split or not has():
            continue
        docs = [doc for doc in read() if len(task.doc_to_choice(doc)) == choices]
        golds = [gold_index(task, doc, list(task.doc_to_choice(doc))) for doc in docs]
        labelled = [(doc, gold) for doc, gold in zip(docs, golds, strict=True) if gold is not None]
        if not labelled:
            continue
        metadata = config.metadata if isinstance(config.metadata, dict) else {}
        wanted = metadata.get("inductive_docs", DEFAULT_INDUCTIVE_DOCS)
        if isinstance(wanted, bool) or not isinstance(wanted, int) or wanted < 0:
            raise ValueError(f"--calibrate: task {name}: metadata inductive_docs must be a whole number, not {wanted!r}")
        picked = sorted(random.Random(INDUCTIVE_SEED).sample(range(len(labelled)), min(wanted, len(labelled))))
        counts = [0] * choices
        for _, gold in labelled:
            counts[gold] += 1
        return _Split(f"{source} split {split!r}", "", [labelled[i][0] for i in picked],
                      [labelled[i][1] for i in picked], counts if min(counts) > 0 else None)
    return _Split(reason="the task has no labelled split apart from the evaluated one with as many choices")


def _methods(split: _Split, choices: int, left_out: dict[str, str]) -> list[str]:
    methods = ["prior", "prior_em", "bc"]
    if split.docs:
        methods += SPLIT_METHODS
    else:
        left_out[", ".join(SPLIT_METHODS)] = split.reason or "inductive_docs is 0"
    if split.counts is not None:
        methods += TRAIN_PRIOR_METHODS if split.docs else TRAIN_PRIOR_METHODS[:1]
    else:
        left_out[", ".join(TRAIN_PRIOR_METHODS)] = split.reason or f"a choice has no document in the {split.source}"
    if split.docs and len(set(split.labels)) == choices:
        methods += LABEL_SHIFT_METHODS
    else:
        left_out[", ".join(LABEL_SHIFT_METHODS)] = split.reason or (
            f"not every choice is the gold one among the {len(split.docs)} sampled documents of the {split.source}")
    return [*methods, "auto"]


def _wrap(name: str, task: Any) -> None:
    first = list(task.doc_to_choice(task.eval_docs[0]))
    choices = len(first)
    lists = [list(task.doc_to_choice(doc)) for doc in task.eval_docs]
    counts = {len(options) for options in lists}
    fixed = all(options == first for options in lists) and not getattr(task, "multiple_input", False)
    split = _labelled_split(name, task, choices) if len(counts) == 1 else _Split(
        reason=f"the evaluated documents have {sorted(counts)} choices: a fit on the split's documents has one count")
    left_out = dict(LEFT_OUT)
    methods = _methods(split, choices, left_out)
    if fixed:  # one unconditional score per choice, shared by every document
        del left_out["pmi"]
        methods.insert(3, "pmi")
    else:
        left_out["pmi"] = ("the choices differ per document: each document's choices would be scored without "
                           "context too (lm-eval's acc_mutual_info does that, doubling the requests)")
    auto, reason = metrics.auto_method({metrics.TRAIN_PRIOR_KEY: split.counts} if split.counts else None)
    entry = CHOICE_TASKS.setdefault(name, {"classes": None, "choices": None, "choice_counts": {},
                                           "methods": methods, "auto": auto, "auto_reason": reason,
                                           "split": split.source, "inductive_docs": len(split.docs),
                                           "split_label_counts": split.counts, "left_out": left_out,
                                           "skipped_documents": 0})
    original = task.process_results
    base = base_requests(task)  # the split's documents' own requests, without any genclf extras
    original_requests = task.construct_requests
    recorder = ContextRecorder.of(task)  # the run's prompt settings, to prompt the split's documents alike
    state: dict[str, Any] = {"anchor": None, "extra": 0}

    @functools.wraps(original_requests)
    def construct_requests(doc: Any, ctx: Any, **kwargs: Any) -> Any:
        requests = original_requests(doc=doc, ctx=ctx, **kwargs)
        if state["anchor"] is not None:
            return requests
        requests = list(requests) if isinstance(requests, list) else [requests]
        state["anchor"] = _doc_key(doc)  # the first document this rank builds: it carries the extras
        extra: list[Any] = []
        for other in split.docs:
            extra += requests_for(base, doc, other, recorder.context_for(other), kwargs, choices,
                                  len(requests) + len(extra))
        if fixed:  # each choice after an empty context, as lm-eval's acc_mutual_info scores it
            delimiter = requests[0].arguments[1][: len(requests[0].arguments[1]) - len(first[0])]
            extra += [dataclasses.replace(requests[0], arguments=("", f"{delimiter}{option}"),
                                          idx=len(requests) + len(extra) + i) for i, option in enumerate(first)]
        state["extra"] = len(extra)
        return requests + extra

    @functools.wraps(original)
    def process_results(doc: Any, results: Sequence[Any]) -> dict[str, Any]:
        is_anchor = state["anchor"] is not None and _doc_key(doc) == state["anchor"]
        extra = state["extra"] if is_anchor and len(results) > state["extra"] else 0
        own, rows = (list(results[:len(results) - extra]), list(results[len(results) - extra:])) if extra else (
            list(results), [])
        out = original(doc, own)
        doc_choices = list(task.doc_to_choice(doc))
        lls = [float(result[0]) for result in own][: len(doc_choices)]  # acc_mutual_info appends more
        gold = gold_index(task, doc, doc_choices)
        if gold is None or len(lls) != len(doc_choices):
            entry["skipped_documents"] += 1  # lm-eval warned about its label already
            return out
        _count_choices(name, entry, doc_choices)
        anchor = None
        if is_anchor:
            anchor = {"task": name, metrics.ANCHOR_METHODS: [m for m in methods if m != "auto"] + ["auto"]}
            values = [float(result[0]) for result in rows]
            if fixed:
                anchor["pmi"] = [values[len(values) - choices:]]
                values = values[: len(values) - choices]
            if values:
                anchor[metrics.INDUCTIVE_SECTION] = [values[i:i + choices] for i in range(0, len(values), choices)]
                anchor[metrics.INDUCTIVE_LABELS] = list(split.labels)
            if split.counts is not None:
                anchor[metrics.TRAIN_PRIOR_KEY] = list(split.counts)
        item = metrics.make_item(_doc_key(doc), gold, lls, anchor)
        for metric in metric_names(methods):
            if metric not in out:
                out[metric] = item
        return out

    task.construct_requests = construct_requests
    task.process_results = process_results
    for metric in metric_names(methods):
        if metric in task._aggregation_list:
            logger.warning("--calibrate: %s reports a metric of its own named %s; genclf's is left out", name, metric)
            continue
        task._aggregation_list[metric] = aggregation(metric)
        task._higher_is_better[metric] = HIGHER_IS_BETTER[metrics.split_metric_name(metric)[0]]
    task._genclf_choice_calibration = True


def _count_choices(name: str, entry: dict[str, Any], choices: list[str]) -> None:
    counts = entry["choice_counts"]
    counts[str(len(choices))] = counts.get(str(len(choices)), 0) + 1
    if len(counts) == 2 and "stderr" not in entry:
        entry["stderr"] = ("left out: the documents have different numbers of choices, each count calibrated "
                           "apart, and the bootstrap resamples one score matrix")
        logger.warning("%s: documents with different numbers of choices; each count is calibrated apart and "
                       "genclf's stderr is left out", name)
    if entry["classes"] is None:
        entry["classes"], entry["choices"] = "choices", choices
    elif entry["classes"] == "choices" and choices != entry["choices"]:
        entry["classes"], entry["choices"] = "positions", None


def aggregation(name: str) -> Callable[[Sequence[metrics.ScoreItem]], float]:
    """The aggregation of ``name`` over a multiple-choice task's items: genclf's own when every
    document has the same number of choices, else each choice count calibrated apart."""
    metric, method = metrics.split_metric_name(name)
    same_count = getattr(metrics, name)

    def aggregate(items: Sequence[metrics.ScoreItem]) -> float:
        if len({len(item.lls) for item in items}) == 1:
            return same_count(items)
        return float(metrics.metric_function(metric)(*_grouped_logprobs(items, method)))

    def stderr(items: Sequence[metrics.ScoreItem], iters: int) -> float | str:
        if len({len(item.lls) for item in items}) != 1:
            return "N/A"  # CHOICE_TASKS[task]["stderr"] says why
        return metrics.bootstrap_stderr(name, items, iters)

    aggregate.__name__ = aggregate.__qualname__ = name
    aggregate.genclf_stderr = stderr  # type: ignore[attr-defined]
    aggregate.genclf_max_iters = same_count.genclf_max_iters  # type: ignore[attr-defined]
    return aggregate


def _grouped_logprobs(items: Sequence[metrics.ScoreItem], method: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated log-probabilities of documents with different choice counts: each count fitted on
    its own documents, padded to the largest count with a log-probability of ``ABSENT`` (a
    probability of 0 in float64; the metrics take finite scores only)."""
    width = max(len(item.lls) for item in items)
    rows, gold = [], []
    for count in sorted({len(item.lls) for item in items}):
        group = [item for item in items if len(item.lls) == count]
        logprobs, group_gold = metrics.calibrated_logprobs(group, method)
        padded = np.full((len(group), width), ABSENT)
        padded[:, :count] = logprobs
        rows.append(padded)
        gold.append(group_gold)
    return np.concatenate(rows), np.concatenate(gold)
