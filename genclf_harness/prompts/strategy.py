"""GenCLS++ prompt strategies: one value per way of asking, shared by evaluation and training.

A `PromptStrategy` is four choices (in-context examples, category definitions, an uncertainty
label, the label style). Bound to a data set and a demonstration pool it renders a document into a
`RenderedPrompt`: the instruction, the demonstrations, the input, the label set and the gold answer.

The rendered prompt (plain text, and the single user message of the chat form) is::

    <instruction line>                     "Classify the sentiment ... as negative or positive."
    [<one line per label>]                 definitions and/or the numeric mapping
    [If you cannot tell, answer uncertain.]
    <blank line>
    [<demonstration input> <its label>     each demonstration, blank-line separated
    <blank line>] ...
    <input with its answer cue>            "Review: ...\\nSentiment:"

and each answer is ``" " + choice`` after it. Label lines: natural labels with definitions read
``negative: the reviewer dislikes the film on the whole.``; numeric labels read ``1 means
negative.``, or with definitions ``1 means negative: the reviewer dislikes the film on the whole.``.
The zero-shot natural strategy (``"zero"``) renders exactly the default ``genclf_<name>`` task's
zero-shot prompt.

Strategy names (`PromptStrategy.name`, parsed back by `PromptStrategy.parse`) join tokens with
``_``: an in-context token ``rand<k>`` / ``bal<k>`` / ``sim<k>`` (BM25) / ``tfidf<k>`` (TF-IDF),
then the flags ``def``, ``unc``, ``num``, ``channel``, then ``seed<n>`` when the seed is not the
default; the zero-shot plain strategy is ``zero``. Examples: ``sim3``, ``bal3_def``, ``rand5_num_seed7``,
``channel``.

``channel`` turns the prompt around (`genclf_harness.prompts.channel`): each label gets its own
context ending in ``"<cue> <label>"`` (`RenderedPrompt.contexts`) and the input is scored after it
(`RenderedPrompt.continuation`), demonstrations written the same way. Scored decoding only.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from genclf_harness.data.specs import DataError, DatasetSpec
from genclf_harness.prompts.channel import CHANNEL_DELIMITER, label_line, render_body
from genclf_harness.prompts.classification import join_labels, render_input
from genclf_harness.prompts.demonstrations import ICL_MODES, DemonstrationPool, ICLMode
from genclf_harness.prompts.labels import LABEL_STYLES, UNCERTAIN, LabelSet, LabelStyle
from genclf_harness.prompts.retrieval import RETRIEVERS, RetrieverName

DEFAULT_SEED = 1234
TARGET_DELIMITER = " "
"""Between the prompt and the answer: a completion is ``" " + choice``."""
BLOCK_DELIMITER = "\n\n"
"""Between the instruction, each demonstration, and the input."""
UNCERTAINTY_LINE = f"If you cannot tell, answer {UNCERTAIN}."

SWEEP_STRATEGIES: tuple[str, ...] = ("zero", "rand1", "rand3", "rand5", "bal3", "sim3", "def", "unc", "num")
"""The strategies with ready-made tasks (``genclf_<name>_<strategy>``) and swept by genclf-bench."""
CHANNEL_STRATEGIES: tuple[str, ...] = ("channel",)
"""The channel strategies with ready-made (scored) tasks for every built-in data set."""

_ICL_TOKEN = re.compile(r"^(rand|bal|sim|tfidf)(\d+)$")
_ICL_PREFIX: dict[tuple[ICLMode, RetrieverName], str] = {
    ("random", "bm25"): "rand",
    ("random", "tfidf"): "rand",
    ("balanced", "bm25"): "bal",
    ("balanced", "tfidf"): "bal",
    ("similar", "bm25"): "sim",
    ("similar", "tfidf"): "tfidf",
}
_FLAG_TOKENS = ("def", "unc", "num", "channel")


@dataclass(frozen=True)
class PromptStrategy:
    """How to ask: in-context examples, definitions, uncertainty label, label style."""

    icl: ICLMode = "zero"
    """``zero``, ``random``, ``balanced`` (one per class first) or ``similar`` (nearest by retriever)."""
    k: int = 0
    """How many demonstrations (0 exactly when ``icl`` is ``zero``)."""
    definitions: bool = False
    """State a short definition of each label (the spec's ``definitions``)."""
    uncertainty: bool = False
    """Offer the extra answer ``uncertain``."""
    label_style: LabelStyle = "natural"
    """``natural`` (the spec's label words) or ``numeric`` (``1`` .. ``K``, mapping stated)."""
    channel: bool = False
    """Score the input given each label (the noisy-channel direction) instead of the label given the input."""
    retriever: RetrieverName = "bm25"
    """The retriever of ``similar`` demonstrations: ``bm25`` or ``tfidf``."""
    seed: int = DEFAULT_SEED
    """Seeds ``random`` and ``balanced`` draws (with each document's id)."""

    def __post_init__(self) -> None:
        if self.icl not in ICL_MODES:
            raise ValueError(f"unknown in-context mode {self.icl!r}; known: {', '.join(ICL_MODES)}")
        if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 0:
            raise ValueError(f"k must be a non-negative integer, not {self.k!r}")
        if (self.icl == "zero") != (self.k == 0):
            raise ValueError(f"in-context mode {self.icl!r} with k={self.k}: k is 0 exactly for 'zero'")
        if self.label_style not in LABEL_STYLES:
            raise ValueError(f"unknown label style {self.label_style!r}; known: {', '.join(LABEL_STYLES)}")
        if self.retriever not in RETRIEVERS:
            raise ValueError(f"unknown retriever {self.retriever!r}; known: {', '.join(RETRIEVERS)}")

    @property
    def name(self) -> str:
        """The compact name, e.g. ``"sim3_def"``; `parse` reads it back."""
        tokens = [] if self.icl == "zero" else [f"{_ICL_PREFIX[self.icl, self.retriever]}{self.k}"]
        tokens += [t for t, on in zip(_FLAG_TOKENS, (self.definitions, self.uncertainty,
                                                     self.label_style == "numeric", self.channel), strict=True)
                   if on]
        if self.seed != DEFAULT_SEED and self.icl in ("random", "balanced"):
            tokens.append(f"seed{self.seed}")
        return "_".join(tokens) or "zero"

    @property
    def needs_pool(self) -> bool:
        return self.icl != "zero"

    @classmethod
    def parse(cls, name: str) -> PromptStrategy:
        """The strategy named ``name`` (see the module docstring for the grammar)."""
        values: dict[str, Any] = {}
        for token in name.strip().lower().split("_"):
            if token == "zero":  # explicit zero-shot; another in-context token conflicts with it
                if "icl" in values:
                    raise ValueError(f"strategy {name!r}: more than one in-context token")
                values["icl"] = "zero"
            elif match := _ICL_TOKEN.match(token):
                if "icl" in values:
                    raise ValueError(f"strategy {name!r}: more than one in-context token")
                prefix, k = match.group(1), int(match.group(2))
                values["icl"] = {"rand": "random", "bal": "balanced", "sim": "similar", "tfidf": "similar"}[prefix]
                values["k"] = k
                if prefix == "tfidf":
                    values["retriever"] = "tfidf"
            elif token == "def":
                values["definitions"] = True
            elif token == "unc":
                values["uncertainty"] = True
            elif token == "num":
                values["label_style"] = "numeric"
            elif token == "channel":
                values["channel"] = True
            elif token.startswith("seed") and token[4:].isdigit():
                values["seed"] = int(token[4:])
            else:
                known = ["zero", "rand<k>", "bal<k>", "sim<k>", "tfidf<k>", *_FLAG_TOKENS, "seed<n>"]
                close = difflib.get_close_matches(token, ["zero", "rand3", "bal3", "sim3", "tfidf3", *_FLAG_TOKENS])
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"strategy {name!r}: unknown token {token!r}.{hint} Tokens: {', '.join(known)}.")
        return cls(**values)

    @classmethod
    def from_value(cls, value: str | Mapping[str, Any] | PromptStrategy | None) -> PromptStrategy:
        """A strategy from its name, a mapping of its fields (as in a task YAML), or itself."""
        if value is None:
            return cls()
        if isinstance(value, PromptStrategy):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        if isinstance(value, Mapping):
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(value) - known)
            if unknown:
                raise ValueError(f"strategy {dict(value)!r}: unknown field(s) {unknown}; fields: {sorted(known)}")
            values = dict(value)
            if values.get("icl", "zero") != "zero" and "k" not in values:
                raise ValueError(f"strategy {dict(value)!r}: in-context mode {values['icl']!r} needs k")
            return cls(**values)
        raise TypeError(f"a prompt strategy is a name, a mapping or a PromptStrategy, not {type(value).__name__}")

    def check(self, spec: DatasetSpec, generative: bool = False) -> None:
        """Raise ``ValueError`` saying why this strategy cannot run on ``spec``, before any model work:
        label definitions it would state but the data set lacks, an "uncertain" answer the data set
        already has as a label, and (``generative``) label answers that could not be read back apart."""
        from genclf_harness.prompts.answers import AnswerParser

        where = f"strategy {self.name!r} on data set {spec.name!r}"
        if self.channel and generative:
            raise ValueError(f"{where}: the channel direction scores the input given each label; it has no "
                             "generative form (use the scored task)")
        if self.channel and self.uncertainty:
            raise ValueError(f"{where}: the channel direction scores the input under each label's prompt, and "
                             f"{UNCERTAIN!r} is not a label the input could be written under; drop 'unc'")
        if self.definitions:
            missing = [label for label in spec.labels if label not in spec.definitions]
            if missing:
                raise ValueError(f"{where}: it states label definitions, and there is none for {missing} "
                                 "(a local data set gives them as 'definitions' in its meta.json)")
        label_set = LabelSet.of(spec, self.label_style, self.uncertainty)
        if generative:
            try:
                AnswerParser.of(label_set)
            except ValueError as err:
                raise ValueError(f"{where}: generated answers could not be read as labels: {err} (a local "
                                 "data set can give distinct, readable 'label_words' in its meta.json)") from None

    def bind(self, spec: DatasetSpec, pool: Sequence[Mapping[str, Any]] | DemonstrationPool | None = None) -> StrategyPrompter:
        """This strategy for one data set; ``pool`` (the training rows) is needed for demonstrations."""
        if self.needs_pool:
            if pool is None:
                raise ValueError(f"strategy {self.name!r} needs a demonstration pool (the training rows)")
            if not isinstance(pool, DemonstrationPool):
                pool = DemonstrationPool.build(spec, pool, self.retriever if self.icl == "similar" else None)
            elif self.icl == "similar" and pool.retriever is None:
                raise ValueError(f"strategy {self.name!r} needs a pool built with a retriever")
        else:
            pool = None
        label_set = LabelSet.of(spec, self.label_style, self.uncertainty)
        return StrategyPrompter(spec, self, label_set, render_strategy_instruction(spec, label_set, self.definitions), pool)


def render_strategy_instruction(spec: DatasetSpec, label_set: LabelSet, definitions: bool) -> str:
    """The instruction block: the spec's instruction line, then label lines, then the uncertainty line."""
    lines = [spec.instruction.format(labels=join_labels(label_set.real_choices))]
    for index, (word, name) in enumerate(zip(label_set.words, label_set.names, strict=True)):
        definition = _definition(spec, name) if definitions else None
        if label_set.style == "numeric":
            lines.append(f"{index + 1} means {word}" + (f": {definition}." if definition else "."))
        elif definition:
            lines.append(f"{word}: {definition}.")
    if label_set.uncertainty:
        lines.append(UNCERTAINTY_LINE)
    return "\n".join(lines)


def _definition(spec: DatasetSpec, label: str) -> str:
    try:
        return spec.definitions[label]
    except KeyError:
        raise DataError(f"data set spec {spec.name!r} has no definition of label {label!r} (a local data "
                            "set gives them as 'definitions' in its meta.json).") from None


@dataclass(frozen=True)
class RenderedPrompt:
    """One document under one strategy: everything evaluation and training need."""

    strategy: str
    """The strategy's name."""
    instruction: str
    demonstrations: tuple[str, ...]
    """Each demonstration as ``<input> <label>``, in prompt order."""
    demonstration_ids: tuple[str, ...]
    input: str
    """The document with its answer cue, e.g. ``"Review: ...\\nSentiment:"`` (channel direction: without
    the cue, ``"Review: ..."``)."""
    choices: tuple[str, ...]
    """The label set, as continuations without the leading space (``"uncertain"`` last if offered)."""
    gold: int
    """The index of the gold label in ``choices`` (never the uncertainty label)."""
    label_lines: tuple[str, ...] = ()
    """Channel direction only: each label's line (``"Sentiment: positive"``), after which `input`
    (then without its answer cue) is scored; empty for the direct direction."""

    @property
    def channel(self) -> bool:
        return bool(self.label_lines)

    @property
    def contexts(self) -> tuple[str, ...]:
        """Channel direction: one context per label (instruction, demonstrations, the label's line)."""
        if not self.channel:
            raise ValueError(f"strategy {self.strategy!r} is not a channel strategy: it has one context, `prompt`")
        return tuple(BLOCK_DELIMITER.join((self.instruction, *self.demonstrations, line)) for line in self.label_lines)

    @property
    def continuation(self) -> str:
        """Channel direction: what is scored after each context, ``"\n" + input``."""
        return CHANNEL_DELIMITER + self.input

    @property
    def prompt(self) -> str:
        """The whole prompt: instruction, demonstrations and input, blank-line separated."""
        return BLOCK_DELIMITER.join((self.instruction, *self.demonstrations, self.input))

    @property
    def query(self) -> str:
        """The prompt after the instruction: demonstrations and input."""
        return BLOCK_DELIMITER.join((*self.demonstrations, self.input))

    @property
    def target(self) -> str:
        """The gold answer (the completion text for training)."""
        return self.choices[self.gold]

    @property
    def completion(self) -> str:
        """The gold answer as a plain-text continuation of `prompt`: ``" " + target``."""
        return TARGET_DELIMITER + self.target

    def messages(self) -> list[dict[str, str]]:
        """The chat form: one user message holding `prompt` (the model's chat template adds the rest)."""
        return [{"role": "user", "content": self.prompt}]

    def messages_with_answer(self) -> list[dict[str, str]]:
        """`messages` plus the gold answer as the assistant's turn (an SFT example)."""
        return [*self.messages(), {"role": "assistant", "content": self.target}]


@dataclass(frozen=True, eq=False)
class StrategyPrompter:
    """A strategy bound to a data set (and its demonstration pool): renders documents."""

    spec: DatasetSpec
    strategy: PromptStrategy
    label_set: LabelSet
    instruction: str
    pool: DemonstrationPool | None

    def render(self, doc: Mapping[str, Any]) -> RenderedPrompt:
        """``doc`` is a loader row: its input fields, ``label`` (int) and ``id``."""
        picked = (
            self.pool.select(self.strategy.icl, self.strategy.k, doc, self.strategy.seed)
            if self.pool is not None else []
        )
        demos = [self.pool.docs[i] for i in picked] if self.pool is not None else []
        choices = self.label_set.choices
        if self.strategy.channel:
            lines = tuple(label_line(self.spec, choice) for choice in choices)
            demonstrations = tuple(lines[int(d["label"])] + CHANNEL_DELIMITER + render_body(self.spec, d) for d in demos)
            text = render_body(self.spec, doc)
        else:
            lines = ()
            demonstrations = tuple(
                render_input(self.spec, d) + TARGET_DELIMITER + choices[int(d["label"])] for d in demos
            )
            text = render_input(self.spec, doc)
        return RenderedPrompt(
            strategy=self.strategy.name,
            instruction=self.instruction,
            demonstrations=demonstrations,
            demonstration_ids=tuple(str(d.get("id", "")) for d in demos),
            input=text,
            choices=choices,
            gold=_gold(self.spec, doc),
            label_lines=lines,
        )


def _gold(spec: DatasetSpec, doc: Mapping[str, Any]) -> int:
    label = doc.get("label")
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < spec.num_labels:
        raise DataError(f"data set {spec.name!r}: document {doc.get('id', '?')!r} has label {label!r}, "
                        f"not an index below {spec.num_labels}.")
    return label
