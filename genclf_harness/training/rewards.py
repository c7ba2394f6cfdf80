"""Rule-based rewards for RL on classification (GenCLS++), as plain TRL reward functions.

Each reward is a picklable callable class with a ``__name__`` (TRL names its logged columns after
it) and TRL's signature::

    reward(prompts, completions, completion_ids=None, **columns) -> list[float]

``completions`` are strings, or chat messages (the last message's ``content`` is read); the gold
label comes from a dataset column (``label`` by default: an index into the label set's choices,
or a label text). Answers are read by `genclf_harness.prompts.AnswerParser`, the parser the
generative evaluation uses; nothing is evaluated as code. No TRL import is needed, so any TRL
script (or another RL library with the same calling convention) can use them::

    from genclf_harness.training.rewards import LabelMatchReward, FormatReward
    rewards = [LabelMatchReward(["negative", "positive"]), FormatReward(["negative", "positive"])]
    GRPOTrainer(model=..., reward_funcs=rewards, args=GRPOConfig(reward_weights=[1.0, 0.1], ...), ...)

See ``examples/grpo_label_reward.py`` for a complete script.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from genclf_harness.prompts import AnswerParser, LabelSet, LabelStyle, normalize_answer


def completion_text(completion: Any) -> str:
    """The generated text of one completion: a string, or the last of a list of chat messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        return str(completion.get("content") or "")
    if isinstance(completion, Sequence) and completion:
        return completion_text(completion[-1])
    return ""


class _LabelReward:
    """Shared set-up: the label set, its answer parser, and where the gold label is."""

    default_name = "label_reward"

    def __init__(
        self,
        label_words: Sequence[str] | None = None,
        *,
        label_names: Sequence[str] | None = None,
        label_style: LabelStyle = "natural",
        uncertainty: bool = False,
        label_set: LabelSet | None = None,
        gold_key: str = "label",
        name: str | None = None,
    ) -> None:
        if label_set is None:
            if not label_words:
                raise ValueError(f"{type(self).__name__} needs label_words (or a label_set)")
            label_set = _label_set(label_words, label_names, label_style, uncertainty)
        elif label_words is not None:
            raise ValueError(f"{type(self).__name__}: pass label_words or label_set, not both")
        self.label_set = label_set
        self.parser = AnswerParser.of(label_set)
        self.gold_key = gold_key
        self.__name__ = name or self.default_name

    @classmethod
    def for_dataset(cls, dataset: str, strategy: str = "zero", **kwargs: Any) -> _LabelReward:
        """The reward for a genclf data set under a prompt strategy (its label words, style, uncertainty)."""
        from genclf_harness.data import get_spec
        from genclf_harness.prompts import PromptStrategy

        parsed = PromptStrategy.parse(strategy)
        return cls(label_set=LabelSet.of(get_spec(dataset), parsed.label_style, parsed.uncertainty), **kwargs)

    def gold_index(self, value: Any) -> int:
        """A gold value as an index into the choices: an int index, or a label's text."""
        if isinstance(value, bool):
            raise ValueError(f"{self.__name__}: gold label {value!r} is neither an index nor a label text")
        if isinstance(value, int):
            if 0 <= value < self.label_set.num_classes:
                return value
            raise ValueError(f"{self.__name__}: gold index {value} is outside the {self.label_set.num_classes} labels")
        if isinstance(value, str):
            target = normalize_answer(value)
            for index in range(self.label_set.num_classes):
                texts = (self.label_set.choices[index], self.label_set.words[index], self.label_set.names[index])
                if target in {normalize_answer(t) for t in texts}:
                    return index
            raise ValueError(f"{self.__name__}: gold label {value!r} is not one of {self.label_set.real_choices}")
        raise ValueError(f"{self.__name__}: gold label {value!r} is neither an index nor a label text")

    def _gold_column(self, columns: Mapping[str, Any], count: int) -> list[Any]:
        if self.gold_key not in columns:
            raise KeyError(
                f"{self.__name__}: no {self.gold_key!r} column reached the reward (columns: {sorted(columns)}). "
                "Keep remove_unused_columns=False in the trainer config, or set gold_key to the gold column."
            )
        gold = list(columns[self.gold_key])
        if len(gold) != count:
            raise ValueError(f"{self.__name__}: {len(gold)} gold labels for {count} completions")
        return gold

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self.label_set.choices)!r}, name={self.__name__!r})"


class LabelMatchReward(_LabelReward):
    """``correct`` when the parsed answer is the gold label, else ``wrong``.

    Unparseable answers (no label, two labels, only negated labels, empty) get ``unparseable``, and
    the uncertainty label gets ``uncertain``; all three default to 0 (the GenCLS++ 1/0 reward).
    """

    default_name = "label_match"

    def __init__(
        self,
        label_words: Sequence[str] | None = None,
        *,
        correct: float = 1.0,
        wrong: float = 0.0,
        unparseable: float = 0.0,
        uncertain: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(label_words, **kwargs)
        self.correct, self.wrong, self.unparseable, self.uncertain = correct, wrong, unparseable, uncertain

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Any = None,
                 **columns: Any) -> list[float]:
        gold = self._gold_column(columns, len(completions))
        rewards = []
        for completion, value in zip(completions, gold, strict=True):
            parsed = self.parser.parse(completion_text(completion))
            if parsed.index is None:
                rewards.append(self.unparseable)
            elif parsed.index == self.label_set.uncertain_index:
                rewards.append(self.uncertain)
            else:
                rewards.append(self.correct if parsed.index == self.gold_index(value) else self.wrong)
        return rewards


class FormatReward(_LabelReward):
    """``bare`` when the whole answer is one label and nothing else ("positive", " Positive."),
    ``parsed`` when a label can be read from a longer answer, ``unparseable`` otherwise.

    It rewards answering in the label format, right or wrong; weight it lightly beside
    `LabelMatchReward`. No gold column is needed.
    """

    default_name = "label_format"

    def __init__(
        self,
        label_words: Sequence[str] | None = None,
        *,
        bare: float = 1.0,
        parsed: float = 0.0,
        unparseable: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(label_words, **kwargs)
        self.bare, self.parsed, self.unparseable = bare, parsed, unparseable

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Any = None,
                 **columns: Any) -> list[float]:
        rewards = []
        for completion in completions:
            text = completion_text(completion)
            answer = self.parser.parse(text)
            if answer.index is None:
                rewards.append(self.unparseable)
            elif answer.status == "exact" and len([line for line in text.splitlines() if line.strip()]) == 1:
                rewards.append(self.bare)
            else:
                rewards.append(self.parsed)
        return rewards


def _label_set(words: Sequence[str], names: Sequence[str] | None, style: LabelStyle, uncertainty: bool) -> LabelSet:
    words = tuple(str(w) for w in words)
    names = tuple(str(n) for n in names) if names is not None else words
    if len(names) != len(words):
        raise ValueError(f"label_names ({len(names)}) and label_words ({len(words)}) differ in length")
    if len(set(words)) != len(words):
        raise ValueError(f"label_words {list(words)} are not distinct")
    real = words if style == "natural" else tuple(str(i + 1) for i in range(len(words)))
    if style not in ("natural", "numeric"):
        raise ValueError(f"label_style must be 'natural' or 'numeric', not {style!r}")
    from genclf_harness.prompts import UNCERTAIN

    return LabelSet(choices=real + ((UNCERTAIN,) if uncertainty else ()), words=words, names=names,
                    style=style, uncertainty=uncertainty)
