"""The functions the verifier task YAMLs (``genclf_harness/tasks/verifiers/``) name: loaders, per-document
results and corpus-level aggregations. Plain Python: lm-eval calls them, nothing here imports it.

The model under evaluation is the *verifier*. Each document is one candidate solution, asked as
a Yes/No multiple-choice question in the GenRM format (:mod:`genclf_harness.verifiers.format`);
its P("Yes") normalised over Yes/No is the candidate's score. Run with ``--apply_chat_template``
for chat verifiers: lm-eval then puts the question in a user turn and reads "Yes"/"No" right after
the assistant marker, exactly as :class:`~genclf_harness.verifiers.genrm.verifier.GenRM` does.

The tasks exist for GSM8K (``genclf_gsm8k_*``, shipped YAMLs) and for every reasoning folder of your
own (``genclf_<name>_*``, written for the run; ``dataset_kwargs: {task: <name>}``).

- ``genclf_gsm8k_bon``: candidates sampled for each problem (a candidates file, see
  :mod:`genclf_harness.verifiers.genrm.bon`); the aggregations group the documents by problem and report
  ``first_sample``, ``majority``, ``best_of_n`` (highest P(Yes)), ``weighted_vote`` and
  ``pass_at_n``.
- ``genclf_gsm8k_verify``: labelled candidates; ``acc`` (P(Yes) > 0.5 exactly for the correct
  ones), ``acc_balanced`` (formerly ``balanced_acc``, a name lm-eval proposes) and ``auroc``.
  Without a candidates file it uses GSM8K test problems'
  reference solutions ("Yes") and a corruption of each (its final result changed: "No"); a
  reasoning folder's evaluated problems the same way, where they have solutions.

The candidates file is given by ``--metadata '{"candidates": "path.jsonl"}'`` or the environment
variable ``GENCLF_CANDIDATES`` (the metadata wins). ``--metadata '{"num_problems": 200}'`` sizes the
synthetic fallback of ``genclf_gsm8k_verify`` (default: all 1,319 test problems).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

from genclf_harness.verifiers.genrm.bon import Candidate, CandidateSet, evaluate_selection, read_candidates
from genclf_harness.harness.metrics import deprecated_names
from genclf_harness.verifiers.format import DEFAULT_FORMAT
from genclf_harness.verifiers.genrm.metrics import auroc as _auroc
from genclf_harness.verifiers.genrm.metrics import balanced_accuracy

CANDIDATES_ENV = "GENCLF_CANDIDATES"


class CandidateItem(NamedTuple):
    """One document's result as the aggregations receive it (picklable for gathering)."""

    problem_id: str
    index: int
    answer: str | None
    correct: bool
    p_yes: float


def _candidates_path(metadata: dict[str, Any], required: bool, task: str, reasoning: str = "gsm8k") -> str | None:
    path = metadata.get("candidates") or os.environ.get(CANDIDATES_ENV)
    if not path and required:
        raise ValueError(
            f"{task} needs a candidates file: pass --metadata '{{\"candidates\": \"FILE.jsonl\"}}' or set "
            f"{CANDIDATES_ENV}=FILE.jsonl (make one with `genclf-bench bon --task {reasoning} --sample-only` or "
            "genclf_harness.verifiers.genrm.bon.sample_candidates)"
        )
    return str(path) if path else None


def _row(candidate_set: CandidateSet, index: int, candidate: Candidate) -> dict[str, Any]:
    return {
        "problem_id": candidate_set.id,
        "candidate": index,
        "num_candidates": len(candidate_set.candidates),
        "question": candidate_set.question,
        "solution": candidate.text,
        "answer": candidate.answer,
        "correct": candidate.correct,
        "gold": 0 if candidate.correct else 1,  # index into ["Yes", "No"]
        "query": DEFAULT_FORMAT.user_message(candidate_set.question, candidate.text),
    }


def load_bon_candidates(candidates: str | None = None, task: str = "gsm8k", **metadata: Any) -> Any:
    """``genclf_<task>_bon``'s documents: one per candidate of every problem in the file."""
    import datasets

    path = _candidates_path({"candidates": candidates, **metadata}, True, f"genclf_{task}_bon", task)
    rows = [_row(s, i, c) for s in read_candidates(path) for i, c in enumerate(s.candidates)]
    if not rows:
        raise ValueError(f"{path}: no candidates")
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def load_verify_candidates(candidates: str | None = None, num_problems: int | None = None, task: str = "gsm8k",
                           data_dir: str | None = None, **metadata: Any) -> Any:
    """``genclf_<task>_verify``'s documents: labelled candidates from a file, or the synthetic
    fallback (each evaluated problem's reference solution and one corruption of it)."""
    import random

    import datasets

    path = _candidates_path({"candidates": candidates, **metadata}, False, f"genclf_{task}_verify", task)
    if path:
        sets = read_candidates(path)
    else:
        from genclf_harness.verifiers.genrm.problems import get_task

        reasoning = get_task(task, data_dir)
        rng = random.Random(0)
        sets = []
        for problem in reasoning.problems("test", num_problems):
            if not problem.solution:
                continue
            wrong = reasoning.corrupt(problem, rng) if reasoning.corrupt else None
            texts = [problem.solution] + ([wrong] if wrong else [])
            sets.append(CandidateSet(problem.id, problem.question, problem.answer,
                                     [Candidate(t, reasoning.extract(t), reasoning.is_correct(t, problem.answer))
                                      for t in texts], task=task))
        if not sets:
            raise ValueError(f"genclf_{task}_verify: no candidates file and no evaluated problem of {task!r} has a "
                             "reference solution to build candidates from; pass --metadata "
                             "'{\"candidates\": \"FILE.jsonl\"}' (genclf-bench bon --task ... --sample-only writes one)")
    rows = [_row(s, i, c) for s in sets for i, c in enumerate(s.candidates)]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def _p_yes(results: Sequence[tuple[float, bool]]) -> float:
    (yes, _), (no, _) = results[:2]
    margin = float(yes) - float(no)
    return 1.0 / (1.0 + math.exp(-margin)) if margin >= 0 else math.exp(margin) / (1.0 + math.exp(margin))


def _item(doc: dict[str, Any], results: Sequence[tuple[float, bool]]) -> CandidateItem:
    return CandidateItem(str(doc["problem_id"]), int(doc["candidate"]), doc.get("answer"), bool(doc["correct"]),
                         _p_yes(results))


BON_METRICS: tuple[str, ...] = ("first_sample", "majority", "best_of_n", "weighted_vote", "pass_at_n")
VERIFY_METRICS: tuple[str, ...] = ("acc", "acc_balanced", "auroc")


def process_bon(doc: dict[str, Any], results: Sequence[tuple[float, bool]]) -> dict[str, Any]:
    """``genclf_gsm8k_bon`` per document: the candidate's item under every metric (the
    aggregations group the items by problem and apply the selection rules)."""
    item = _item(doc, results)
    return {name: item for name in BON_METRICS}


def process_verify(doc: dict[str, Any], results: Sequence[tuple[float, bool]]) -> dict[str, Any]:
    """``genclf_gsm8k_verify`` per document: right or wrong at P(Yes) > 0.5, and the item for the
    corpus-level metrics."""
    item = _item(doc, results)
    return {"acc": float((item.p_yes > 0.5) == item.correct), "acc_balanced": item, "auroc": item}


def _sets(items: Sequence[CandidateItem]) -> list[CandidateSet]:
    grouped: dict[str, list[CandidateItem]] = {}
    for item in items:
        grouped.setdefault(item.problem_id, []).append(item)
    sets = []
    for problem_id, members in grouped.items():
        members.sort(key=lambda item: item.index)
        sets.append(CandidateSet(problem_id, "", "", [Candidate("", m.answer, m.correct, m.p_yes) for m in members]))
    return sets


def _selection(rule: str):
    def aggregate(items: Sequence[CandidateItem]) -> float:
        return evaluate_selection(_sets(items), rules=[rule])[rule]

    aggregate.__name__ = aggregate.__qualname__ = rule
    aggregate.__doc__ = f"{rule} accuracy over the problems (candidates grouped by problem)."
    return aggregate


first_sample = _selection("first_sample")
majority = _selection("majority")
best_of_n = _selection("best_of_n")
weighted_vote = _selection("weighted_vote")
pass_at_n = _selection("pass_at_n")


def auroc(items: Sequence[CandidateItem]) -> float:
    """AUROC of P(Yes) against the candidates' correctness."""
    return _auroc([i.p_yes for i in items], [i.correct for i in items])


def acc_balanced(items: Sequence[CandidateItem]) -> float:
    """Mean of the verification accuracy on correct and on incorrect candidates."""
    return balanced_accuracy([i.p_yes for i in items], [i.correct for i in items])


__getattr__ = deprecated_names(globals(), {"balanced_acc": "acc_balanced"})
