"""Reasoning tasks for best-of-N and verifier training: problems, prompts, answer checking.

A :class:`ReasoningTask` bundles what best-of-N needs of a task: its problems (train and test),
the prompt the generator answers (few-shot demonstrations as chat turns), the stop strings, the
answer extraction and the exact check, and corrupted reference solutions (synthetic negatives for
verifier training). Three are built in:

- ``gsm8k``: GSM8K from ``$GENCLF_DATA_DIR/gsm8k/{train,test}.jsonl`` (question, solution ending
  with ``#### N``, answer); answers are numbers, extracted and compared by value
  (:mod:`genclf_harness.verifiers.genrm.answers`);
- ``last_letter`` and ``word_sorting``: the paper's algorithmic tasks
  (:mod:`genclf_harness.verifiers.genrm.algorithmic`), seeded, with disjoint train and test problems.

Any reasoning folder of your own is a task too (:func:`get_task`;
:mod:`genclf_harness.verifiers.genrm.reasoning_folder`).
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from genclf_harness.data.jsonl import iter_jsonl
from genclf_harness.verifiers.genrm import algorithmic
from genclf_harness.verifiers.genrm.answers import answers_match, extract_number

Split = Literal["train", "test"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem: the question, the gold final answer and (if known) a reference solution."""

    id: str
    question: str
    answer: str
    solution: str | None = None


@dataclass(frozen=True)
class ReasoningTask:
    """A task's problems, generation prompt and exact answer check."""

    name: str
    load: Callable[[Split, int | None, int], list[Problem]]
    """``load(split, count, seed)``: the first ``count`` problems of a split (``None``: all)."""
    extract: Callable[[str], str | None]
    """A solution's final answer, normalised (None: it gives none)."""
    demonstrations: tuple[tuple[str, str], ...] = ()
    """Few-shot (question, solution) turns put before the question."""
    instruction: str = ""
    """Text put before the question in the user turn."""
    stop: tuple[str, ...] = ()
    corrupt: Callable[[Problem, random.Random], str | None] | None = field(default=None, repr=False)
    """A wrong solution made from the reference one (None when the task has none)."""
    max_new_tokens: int = 256
    solve: Callable[[str], str | None] | None = field(default=None, repr=False)
    """The reference solution of any question of the task (None when unknown): what the
    reference-guided rationales of a chain-of-thought verifier are built from."""

    def problems(self, split: Split, count: int | None = None, *, seed: int = 0) -> list[Problem]:
        return self.load(split, count, seed)

    def user_message(self, question: str) -> str:
        return f"{self.instruction}{question}"

    def prompt(self, tokenizer: object, question: str) -> str:
        """The generation prompt (chat template when the tokenizer has one)."""
        from genclf_harness.backends.generation import chat_prompt

        demos = [(self.user_message(q), a) for q, a in self.demonstrations]
        return chat_prompt(tokenizer, self.user_message(question), demonstrations=demos)

    def is_correct(self, solution: str, gold: str) -> bool:
        return answers_match(self.extract(solution), gold)

    def reference_solution(self, question: str) -> str | None:
        """A correct solution of ``question`` in the generator's format (None when the task cannot tell)."""
        return self.solve(question) if self.solve is not None else None


# -- GSM8K ----------------------------------------------------------------------------------------

_CALCULATOR = re.compile(r"<<[^<>]*>>")
_FINAL = re.compile(r"\n?####\s*(.+?)\s*$")


def gsm8k_reference(solution: str) -> str:
    """A GSM8K solution in the generator's format: calculator annotations removed, and the final
    ``#### N`` line written as "The answer is N."."""
    text = _CALCULATOR.sub("", solution).strip()
    match = _FINAL.search(text)
    if match:
        text = text[: match.start()].rstrip() + f"\nThe answer is {match.group(1)}."
    return text


def load_gsm8k(split: Split, count: int | None = None, seed: int = 0, data_dir: str | None = None) -> list[Problem]:
    """GSM8K problems from the local data folder, in file order (``seed`` is unused: no sampling)."""
    from genclf_harness.data.loader import resolve_data_root
    from genclf_harness.data.specs import DataError

    root = resolve_data_root(data_dir)
    if root is None:
        raise DataError("GSM8K is read from $GENCLF_DATA_DIR/gsm8k/<split>.jsonl; set GENCLF_DATA_DIR")
    path = Path(root) / "gsm8k" / f"{split}.jsonl"
    if not path.is_file():
        raise DataError(f"GSM8K split {split!r} not found: {path} does not exist")
    problems: list[Problem] = []
    for line_no, row in iter_jsonl(path, DataError):
        if count is not None and len(problems) >= count:
            break
        where = f"{path}:{line_no}"
        try:
            question, solution = row["question"], row["solution"]
        except (KeyError, TypeError) as err:
            raise DataError(f"{where}: expected JSON with question and solution ({err})") from None
        answer = extract_number(str(row.get("answer", "")) or solution)
        if answer is None:
            raise DataError(f"{where}: no numeric answer in {row.get('answer')!r}")
        problems.append(Problem(str(row.get("id", f"gsm8k-{split}-{line_no}")), question, answer,
                                gsm8k_reference(solution)))
    return problems


def corrupt_gsm8k(problem: Problem, rng: random.Random) -> str | None:
    """The reference solution with its final result changed consistently (last line and answer)."""
    if problem.solution is None:
        return None
    gold = problem.answer
    try:
        value = int(gold)
    except ValueError:
        return None
    delta = rng.choice([-10, -2, -1, 1, 2, 10, value if value else 3])
    wrong = str(value + delta)
    lines = problem.solution.split("\n")
    # Replace the gold number in the last two lines (the final computation and "The answer is").
    for index in range(max(0, len(lines) - 2), len(lines)):
        lines[index] = re.sub(rf"(?<![\d.]){re.escape(gold)}(?![\d])", wrong, lines[index].replace(",", ""))
    text = "\n".join(lines)
    return text if extract_number(text) == wrong else None


_GSM8K_DEMOS = (
    (
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
        "How many clips did Natalia sell altogether in April and May?",
        "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May.\n"
        "The answer is 72.",
    ),
)


@functools.lru_cache(maxsize=2)
def _gsm8k_references(data_dir: str) -> dict[str, str]:
    from genclf_harness.data.specs import DataError

    references: dict[str, str] = {}
    for split in ("train", "test"):
        try:
            problems = load_gsm8k(split, data_dir=data_dir)
        except DataError:
            continue
        references.update((p.question.strip(), p.solution) for p in problems if p.solution)
    return references


def gsm8k_solution(question: str) -> str | None:
    """The reference solution of a GSM8K question found in the local data folder (None if absent)."""
    from genclf_harness.data.loader import resolve_data_root

    root = resolve_data_root(None)
    return _gsm8k_references(str(root)).get(question.strip()) if root is not None else None


GSM8K = ReasoningTask(
    name="gsm8k",
    load=lambda split, count, seed: load_gsm8k(split, count, seed),
    extract=extract_number,
    demonstrations=_GSM8K_DEMOS,
    instruction="Solve the problem step by step and end with \"The answer is N.\"\n\n",
    corrupt=corrupt_gsm8k,
    max_new_tokens=256,
    solve=gsm8k_solution,
)

# -- algorithmic tasks ----------------------------------------------------------------------------


def _algorithmic(task: algorithmic.AlgorithmicTaskName, demo_words: Sequence[Sequence[str]],
                 num_words: tuple[int, int], max_new_tokens: int) -> ReasoningTask:
    def load(split: Split, count: int | None, seed: int) -> list[Problem]:
        if count is None:
            raise ValueError(f"{task}: give the number of problems to generate")
        return [
            Problem(p.id, p.question, p.answer, algorithmic.reference_solution(task, p.words))
            for p in algorithmic.make_problems(task, split, count, seed=seed, num_words=num_words)
        ]

    def corrupt(problem: Problem, rng: random.Random) -> str | None:
        return algorithmic.corrupt_solution(task, words_of(task, problem.question), rng)

    def solve(question: str) -> str | None:
        words = words_of(task, question)
        return algorithmic.reference_solution(task, words) if words else None

    return ReasoningTask(
        name=task,
        load=load,
        extract=lambda text: algorithmic.extract_answer(task, text),
        demonstrations=tuple(
            (algorithmic.question_text(task, words), algorithmic.reference_solution(task, words)) for words in demo_words
        ),
        stop=("\n",),  # a solution is one line; what follows a newline is rambling
        corrupt=corrupt,
        max_new_tokens=max_new_tokens,
        solve=solve,
    )


def words_of(task: algorithmic.AlgorithmicTaskName, question: str) -> list[str]:
    """The words of an algorithmic question (the inverse of ``question_text``)."""
    if task == "last_letter":
        match = re.search(r'words in "([^"]*)"', question)
        return match.group(1).split() if match else []
    match = re.search(r"alphabetically: (.*)\.$", question.strip())
    return [w.strip() for w in match.group(1).split(",")] if match else []


# Demonstration words are outside the vocabulary, so no demonstration is a test problem.
LAST_LETTER = _algorithmic("last_letter", (("grape",), ("bread", "cloud"), ("chair",)), (1, 2), 40)
WORD_SORTING = _algorithmic("word_sorting", (("plum", "hall", "crow"), ("lime", "bench", "dust")), (3, 3), 72)

TASKS: dict[str, ReasoningTask] = {task.name: task for task in (GSM8K, LAST_LETTER, WORD_SORTING)}


def get_task(name: str, data_dir: str | None = None) -> ReasoningTask:
    """A built-in reasoning task, or the reasoning folder ``name`` under the data root
    (:mod:`genclf_harness.data.reasoning_sets`: ``meta.json`` with ``"kind": "reasoning"``)."""
    if name in TASKS:
        return TASKS[name]
    from genclf_harness.data.reasoning_sets import is_reasoning_set, list_reasoning_sets
    from genclf_harness.data.root import resolve_data_root

    root = resolve_data_root(data_dir)
    if root is not None and (root / name).is_dir() and is_reasoning_set(root / name):
        from genclf_harness.verifiers.genrm.reasoning_folder import folder_task

        return folder_task(name, data_dir)
    local = [n for n in list_reasoning_sets(data_dir) if n not in TASKS]
    raise ValueError(f"unknown reasoning task {name!r}; built in: {', '.join(TASKS)}; reasoning folders under the "
                     f"data root: {', '.join(local) or 'none'} (a folder needs a meta.json with \"kind\": \"reasoning\")")
