"""One specification per data set: labels, input fields, prompt wording, and where the hub copy lives.

The label order is the index order of the ``label`` field in the data (the same as ``meta.json`` of
the local copies). ``label_words`` are what the model is asked to produce: usually the label names,
except where a plainer word reads better in a prompt (RTE/CB answer "True"/"False"/"Neither").
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


class DataError(ValueError):
    """A data set cannot be found or read; the message names the data set, file, line or field."""


@dataclass(frozen=True)
class HubSource:
    """Where the public copy of a data set lives on the Hugging Face hub, and how to map it."""

    path: str
    revision: str
    name: str | None = None
    splits: Mapping[str, str] = field(default_factory=dict)
    """our split name -> the hub's split name (identity when absent)."""
    fields: Mapping[str, str] = field(default_factory=dict)
    """our field name -> the hub's column (identity when absent)."""
    label_field: str = "label"
    label_map: Mapping[int, int] | None = None
    """the hub's label value -> our label index (identity when None)."""


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the loader and the prompts need to know about a classification data set."""

    name: str
    task: str
    labels: tuple[str, ...]
    label_words: tuple[str, ...]
    input_fields: tuple[str, ...]
    eval_split: str
    train_split: str
    instruction: str
    """One line before the examples; ``{labels}`` becomes the label words joined with commas/"or"."""
    template: str
    """The input as the model sees it, ending with the answer cue; ``{field}`` placeholders."""
    hub: HubSource | None
    """The public copy, or None for a data set that exists only as local files."""
    splits: tuple[str, ...] = ()
    definitions: Mapping[str, str] = field(default_factory=dict)
    """A short definition per label name (written for this project), for prompts that state them."""
    folder: str | None = None
    """The folder a local data set of your own was read from (None for the built-in ones)."""
    hypothesis_template: str | None = None
    """An NLI classifier's hypothesis for this data set, ``{}`` standing for the label word (e.g.
    Laurer's "This example news text is about {}."); None: the classifier's default."""

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.label_words):
            raise ValueError(f"data set spec {self.name!r}: labels and label_words differ in length")
        if len(set(self.label_words)) != len(self.label_words):
            raise ValueError(f"data set spec {self.name!r}: label_words are not distinct")

    @property
    def num_labels(self) -> int:
        return len(self.labels)


def _spec(**kwargs: object) -> DatasetSpec:
    return DatasetSpec(**kwargs)  # type: ignore[arg-type]


_SENTIMENT_DEFS = {
    "very negative": "the reviewer strongly dislikes the film",
    "negative": "the reviewer dislikes the film on the whole",
    "neutral": "the review is mixed or expresses no clear opinion",
    "positive": "the reviewer likes the film on the whole",
    "very positive": "the reviewer strongly likes the film",
}

_SPECS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        _spec(
            name="sst2",
            task="binary sentiment of movie-review sentences",
            labels=("negative", "positive"),
            label_words=("negative", "positive"),
            input_fields=("text",),
            eval_split="test",
            train_split="train",
            splits=("train", "validation", "test"),
            instruction="Classify the sentiment of each movie review as {labels}.",
            template="Review: {text}\nSentiment:",
            hub=HubSource(path="SetFit/sst2", revision="main"),
            definitions={k: _SENTIMENT_DEFS[k] for k in ("negative", "positive")},
        ),
        _spec(
            name="sst5",
            task="5-way sentiment of movie-review sentences",
            labels=("very negative", "negative", "neutral", "positive", "very positive"),
            label_words=("very negative", "negative", "neutral", "positive", "very positive"),
            input_fields=("text",),
            eval_split="test",
            train_split="train",
            splits=("train", "validation", "test"),
            instruction="Classify the sentiment of each movie review as {labels}.",
            template="Review: {text}\nSentiment:",
            hub=HubSource(path="SetFit/sst5", revision="main"),
            definitions=dict(_SENTIMENT_DEFS),
        ),
        _spec(
            name="agnews",
            task="4-way news topic",
            labels=("World", "Sports", "Business", "Science/Technology"),
            label_words=("World", "Sports", "Business", "Technology"),
            input_fields=("text",),
            eval_split="test",
            train_split="train",
            splits=("train", "test"),
            instruction="Classify the topic of each news article as {labels}.",
            template="Article: {text}\nTopic:",
            # Note: the local copy splits AG News' official test set 50/50 (see ../shared/data);
            # the hub copy gives the official train and test splits.
            hub=HubSource(path="fancyzhx/ag_news", revision="main"),
            definitions={
                "World": "international news, politics and conflicts",
                "Sports": "sport events, teams and athletes",
                "Business": "companies, markets and the economy",
                "Science/Technology": "science, computing, the internet and technology companies' products",
            },
        ),
        _spec(
            name="trec",
            task="6-way question type",
            labels=("abbreviation", "description", "entity", "person", "location", "number"),
            label_words=("abbreviation", "description", "entity", "person", "location", "number"),
            input_fields=("text",),
            eval_split="test",
            train_split="train",
            splits=("train", "test"),
            instruction="Classify the type of answer each question asks for as {labels}.",
            template="Question: {text}\nAnswer type:",
            # CogComp/trec orders its coarse labels ABBR, ENTY, DESC, HUM, LOC, NUM.
            hub=HubSource(
                path="CogComp/trec",
                revision="refs/convert/parquet",
                label_field="coarse_label",
                label_map={0: 0, 1: 2, 2: 1, 3: 3, 4: 4, 5: 5},
            ),
            definitions={
                "abbreviation": "the expansion or meaning of an abbreviation",
                "description": "a definition, a description, a manner or a reason",
                "entity": "a thing such as an animal, a product, a colour or an event",
                "person": "a person or a group of people",
                "location": "a place such as a city, a country or a mountain",
                "number": "a number such as a date, a count, a distance or a price",
            },
        ),
        _spec(
            name="rte",
            task="binary textual entailment",
            labels=("entailment", "not_entailment"),
            label_words=("True", "False"),
            input_fields=("premise", "hypothesis"),
            eval_split="validation",
            train_split="train",
            splits=("train", "validation"),
            instruction="Decide whether each hypothesis follows from its premise: answer {labels}.",
            template="{premise}\nQuestion: {hypothesis} True or False?\nAnswer:",
            hub=HubSource(path="aps/super_glue", name="rte", revision="main"),
            definitions={
                "entailment": "the premise implies the hypothesis",
                "not_entailment": "the premise does not imply the hypothesis",
            },
        ),
        _spec(
            name="cb",
            task="3-way textual entailment",
            labels=("entailment", "contradiction", "neutral"),
            label_words=("True", "False", "Neither"),
            input_fields=("premise", "hypothesis"),
            eval_split="validation",
            train_split="train",
            splits=("train", "validation"),
            instruction="Decide whether each hypothesis follows from its premise: answer {labels}.",
            template="{premise}\nQuestion: {hypothesis} True, False, or Neither?\nAnswer:",
            hub=HubSource(path="aps/super_glue", name="cb", revision="main"),
            definitions={
                "entailment": "the premise implies the hypothesis",
                "contradiction": "the premise implies the hypothesis is false",
                "neutral": "the premise neither implies nor rules out the hypothesis",
            },
        ),
        _spec(
            name="subj",
            task="binary subjectivity of movie-review sentences",
            labels=("subjective", "objective"),
            label_words=("subjective", "objective"),
            input_fields=("text",),
            eval_split="test",
            train_split="train",
            splits=("train", "test"),
            instruction="Classify each sentence as {labels}.",
            template="Sentence: {text}\nThis sentence is",
            # SetFit/subj: label 0 = objective, 1 = subjective (its label_text column says so).
            hub=HubSource(path="SetFit/subj", revision="main", label_map={0: 1, 1: 0}),
            definitions={
                "subjective": "it states an opinion or a judgement",
                "objective": "it states facts, such as a plot summary",
            },
        ),
    )
}

SPECS: Mapping[str, DatasetSpec] = MappingProxyType(_SPECS)


def list_specs() -> list[str]:
    return sorted(_SPECS)


def get_spec(name: str, data_dir: str | os.PathLike[str] | None = None) -> DatasetSpec:
    """The spec of a data set by name: a built-in one, else a local data set of your own.

    A local data set is a folder ``<name>`` under the data root (``data_dir``, else
    ``$GENCLF_DATA_DIR``) with a ``meta.json`` naming its labels (``genclf_harness.data.local``).
    An unknown name gets a "did you mean" error that lists both kinds.
    """
    spec = _SPECS.get(name)
    if spec is not None:
        return spec
    from genclf_harness.data.local import list_local, local_spec

    found = local_spec(name, data_dir)
    if found is not None:
        return found
    local = list_local(data_dir)
    close = difflib.get_close_matches(name, [*_SPECS, *local], n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    own = f"; local data sets: {', '.join(local)}" if local else ""
    raise DataError(
        f"Unknown data set {name!r}.{hint} Known data sets: {', '.join(list_specs())}{own}. "
        f"A data set of your own is a folder {name}/ under the data root ({_root_note(data_dir)}) "
        "with <split>.jsonl files and a meta.json naming its labels."
    ) from None


def _root_note(data_dir: str | os.PathLike[str] | None) -> str:
    from genclf_harness.data.root import DATA_DIR_ENV

    if data_dir is not None:
        return str(data_dir)
    return os.environ.get(DATA_DIR_ENV) or f"{DATA_DIR_ENV}, not set"
