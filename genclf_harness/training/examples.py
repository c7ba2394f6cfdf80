"""Training and evaluation examples of a generative classifier, rendered by a GenCLS++ prompt strategy.

The same `StrategyPrompter` renders the training examples, the evaluation prompts and the GRPO
prompts, so the model is trained and tested on one prompt. Two forms (`DataConfig.chat_template`):

- plain text: prompt ``"<instruction>\\n\\n...Review: ...\\nSentiment:"``, completion ``" positive"``
  (TRL appends the end-of-sequence token); exactly the ``genclf_<dataset>`` task's request, so the
  result evaluates with ``genclf-eval --tasks genclf_<dataset>`` as it is;
- chat: TRL's conversational prompt-completion form, prompt ``[{"role": "user", ...}]``, completion
  ``[{"role": "assistant", "content": "positive"}]``; the model's chat template renders both and
  the loss covers the assistant turn only (evaluate with ``--apply_chat_template``).

Training rows are shuffled with a seed, then ``skip_train_examples`` and ``max_train_examples``
cut a window out of them (GRPO takes rows after those SFT saw). Evaluation rows are the first N
of their split, the documents ``lm_eval --limit N`` evaluates.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from genclf_harness.data import DatasetSpec, get_spec, load_split
from genclf_harness.prompts import LabelSet, PromptStrategy, RenderedPrompt, StrategyPrompter
from genclf_harness.training.config import DataConfig

logger = logging.getLogger(__name__)

Example = dict[str, Any]
"""A TRL example: ``{"prompt": str | messages, "completion": str | messages}`` (SFT) or
``{"prompt": ..., "label": int, "id": str}`` (GRPO: the gold index reaches the reward)."""


@dataclass(frozen=True)
class ClassifierData:
    """One data set under one prompt strategy: the prompter and the rows to train and evaluate on."""

    spec: DatasetSpec
    prompter: StrategyPrompter
    chat: bool
    train_rows: tuple[Mapping[str, Any], ...]
    eval_rows: tuple[Mapping[str, Any], ...]

    @property
    def label_set(self) -> LabelSet:
        return self.prompter.label_set

    def render(self, rows: Sequence[Mapping[str, Any]]) -> list[RenderedPrompt]:
        return [self.prompter.render(row) for row in rows]

    def sft_examples(self, rows: Sequence[Mapping[str, Any]] | None = None,
                     answers: Mapping[str, str] | None = None) -> list[Example]:
        """SFT examples of ``rows`` (default: the training rows); ``answers`` (``{row id: answer}``,
        e.g. UniPredict's distribution answers, `genclf_harness.training.teacher`) replaces the gold
        label as the completion."""
        rows = self.train_rows if rows is None else rows
        prompts = self.render(rows)
        if answers is None:
            return [sft_example(p, self.chat) for p in prompts]
        missing = [str(row.get("id", "")) for row in rows if str(row.get("id", "")) not in answers]
        if missing:
            raise ValueError(f"no answer given for training row {missing[0]!r}")
        return [sft_example(p, self.chat, answers[str(row.get("id", ""))]) for p, row in zip(prompts, rows, strict=True)]

    def grpo_examples(self, rows: Sequence[Mapping[str, Any]] | None = None) -> list[Example]:
        rows = self.train_rows if rows is None else rows
        return [grpo_example(p, str(row.get("id", "")), self.chat) for p, row in zip(self.render(rows), rows, strict=True)]


def uses_chat(setting: bool | str, tokenizer: Any) -> bool:
    """Resolve ``chat_template: auto`` against the tokenizer."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if setting == "auto":
        return has_template
    if setting and not has_template:
        raise ValueError("data.chat_template is true, but the tokenizer has no chat template")
    return bool(setting)


def load_classifier_data(config: DataConfig, chat: bool) -> ClassifierData:
    spec = get_spec(config.dataset)
    strategy = PromptStrategy.parse(config.strategy)
    all_train = load_split(spec.name, config.train_split)
    shuffled = list(all_train)
    random.Random(config.shuffle_seed).shuffle(shuffled)
    if config.eval_split is None:
        eval_rows: list[Mapping[str, Any]] = []
    elif config.eval_split == config.train_split:
        held_out = config.max_eval_examples or 0
        eval_rows, shuffled = shuffled[-held_out:], shuffled[:-held_out]
    else:
        eval_rows = load_split(spec.name, config.eval_split)[: config.max_eval_examples]
    window = shuffled[config.skip_train_examples:]
    if config.max_train_examples is not None:
        window = window[: config.max_train_examples]
    if not window:
        raise ValueError(f"data: no training rows left ({len(shuffled)} rows, skip_train_examples="
                         f"{config.skip_train_examples})")
    absent = [name for k, name in enumerate(spec.labels) if all(row["label"] != k for row in window)]
    if absent:
        logger.warning("data: no training row has the label %s (%d rows of %s/%s); the model will not "
                       "be taught to answer it", ", ".join(map(repr, absent)), len(window), spec.name, config.train_split)
    # Demonstrations come from the whole training split (a row never demonstrates itself).
    prompter = strategy.bind(spec, all_train if strategy.needs_pool else None)
    return ClassifierData(spec, prompter, chat, tuple(window), tuple(eval_rows))


def sft_example(prompt: RenderedPrompt, chat: bool, answer: str | None = None) -> Example:
    """The prompt and its completion: the gold label (``answer``: this text instead)."""
    target = prompt.target if answer is None else answer
    if chat:
        return {"prompt": prompt.messages(), "completion": [{"role": "assistant", "content": target}]}
    return {"prompt": prompt.prompt, "completion": prompt.completion if answer is None else " " + answer}


def grpo_example(prompt: RenderedPrompt, doc_id: str, chat: bool) -> Example:
    return {"prompt": prompt.messages() if chat else prompt.prompt, "label": prompt.gold, "id": doc_id}
