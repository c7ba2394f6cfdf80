"""Best-of-N: sample candidate solutions, store them, and select one by several rules.

Candidates file (JSON Lines, one problem a line)::

    {"id": "last_letter-test-0-0", "task": "last_letter", "question": "...", "gold": "eg",
     "sampling": {"generator": "...", "n": 8, "max_new_tokens": 96, "temperature": 0.8, "top_p": 1.0,
                  "seed": 0, "stop": ["\\n\\n"], "chunk": 0, "prompt": "chat, 2 demonstrations"},
     "candidates": [{"text": "...", "answer": "eg", "correct": true, "score": 0.97}, ...],
     "verifier": "runs/genrm_last_letter"}

``answer`` is the extracted final answer (null when the text gives none), ``correct`` the exact
check against ``gold``; ``score`` (the verifier's P("Yes")) and ``verifier`` appear once the file
has been scored. :func:`sample_candidates` appends problems in fixed chunks, each seeded with
``seed + chunk index``, so an interrupted run resumes where it stopped (a half-written last line
is dropped) and gives the same samples as an uninterrupted one; resuming with other sampling
settings is an error.

Selection rules (all on the first ``n`` candidates of a problem):

- ``first_sample``: the first candidate (what plain sampling gives);
- ``majority``: the most frequent extracted answer (self-consistency); unparseable candidates do
  not vote; ties go to the answer seen first;
- ``best_of_n``: the candidate with the highest verifier score (ties: the first);
- ``weighted_vote``: the answer whose candidates' verifier scores sum highest (ties: seen first);
- ``pass_at_n``: whether any candidate is correct (the ceiling of every rule above).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genclf_harness.backends.generation import Generator, SamplingSettings
from genclf_harness.verifiers.genrm.problems import Problem, ReasoningTask

logger = logging.getLogger(__name__)

SELECTION_RULES: tuple[str, ...] = ("first_sample", "majority", "best_of_n", "weighted_vote", "pass_at_n")
VERIFIER_RULES: frozenset[str] = frozenset({"best_of_n", "weighted_vote"})


class CandidatesFileError(ValueError):
    """A candidates file is malformed or does not match the requested run."""


@dataclass(slots=True)
class Candidate:
    text: str
    answer: str | None
    correct: bool
    score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text, "answer": self.answer, "correct": self.correct}
        if self.score is not None:
            out["score"] = self.score
        return out


@dataclass(slots=True)
class CandidateSet:
    """One problem's candidates (see the module docstring for the JSON form)."""

    id: str
    question: str
    gold: str
    candidates: list[Candidate]
    task: str = ""
    sampling: dict[str, Any] = field(default_factory=dict)
    verifier: str | None = None

    @property
    def scored(self) -> bool:
        return bool(self.candidates) and all(c.score is not None for c in self.candidates)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "task": self.task,
            "question": self.question,
            "gold": self.gold,
            "sampling": self.sampling,
            "candidates": [c.to_dict() for c in self.candidates],
        }
        if self.verifier is not None:
            out["verifier"] = self.verifier
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "<candidates>") -> CandidateSet:
        try:
            candidates = [
                Candidate(str(c["text"]), None if c.get("answer") is None else str(c["answer"]), bool(c["correct"]),
                          None if c.get("score") is None else float(c["score"]))
                for c in data["candidates"]
            ]
            return cls(str(data["id"]), str(data["question"]), str(data["gold"]), candidates,
                       str(data.get("task", "")), dict(data.get("sampling") or {}), data.get("verifier"))
        except (KeyError, TypeError, ValueError) as err:
            raise CandidatesFileError(
                f"{where}: a candidate set needs id, question, gold and candidates "
                f"(each with text, answer, correct): {err!r}"
            ) from None


# -- reading and writing ------------------------------------------------------------------------


def read_candidates(path: str | os.PathLike[str]) -> list[CandidateSet]:
    """Every candidate set of a file (a truncated last line, from an interrupted run, is skipped)."""
    path = Path(path)
    if not path.is_file():
        raise CandidatesFileError(f"candidates file {path} does not exist")
    sets, _ = _read_complete(path)
    return sets


def _read_complete(path: Path) -> tuple[list[CandidateSet], int]:
    """(sets, byte length of the complete lines)."""
    sets: list[CandidateSet] = []
    good = 0
    with open(path, "rb") as handle:
        data = handle.read()
    lines = data.split(b"\n")
    for line_no, line in enumerate(lines, start=1):
        is_last = line_no == len(lines)
        if not line.strip():
            good += len(line) + (0 if is_last else 1)
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if is_last:  # a write cut short: resume drops it
                logger.warning("%s: dropping the incomplete last line", path)
                break
            raise CandidatesFileError(f"{path}:{line_no}: not valid JSON ({err.msg})") from None
        sets.append(CandidateSet.from_dict(record, f"{path}:{line_no}"))
        good += len(line) + (0 if is_last else 1)
    return sets, good


def write_candidates(path: str | os.PathLike[str], sets: Iterable[CandidateSet]) -> None:
    """Write a whole candidates file atomically (a temporary sibling renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.tmp")
    with open(scratch, "w", encoding="utf-8") as handle:
        for candidate_set in sets:
            handle.write(json.dumps(candidate_set.to_dict(), ensure_ascii=False) + "\n")
    os.replace(scratch, path)


# -- sampling -------------------------------------------------------------------------------------


def sample_candidates(
    generator: Generator,
    task: ReasoningTask,
    problems: Sequence[Problem],
    path: str | os.PathLike[str],
    settings: SamplingSettings,
    *,
    tokenizer: Any = None,
    generator_name: str = "",
    chunk_size: int = 16,
    show_progress: bool = True,
) -> list[CandidateSet]:
    """Sample ``settings.n`` solutions per problem and append them to ``path`` (resumable).

    Problems already in the file (same sampling settings) are kept; the others are sampled in
    chunks of ``chunk_size`` problems, chunk ``i`` with seed ``settings.seed + i``. Returns the
    candidate sets of ``problems``, in their order.
    """
    from tqdm.auto import tqdm

    tokenizer = tokenizer if tokenizer is not None else getattr(generator, "tokenizer", None)
    if tokenizer is None:
        raise ValueError("sample_candidates needs the generator's tokenizer (for the prompt template): pass tokenizer=")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        raise ValueError("problem ids must be unique")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = {**settings.to_dict(), "generator": generator_name, "task": task.name,
            "prompt": f"{'chat' if getattr(tokenizer, 'chat_template', None) else 'text'}, "
                      f"{len(task.demonstrations)} demonstrations"}
    done: dict[str, CandidateSet] = {}
    if path.exists():
        existing, good = _read_complete(path)
        if good < path.stat().st_size:
            with open(path, "r+b") as handle:
                handle.truncate(good)
        for candidate_set in existing:
            recorded = {k: v for k, v in candidate_set.sampling.items() if k != "chunk"}
            if recorded != base:
                raise CandidatesFileError(
                    f"{path}: problem {candidate_set.id} was sampled with {recorded}, not {base}; "
                    "use another file or the same settings"
                )
            done[candidate_set.id] = candidate_set
        if done:
            logger.info("%s: resuming, %d of %d problems already sampled", path, len(set(ids) & set(done)), len(ids))
    chunks = [list(range(start, min(start + chunk_size, len(problems)))) for start in range(0, len(problems), chunk_size)]
    todo = [(i, [j for j in chunk if problems[j].id not in done]) for i, chunk in enumerate(chunks)]
    todo = [(i, chunk) for i, chunk in todo if chunk]
    with tqdm(total=sum(len(c) for _, c in todo), desc=f"Sampling {task.name}", disable=not show_progress) as bar:
        for chunk_index, chunk in todo:
            prompts = [task.prompt(tokenizer, problems[j].question) for j in chunk]
            seed = None if settings.seed is None else settings.seed + chunk_index
            texts = generator.generate(
                prompts, n=settings.n, max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                top_p=settings.top_p, seed=seed, stop=settings.stop,
            )
            new = [
                CandidateSet(
                    id=problems[j].id,
                    question=problems[j].question,
                    gold=problems[j].answer,
                    candidates=[_candidate(task, text, problems[j].answer) for text in samples],
                    task=task.name,
                    sampling={**base, "chunk": chunk_index},
                )
                for j, samples in zip(chunk, texts, strict=True)
            ]
            payload = "".join(json.dumps(s.to_dict(), ensure_ascii=False) + "\n" for s in new)
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            done.update((s.id, s) for s in new)
            bar.update(len(chunk))
    return [done[i] for i in ids]


def _candidate(task: ReasoningTask, text: str, gold: str) -> Candidate:
    from genclf_harness.verifiers.genrm.answers import answers_match

    answer = task.extract(text)
    return Candidate(text=text, answer=answer, correct=answers_match(answer, gold))


# -- scoring --------------------------------------------------------------------------------------


def score_candidates(
    verifier: Any,
    sets: Sequence[CandidateSet],
    *,
    verifier_name: str = "",
    cot: int | None = None,
    show_progress: bool = True,
    **cot_kwargs: Any,
) -> list[CandidateSet]:
    """Fill in every candidate's verifier score (a ``GenRM``): the way the verifier scores
    (``cot=None``: ``GenRM.verify``), directly (``cot=0``) or with k rationales (``cot=k``, GenRM-CoT)."""
    questions = [s.question for s in sets for _ in s.candidates]
    solutions = [c.text for s in sets for c in s.candidates]
    if cot is None:
        scores = verifier.verify(questions, solutions, show_progress=show_progress)
    elif cot:
        scores = [v.p_yes for v in verifier.score_cot(questions, solutions, k=cot, show_progress=show_progress,
                                                        **cot_kwargs)]
    else:
        scores = verifier.score(questions, solutions, show_progress=show_progress)
    it = iter(scores)
    for candidate_set in sets:
        for candidate in candidate_set.candidates:
            candidate.score = float(next(it))
        candidate_set.verifier = verifier_name or candidate_set.verifier
    return list(sets)


# -- selection ------------------------------------------------------------------------------------


def first_sample(candidates: Sequence[Candidate]) -> Candidate | None:
    return candidates[0] if candidates else None


def majority_vote(candidates: Sequence[Candidate]) -> str | None:
    """The most frequent answer (ties: the one seen first); None if no candidate has one."""
    return _vote(candidates, lambda c: 1.0)


def weighted_vote(candidates: Sequence[Candidate]) -> str | None:
    """The answer with the highest sum of verifier scores (ties: the one seen first)."""
    _require_scores(candidates)
    return _vote(candidates, lambda c: float(c.score))  # type: ignore[arg-type]


def best_of_n(candidates: Sequence[Candidate]) -> Candidate | None:
    """The candidate with the highest verifier score (ties: the first)."""
    _require_scores(candidates)
    if not candidates:
        return None
    return max(enumerate(candidates), key=lambda pair: (pair[1].score, -pair[0]))[1]


def _vote(candidates: Sequence[Candidate], weight: Any) -> str | None:
    totals: dict[str, float] = {}
    for candidate in candidates:
        if candidate.answer is not None:
            totals[candidate.answer] = totals.get(candidate.answer, 0.0) + weight(candidate)
    if not totals:
        return None
    # dicts keep insertion order, and max keeps the first of equal keys: ties go to the first seen.
    return max(totals, key=totals.__getitem__)


def _require_scores(candidates: Sequence[Candidate]) -> None:
    if any(c.score is None for c in candidates):
        raise ValueError("verifier-based selection needs every candidate's score: run score_candidates first")


def _answer_correct(candidates: Sequence[Candidate], answer: str | None) -> bool:
    return answer is not None and any(c.correct for c in candidates if c.answer == answer)


def select(candidates: Sequence[Candidate], rule: str) -> bool:
    """Whether ``rule`` picks a correct solution from ``candidates``."""
    if rule == "first_sample":
        chosen = first_sample(candidates)
        return bool(chosen and chosen.correct)
    if rule == "majority":
        return _answer_correct(candidates, majority_vote(candidates))
    if rule == "best_of_n":
        chosen = best_of_n(candidates)
        return bool(chosen and chosen.correct)
    if rule == "weighted_vote":
        return _answer_correct(candidates, weighted_vote(candidates))
    if rule == "pass_at_n":
        return any(c.correct for c in candidates)
    raise ValueError(f"unknown selection rule {rule!r}; choose from {', '.join(SELECTION_RULES)}")


def evaluate_selection(
    sets: Sequence[CandidateSet], *, n: int | None = None, rules: Sequence[str] | None = None
) -> dict[str, float]:
    """Accuracy of each selection rule over the problems, using each problem's first ``n`` candidates.

    Rules that need verifier scores are left out when the candidates have none.
    """
    if not sets:
        raise ValueError("no candidate sets to evaluate")
    if rules is None:
        rules = [r for r in SELECTION_RULES if r not in VERIFIER_RULES or all(s.scored for s in sets)]
    results: dict[str, float] = {}
    for rule in rules:
        hits = [select(s.candidates[:n] if n else s.candidates, rule) for s in sets]
        results[rule] = sum(hits) / len(hits)
    return results


def gap_closed(first: float, selected: float, ceiling: float) -> float:
    """The share of the gap between first-sample accuracy and pass@N that a rule closes."""
    return (selected - first) / (ceiling - first) if ceiling > first else math.nan


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))
