"""The lm-eval task class behind every genclf classification task.

It is lm-eval's ``ConfigurableTask`` (multiple choice over the label words) plus what calibration
needs that a per-document task cannot give: the label log-likelihoods after content-free inputs
("N/A", "", "[MASK]"), after the domain premise (the answer cue with no input), and after no
context at all. They are scored once per task, not once per document: the first document each
rank builds requests for (the "anchor") carries these extra requests, and its result item carries
their scores to the corpus-level aggregations (``genclf_harness.harness.metrics``).

The extra contexts are the anchor's own context with its input replaced, so they keep the
instruction, the demonstrations and the chat template of the real prompts.

For inductive calibration the anchor also carries ``inductive_docs`` documents of the task's
training split (a seeded sample; task metadata, default ``DEFAULT_INDUCTIVE_DOCS``, set it
with ``--metadata '{"inductive_docs": 200}'``), their queries put into the anchor's context the
same way. The ``*_ind`` metrics fit on those and apply the fit to the evaluated documents; with
``inductive_docs`` 0 (or no training split apart from the evaluated one) they are left out of the
results and nothing extra is scored. Their labels are carried too, read only by the label-shift
metrics (``*_bcts_em``, ``*_bbse``); the ``*_ind`` fits never read them. The anchor also carries the
training split's label counts for ``*_prior_train``.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
import logging
import random
from typing import Any

import yaml
from lm_eval.api.instance import Instance
from lm_eval.api.task import ConfigurableTask

from genclf_harness.data import DataError, get_spec
from genclf_harness.harness.conformal_metrics import (
    ALPHA_KEY,
    DEFAULT_ALPHA,
    SOURCE_KEY,
    SOURCES,
    split_set_metric_name,
)
from genclf_harness.harness.metrics import (
    ALL_METHODS,
    ANCHOR_METHODS,
    ANCHOR_SECTIONS,
    CONTENT_FREE_INPUTS,
    INDUCTIVE_LABELS,
    INDUCTIVE_SECTION,
    LABELLED_METHODS,
    TRAIN_PRIOR_KEY,
    make_item,
    split_metric_name,
)
from genclf_harness.data.specs import DatasetSpec
from genclf_harness.prompts import render_input
from genclf_harness.prompts.channel import answer_cue

logger = logging.getLogger(__name__)


TEMPLATE_NAME = "classification/_classification_template_yaml"
"""The shared task template under ``genclf_harness/tasks/``: the defaults of every genclf classification task."""
_SPLIT_KEYS = ("test_split", "training_split", "fewshot_split", "validation_split")


def _function_constructor(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    # The template names only this package's own functions, as "module.function".
    module, _, name = loader.construct_scalar(node).rpartition(".")  # type: ignore[arg-type]
    return getattr(importlib.import_module(module), name)


class _TemplateLoader(yaml.SafeLoader):
    pass


_TemplateLoader.add_constructor("!function", _function_constructor)


@functools.lru_cache(maxsize=1)
def template_defaults() -> dict[str, Any]:
    """The template's keys, ``!function`` tags resolved (callers get a deep copy)."""
    from genclf_harness.resources import tasks_dir

    with open(tasks_dir() / TEMPLATE_NAME, encoding="utf-8") as handle:
        loaded = yaml.load(handle, Loader=_TemplateLoader)  # noqa: S506 - a SafeLoader with one tag
    loaded.pop("class", None)
    return loaded


def complete_config(config: dict[str, Any] | None) -> tuple[dict[str, Any], DatasetSpec]:
    """A task config with the template's defaults under it and its splits taken from its data set.

    So a task of your own needs only ``task``, ``class`` and ``dataset_kwargs: {dataset: <name>}``;
    ``test_split`` defaults to the data set's evaluation split, ``training_split`` and
    ``fewshot_split`` to its training split. A split the data set does not have is an error here,
    not a ``KeyError`` deep inside lm-eval.
    """
    config = dict(config or {})
    config.pop("class", None)
    defaults = copy.deepcopy(template_defaults())
    task = config.get("task", "<unnamed task>")
    metadata = config.get("metadata")
    merged = {**defaults, **config,
              "metadata": {**defaults.get("metadata", {}), **(metadata if isinstance(metadata, dict) else {})}}
    dataset_kwargs = merged.get("dataset_kwargs") or {}
    dataset = dataset_kwargs.get("dataset") if isinstance(dataset_kwargs, dict) else None
    if not isinstance(dataset, str) or not dataset:
        raise ValueError(f"task {task!r}: dataset_kwargs must name the data set, e.g. "
                         "'dataset_kwargs: {dataset: sst2}' (a built-in one or a folder under GENCLF_DATA_DIR)")
    data_dir = dataset_kwargs.get("data_dir") or merged["metadata"].get("data_dir")
    spec = get_spec(dataset, data_dir)
    if merged.get("test_split") is None:
        merged["test_split"] = spec.eval_split
    for key in ("training_split", "fewshot_split"):
        if merged.get(key) is None:
            merged[key] = spec.train_split
    for key in _SPLIT_KEYS:
        value = merged.get(key)
        if value is not None and spec.splits and value not in spec.splits:
            raise ValueError(f"task {task!r}: {key} {value!r} is not a split of data set {spec.name!r} "
                             f"({', '.join(spec.splits)})")
    return merged, spec


class GenclfClassificationTask(ConfigurableTask):
    """A multiple-choice classification task whose results feed calibrated metrics."""

    anchor_sections: tuple[tuple[str, int], ...] = ANCHOR_SECTIONS
    """The anchor's score sections before the inductive rows: (calibration, rows)."""
    left_out_methods: frozenset[str] = frozenset()
    """Calibrations that do not apply to the task's kind of scores (their metrics are left out)."""

    def __init__(self, config: dict[str, Any] | None = None, **kwargs: Any) -> None:
        config, self.genclf_spec = complete_config(config)
        # A config-level process_results also tells lm-eval that the metric names are ours (it
        # would otherwise look each one up in the HF evaluate library).
        config["process_results"] = self._process_document
        super().__init__(config=config, **kwargs)
        self._anchor_built = False
        self._inductive = False
        self._train_counts: list[int] | None = None
        self._inductive_labels: list[int] = []
        self._metrics_overridden = False

    def override_metric(self, metric_name: str) -> None:
        # --predict_only ("bypass"): lm-eval's own process_results reads one result per choice, so
        # no anchor requests are built and the calibrated metrics are not computed.
        super().override_metric(metric_name)
        self._metrics_overridden = True

    def build_all_requests(self, *args: Any, **kwargs: Any) -> None:
        self._anchor_built = False
        self._check_fewshot_pool()
        self._train_counts = self._training_label_counts()
        super().build_all_requests(*args, **kwargs)

    def _check_fewshot_pool(self) -> None:
        """More demonstrations than the few-shot split has is an error naming it, before any work."""
        wanted = self.config.num_fewshot or 0
        if wanted <= 0 or not (self.has_training_docs() or self.has_validation_docs()):
            return
        pool = len(self.fewshot_docs())
        # drawn from the evaluated split itself, a document is never its own demonstration
        usable = pool - 1 if self.config.fewshot_split == self.config.test_split else pool
        if wanted > usable:
            raise DataError(f"{self.config.task}: --num_fewshot {wanted} needs {wanted} demonstrations, and the "
                            f"few-shot split {self.config.fewshot_split!r} of data set {self.genclf_spec.name!r} "
                            f"has {usable} to draw from")

    def construct_requests(self, doc: dict, ctx: Any, **kwargs: Any) -> list[Instance]:
        requests = super().construct_requests(doc, ctx, **kwargs)
        if self._anchor_built or self._metrics_overridden:
            return requests
        extra = self._anchor_arguments(doc, ctx, requests)
        if extra is None:
            return requests
        self._anchor_built = True
        # Siblings of the document's own first request (same task, document and repeats), built from
        # its fields by keyword: lm-eval 0.4.13 keeps them in a metadata tuple, v0.5 in fields.
        return requests + [
            dataclasses.replace(requests[0], arguments=args, idx=len(requests) + i, resps=[], filtered_resps={})
            for i, args in enumerate(extra)
        ]

    def _anchor_arguments(self, doc: dict, ctx: Any, requests: list[Instance]) -> list[tuple[str, str]] | None:
        """The anchor's extra (context, continuation) requests, in the order of `anchor_sections`
        then the inductive documents, each row one request per choice; ``None``: no anchor here."""
        if not isinstance(ctx, str):
            return None
        continuations = [instance.arguments[1] for instance in requests]
        return [(context, cont) for context in self._anchor_contexts(doc, ctx) for cont in continuations]

    def _anchor_contexts(self, doc: dict, ctx: str) -> list[str]:
        """Content-free contexts, then the domain-premise context, then the empty context."""
        spec = self.genclf_spec
        query = self.doc_to_text(doc)
        at = ctx.rfind(query)
        if at < 0:
            raise ValueError(f"{self.config.task}: the document's query is not in its context")

        def swap(new_query: str) -> str:
            return ctx[:at] + new_query + ctx[at + len(query):]

        content_free = [
            swap(render_input(spec, {name: text for name in spec.input_fields}))
            for text in CONTENT_FREE_INPUTS
        ]
        inductive = [swap(self.doc_to_text(other)) for other in self._pick_inductive_docs()]
        return [*content_free, swap(answer_cue(spec)), "", *inductive]

    def _pick_inductive_docs(self) -> list[dict]:
        """`_inductive_docs`, with their labels kept for the label-shift methods (a label none of them
        has leaves those methods out, with the reason logged)."""
        spec = self.genclf_spec
        docs = self._inductive_docs()
        self._inductive = bool(docs)
        # read only by the label-shift methods (bcts_em, bbse), which need labelled documents
        self._inductive_labels = [self._gold(other) for other in docs]
        absent = sorted(set(range(len(spec.labels))) - set(self._inductive_labels))
        if docs and absent and any(name.endswith(LABELLED_METHODS) for name in self._metric_fn_list):
            logger.warning("%s: label(s) %s have none of the %d inductive documents; the label-shift metrics "
                           "(*_bcts_em, *_bbse) are left out (raise the task metadata inductive_docs)",
                           self.config.task, ", ".join(repr(spec.labels[k]) for k in absent), len(docs))
        return docs

    def _gold(self, doc: dict) -> int:
        """The document's gold label index."""
        return int(self.doc_to_target(doc))

    def _inductive_docs(self) -> list[dict]:
        """A seeded sample of the training split's documents (their labels are read by the
        label-shift methods only)."""
        metadata = self.config.metadata if isinstance(self.config.metadata, dict) else {}
        raw = metadata.get("inductive_docs", DEFAULT_INDUCTIVE_DOCS)
        try:
            wanted = int(raw)
        except (TypeError, ValueError):
            raise ValueError(f"{self.config.task}: metadata inductive_docs must be a whole number, not {raw!r}") from None
        if wanted < 0:
            raise ValueError(f"{self.config.task}: metadata inductive_docs must be >= 0, not {wanted}")
        if wanted == 0 or not any(name.endswith(("_ind", *LABELLED_METHODS)) or self._conformal_from_train(name)
                                  for name in self._metric_fn_list):
            return []  # none asked for: the *_ind metrics are left out of the results, nothing is scored
        if not self.has_training_docs() or self.config.training_split == self.config.test_split:
            logger.warning("%s: no training split apart from the evaluated one; the inductive (*_ind) metrics "
                           "are left out", self.config.task)
            return []
        docs = self.training_docs()
        chosen = sorted(random.Random(INDUCTIVE_SEED).sample(range(len(docs)), min(wanted, len(docs))))
        return [docs[i] for i in chosen]

    def _conformal_options(self) -> dict[str, Any]:
        """The conformal sets' task metadata (alpha, where the calibration documents come from),
        checked: a bad value is an error naming the task before any model work."""
        metadata = self.config.metadata if isinstance(self.config.metadata, dict) else {}
        alpha = metadata.get(ALPHA_KEY, DEFAULT_ALPHA)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < float(alpha) < 1.0:
            raise ValueError(f"{self.config.task}: metadata {ALPHA_KEY} must be a number between 0 and 1, not {alpha!r}")
        source = metadata.get(SOURCE_KEY, "train")
        if source not in SOURCES:
            raise ValueError(f"{self.config.task}: metadata {SOURCE_KEY} must be one of {', '.join(SOURCES)}, "
                             f"not {source!r}")
        return {ALPHA_KEY: float(alpha), SOURCE_KEY: source}

    def _conformal_from_train(self, name: str) -> bool:
        """Whether the metric is a conformal set metric calibrated on the training split's documents."""
        return split_set_metric_name(name) is not None and self._conformal_options()[SOURCE_KEY] == "train"

    def _training_label_counts(self) -> list[int] | None:
        """Label counts of the training split (a labelled split apart from the evaluated one), for
        prior matching to its distribution; ``None`` (those metrics left out, with the reason logged)
        when there is no such split or a label has no row in it."""
        if not any("_prior_train" in name for name in self._metric_fn_list):
            return None
        if not self.has_training_docs() or self.config.training_split == self.config.test_split:
            logger.warning("%s: no training split apart from the evaluated one; the *_prior_train metrics are "
                           "left out", self.config.task)
            return None
        counts = [0] * len(self.genclf_spec.labels)
        for doc in self.training_docs():
            counts[self._gold(doc)] += 1
        missing = [label for label, count in zip(self.genclf_spec.labels, counts, strict=True) if count == 0]
        if missing:
            logger.warning("%s: label(s) %s have no row in the training split %r; the *_prior_train metrics "
                           "are left out (a prior with a zero cannot be matched)", self.config.task,
                           ", ".join(map(repr, missing)), self.config.training_split)
            return None
        return counts

    def _wanted(self, name: str) -> bool:
        if split_metric_name(name)[1] in self.left_out_methods:
            return False
        if "_prior_train" in name and self._train_counts is None:
            return False
        if name.endswith(LABELLED_METHODS):
            return self._inductive and len(set(self._inductive_labels)) == len(self.genclf_spec.labels)
        return self._inductive or not name.endswith("_ind")

    def _process_document(self, doc: dict, results: list[tuple[float, bool]]) -> dict[str, Any]:
        num_choices = len(self.doc_to_choice(doc))
        lls = [float(ll) for ll, _ in results]
        anchor = None
        if len(lls) > num_choices:
            sections = iter(lls[num_choices:])
            anchor = {"task": self.config.task}
            for name, rows in self.anchor_sections:
                anchor[name] = [[next(sections) for _ in range(num_choices)] for _ in range(rows)]
            rest = list(sections)  # the inductive documents' rows, however many were built
            anchor[INDUCTIVE_SECTION] = [rest[i:i + num_choices] for i in range(0, len(rest), num_choices)]
            anchor[INDUCTIVE_LABELS] = list(self._inductive_labels)
            anchor.update(self._conformal_options())
            if self._train_counts is not None:
                anchor[TRAIN_PRIOR_KEY] = list(self._train_counts)
            if self.left_out_methods:
                anchor[ANCHOR_METHODS] = [m for m in ALL_METHODS if m not in self.left_out_methods]
        item = make_item(doc_id=doc.get("id"), gold=self._gold(doc), lls=lls[:num_choices], anchor=anchor)
        return {name: (item.correct if name == "acc" else item) for name in self._metric_fn_list
                if self._wanted(name)}


DEFAULT_INDUCTIVE_DOCS = 100
"""Training documents the anchor carries for inductive calibration when the task names no number."""
INDUCTIVE_SEED = 1234
