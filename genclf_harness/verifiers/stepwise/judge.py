"""Stepwise judges on any backend, and chunk-reset search (StepWiser).

:class:`StepJudge` judges each step of a solution given the problem and the earlier steps, in the
format of :mod:`genclf_harness.verifiers.stepwise.steps`, in one of two ways:

- **P(Yes)** (:meth:`StepJudge.judge`): every step prompt becomes one ``LabelPrompt`` with the
  Yes/No continuations, all steps of all solutions go to the ``Scorer`` in one call, and a step's
  score is P("Yes") normalised over Yes/No (as GenRM's);
- **generated verdict** (:meth:`StepJudge.judge_generated`): the judge writes an answer ending in
  ``Verdict: Yes/No``, optionally after reasoning (StepWiser's judge), on any ``Generator``; the
  verdict is parsed (:func:`~genclf_harness.verifiers.stepwise.steps.parse_verdict`). A step is then worth
  1.0 (Yes) or 0.0 (No); an unreadable verdict counts as ``unparsed_score`` (0.5 by default, so
  at the default threshold of 0.5 it is *not* a rejection: no evidence of an error).

The predicted first wrong step is the first step whose score is below ``threshold`` (-1 if none).

:func:`chunk_reset_search` generates solutions chunk by chunk (a chunk is the text up to the next
blank line) with a policy on any ``Generator``; each new chunk is judged given the accepted ones,
and a rejected chunk is re-sampled up to ``max_resets`` times (StepWiser's chunk-reset reasoning).

    judge = StepJudge.from_pretrained("default")
    judge.judge(["What is 2+3?"], [["2+3 = 6.", "The answer is 6."]])[0].first_error   # e.g. 0
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from genclf_harness.backends.generation import Generator, chat_prompt, has_chat_template
from genclf_harness.backends.protocol import LabelPrompt, Scorer
from genclf_harness.verifiers.genrm.verifier import p_yes as _p_yes
from genclf_harness.verifiers.stepwise.steps import (
    DEFAULT_STEP_FORMAT,
    StepJudgeFormat,
    check_steps,
    first_error,
    parse_verdict,
)


@dataclass(frozen=True, slots=True)
class StepJudgement:
    """A judged solution: one score per step and the predicted first wrong step (-1: none)."""

    scores: tuple[float, ...]
    first_error: int
    verdicts: tuple[bool | None, ...] | None = None
    """Generated mode: each step's parsed verdict (None: unreadable)."""
    texts: tuple[str, ...] | None = None
    """Generated mode: each step's generated judgement."""


class StepJudge:
    """A stepwise judge on a ``Scorer`` (P(Yes)) and/or a ``Generator`` (generated verdicts).

    Args:
        scorer: any ``Scorer`` (``HFScorer``, the vLLM backend); ``None`` for a generation-only judge.
        tokenizer: renders the chat template; default: the scorer's or generator's ``tokenizer``.
        generator: for generated verdicts; default: the scorer itself if it can generate.
        format: the step-judge prompt (:class:`~genclf_harness.verifiers.stepwise.steps.StepJudgeFormat`).
        chat: use the chat template (``None``: when the tokenizer has one).
        threshold: a step is judged wrong when its score is below this.
    """

    def __init__(
        self,
        scorer: Scorer | None = None,
        *,
        tokenizer: Any = None,
        generator: Generator | None = None,
        format: StepJudgeFormat = DEFAULT_STEP_FORMAT,
        chat: bool | None = None,
        threshold: float = 0.5,
    ) -> None:
        if generator is None and scorer is not None and isinstance(scorer, Generator):
            generator = scorer
        if scorer is None and generator is None:
            raise ValueError("StepJudge needs a scorer (P(Yes) mode) or a generator (generated verdicts)")
        self.scorer = scorer
        self.generator = generator
        self.tokenizer = tokenizer if tokenizer is not None else getattr(scorer, "tokenizer", None) or getattr(
            generator, "tokenizer", None)
        if self.tokenizer is None:
            raise ValueError("StepJudge needs a tokenizer (to render the chat template): pass tokenizer=")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.format = format
        self.chat = has_chat_template(self.tokenizer) if chat is None else chat
        self.threshold = threshold

    @classmethod
    def from_pretrained(cls, pretrained: str | None = None, *, dtype: str = "float32", device: str | None = None,
                        autocast_dtype: Any = None, max_batch_tokens: int = 8192, **kwargs: Any) -> StepJudge:
        """A transformers judge: a model folder, a LoRA adapter folder (merged), a hub id or ``"default"``."""
        from genclf_harness.backends.generation import HFGenerator
        from genclf_harness.backends.scorer import HFScorer
        from genclf_harness.verifiers.genrm.verifier import load_verifier_model

        model, tokenizer = load_verifier_model(pretrained, dtype=dtype, device=device)
        scorer = HFScorer(model, tokenizer, autocast_dtype=autocast_dtype, max_batch_tokens=max_batch_tokens)
        return cls(scorer, tokenizer=tokenizer, generator=HFGenerator.from_scorer(scorer), **kwargs)

    # -- prompts ------------------------------------------------------------------------------------

    def user_message(self, problem: str, steps: Sequence[str], index: int, *, ask: str | None = None) -> str:
        return self.format.user_message(problem, steps, index, ask=ask)

    def render(self, user: str) -> str:
        """A user message as the judge's prompt (chat template, or the plain text and a newline)."""
        return chat_prompt(self.tokenizer, user) if self.chat else user

    def label_prompt(self, problem: str, steps: Sequence[str], index: int) -> LabelPrompt:
        """The Yes/No prompt judging ``steps[index]`` after ``steps[:index]``."""
        return LabelPrompt(self.render(self.user_message(problem, steps, index)),
                           self.format.answers(after_marker=self.chat))

    def generation_prompt(self, problem: str, steps: Sequence[str], index: int, *, reasoning: bool = True) -> str:
        ask = self.format.reasoning_instruction if reasoning else self.format.verdict_instruction
        rendered = self.render(self.user_message(problem, steps, index, ask=ask))
        return rendered if self.chat else rendered + "\n"

    # -- P(Yes) ------------------------------------------------------------------------------------

    def step_scores(self, problems: Sequence[str], solutions: Sequence[Sequence[str]], *,
                    show_progress: bool = False) -> list[tuple[float, ...]]:
        """P(Yes) of every step of every solution (one scorer call for all of them)."""
        if self.scorer is None:
            raise ValueError("P(Yes) judging needs a scorer; this judge has only a generator")
        solutions = _check_solutions(problems, solutions)
        prompts = [self.label_prompt(p, s, i) for p, s in zip(problems, solutions) for i in range(len(s))]
        scored = self.scorer.score(prompts, show_progress=show_progress) if prompts else []
        values = [_p_yes(s).p_yes for s in scored]
        out, start = [], 0
        for steps in solutions:
            out.append(tuple(values[start:start + len(steps)]))
            start += len(steps)
        return out

    def judge(self, problems: Sequence[str], solutions: Sequence[Sequence[str]], *,
              threshold: float | None = None, show_progress: bool = False) -> list[StepJudgement]:
        """P(Yes) per step and the predicted first wrong step, for each (problem, steps)."""
        cut = self.threshold if threshold is None else threshold
        return [StepJudgement(s, first_error(s, cut))
                for s in self.step_scores(problems, solutions, show_progress=show_progress)]

    # -- generated verdicts --------------------------------------------------------------------------

    def judge_generated(
        self,
        problems: Sequence[str],
        solutions: Sequence[Sequence[str]],
        *,
        reasoning: bool = True,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        unparsed_score: float = 0.5,
        threshold: float | None = None,
        show_progress: bool = False,
    ) -> list[StepJudgement]:
        """Generate a judgement per step (reasoning first when ``reasoning``), parse its verdict."""
        if self.generator is None:
            raise ValueError("generated verdicts need a generator (a backend with generate())")
        solutions = _check_solutions(problems, solutions)
        prompts = [self.generation_prompt(p, s, i, reasoning=reasoning)
                   for p, s in zip(problems, solutions) for i in range(len(s))]
        texts = [samples[0] for samples in self.generator.generate(
            prompts, n=1, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
            show_progress=show_progress)] if prompts else []
        cut = self.threshold if threshold is None else threshold
        out, start = [], 0
        for steps in solutions:
            chunk = texts[start:start + len(steps)]
            start += len(steps)
            verdicts = tuple(parse_verdict(t) for t in chunk)
            scores = tuple(unparsed_score if v is None else float(v) for v in verdicts)
            out.append(StepJudgement(scores, first_error(scores, cut), verdicts, tuple(chunk)))
        return out


def _check_solutions(problems: Sequence[str], solutions: Sequence[Sequence[str]]) -> list[list[str]]:
    if isinstance(problems, str):
        raise TypeError("problems must be a sequence of strings (wrap a single problem in a list)")
    if len(problems) != len(solutions):
        raise ValueError(f"{len(problems)} problems but {len(solutions)} solutions: pass one list of steps per problem")
    return [check_steps(steps, f"solutions[{n}]") for n, steps in enumerate(solutions)]


# -- chunk-reset search ------------------------------------------------------------------------------


CHUNK_SEPARATOR = "\n\n"


@dataclass(slots=True)
class SearchResult:
    """One problem's chunk-reset search: the accepted chunks and what it took."""

    problem: str
    chunks: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    """The judge's score of each kept chunk."""
    attempts: list[int] = field(default_factory=list)
    """Samples drawn for each kept chunk (1 = accepted at once; 1 + max_resets = all rejected)."""
    rejected: int = 0
    """Chunks rejected over the whole search."""
    finished: bool = False
    """Whether the policy ended the solution (a continuation with no further chunk separator)."""

    @property
    def text(self) -> str:
        return CHUNK_SEPARATOR.join(self.chunks)


def split_chunk(continuation: str) -> tuple[str, bool]:
    """(the next chunk, whether it is the last one): the text up to the first blank line; with no
    blank line in the continuation the whole text is the last chunk."""
    stripped = continuation.lstrip("\n")
    at = stripped.find(CHUNK_SEPARATOR)
    if at < 0:
        return stripped.strip(), True
    rest = stripped[at:].strip()
    return stripped[:at].strip(), not rest


def chunk_reset_search(
    policy: Generator,
    judge: StepJudge,
    problems: Sequence[str],
    policy_prompts: Sequence[str],
    *,
    max_chunks: int = 12,
    max_resets: int = 5,
    chunk_tokens: int = 128,
    temperature: float = 0.7,
    top_p: float = 1.0,
    seed: int = 0,
    mode: Literal["p_yes", "generated"] = "p_yes",
    judge_kwargs: dict[str, Any] | None = None,
    on_round: Callable[[int, int], None] | None = None,
) -> list[SearchResult]:
    """Generate each problem's solution chunk by chunk; re-sample a rejected chunk up to ``max_resets`` times.

    ``policy_prompts[i]`` is the rendered prompt the policy answers problem ``i`` after (e.g. a
    task's generation prompt); the accepted chunks, joined by blank lines, are appended to it. In
    each round every unfinished problem draws one candidate chunk (one batched ``generate`` call),
    all candidates are judged together given their accepted chunks, accepted ones are kept, and
    rejected ones are drawn again next round. After ``max_resets`` rejections the best-scoring of
    the candidates is kept, so the search always advances. Works with any ``Generator`` policy and
    any judge backend. ``on_round(round, active)`` is told the progress.
    """
    if len(problems) != len(policy_prompts):
        raise ValueError(f"{len(problems)} problems but {len(policy_prompts)} policy prompts")
    if max_resets < 0 or max_chunks < 1:
        raise ValueError(f"max_resets must be >= 0 and max_chunks >= 1, got {max_resets} and {max_chunks}")
    judge_kwargs = dict(judge_kwargs or {})
    results = [SearchResult(p) for p in problems]
    pending: dict[int, list[tuple[str, float, bool]]] = {i: [] for i in range(len(problems))}  # candidates so far
    rng = random.Random(seed)
    round_number = 0
    while pending:
        round_number += 1
        active = sorted(pending)
        if on_round is not None:
            on_round(round_number, len(active))
        prompts = []
        for i in active:
            accepted = results[i].text
            prompts.append(policy_prompts[i] + (accepted + CHUNK_SEPARATOR if accepted else ""))
        samples = policy.generate(prompts, n=1, max_new_tokens=chunk_tokens, temperature=temperature, top_p=top_p,
                                  seed=rng.randrange(2**31))
        candidates = [split_chunk(s[0]) for s in samples]
        judged = [(i, chunk, last) for i, (chunk, last) in zip(active, candidates)]
        nonempty = [(i, chunk, last) for i, chunk, last in judged if chunk]
        steps_lists = [results[i].chunks + [chunk] for i, chunk, _ in nonempty]
        problems_here = [problems[i] for i, _, _ in nonempty]
        if mode == "p_yes":
            judgements = judge.judge(problems_here, steps_lists) if nonempty else []
        else:
            judgements = judge.judge_generated(problems_here, steps_lists, **judge_kwargs) if nonempty else []
        score_of = {i: j.scores[-1] for (i, _, _), j in zip(nonempty, judgements)}
        for i, chunk, last in judged:
            result = results[i]
            if not chunk:  # the policy stopped: nothing more to add
                result.finished = True
                del pending[i]
                continue
            score = score_of[i]
            pending[i].append((chunk, score, last))
            attempts = len(pending[i])
            if score >= judge.threshold or attempts > max_resets:
                keep_chunk, keep_score, keep_last = (chunk, score, last) if score >= judge.threshold else max(
                    pending[i], key=lambda c: c[1])
                result.rejected += attempts - (1 if score >= judge.threshold else 0)
                result.chunks.append(keep_chunk)
                result.scores.append(keep_score)
                result.attempts.append(attempts)
                pending[i] = []
                if keep_last or len(result.chunks) >= max_chunks:
                    result.finished = keep_last
                    del pending[i]
    return results
