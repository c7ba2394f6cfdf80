"""lm-eval ``loglikelihood`` requests scored by a genclf backend, shared by ``genclf-hf`` and ``genclf-vllm``.

Requests that share a context string (a document's K choices, or identical prompts across
documents) become one :class:`LabelPrompt`, so the backend feeds each context once. What the
scoring saw at token seams is kept per task in a :class:`SeamRecord`, which the manifest reports.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from genclf_harness.backends.protocol import ContinuationScore, LabelPrompt


@dataclass(slots=True)
class SeamRecord:
    """Per task: labels that crossed a token seam, and documents scored with token alignment."""

    align_labels: bool = False
    mismatches: dict[str, int] = field(default_factory=dict)
    aligned: dict[str, int] = field(default_factory=dict)

    def manifest(self) -> dict[str, Any]:
        return {
            "align_labels": self.align_labels,
            "seam_mismatches": dict(sorted(self.mismatches.items())),
            "aligned_prompts": dict(sorted(self.aligned.items())),
        }


def score_requests(
    backend: Any,
    requests: list[Any],
    *,
    cache_hook: Any,
    show_progress: bool,
    record: SeamRecord,
) -> list[ContinuationScore]:
    """Full scores (per-token log-probs included) of ``loglikelihood`` requests, in request order."""
    by_context: dict[str, dict[str, list[int]]] = {}
    for index, request in enumerate(requests):
        context, continuation = request.args
        by_context.setdefault(context, {}).setdefault(continuation, []).append(index)

    prompts = [LabelPrompt(context, tuple(choices)) for context, choices in by_context.items()]
    scored = backend.score(prompts, show_progress=show_progress)

    results: list[ContinuationScore | None] = [None] * len(requests)
    for (context, choices), prompt_scores in zip(by_context.items(), scored, strict=True):
        if prompt_scores.seam_mismatches:
            task = str(getattr(requests[next(iter(choices.values()))[0]], "task_name", None))
            record.mismatches[task] = record.mismatches.get(task, 0) + prompt_scores.seam_mismatches
            if prompt_scores.aligned:
                record.aligned[task] = record.aligned.get(task, 0) + 1
        for (continuation, indices), score in zip(choices.items(), prompt_scores.continuations, strict=True):
            # Same partial-cache entry as stock lm-eval, so --use_cache files are interchangeable.
            cache_hook.add_partial("loglikelihood", (context, continuation), (score.logprob, score.is_greedy))
            for index in indices:
                results[index] = score
    return results  # type: ignore[return-value]


def request_task_name(request: Any) -> str:
    """The task an lm-eval request belongs to: its ``task_name`` field (both 0.4.13 and v0.5 set it),
    else the first entry of a 0.4.13 ``metadata`` tuple (v0.5's ``metadata`` is a dict); ``"?"`` if none."""
    name = getattr(request, "task_name", None)
    if not name and isinstance(getattr(request, "metadata", None), tuple) and request.metadata:
        name = request.metadata[0]
    return str(name) if name else "?"


def new_instance(request_type: str, doc: dict[str, Any], arguments: tuple[Any, ...], idx: int, *, task_name: str,
                 doc_id: int, repeats: int = 1) -> Any:
    """An lm-eval ``Instance`` built by keyword only, for any lm-eval from 0.4.13 to v0.5: 0.4.13
    reads (task_name, doc_id, repeats) from its ``metadata`` tuple, v0.5 takes them as fields (and
    still unpacks such a tuple); both get them both ways."""
    from lm_eval.api.instance import Instance

    fields = {f.name for f in dataclasses.fields(Instance) if f.init}
    named = {"task_name": task_name, "doc_id": doc_id, "repeats": repeats}
    return Instance(request_type=request_type, doc=doc, arguments=arguments, idx=idx,
                    metadata=(task_name, doc_id, repeats), **{k: v for k, v in named.items() if k in fields})
