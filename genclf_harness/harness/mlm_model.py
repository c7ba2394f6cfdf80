"""``genclf-mlm``: lm-eval's model for generative classification with a masked LM's head.

    genclf-eval --model genclf-mlm --model_args pretrained=runs/atp_sst2_cpu --tasks genclf_sst2

Each document's context is put before the answer slot (``{context} [unused0] {mask}``, "It's All
in The [MASK]", Clavié, Cooper, Warner 2025) and its labels are read at the mask from ONE forward
pass (:class:`~genclf_harness.backends.mlm.MLMScorer`): the ``loglikelihood`` requests of a
document share its context, so they are grouped by it
(:func:`~genclf_harness.harness.label_requests.score_requests`, as ``genclf-hf`` does). Every
label must be one token: numeric labels (``genclf_<dataset>_num``) or single-token words.

Model arguments: ``pretrained`` (a masked-LM folder or hub id, or a model object with
``tokenizer``), ``tokenizer``, ``template`` (the answer-slot template; a task may set its own in a
row field ``mlm_template``, which is also the way to use a template with a comma, which lm-eval's
``k=v,k=v`` argument string cannot carry), ``allow_untrained_head`` (default false: a checkpoint
without trained MLM-head weights is refused before any scoring), ``label_prefix``,
``max_length``, ``batch_size`` (documents per forward pass; ``auto`` = 32), ``device``, ``dtype``,
``revision``, ``trust_remote_code``. ``loglikelihood_rolling`` and ``generate_until`` raise
:class:`ScoringOnlyError`: an encoder scores labels, it does not write text.
"""

from __future__ import annotations

import logging
from typing import Any

from lm_eval.api.instance import Instance
from lm_eval.api.model import LM

from genclf_harness.backends.mlm import PAPER_TEMPLATE, MLMScorer, MissingHeadError, describe_weights
from genclf_harness.backends.protocol import LabelPrompt, PromptScores
from genclf_harness.harness.label_requests import SeamRecord, score_requests

logger = logging.getLogger(__name__)

TEMPLATE_FIELD = "mlm_template"
"""A row field that gives a task's own answer-slot template (overrides the ``template`` argument)."""
AUTO_BATCH_SIZE = 32


class ScoringOnlyError(NotImplementedError):
    """An lm-eval request type that a label-scoring model cannot answer (generation, perplexity)."""


def scoring_only(model: str, request_type: str) -> ScoringOnlyError:
    return ScoringOnlyError(f"{model} only scores labels (multiple-choice loglikelihood requests); it cannot answer "
                            f"{request_type} requests. Use genclf-hf or genclf-vllm for generative or perplexity tasks")


def batch_size_of(value: Any, default: int = AUTO_BATCH_SIZE) -> int:
    """lm-eval's ``batch_size`` (an int, or ``auto``/``auto:N``) as a row count."""
    if value is None or (isinstance(value, str) and value.startswith("auto")):
        return default
    size = int(value)
    if size < 1:
        raise ValueError(f"batch_size must be positive or auto, got {value!r}")
    return size


def default_device(device: str | None) -> str:
    """``device``, or CUDA where there is one, else the CPU. lm-eval's command line passes ``cuda:0``
    when no ``--device`` is given; as its own HFLM does, a CUDA device on a machine without CUDA
    falls back to the CPU (logged) instead of failing the run."""
    import torch

    if device and device.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("device %s: this machine has no CUDA; scoring on the CPU", device)
        return "cpu"
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


class GenclfMLM(LM):
    """lm-eval model ``genclf-mlm``: labels scored at a masked LM's answer slot, one pass per document."""

    def __init__(
        self,
        pretrained: Any = None,
        *,
        tokenizer: Any = None,
        template: str = PAPER_TEMPLATE,
        allow_untrained_head: bool = False,
        label_prefix: str = " ",
        max_length: int | None = None,
        batch_size: Any = 16,
        max_batch_size: Any = None,
        device: str | None = None,
        dtype: str = "float32",
        revision: str | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        if pretrained is None:
            raise MissingHeadError("genclf-mlm needs pretrained=<a masked-LM folder or hub id> (a checkpoint with a "
                                   "trained MLM head, e.g. a genclf-train atp output)")
        scorer_kwargs = {"template": template, "label_prefix": label_prefix, "max_length": max_length,
                         "batch_size": batch_size_of(batch_size)}
        device = default_device(device)
        if isinstance(pretrained, str):
            self.scorer = MLMScorer.from_pretrained(pretrained, allow_untrained_head=bool(allow_untrained_head),
                                                    dtype=dtype, device=device, revision=revision,
                                                    trust_remote_code=bool(trust_remote_code), **scorer_kwargs)
            self.pretrained = pretrained
        else:
            if tokenizer is None:
                raise ValueError("genclf-mlm: a model object as pretrained needs tokenizer= as well")
            if isinstance(tokenizer, str):
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(tokenizer, trust_remote_code=bool(trust_remote_code))
            pretrained.to(device)
            self.scorer = MLMScorer(pretrained.eval(), tokenizer, weights_source=describe_weights(pretrained),
                                    **scorer_kwargs)
            self.pretrained = getattr(pretrained.config, "_name_or_path", None) or type(pretrained).__name__
        self.model = self.scorer.model
        self.tokenizer = self.scorer.tokenizer
        self.template = self.scorer.template.text
        self.revision = revision
        self._device = self.scorer.device

    @property
    def weights_source(self) -> str:
        """Where the weights came from (``pretrained: ...``, an untrained head, or ``random init``)."""
        return self.scorer.weights_source

    def get_model_info(self) -> dict[str, Any]:
        return {"model_name_or_path": self.pretrained, "weights_source": self.weights_source,
                "mlm_template": self.template}

    def loglikelihood(self, requests: list[Instance], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        by_template: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            doc = request.doc if isinstance(request.doc, dict) else {}
            by_template.setdefault(str(doc.get(TEMPLATE_FIELD) or self.template), []).append(index)
        results: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
        for template, indices in by_template.items():
            scores = score_requests(_TemplateScorer(self.scorer, template), [requests[i] for i in indices],
                                    cache_hook=self.cache_hook, show_progress=not disable_tqdm, record=SeamRecord())
            for index, score in zip(indices, scores, strict=True):
                results[index] = (score.logprob, score.is_greedy)
        return results

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        raise scoring_only("genclf-mlm", "loglikelihood_rolling")

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        raise scoring_only("genclf-mlm", "generate_until")


class _TemplateScorer:
    """The scorer with one call's answer-slot template (what ``score_requests`` calls)."""

    def __init__(self, scorer: MLMScorer, template: str) -> None:
        self.scorer = scorer
        self.template = template

    def score(self, prompts: list[LabelPrompt], *, show_progress: bool = True) -> list[PromptScores]:
        return self.scorer.score(prompts, show_progress=show_progress, template=self.template)
