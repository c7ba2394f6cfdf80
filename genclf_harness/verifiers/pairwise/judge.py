"""Pairwise preference with a generative judge: IPO's pointwise P("Yes") and a pairwise prompt.

Two ways to ask a language model which of two outputs follows an instruction better:

- **pointwise (IPO, "Your Language Model is Secretly a Preference Classifier")**: each output is
  judged on its own with a Yes/No question, and the output with the higher P("Yes") wins::

      user:      Instruction: {instruction}
                 Response: {output}
                 Does the response follow the instruction well (Yes/No)?
      assistant: Yes            <- scored: P("Yes") vs P("No")

  Outputs are compared by their log-odds ``log P(Yes) - log P(No)`` (the same order as the
  normalised P(Yes), without its saturation near 0 and 1). Equal log-odds (within
  ``tie_tolerance``) are a tie: it earns half a point, the accuracy of a fair coin toss, and the
  share of ties is reported;
- **pairwise**: both outputs in one prompt, asking "which output is better, 1 or 2?", scored
  by the log-likelihood of the answers ``1``/``2``. Small judges prefer a position regardless of
  content, so every pair is asked in both orders. The swapped order's P("1") is P(output_2 better);
  it is mapped back to P(output_1 better) = 1 - P("1"). Reported: accuracy with the original
  order, with the swapped order, of the order-averaged decision (the mean of the two
  P(output_1 better)), and *positional consistency*, the share of pairs for which both orders
  pick the same output (a tie in either order counts as inconsistent).

Both prompts are :class:`~genclf_harness.verifiers.format.VerificationFormat` instances, so they
follow GenRM's conventions: with a chat template the answer is the first thing the assistant
says (``Yes``/``1`` with no leading space, right after the assistant marker); in plain text it
follows the question after a space (`` Yes``/`` 1``). Both judges run on any ``Scorer`` backend.

The data: LLMBar (``$GENCLF_DATA_DIR/llmbar/test.jsonl``: ``id``, ``subset``, ``instruction``,
``output_1``, ``output_2``, ``label`` = 1 or 2, the better output), read by
:mod:`genclf_harness.verifiers.pairwise.pairs`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from genclf_harness.backends.generation import has_chat_template
from genclf_harness.backends.protocol import LabelPrompt, Scorer
from genclf_harness.verifiers.format import VerificationFormat
from genclf_harness.verifiers.genrm.verifier import GenRM, Verdict
from genclf_harness.verifiers.pairwise.pairs import (  # noqa: F401  (re-exported: the judges' data)
    ADVERSARIAL,
    NATURAL,
    PreferenceDataError,
    PreferencePair,
    load_llmbar,
    parse_pair,
    read_pairs,
)

Choice = Literal[0, 1, 2]
"""The output a judge prefers: 1 or 2, or 0 for a tie."""

# -- prompts -------------------------------------------------------------------------------------


IPO_FORMAT = VerificationFormat(
    template="Instruction: {question}\nResponse: {solution}\n{ask}",
    question="Does the response follow the instruction well (Yes/No)?",
)
"""The pointwise (IPO) question: GenRM's Yes/No format with an instruction and a response."""


@dataclass(frozen=True, slots=True)
class PairwiseFormat:
    """The pairwise question: both outputs in one user turn, answered ``1`` or ``2``.

    The answers and the chat handling are GenRM's (:class:`VerificationFormat` with ``1``/``2``
    in place of ``Yes``/``No``): the instruction is its ``question`` and the two outputs, rendered
    by ``outputs``, its ``solution``.
    """

    outputs: str = "Output (1):\n{first}\n\nOutput (2):\n{second}"
    verification: VerificationFormat = VerificationFormat(
        template="Instruction:\n{question}\n\n{solution}\n\n{ask}",
        question="Which output follows the instruction better, 1 or 2?",
        yes="1",
        no="2",
    )

    def user_message(self, instruction: str, first: str, second: str) -> str:
        shown = self.outputs.format(first=first.strip(), second=second.strip())
        return self.verification.user_message(instruction, shown)

    def label_prompt(self, tokenizer: object, instruction: str, first: str, second: str, *,
                     chat: bool | None = None) -> LabelPrompt:
        """The prompt with continuations (``1``, ``2``) (bare after a chat marker, else after a space)."""
        shown = self.outputs.format(first=first.strip(), second=second.strip())
        return self.verification.label_prompt(tokenizer, instruction, shown, chat=chat)

    @property
    def choices(self) -> tuple[str, str]:
        return (self.verification.yes, self.verification.no)


PAIRWISE_FORMAT = PairwiseFormat()


# -- decisions on scores (pure, shared by the judges and the lm-eval aggregations) -------------------


@dataclass(frozen=True, slots=True)
class PointwiseComparison:
    """IPO's decision on one pair: each output's Yes/No log-odds and the preferred output."""

    id: str
    subset: str
    label: int
    log_odds_1: float
    log_odds_2: float
    choice: Choice

    @property
    def p_yes_1(self) -> float:
        return _sigmoid(self.log_odds_1)

    @property
    def p_yes_2(self) -> float:
        return _sigmoid(self.log_odds_2)

    @property
    def score(self) -> float:
        """1 if right, 0 if wrong, 0.5 for a tie."""
        return _credit(self.choice, self.label)


def decide_pointwise(pair_id: str, subset: str, label: int, log_odds_1: float, log_odds_2: float, *,
                     tie_tolerance: float = 0.0) -> PointwiseComparison:
    """Prefer the output with the higher log P(Yes) - log P(No); within ``tie_tolerance``: a tie."""
    if tie_tolerance < 0:
        raise ValueError(f"tie_tolerance must be >= 0, got {tie_tolerance}")
    difference = log_odds_1 - log_odds_2
    choice: Choice = 0 if abs(difference) <= tie_tolerance else 1 if difference > 0 else 2
    return PointwiseComparison(pair_id, subset, label, log_odds_1, log_odds_2, choice)


@dataclass(frozen=True, slots=True)
class PairwiseComparison:
    """The pairwise judge's decisions on one pair, asked in both orders.

    ``p_1_original``: P(output_1 better) with output_1 shown first, i.e. P("1") normalised over
    ``1``/``2``; ``p_1_swapped``: P(output_1 better) with output_2 shown first, i.e. 1 - P("1")
    there. Choices are output numbers (1, 2) or 0 for a tie, already mapped back to the outputs.
    """

    id: str
    subset: str
    label: int
    p_1_original: float
    p_1_swapped: float
    choice_original: Choice
    choice_swapped: Choice

    @property
    def p_1_averaged(self) -> float:
        return (self.p_1_original + self.p_1_swapped) / 2

    @property
    def choice_averaged(self) -> Choice:
        average = self.p_1_averaged
        return 0 if average == 0.5 else 1 if average > 0.5 else 2

    @property
    def consistent(self) -> bool:
        """Both orders pick the same output (a tie in either order is not consistent)."""
        return self.choice_original != 0 and self.choice_original == self.choice_swapped

    @property
    def first_position_picks(self) -> int:
        """How many of the two orders picked the output shown first (0, 1 or 2)."""
        return int(self.choice_original == 1) + int(self.choice_swapped == 2)


def decide_pairwise(pair_id: str, subset: str, label: int, original: Sequence[float],
                    swapped: Sequence[float]) -> PairwiseComparison:
    """Decide from the answers' log-likelihoods ``(log P("1"), log P("2"))`` in both orders.

    In the swapped order output_2 is shown as "1", so its P("1") is P(output_2 better) and its
    choice "1" means output_2.
    """
    margin_original = float(original[0]) - float(original[1])
    margin_swapped = float(swapped[0]) - float(swapped[1])
    choice_original: Choice = 0 if margin_original == 0 else 1 if margin_original > 0 else 2
    choice_swapped: Choice = 0 if margin_swapped == 0 else 2 if margin_swapped > 0 else 1
    return PairwiseComparison(pair_id, subset, label, _sigmoid(margin_original), 1.0 - _sigmoid(margin_swapped),
                              choice_original, choice_swapped)


# -- reports -------------------------------------------------------------------------------------


def _group_of(subset: str) -> str:
    return ADVERSARIAL if subset.startswith(ADVERSARIAL) else subset


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return math.fsum(values) / len(values) if values else math.nan


def pointwise_report(comparisons: Sequence[PointwiseComparison], *, by_subset: bool = True) -> dict[str, Any]:
    """``acc`` (ties count half), ``ties`` (share), ``pairs``; per group (natural, adversarial)
    and per subset when ``by_subset``."""
    if not comparisons:
        raise ValueError("no comparisons to report on")
    report: dict[str, Any] = {
        "pairs": len(comparisons),
        "acc": _mean(c.score for c in comparisons),
        "ties": _mean(float(c.choice == 0) for c in comparisons),
    }
    if by_subset:
        for name, members in _breakdown(comparisons).items():
            report[f"acc_{name}"] = _mean(c.score for c in members)
            report[f"pairs_{name}"] = len(members)
    return report


def pairwise_report(comparisons: Sequence[PairwiseComparison], *, by_subset: bool = True) -> dict[str, Any]:
    """Accuracy with the original order, the swapped order and the order-averaged decision (ties
    count half), positional consistency, and the share of decisions for the output shown first;
    per group (natural, adversarial) and per subset when ``by_subset``."""
    if not comparisons:
        raise ValueError("no comparisons to report on")

    def figures(members: Sequence[PairwiseComparison]) -> dict[str, float]:
        return {
            "acc_original": _mean(_credit(c.choice_original, c.label) for c in members),
            "acc_swapped": _mean(_credit(c.choice_swapped, c.label) for c in members),
            "acc_averaged": _mean(_credit(c.choice_averaged, c.label) for c in members),
            "consistency": _mean(float(c.consistent) for c in members),
            "prefers_first": _mean(c.first_position_picks / 2 for c in members),
        }

    report: dict[str, Any] = {"pairs": len(comparisons), **figures(comparisons)}
    if by_subset:
        for name, members in _breakdown(comparisons).items():
            report.update({f"{key}_{name}": value for key, value in figures(members).items()})
            report[f"pairs_{name}"] = len(members)
    return report


def _breakdown(comparisons: Sequence[Any]) -> dict[str, list[Any]]:
    """Members per group (natural, adversarial), then per subset that differs from its group."""
    out: dict[str, list[Any]] = {}
    for comparison in comparisons:
        if comparison.subset:
            out.setdefault(_group_of(comparison.subset), []).append(comparison)
    for comparison in comparisons:
        if comparison.subset and comparison.subset != _group_of(comparison.subset):
            out.setdefault(comparison.subset, []).append(comparison)
    return out


# -- the judges ----------------------------------------------------------------------------------


class PointwiseJudge:
    """IPO: P("Yes") that a response follows the instruction well, on any ``Scorer`` backend.

    Args:
        scorer: ``HFScorer``, the vLLM backend, anything implementing ``Scorer``.
        tokenizer: renders the chat template; default: the scorer's ``tokenizer``.
        format: the Yes/No question (:data:`IPO_FORMAT`).
        chat: use the chat template (``None``: when the tokenizer has one).
        tie_tolerance: log-odds differences up to this are ties (default: only exact equality).
    """

    def __init__(self, scorer: Scorer, *, tokenizer: Any = None, format: VerificationFormat = IPO_FORMAT,
                 chat: bool | None = None, tie_tolerance: float = 0.0) -> None:
        self.genrm = GenRM(scorer, tokenizer=tokenizer, format=format, chat=chat)
        if tie_tolerance < 0:
            raise ValueError(f"tie_tolerance must be >= 0, got {tie_tolerance}")
        self.tie_tolerance = tie_tolerance

    @property
    def tokenizer(self) -> Any:
        return self.genrm.tokenizer

    def prompts(self, instructions: Sequence[str], responses: Sequence[str]) -> list[LabelPrompt]:
        return self.genrm.prompts(instructions, responses)

    def verdicts(self, instructions: Sequence[str], responses: Sequence[str], *,
                 show_progress: bool = False) -> list[Verdict]:
        """One :class:`Verdict` (normalised P(Yes) and the two log-likelihoods) per response."""
        return self.genrm.verdicts(instructions, responses, show_progress=show_progress)

    def score(self, instructions: Sequence[str], responses: Sequence[str], *, show_progress: bool = False) -> list[float]:
        """P("Yes") normalised over Yes/No for each (instruction, response)."""
        return [v.p_yes for v in self.verdicts(instructions, responses, show_progress=show_progress)]

    def compare(self, pairs: Sequence[PreferencePair], *, show_progress: bool = False) -> list[PointwiseComparison]:
        """Both outputs of every pair scored in one backend call; the higher P(Yes) wins."""
        _check_pairs(pairs)
        instructions = [p.instruction for p in pairs for _ in (1, 2)]
        responses = [p.output(which) for p in pairs for which in (1, 2)]
        verdicts = self.verdicts(instructions, responses, show_progress=show_progress)
        return [
            decide_pointwise(pair.id, pair.subset, pair.label, _log_odds(verdicts[2 * i]),
                             _log_odds(verdicts[2 * i + 1]), tie_tolerance=self.tie_tolerance)
            for i, pair in enumerate(pairs)
        ]


class PairwiseJudge:
    """Asks "which output is better, 1 or 2?" in both orders, on any ``Scorer`` backend.

    Args:
        scorer: ``HFScorer``, the vLLM backend, anything implementing ``Scorer``.
        tokenizer: renders the chat template; default: the scorer's ``tokenizer``.
        format: the pairwise question (:data:`PAIRWISE_FORMAT`).
        chat: use the chat template (``None``: when the tokenizer has one).
    """

    def __init__(self, scorer: Scorer, *, tokenizer: Any = None, format: PairwiseFormat = PAIRWISE_FORMAT,
                 chat: bool | None = None) -> None:
        self.scorer = scorer
        self.tokenizer = tokenizer if tokenizer is not None else getattr(scorer, "tokenizer", None)
        if self.tokenizer is None:
            raise ValueError("PairwiseJudge needs a tokenizer (to render the chat template): pass tokenizer=")
        self.format = format
        self.chat = has_chat_template(self.tokenizer) if chat is None else chat

    def prompt(self, pair: PreferencePair, *, swapped: bool = False) -> LabelPrompt:
        first, second = (pair.output_2, pair.output_1) if swapped else (pair.output_1, pair.output_2)
        return self.format.label_prompt(self.tokenizer, pair.instruction, first, second, chat=self.chat)

    def compare(self, pairs: Sequence[PreferencePair], *, show_progress: bool = False) -> list[PairwiseComparison]:
        """Every pair in both orders, all in one backend call."""
        _check_pairs(pairs)
        prompts = [self.prompt(pair, swapped=swapped) for pair in pairs for swapped in (False, True)]
        scored = self.scorer.score(prompts, show_progress=show_progress)
        return [
            decide_pairwise(pair.id, pair.subset, pair.label, scored[2 * i].logprobs[:2], scored[2 * i + 1].logprobs[:2])
            for i, pair in enumerate(pairs)
        ]


def _check_pairs(pairs: Sequence[PreferencePair]) -> None:
    for index, pair in enumerate(pairs):
        if not isinstance(pair, PreferencePair):
            raise TypeError(f"pair #{index} must be a PreferencePair (see parse_pair), got {type(pair).__name__}")


def _log_odds(verdict: Verdict) -> float:
    return verdict.yes_logprob - verdict.no_logprob


def _sigmoid(margin: float) -> float:
    # Stable both ways: exp of a large positive margin overflows.
    return 1.0 / (1.0 + math.exp(-margin)) if margin >= 0 else math.exp(margin) / (1.0 + math.exp(margin))


def _credit(choice: int, label: int) -> float:
    return 0.5 if choice == 0 else float(choice == label)
