"""Training data for a GenRM verifier: Yes/No verification examples mixed with solution generation.

The GenRM recipe fine-tunes one model on two objectives: verification (the prompt of
:mod:`genclf_harness.verifiers.format`, the answer "Yes" or "No") and, with weight λ, solution
generation (the task's question, a correct solution). Here λ is realised as a mixing ratio: for
every verification example there are λ generation examples on average, which gives the
generation loss weight λ relative to verification in expectation (each example has one loss
term of the same kind: the completion's token cross-entropy).

Verification examples come from two exactly-labelled sources:

- a generator's own samples (:func:`examples_from_candidates`): labelled by the task's exact
  answer check, so the verifier sees the mistakes it will have to judge;
- synthetic pairs (:func:`synthetic_examples`): a reference solution ("Yes") and a corruption of
  it ("No"), which cover every problem with both labels.

:func:`build_genrm_examples` balances Yes and No (down- or up-sampling the larger class with a
seeded generator), adds the generation examples and shuffles; the rows are TRL prompt-completion
examples, conversational when ``chat`` (the completion is the assistant's verdict).

Chain-of-thought verifiers (GenRM-CoT) train on the same examples with a rationale before the
verdict: :func:`with_reference_rationales` writes one from the task's reference solution of the
question and the example's own final answer (:meth:`VerificationFormat.reference_rationale`).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from genclf_harness.verifiers.genrm.bon import CandidateSet
from genclf_harness.verifiers.format import DEFAULT_FORMAT, VerificationFormat
from genclf_harness.verifiers.genrm.problems import Problem, ReasoningTask

Balance = Literal["downsample", "upsample", "none"]


@dataclass(frozen=True, slots=True)
class VerificationExample:
    """A (question, solution) pair with its exact correctness label."""

    question: str
    solution: str
    correct: bool
    source: str = "sample"
    """Where it comes from: ``sample`` (a generator's output), ``reference``, ``corruption``."""
    rationale: str | None = None
    """A verification rationale to train before the verdict (chain-of-thought examples)."""


@dataclass
class GenRMExamples:
    """The rows to train on, and what they are made of."""

    rows: list[dict[str, Any]]
    counts: dict[str, int] = field(default_factory=dict)


def examples_from_candidates(sets: Iterable[CandidateSet], *, dedupe: bool = True) -> list[VerificationExample]:
    """Verification examples from sampled candidates (labels from the exact check).

    Empty solutions are skipped; ``dedupe`` keeps one copy of a repeated (question, solution).
    """
    seen: set[tuple[str, str]] = set()
    examples = []
    for candidate_set in sets:
        for candidate in candidate_set.candidates:
            if not candidate.text.strip():
                continue
            key = (candidate_set.question, candidate.text.strip())
            if dedupe and key in seen:
                continue
            seen.add(key)
            examples.append(VerificationExample(candidate_set.question, candidate.text, candidate.correct, "sample"))
    return examples


def synthetic_examples(
    task: ReasoningTask,
    problems: Sequence[Problem],
    *,
    positives: int = 1,
    negatives: int = 1,
    seed: int = 0,
) -> list[VerificationExample]:
    """Per problem: its reference solution ``positives`` times (at most once per distinct text)
    and ``negatives`` distinct corruptions of it."""
    if task.corrupt is None and negatives:
        raise ValueError(f"task {task.name!r} has no corruption rule for synthetic negatives")
    rng = random.Random(seed)
    examples: list[VerificationExample] = []
    for problem in problems:
        if problem.solution is None:
            continue
        if positives:
            examples.append(VerificationExample(problem.question, problem.solution, True, "reference"))
        made: set[str] = set()
        for _ in range(negatives * 4):
            if len(made) >= negatives:
                break
            wrong = task.corrupt(problem, rng) if task.corrupt else None
            if wrong and wrong not in made and not task.is_correct(wrong, problem.answer):
                made.add(wrong)
                examples.append(VerificationExample(problem.question, wrong, False, "corruption"))
    return examples


def with_reference_rationales(
    task: ReasoningTask,
    examples: Sequence[VerificationExample],
    *,
    verification_format: VerificationFormat = DEFAULT_FORMAT,
) -> tuple[list[VerificationExample], int]:
    """Each example with a reference-guided rationale (:meth:`VerificationFormat.reference_rationale`):
    the task's reference solution of the question, then the example's extracted final answer.
    Examples whose question has no reference solution are left out; returns (examples, left out)."""
    out: list[VerificationExample] = []
    references: dict[str, str | None] = {}
    for example in examples:
        if example.question not in references:
            references[example.question] = task.reference_solution(example.question)
        reference = references[example.question]
        if reference is None:
            continue
        rationale = verification_format.reference_rationale(reference, task.extract(example.solution))
        out.append(replace(example, rationale=rationale))
    return out, len(examples) - len(out)


def balance_examples(examples: Sequence[VerificationExample], mode: Balance = "downsample", *,
                     seed: int = 0) -> list[VerificationExample]:
    """Equal numbers of correct and incorrect examples (``none``: unchanged)."""
    if mode == "none":
        return list(examples)
    yes = [e for e in examples if e.correct]
    no = [e for e in examples if not e.correct]
    if not yes or not no:
        raise ValueError(f"cannot balance: {len(yes)} correct and {len(no)} incorrect examples "
                         "(add synthetic examples or more samples)")
    rng = random.Random(seed)
    small, large = sorted((yes, no), key=len)
    if mode == "downsample":
        large = rng.sample(large, len(small))
    elif mode == "upsample":
        small = small + [rng.choice(small) for _ in range(len(large) - len(small))]
    else:
        raise ValueError(f"balance must be downsample, upsample or none, not {mode!r}")
    return small + large


def build_genrm_examples(
    verification: Sequence[VerificationExample],
    *,
    generation: Sequence[tuple[str, str]] = (),
    generation_weight: float = 0.0,
    task: ReasoningTask | None = None,
    balance: Balance = "downsample",
    verification_format: VerificationFormat = DEFAULT_FORMAT,
    chat: bool = True,
    seed: int = 0,
) -> GenRMExamples:
    """TRL rows: balanced verification examples plus ``generation_weight`` (λ) times as many
    solution-generation examples drawn from ``generation`` ((question, correct solution) pairs;
    rendered with ``task``'s user message when given), shuffled."""
    if generation_weight < 0:
        raise ValueError(f"generation_weight must be >= 0, got {generation_weight}")
    balanced = balance_examples(verification, balance, seed=seed)
    rng = random.Random(seed + 1)
    rows = [verification_format.training_example(e.question, e.solution, e.correct, chat=chat, rationale=e.rationale)
            for e in balanced]
    wanted = round(generation_weight * len(balanced))
    if wanted and not generation:
        raise ValueError("generation_weight > 0 needs generation examples (question, correct solution)")
    pool = list(generation)
    rng.shuffle(pool)
    drawn = [pool[i % len(pool)] for i in range(wanted)] if pool else []
    for question, solution in drawn:
        user = task.user_message(question) if task is not None else question
        rows.append(
            {"prompt": [{"role": "user", "content": user}], "completion": [{"role": "assistant", "content": solution}]}
            if chat else {"prompt": user + "\n", "completion": solution}
        )
    rng.shuffle(rows)
    counts = {
        "yes": sum(e.correct for e in balanced),
        "no": sum(not e.correct for e in balanced),
        "generation": len(drawn),
        "available_yes": sum(e.correct for e in verification),
        "available_no": sum(not e.correct for e in verification),
    }
    for source in sorted({e.source for e in balanced}):
        counts[f"from_{source}"] = sum(e.source == source for e in balanced)
    counts["with_rationale"] = sum(e.rationale is not None for e in balanced)
    return GenRMExamples(rows, counts)
