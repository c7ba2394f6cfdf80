"""CircularEval (OpenCompass; Liu et al. 2023, "MMBench"): option-order robustness of a lettered
multiple-choice task, ``genclf-eval --circular``.

Each document is also asked under every rotation of its options (``K`` options: the document and
``K - 1`` rotated copies, the gold letter moved with its option), prompted exactly as the document
(same settings and demonstrations; ``choice_requests``). Two metrics join the task's own, which stay
as they are:

- ``acc_circular``: the share of documents answered right under **every** rotation;
- ``order_changes``: the share of documents whose chosen option (its text, not its letter) changes
  with the order.

It applies to tasks whose options are listed in the prompt with fixed letters, and finds how
from the first document, without configuration: the choices are the same letters on every
document; one field of the document is a list of ``K`` option texts that appear in the prompt in
that order, and rotating it rotates them there; one field holds the gold answer (its index or its
letter) so that changing it moves the gold choice. Each finding is checked by rendering a rotated
document through the task's own templates; where one fails, the task is left out with the reason
logged and in the manifest (``circular``). It multiplies the task's requests by ``K``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from genclf_harness.harness.choice_calibration import CHOICE_TASKS, gold_index, iter_tasks
from genclf_harness.harness.choice_requests import ContextRecorder, base_requests, requests_for

logger = logging.getLogger(__name__)

METRICS = {"acc_circular": True, "order_changes": False}
"""The metrics and whether higher is better."""
_CHECKED_DOCUMENTS = 50


@dataclasses.dataclass(frozen=True)
class Rotation:
    """How a document's options rotate: the field of option texts and the field of the answer."""

    options: str
    answer: str
    letters: tuple[str, ...]
    as_index: bool

    def rotate(self, doc: Mapping[str, Any], shift: int, gold: int) -> dict[str, Any]:
        """``doc`` with its options rotated left by ``shift`` and the answer following its option."""
        options = list(doc[self.options])
        moved = (gold - shift) % len(options)
        return {**doc, self.options: options[shift:] + options[:shift],
                self.answer: moved if self.as_index else self.letters[moved]}


def find_rotation(task: Any, doc: Any) -> Rotation | str:
    """How ``doc``'s options rotate, or why they cannot be rotated (checked through the templates)."""
    letters = list(task.doc_to_choice(doc))
    k = len(letters)
    if not isinstance(doc, Mapping):
        return "its documents are not records with fields"
    for other in list(task.eval_docs)[:_CHECKED_DOCUMENTS]:
        if list(task.doc_to_choice(other)) != letters:
            return "its choices differ from document to document (no fixed letters)"
    gold = gold_index(task, doc, letters)
    if gold is None:
        return "its first document has no gold choice"
    text = task.doc_to_text(doc)
    fields = [key for key, value in doc.items() if isinstance(value, Sequence) and not isinstance(value, str)
              and len(value) == k and all(isinstance(v, str) and v.strip() for v in value)
              and len(set(value)) == k and _in_order(text, list(value))]
    answers = [key for key, value in doc.items()
               if (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value == gold)
               or (isinstance(value, str) and value == letters[gold])]
    for options in fields:
        for answer in answers:
            rotation = Rotation(options, answer, tuple(letters), not isinstance(doc[answer], str))
            rotated = rotation.rotate(doc, 1, gold)
            if (list(task.doc_to_choice(rotated)) == letters and gold_index(task, rotated, letters) == (gold - 1) % k
                    and _in_order(task.doc_to_text(rotated), list(rotated[options]))):
                return rotation
    if not fields:
        return "no field of its documents is a list of the options as they appear in the prompt"
    return "no field of its documents holds the gold answer so that rotating the options moves it"


def _in_order(text: Any, options: list[str]) -> bool:
    if not isinstance(text, str):
        return False
    positions, start = [], 0
    for option in options:
        found = text.find(option, start)
        if found < 0:
            return False
        positions.append(found)
        start = found + len(option)
    return True


def add_circular(task_dict: Mapping[Any, Any]) -> list[str]:
    """Add CircularEval to every lettered multiple-choice task of ``task_dict``; returns their names.
    Raises ``ValueError`` naming the tasks and reasons when none applies."""
    added, reasons = [], []
    for name, task in iter_tasks(task_dict):
        if getattr(task, "OUTPUT_TYPE", None) != "multiple_choice" or getattr(task, "_genclf_circular", False):
            continue
        found = find_rotation(task, task.eval_docs[0]) if len(task.eval_docs) else "it has no documents"
        if isinstance(found, str):
            logger.warning("--circular leaves out %s: %s", name, found)
            CHOICE_TASKS.setdefault(name, {})["circular"] = f"left out: {found}"
            reasons.append(f"{name} ({found})")
            continue
        _wrap(name, task, found)
        CHOICE_TASKS.setdefault(name, {})["circular"] = {"options_field": found.options, "answer_field": found.answer,
                                                         "letters": list(found.letters)}
        added.append(name)
    if not added:
        raise ValueError("--circular: no task lists lettered options it can rotate: " + ("; ".join(reasons) or "none"))
    return added


def _wrap(name: str, task: Any, rotation: Rotation) -> None:
    k = len(rotation.letters)
    extra = (k - 1) * k
    base = base_requests(task)
    recorder = ContextRecorder.of(task)
    inner_requests, inner_results = task.construct_requests, task.process_results

    @functools.wraps(inner_requests)
    def construct_requests(doc: Any, ctx: Any, **kwargs: Any) -> Any:
        requests = inner_requests(doc=doc, ctx=ctx, **kwargs)
        requests = list(requests) if isinstance(requests, list) else [requests]
        gold = gold_index(task, doc, list(rotation.letters))
        for shift in range(1, k):
            rotated = rotation.rotate(doc, shift, 0 if gold is None else gold)
            requests += requests_for(base, doc, rotated, recorder.context_for(rotated), kwargs, k, len(requests))
        return requests

    @functools.wraps(inner_results)
    def process_results(doc: Any, results: Sequence[Any]) -> dict[str, Any]:
        out = inner_results(doc, list(results[: len(results) - extra]))
        gold = gold_index(task, doc, list(rotation.letters))
        if gold is None:
            return out
        lls = [float(r[0]) for r in results[:k]] + [float(r[0]) for r in results[len(results) - extra:]]
        chosen, right = set(), True
        for shift in range(k):
            picked = int(np.argmax(lls[shift * k:(shift + 1) * k]))
            chosen.add((picked + shift) % k)  # the option's place in the document's own order
            right = right and picked == (gold - shift) % k
        out["acc_circular"] = float(right)
        out["order_changes"] = float(len(chosen) > 1)
        return out

    task.construct_requests = construct_requests
    task.process_results = process_results
    from lm_eval.api.metrics import mean

    for metric, higher in METRICS.items():
        task._aggregation_list[metric] = mean
        task._higher_is_better[metric] = higher
    task._genclf_circular = True
