"""Prompt rendering shared by evaluation, training and verification, so train and test prompts match.

- `classification`: the plain zero-shot prompt of each data set (the default ``genclf_<name>`` tasks);
- `channel`: the noisy-channel direction (the input scored given each label);
- `strategy`: GenCLS++ prompt strategies (`PromptStrategy` -> `StrategyPrompter` -> `RenderedPrompt`);
- `labels`: the label set of a strategy (natural or numeric, with or without "uncertain");
- `demonstrations`, `retrieval`: choosing in-context examples (random, balanced, BM25/TF-IDF nearest);
- `answers`: reading a generated answer as a label.
"""

from genclf_harness.prompts.answers import AnswerParser, AnswerStatus, ParsedAnswer, normalize_answer, parse_answer
from genclf_harness.prompts.classification import (
    ClassificationPrompt,
    join_labels,
    render_input,
    render_instruction,
)
from genclf_harness.prompts.demonstrations import ICL_MODES, DemonstrationPool, ICLMode
from genclf_harness.prompts.labels import UNCERTAIN, LabelSet, LabelStyle
from genclf_harness.prompts.retrieval import BM25Retriever, Retriever, RetrieverName, TfidfRetriever, build_retriever
from genclf_harness.prompts.strategy import (
    CHANNEL_STRATEGIES,
    SWEEP_STRATEGIES,
    PromptStrategy,
    RenderedPrompt,
    StrategyPrompter,
    render_strategy_instruction,
)

__all__ = [
    "CHANNEL_STRATEGIES",
    "ICL_MODES",
    "SWEEP_STRATEGIES",
    "UNCERTAIN",
    "AnswerParser",
    "AnswerStatus",
    "BM25Retriever",
    "ClassificationPrompt",
    "DemonstrationPool",
    "ICLMode",
    "LabelSet",
    "LabelStyle",
    "ParsedAnswer",
    "PromptStrategy",
    "RenderedPrompt",
    "Retriever",
    "RetrieverName",
    "StrategyPrompter",
    "TfidfRetriever",
    "build_retriever",
    "join_labels",
    "normalize_answer",
    "parse_answer",
    "render_input",
    "render_instruction",
    "render_strategy_instruction",
]
