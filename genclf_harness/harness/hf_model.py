"""``genclf-hf``: lm-eval's ``hf`` model with exact, context-once label scoring.

Everything of :class:`lm_eval.models.huggingface.HFLM` is kept (loading, ``dtype``, ``peft=``,
``delta=``, chat templates, ``generate_until``, ``loglikelihood_rolling``, data parallelism);
only ``loglikelihood`` is replaced: requests that share a context string (a document's K
choices, or identical prompts across documents) are scored together by
:class:`genclf_harness.backends.scorer.HFScorer`, which feeds each context once. The results
equal stock ``hf``'s for the same requests (tested), with the log-softmax in float32.

Model arguments beyond HFLM's:

- ``pretrained``: may be omitted or ``default`` for the embedded default model;
- ``max_batch_tokens``: rows x padded length per forward pass (default 8192);
- ``packing``: ``true``/``false`` to force or forbid packing several labels behind one context
  (default: automatic, see :class:`HFScorer`);
- ``prefix_cache``: ``true``/``false``/``auto`` (default): reuse the KV cache of the head that
  contexts share (the step prompts of a ProcessBench solution, one long instruction before many
  questions); ``auto`` turns it on on a CPU when it skips at least half of the context tokens;
- ``align_labels``: ``true`` scores a label that crosses a token seam (the context ends inside
  the token the label starts, ``"Sentiment: pos" + "itive"``) by token alignment, as the label's
  own text; ``false`` (default) keeps lm-eval's split and warns. Either way the manifest counts
  such labels per task (``model.label_scoring``);
- ``align_generation``: ``true`` token-aligns ``generate_until`` prompts
  (`genclf_harness.backends.generation_alignment`): the prompt's last tokens (the partial last word,
  a trailing space) are backed off and the first generated tokens must spell them again; the answer
  is what follows them. ``false`` (default): stock generation.

``batch_size=N`` bounds the documents (distinct contexts) per forward pass, within the token
budget; ``batch_size=auto`` uses the token budget alone and halves it after an out-of-memory
error. ``softmax_dtype`` and ``mixed_precision_dtype`` are honoured; without ``softmax_dtype``
the log-softmax runs in float32 (stock ``hf`` uses the model dtype, which is coarse in bf16).

Data parallelism: as with HFLM, lm-eval shards documents across ranks before the model sees
them, and each rank scores exactly the requests it is given; no collective call is made here.
HFLM shards only when it sees more than one GPU, so under ``accelerate launch --cpu
--num_processes N`` every rank scored every document; here the ranks take accelerate's process
index and count on CPUs too (gloo), and each logs what it scored.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

from genclf_harness.backends.default_model import resolve_pretrained
from genclf_harness.backends.generation_alignment import (
    AlignedPrefixProcessor,
    Backoff,
    GenerationRecord,
    plan_backoff,
    strip_backoff,
)
from genclf_harness.backends.protocol import ContinuationScore
from genclf_harness.backends.scorer import DEFAULT_MAX_BATCH_TOKENS, HFScorer
from genclf_harness.backends.token_alignment import VocabularyTrie
from genclf_harness.harness.label_requests import SeamRecord, request_task_name, score_requests

logger = logging.getLogger(__name__)


class GenclfHFLM(HFLM):
    """lm-eval model ``genclf-hf``: HFLM whose ``loglikelihood`` encodes each context once."""

    def __init__(
        self,
        pretrained: Any = None,
        *,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        packing: bool | None = None,
        prefix_cache: bool | str | None = None,
        align_labels: bool = False,
        align_generation: bool = False,
        device: str | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(prefix_cache, str) and prefix_cache.lower() != "auto":
            raise ValueError(f"prefix_cache must be true, false or auto, not {prefix_cache!r}")
        if device is None:
            # HFLM's own default is "cuda", which fails on a machine without one.
            device = "cuda" if torch.cuda.is_available() else "cpu"
        super().__init__(pretrained=resolve_pretrained(pretrained), device=device, **kwargs)
        accelerator = getattr(self, "accelerator", None)
        if accelerator is not None and accelerator.num_processes > 1 and self._world_size == 1:
            # HFLM shards only over several GPUs ("elif gpus > 1"); on CPUs every rank did all the work.
            self._rank = int(accelerator.process_index)
            self._world_size = int(accelerator.num_processes)
        self.max_batch_tokens = int(max_batch_tokens)
        self.packing = packing
        self.prefix_cache = None if isinstance(prefix_cache, str) else prefix_cache
        self.seam_record = SeamRecord(align_labels=bool(align_labels))
        self.align_generation = bool(align_generation)
        self.generation_record = GenerationRecord(align_generation=self.align_generation)
        self._backoffs: dict[str, Backoff] = {}
        self._batch_backoffs: list[Backoff] = []
        self._stops: tuple[str, ...] = ()
        self._trie: VocabularyTrie | None = None
        self._scorer: HFScorer | None = None

    @property
    def scorer(self) -> HFScorer:
        """The label scorer, configured like this model's stock loglikelihood (built on first use)."""
        if self._scorer is None:
            batch_size = self.batch_size_per_gpu
            self._scorer = HFScorer(
                self.model,
                self.tokenizer,
                max_length=self.max_length,
                max_batch_tokens=self.max_batch_tokens,
                max_batch_prompts=None if isinstance(batch_size, str) else int(batch_size),
                add_special_tokens=self.add_bos_token,
                prefix_token_id=self.prefix_token_id,
                align_labels=self.seam_record.align_labels,
                logprob_dtype=self.softmax_dtype or torch.float32,
                autocast_dtype=self.mixed_precision_dtype,
                device=self.device,
                packing=self.packing,
                prefix_cache=self.prefix_cache,
            )
        return self._scorer

    def loglikelihood(self, requests: list[Instance], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        if self.backend != "causal" or self.enable_thinking:
            # Encoder-decoder models keep lm-eval's path; enable_thinking makes HFLM raise its error.
            return super().loglikelihood(requests, disable_tqdm=disable_tqdm)
        scores = self.label_scores(requests, disable_tqdm)
        if self.world_size > 1:
            documents = len({(request.task_name, request.doc_id) for request in requests})
            logger.info("genclf-hf rank %d/%d scored %d documents (%d loglikelihood requests, %d tokens fed)",
                        self.rank, self.world_size, documents, len(requests), self.scorer.last_stats.forwarded_tokens)
        return [(score.logprob, score.is_greedy) for score in scores]

    def label_scores(self, requests: list[Instance], disable_tqdm: bool = False) -> list[ContinuationScore]:
        """Full scores (per-token log-probs included) of ``loglikelihood`` requests, in request order."""
        return score_requests(self.scorer, requests, cache_hook=self.cache_hook,
                              show_progress=not (disable_tqdm or self.rank != 0), record=self.seam_record)

    # -- token-aligned generation (align_generation=true) -------------------------------------------

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        if not self.align_generation or self.backend != "causal":
            return super().generate_until(requests, disable_tqdm=disable_tqdm)
        if self._trie is None:
            self._trie = VocabularyTrie(self.tokenizer)
        # a back-off never holds a stop string of any request (lm-eval would cut the answer inside it)
        self._stops = tuple(sorted({stop for request in requests for stop in _until(request.args[1])}))
        self._backoffs = {}
        try:
            texts = super().generate_until(requests, disable_tqdm=disable_tqdm)
            out = []
            for index, (text, request) in enumerate(zip(texts, requests, strict=True)):
                backoff = self._backoffs[request.args[0]]
                task = request_task_name(request)
                self.generation_record.add(str(task), backoff)
                out.append(strip_backoff(text, backoff, where=f"{task} request {index} (doc {request.doc_id})"))
            return out
        finally:
            self._batch_backoffs = []

    def tok_batch_encode(self, strings: list[str], *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        encoded, mask = super().tok_batch_encode(strings, *args, **kwargs)
        if not self.align_generation or self._trie is None:
            return encoded, mask
        backoffs = [plan_backoff(self.tokenizer, row[row_mask.bool()].tolist(), stop=self._stops, trie=self._trie,
                                 where=f"prompt {text[-40:]!r}")
                    for text, row, row_mask in zip(strings, encoded, mask, strict=True)]
        for text, backoff in zip(strings, backoffs, strict=True):
            self._backoffs[text] = backoff
        self._batch_backoffs = backoffs
        width = max(len(b.kept) for b in backoffs)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eot_token_id
        healed = torch.full((len(backoffs), width), int(pad), dtype=encoded.dtype)
        healed_mask = torch.zeros((len(backoffs), width), dtype=mask.dtype)
        for row, backoff in enumerate(backoffs):  # left padding, as HFLM's
            healed[row, width - len(backoff.kept):] = torch.tensor(backoff.kept, dtype=encoded.dtype)
            healed_mask[row, width - len(backoff.kept):] = 1
        return healed, healed_mask

    def _model_generate(self, context: torch.Tensor, max_length: int, stop: list[str], **generation_kwargs: Any) -> Any:
        if self.align_generation and self._batch_backoffs:
            from transformers import LogitsProcessorList

            answer_budget = max_length - context.shape[1]
            processors = LogitsProcessorList(generation_kwargs.pop("logits_processor", None) or [])
            processors.append(AlignedPrefixProcessor(self._batch_backoffs, context.shape[1], self._trie,
                                                     max_new_tokens=answer_budget, eos_token_id=self.eot_token_id))
            generation_kwargs["logits_processor"] = processors
            # room for spelling the backed-off characters (a token each at worst); each row's answer
            # keeps max_gen_toks after them: the processor ends the row there
            max_length += max(len(b.backed_off) for b in self._batch_backoffs)
        return super()._model_generate(context, max_length, stop, **generation_kwargs)


def _until(gen_kwargs: Any) -> list[str]:
    until = gen_kwargs.get("until") if isinstance(gen_kwargs, dict) else None
    return [until] if isinstance(until, str) else [u for u in (until or []) if isinstance(u, str)]
