"""A reasoning folder of your own as a :class:`~genclf_harness.verifiers.genrm.problems.ReasoningTask`.

The folder is read by :mod:`genclf_harness.data.reasoning_sets`; this module gives it what
best-of-N, GenRM training and the verifier tasks need, by the folder's ``answer_type``:

- how a generated solution's final answer is read: ``number`` as GSM8K's (the ``#### N`` line,
  ``\\boxed{}``, "The answer is", the last number), ``text`` the words after the last "The answer
  is", ``regex`` the last match of ``answer_pattern`` (its first group if it has one), ``choices``
  the choice after the last "The answer is" (else in ``\\boxed{}``, else the last choice standing
  alone in the text);
- the gold answer in the same form, checked when the rows are read (a gold answer the rule cannot
  read is an error naming file, line and field);
- the generation prompt: the folder's ``instruction`` (default: solve step by step and end with
  "The answer is ..."), and the first training row with a solution as a demonstration;
- reference solutions (``#### N`` lines written as "The answer is N.", GSM8K's calculator marks
  removed) for the reference-guided rationales, and a corrupted one (the final number changed,
  or another choice) as a synthetic negative where the rule allows one.

With GSM8K's own files and ``answer_type: number`` this gives exactly the built-in ``gsm8k`` task's
problems, prompt, answers and corruptions (tested).
"""

from __future__ import annotations

import functools
import os
import random
import re
from pathlib import Path

from genclf_harness.data.reasoning_sets import ReasoningSetSpec, load_reasoning_rows, reasoning_set_spec
from genclf_harness.data.specs import DataError
from genclf_harness.verifiers.genrm.answers import extract_boxed, extract_final_text, extract_number, normalise_text
from genclf_harness.verifiers.genrm.problems import Problem, ReasoningTask, Split, corrupt_gsm8k, gsm8k_reference

DEFAULT_INSTRUCTIONS = {
    "number": "Solve the problem step by step and end with \"The answer is N.\"\n\n",
    "text": "Solve the problem step by step and end with \"The answer is <answer>.\"\n\n",
    "regex": "Solve the problem step by step and end with \"The answer is <answer>.\"\n\n",
    "choices": "Solve the problem step by step and end with \"The answer is X.\", X one of {choices}.\n\n",
}


def folder_task(name: str, data_dir: str | os.PathLike[str] | None = None) -> ReasoningTask:
    """The reasoning task of the folder ``name`` (cached while its files are unchanged)."""
    folder = Path(reasoning_set_spec(name, data_dir).folder)
    stamp = tuple(sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()))
    return _task(str(folder), stamp)


@functools.lru_cache(maxsize=16)
def _task(folder: str, _stamp: tuple) -> ReasoningTask:
    spec = reasoning_set_spec(Path(folder).name, Path(folder).parent)
    extract = _extractor(spec)
    problems = {split: _problems(spec, split) for split in spec.splits}
    references = {p.question.strip(): p.solution for split in spec.splits for p in problems[split] if p.solution}
    demo = next((p for p in problems.get(spec.train_split or "", []) if p.solution), None)
    instruction = spec.instruction
    if instruction is None:
        instruction = DEFAULT_INSTRUCTIONS[spec.answer_type].format(choices=", ".join(spec.choices))
    elif not instruction.endswith(("\n", " ")):
        instruction += "\n\n"

    def load(split: Split, count: int | None, seed: int) -> list[Problem]:
        chosen = {"train": spec.train_split, "test": spec.eval_split}.get(split, split)
        if chosen is None:
            raise DataError(f"reasoning data set {spec.name!r} has no training split (splits: {', '.join(spec.splits)}; "
                            "name one as 'train_split' in its meta.json)")
        rows = problems[chosen]
        return rows[:count] if count is not None else list(rows)

    def corrupt(problem: Problem, rng: random.Random) -> str | None:
        if spec.answer_type == "number":
            return corrupt_gsm8k(problem, rng)
        if spec.answer_type == "choices" and problem.solution:
            others = [c for c in spec.choices if c.lower() != problem.answer]
            cue = list(re.finditer(r"answer\s*is\s*", problem.solution, re.IGNORECASE))
            if others and cue:
                head = problem.solution[: cue[-1].end()]
                wrong = head + rng.choice(others) + "."
                return wrong if extract(wrong) != problem.answer else None
        return None

    return ReasoningTask(
        name=spec.name,
        load=load,
        extract=extract,
        demonstrations=((demo.question, demo.solution),) if demo is not None and demo.solution else (),
        instruction=instruction,
        corrupt=corrupt if spec.answer_type in ("number", "choices") else None,
        max_new_tokens=256,
        solve=lambda question: references.get(question.strip()),
    )


def _extractor(spec: ReasoningSetSpec):
    if spec.answer_type == "number":
        return extract_number
    if spec.answer_type == "text":
        return extract_final_text
    if spec.answer_type == "regex":
        pattern = re.compile(spec.answer_pattern or "")

        def extract_regex(text: str) -> str | None:
            matches = list(pattern.finditer(text or ""))
            if not matches:
                return None
            last = matches[-1]
            return normalise_text(last.group(1) if pattern.groups else last.group(0))

        return extract_regex
    choices = {c.lower(): c.lower() for c in spec.choices}
    alone = re.compile(r"(?<![\w])(" + "|".join(re.escape(c) for c in sorted(spec.choices, key=len, reverse=True))
                       + r")(?![\w])", re.IGNORECASE)

    def extract_choice(text: str) -> str | None:
        for candidate in (extract_final_text(text), extract_boxed(text)):
            if candidate is not None:
                found = alone.search(candidate)
                if found:
                    return choices[found.group(1).lower()]
        found = list(alone.finditer(text or ""))
        return choices[found[-1].group(1).lower()] if found else None

    return extract_choice


def _problems(spec: ReasoningSetSpec, split: str) -> list[Problem]:
    out = []
    for row in load_reasoning_rows(spec, split):
        solution = row.solution.strip() if row.solution else None
        if spec.answer_type == "number":
            raw = row.answer if row.answer not in (None, "") else solution
            gold = extract_number(str(raw))
            if gold is None:
                source = f"field {row.answer_field!r}" if row.answer not in (None, "") else "its solution"
                raise DataError(f"{row.where}: {source} is {raw!r}, which the 'number' rule cannot read as a number.")
            solution = gsm8k_reference(solution) if solution else None
        elif spec.answer_type == "choices":
            gold = str(row.answer).strip().lower()
            if gold not in {c.lower() for c in spec.choices}:
                raise DataError(f"{row.where}: field {row.answer_field!r} is {row.answer!r}, not one of the choices "
                                f"({', '.join(spec.choices)}).")
        else:
            gold = normalise_text(str(row.answer))
            if gold is None:
                raise DataError(f"{row.where}: field {row.answer_field!r} is {row.answer!r}, which is empty once "
                                "case and punctuation are set aside.")
        out.append(Problem(row.id, row.question, gold, solution))
    return out
