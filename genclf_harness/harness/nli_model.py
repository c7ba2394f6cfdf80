"""``genclf-nli``: lm-eval's model for zero-shot classification by natural language inference.

    genclf-eval --model genclf-nli --model_args pretrained=<NLI cross-encoder folder> --tasks genclf_sst2
    genclf-eval --model genclf-nli --model_args judge=causal --tasks genclf_sst2      # the default model as judge

Each ``loglikelihood`` request (context, continuation) of a genclf task becomes a (premise,
hypothesis) pair (Laurer et al. 2024, "Building Efficient Universal Classifiers with Natural
Language Inference"; Burnham et al. 2024, "Political DEBATE"):

- the premise is the document's own text: its data set spec's input fields of ``request.doc``
  (the genclf row), joined by newlines, not the rendered prompt (``premise=context`` uses the
  request's context instead, for tasks whose rows are not genclf rows); the calibration anchors'
  extra requests (``N/A`` and the other content-free inputs, training documents for the inductive
  metrics) take the input that stands in their context (:meth:`GenclfNLI.premises`);
- the label is the continuation's text, stripped, put into the hypothesis template;
- scores are :class:`~genclf_harness.backends.nli.NLIScorer`'s (the zero-shot pipeline's numbers;
  ``judge=causal``: :class:`~genclf_harness.backends.nli.CausalNLIScorer` on a causal LM).

The data set of a request is the row's ``dataset`` field (strategy tasks), else the model argument
``dataset``, else read from the task name (``genclf_<dataset>[_...]``). The hypothesis template
is the ``hypothesis_template`` model argument when given, else the data set spec's
``hypothesis_template`` when the spec has such a field, else ``"This example is {}."``.

Model arguments: ``pretrained`` (a folder or hub id, or a model object with ``tokenizer``), ``judge``
(``cross-encoder`` or ``causal``),
``hypothesis_template``, ``multi_label``, ``premise`` (``fields`` or ``context``), ``dataset``,
``allow_untrained_head``, ``max_length``, ``batch_size`` (pairs per forward pass; ``auto`` = 32),
``device``, ``dtype``, ``revision``, ``trust_remote_code``. Generation and rolling
log-likelihoods raise :class:`~genclf_harness.harness.mlm_model.ScoringOnlyError`.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Literal

from lm_eval.api.instance import Instance
from lm_eval.api.model import LM

from genclf_harness.backends.nli import (
    DEFAULT_HYPOTHESIS_TEMPLATE,
    CausalNLIScorer,
    NLIScorer,
    check_hypothesis_template,
    premise_text,
)
from genclf_harness.backends.protocol import LabelPrompt
from genclf_harness.harness.mlm_model import batch_size_of, default_device, scoring_only

logger = logging.getLogger(__name__)

JUDGES = ("cross-encoder", "causal")
PREMISES = ("fields", "context")


class PremiseError(ValueError):
    """A request's premise cannot be built: its data set is unknown, or its row lacks an input field."""


class GenclfNLI(LM):
    """lm-eval model ``genclf-nli``: each label scored as a hypothesis entailed by the document."""

    def __init__(
        self,
        pretrained: Any = None,
        *,
        tokenizer: Any = None,
        judge: Literal["cross-encoder", "causal"] = "cross-encoder",
        hypothesis_template: str | None = None,
        multi_label: bool = False,
        premise: Literal["fields", "context"] = "fields",
        dataset: str | None = None,
        allow_untrained_head: bool = False,
        max_length: int | None = None,
        batch_size: Any = 32,
        max_batch_size: Any = None,
        device: str | None = None,
        dtype: str = "float32",
        revision: str | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        if judge not in JUDGES:
            raise ValueError(f"genclf-nli: judge must be one of {', '.join(JUDGES)}, not {judge!r}")
        if premise not in PREMISES:
            raise ValueError(f"genclf-nli: premise must be one of {', '.join(PREMISES)}, not {premise!r}")
        self.hypothesis_template = (None if hypothesis_template is None
                                    else check_hypothesis_template(hypothesis_template))
        template = self.hypothesis_template or DEFAULT_HYPOTHESIS_TEMPLATE
        device = default_device(device)
        size = batch_size_of(batch_size)
        if judge == "causal":
            from genclf_harness.backends.scorer import HFScorer

            scorer = HFScorer.from_pretrained(pretrained, dtype=dtype, device=device, max_batch_prompts=size)
            self.scorer: NLIScorer | CausalNLIScorer = CausalNLIScorer(scorer, hypothesis_template=template,
                                                                       multi_label=bool(multi_label))
        elif isinstance(pretrained, str):
            self.scorer = NLIScorer.from_pretrained(pretrained, dtype=dtype, device=device, revision=revision,
                                                    trust_remote_code=bool(trust_remote_code),
                                                    allow_untrained_head=bool(allow_untrained_head),
                                                    hypothesis_template=template, multi_label=bool(multi_label),
                                                    max_length=max_length, batch_size=size)
        elif pretrained is None:
            raise ValueError("genclf-nli needs pretrained=<an NLI cross-encoder folder or hub id>, or judge=causal "
                             "(the default causal model as the judge)")
        else:
            if tokenizer is None:
                raise ValueError("genclf-nli: a model object as pretrained needs tokenizer= as well")
            pretrained.to(device)
            self.scorer = NLIScorer(pretrained.eval(), tokenizer, hypothesis_template=template,
                                    multi_label=bool(multi_label), max_length=max_length, batch_size=size)
        self.judge = judge
        self.premise = premise
        self.dataset = dataset
        self.multi_label = bool(multi_label)
        self.model = self.scorer.model
        self.tokenizer = self.scorer.tokenizer
        self.pretrained = (getattr(self.model.config, "_name_or_path", None)
                           or (pretrained if isinstance(pretrained, str) else type(self.model).__name__))
        self.revision = revision
        self._specs: dict[str, Any] = {}

    @property
    def weights_source(self) -> str:
        return self.scorer.weights_source

    def get_model_info(self) -> dict[str, Any]:
        return {"model_name_or_path": self.pretrained, "weights_source": self.weights_source, "judge": self.judge,
                "multi_label": self.multi_label}

    def loglikelihood(self, requests: list[Instance], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        # A document's labels are scored together (a single-label softmax runs over exactly them);
        # the key holds the document, so two tasks' documents with the same text never mix label sets.
        groups: dict[tuple[str, str, Any, Any, str], dict[str, list[int]]] = {}
        for index, (request, (template, premise)) in enumerate(zip(requests, self.premises(requests), strict=True)):
            context, continuation = request.args
            key = (template, premise, request.task_name, request.doc_id, context)
            groups.setdefault(key, {}).setdefault(continuation.strip(), []).append(index)
        results: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
        for template in dict.fromkeys(key[0] for key in groups):
            keys = [key for key in groups if key[0] == template]
            prompts = [LabelPrompt(key[1], tuple(groups[key])) for key in keys]
            scored = self.scorer.score(prompts, show_progress=not disable_tqdm, hypothesis_template=template)
            for key, prompt_scores in zip(keys, scored, strict=True):
                for indices, score in zip(groups[key].values(), prompt_scores.continuations, strict=True):
                    for index in indices:
                        results[index] = (score.logprob, score.is_greedy)
        for request, result in zip(requests, results, strict=True):
            self.cache_hook.add_partial("loglikelihood", request.args, result)
        return results

    def premises(self, requests: list[Instance]) -> list[tuple[str, str]]:
        """(hypothesis template, premise) of each request.

        A document's own requests (those with the context of its first request) take the premise
        from the row. genclf's calibration anchors are extra requests of one document whose context
        has another input in place of the document's (``N/A``, another document of the training
        split ...): their premise is that input, read back from the context through the data set's
        template; an anchor with no input there (the domain premise, the empty context) gets ``""``.
        """
        own: dict[tuple[Any, Any], tuple[int, str]] = {}
        for request in requests:
            key = (request.task_name, request.doc_id)
            if key not in own or request.idx < own[key][0]:
                own[key] = (request.idx, request.args[0])
        out = []
        for request in requests:
            if self.premise == "context":
                out.append((self.hypothesis_template or DEFAULT_HYPOTHESIS_TEMPLATE, request.args[0]))
                continue
            doc = request.doc if isinstance(request.doc, dict) else {}
            if "channel_contexts" in doc:
                raise PremiseError(f"genclf-nli: task {request.task_name!r} is a channel task (it scores the input "
                                   "after each label); NLI scores each label as a hypothesis: use the direct task")
            spec = self._spec_of(request, doc)
            # The spec's own template, once DatasetSpec has a hypothesis_template field (None until then).
            template = (self.hypothesis_template or getattr(spec, "hypothesis_template", None)
                        or DEFAULT_HYPOTHESIS_TEMPLATE)
            if request.args[0] != own[request.task_name, request.doc_id][1]:
                fields = fields_at_end(spec, request.args[0])
                out.append((template, "\n".join(fields[name] for name in spec.input_fields) if fields else ""))
                continue
            try:
                out.append((template, premise_text(spec, doc)))
            except ValueError as err:
                raise PremiseError(f"genclf-nli, task {request.task_name!r} doc {request.doc_id}: {err}; pass "
                                   "premise=context to use the prompt instead") from None
        return out

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        raise scoring_only("genclf-nli", "loglikelihood_rolling")

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        raise scoring_only("genclf-nli", "generate_until")

    # -- premises and templates ------------------------------------------------------------------

    def _spec_of(self, request: Instance, doc: dict[str, Any]) -> Any:
        name = doc.get("dataset") if isinstance(doc.get("dataset"), str) else self.dataset
        key = name or str(request.task_name)
        if key not in self._specs:
            self._specs[key] = _get_spec(name) if name else _spec_from_task(str(request.task_name))
        return self._specs[key]


def fields_at_end(spec: Any, text: str) -> dict[str, str] | None:
    """The input fields of the input rendered last in ``text`` (``spec.template`` matched at its end,
    from the latest start that fits), or None when none is there. The inverse of ``render_input``
    for the calibration anchors' contexts; a field holding the template's own separators makes it
    ambiguous, and the latest start is the reading kept."""
    parts = re.split(r"\{(\w+)\}", spec.template)
    literals, names = parts[0::2], parts[1::2]
    if not names or len(set(names)) != len(names):
        return None
    pattern = re.compile(re.escape(literals[0]) + "".join(f"(?P<g{i}>.*?)" + re.escape(literals[i + 1])
                                                          for i in range(len(names))), re.DOTALL)
    if literals[0]:
        starts = [m.start() for m in re.finditer(f"(?={re.escape(literals[0])})", text)]
    else:
        starts = [0, *(m.end() for m in re.finditer("\n\n", text))]
    for start in sorted(starts, reverse=True):
        match = pattern.fullmatch(text, start)
        if match:
            return {name: match.group(f"g{i}") for i, name in enumerate(names)}
    return None


def _get_spec(name: str) -> Any:
    from genclf_harness.data import get_spec

    return get_spec(name)


def _spec_from_task(task: str) -> Any:
    """``genclf_sst2`` or ``genclf_sst2_num_gen`` -> sst2's spec (the longest known name after ``genclf_``)."""
    from genclf_harness.data import DataError

    parts = task.removeprefix("genclf_").split("_") if task.startswith("genclf_") else []
    for end in range(len(parts), 0, -1):
        try:
            return _get_spec("_".join(parts[:end]))
        except DataError:
            continue
    raise PremiseError(f"genclf-nli: cannot tell which data set task {task!r} reads, so there are no input fields "
                       "for the premise; pass dataset=<name>, or premise=context to use the prompt")
