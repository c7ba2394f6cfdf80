"""Extra requests carried by an evaluated document of an arbitrary lm-eval multiple-choice task.

``--calibrate`` scores a task's labelled split documents (on its first document) and
``--circular`` every rotation of a document's options (on that document); both prompt those
documents exactly as lm-eval prompts the evaluated ones and hang the requests on a real document,
so lm-eval batches, caches and gathers them as its own. This module holds what both need:

- :class:`ContextRecorder` wraps the task's ``fewshot_context`` once, remembering the settings of
  the run (shots, system instruction, chat template ...) and the state of the few-shot random
  generators before each call; :meth:`ContextRecorder.context_for` prompts another document with
  the same settings and the same demonstrations as the last evaluated one, then puts the
  generators back, so the evaluated documents' own prompts (and lm-eval's metrics) are exactly
  what they are without genclf;
- :func:`requests_for` builds a document's requests and re-homes them on the carrying document.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any


def _generators(task: Any) -> list[Any]:
    found = [getattr(getattr(task, "sampler", None), "rnd", None), getattr(task, "fewshot_rnd", None)]
    return [g for g in found if g is not None and hasattr(g, "getstate")]


class ContextRecorder:
    """The run's ``fewshot_context`` settings for a task, to prompt other documents alike."""

    def __init__(self, task: Any) -> None:
        self.task = task
        self.original = task.fewshot_context
        self.settings: tuple[tuple[Any, ...], dict[str, Any]] = ((), {})
        self.before: list[Any] = []

        @functools.wraps(self.original)
        def fewshot_context(doc: Any, *args: Any, **kwargs: Any) -> Any:
            self.settings = (args, kwargs)
            self.before = [g.getstate() for g in _generators(task)]
            return self.original(doc, *args, **kwargs)

        task.fewshot_context = fewshot_context

    @classmethod
    def of(cls, task: Any) -> ContextRecorder:
        recorder = getattr(task, "_genclf_context_recorder", None)
        if recorder is None:
            recorder = task._genclf_context_recorder = cls(task)
        return recorder

    def context_for(self, doc: Any) -> Any:
        """``doc`` prompted as the last evaluated document was (its demonstrations too)."""
        args, kwargs = self.settings
        if "gen_prefix" in kwargs:
            kwargs = {**kwargs, "gen_prefix": self.task.doc_to_prefix(doc)}
        generators = _generators(self.task)
        after = [g.getstate() for g in generators]
        try:
            for generator, state in zip(generators, self.before, strict=False):
                generator.setstate(state)
            return self.original(doc, *args, **kwargs)
        finally:
            for generator, state in zip(generators, after, strict=True):
                generator.setstate(state)


def requests_for(construct: Any, carrier: Any, doc: Any, ctx: Any, kwargs: dict[str, Any], count: int,
                 start: int) -> list[Any]:
    """The first ``count`` requests of ``doc`` (its choices, not acc_mutual_info's extras), carried by
    ``carrier`` with indices from ``start``."""
    made = construct(doc=doc, ctx=ctx, **kwargs)
    made = list(made) if isinstance(made, Sequence) else [made]
    return [dataclasses.replace(request, doc=carrier, idx=start + i) for i, request in enumerate(made[:count])]


def base_requests(task: Any) -> Any:
    """The task's own ``construct_requests``, before any genclf wrapper added requests to it."""
    base = getattr(task, "_genclf_base_requests", None)
    if base is None:
        base = task._genclf_base_requests = task.construct_requests
    return base
