"""Exact, fast label scoring on transformers causal LMs.

:class:`HFScorer` gives the same log-likelihoods as lm-eval's ``hf`` backend for the same
(context, continuation) requests, with less work: each context is fed once for all its labels
(see :mod:`genclf_harness.backends.packing`), single-token label sets cost one context, and
only the positions that predict label tokens go through the LM head and the log-softmax.

Exactness notes (lm-eval 0.4.x ``HFLM._loglikelihood_tokens``):

- the token split is lm-eval's (:mod:`genclf_harness.backends.label_encoding`);
- left truncation keeps the last ``max_length`` tokens of ``context + continuation[:-1]``;
- ``is_greedy`` is the argmax of the log-probs at every continuation position;
- with the prefix cache (below) a context's shared head comes from the KV cache of the row
  before it: the same computation split in two, equal to the one-pass forward up to float
  rounding (fp32: < 1e-5 on the default model, tested);
- the log-softmax runs in ``logprob_dtype`` (float32 by default). lm-eval runs it in the model's
  dtype unless ``softmax_dtype`` is set, which in bf16 rounds log-probs to about two significant
  digits and creates ties; float32 here is a deliberate improvement, not a mismatch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from genclf_harness.backends.generation import cache_argument
from genclf_harness.backends.label_encoding import EncodedPair, LabelEncoder
from genclf_harness.backends.packing import Row, attention_mask, batch_end, build_batch, plan_rows
from genclf_harness.backends.protocol import (
    ContinuationScore,
    LabelPrompt,
    PromptScores,
    ScoringStats,
    TokenPrompt,
)
from genclf_harness.backends.token_alignment import shared_prefix

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH_TOKENS = 8192
DEFAULT_MAX_LENGTH = 2048  # lm-eval's fallback when neither config nor tokenizer names one
_TOKENIZER_INFINITY = 1000000000000000019884624838656
_PACKABLE_ATTENTION = ("sdpa", "eager")
_OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


class HFScorer:
    """Scores label continuations with a transformers causal LM (implements ``Scorer``).

    Args:
        model: a causal LM (``PreTrainedModel``, or a PEFT model around one), in eval mode.
        tokenizer: its tokenizer.
        max_length: the longest sequence the model sees; longer inputs are cut from the left as
            lm-eval does. Default: the config's ``n_positions``/``max_position_embeddings``/
            ``n_ctx``, else the tokenizer's ``model_max_length``, else 2048 (lm-eval's rule).
        max_batch_tokens: bound on rows x padded length per forward pass. A single context
            longer than this still runs, alone; its labels are spread over several rows if
            they do not fit beside it.
        max_batch_prompts: at most this many rows per forward pass (``None``: no bound).
        add_special_tokens: lm-eval's ``add_bos_token``: ``None`` keeps the tokenizer's default.
        prefix_token_id: stands in for an empty context (default BOS, else EOS, as lm-eval).
        align_labels: where a label crosses a token seam (the context's tokens are not a prefix of
            ``context + label``'s), score the label's text by token alignment
            (:mod:`genclf_harness.backends.token_alignment`) instead of lm-eval's split.
        logprob_dtype: dtype of the log-softmax (float32 unless you mean to mimic lm-eval's
            coarse half-precision log-probs).
        autocast_dtype: run the forward pass under ``torch.autocast`` with this dtype.
        device: where inputs go (default: the device of the model's first parameter).
        packing: pack several multi-token labels behind one context with a 4D mask. ``None``
            enables it for sdpa and eager attention once a tiny probe confirms the model honours
            custom masks and position ids; other attention kernels score each multi-token label
            in its own row (still one row for all single-token labels).
        prefix_cache: reuse the KV cache across contexts that share a head, e.g. the step prompts
            of one solution (problem, earlier steps, then the step judged) or many questions after
            one long instruction. Rows run one at a time in token order; each keeps the cache of
            the longest token prefix it shares with the row before and feeds only the rest.
            ``None`` (auto): on a CPU, when sharing would skip at least half of the context tokens
            and the model has no sliding attention window; a GPU keeps its batched rows unless
            this is ``True``.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_length: int | None = None,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        max_batch_prompts: int | None = None,
        add_special_tokens: bool | None = None,
        prefix_token_id: int | None = None,
        align_labels: bool = False,
        logprob_dtype: torch.dtype = torch.float32,
        autocast_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        packing: bool | None = None,
        prefix_cache: bool | None = None,
    ) -> None:
        if max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be positive, got {max_batch_tokens}")
        if max_batch_prompts is not None and max_batch_prompts < 1:
            raise ValueError(f"max_batch_prompts must be positive or None, got {max_batch_prompts}")
        self.model = model
        self.tokenizer = tokenizer
        self.encoder = LabelEncoder(tokenizer, add_special_tokens=add_special_tokens, prefix_token_id=prefix_token_id,
                                    align_labels=align_labels)
        self.max_length = int(max_length) if max_length else _resolve_max_length(model.config, tokenizer)
        self.max_batch_tokens = int(max_batch_tokens)
        self.max_batch_prompts = max_batch_prompts
        self.logprob_dtype = logprob_dtype
        self.autocast_dtype = autocast_dtype
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.last_stats = ScoringStats()
        self._attention = getattr(model.config, "_attn_implementation", None) or "eager"
        self._sliding_window = _sliding_window(model.config)
        self._packing = packing if packing is not None else (None if self._attention in _PACKABLE_ATTENTION else False)
        self._logits_to_keep = True  # dropped if the model's forward does not take it
        if prefix_cache and self._sliding_window is not None:
            raise ValueError("prefix_cache: this model has a sliding attention window, whose cache cannot be "
                             "cut back to a shared prefix; leave prefix_cache unset")
        self.prefix_cache = prefix_cache
        self._cache_kwarg: str | None = None  # past_key_values, or cache from transformers 5.2x

    @classmethod
    def from_pretrained(
        cls,
        pretrained: str | None = None,
        *,
        dtype: str | torch.dtype = "float32",
        device: str | None = None,
        attn_implementation: str | None = None,
        **scorer_kwargs: Any,
    ) -> HFScorer:
        """Load a model folder or hub id (``None``/``"default"``: the embedded default model)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from genclf_harness.backends.default_model import resolve_pretrained

        path = resolve_pretrained(pretrained)
        torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) and dtype != "auto" else dtype
        model_kwargs = {"dtype": torch_dtype}
        if attn_implementation:
            model_kwargs["attn_implementation"] = attn_implementation
        model = AutoModelForCausalLM.from_pretrained(path, **model_kwargs).eval()
        if device:
            model.to(device)
        return cls(model, AutoTokenizer.from_pretrained(path), **scorer_kwargs)

    # -- public API ---------------------------------------------------------------------------

    def score(self, prompts: Sequence[LabelPrompt], *, show_progress: bool = True) -> list[PromptScores]:
        """Score every continuation of every prompt; results come back in input order."""
        for index, prompt in enumerate(prompts):
            if not isinstance(prompt, LabelPrompt):
                raise TypeError(f"prompt #{index} must be a LabelPrompt, got {type(prompt).__name__}")
        encoding = self.encoder.plan(prompts)
        scores = encoding.finish(self._score(encoding.pairs, encoding.texts(), show_progress))
        self.last_stats.seam_mismatches = len(encoding.mismatches)
        self.last_stats.aligned_prompts = len(encoding.aligned)
        return scores

    def score_tokens(self, prompts: Sequence[TokenPrompt], *, show_progress: bool = True) -> list[PromptScores]:
        """Score prompts already split into token ids (no special-token or whitespace handling)."""
        encoded = [[(p.context, c) for c in p.continuations] for p in prompts]
        return self._score(encoded, None, show_progress)

    # -- planning and running -----------------------------------------------------------------

    def _score(
        self,
        encoded: list[list[EncodedPair]],
        texts: list[tuple[str, ...]] | None,
        show_progress: bool,
    ) -> list[PromptScores]:
        stats = ScoringStats(prompts=len(encoded))
        self.last_stats = stats
        rows, truncated = self._plan(encoded, stats)
        token_logprobs: list[list[list[float]]] = [[[] for _ in pairs] for pairs in encoded]
        greedy: list[list[bool]] = [[True] * len(pairs) for pairs in encoded]
        if self._use_prefix_cache(rows):
            results = self._run_shared(sorted(rows, key=lambda row: row.context), stats, show_progress)
        else:
            results = self._run(rows, stats, show_progress)
        for row, row_results in results:
            for (position, _), (values, is_greedy) in zip(row.continuations, row_results, strict=True):
                token_logprobs[row.prompt][position] = values
                greedy[row.prompt][position] = is_greedy
        return [
            PromptScores(
                continuations=tuple(
                    ContinuationScore(
                        logprob=math.fsum(values),
                        is_greedy=greedy[index][position],
                        token_logprobs=tuple(values),
                        text=texts[index][position] if texts is not None else None,
                    )
                    for position, values in enumerate(token_logprobs[index])
                ),
                context_tokens=len(encoded[index][0][0]),
                truncated=truncated[index],
            )
            for index in range(len(encoded))
        ]

    def _plan(self, encoded: list[list[EncodedPair]], stats: ScoringStats) -> tuple[list[Row], list[bool]]:
        """All rows to run, longest first, and which prompts were truncated."""
        pack = self._packing_enabled(encoded)
        rows: list[Row] = []
        truncated: list[bool] = []
        for index, pairs in enumerate(encoded):
            prompt_rows, cut = plan_rows(
                index,
                pairs,
                max_length=self.max_length,
                max_row_tokens=self.max_batch_tokens,
                pack=pack,
                max_packed_length=self._sliding_window,
            )
            rows.extend(prompt_rows)
            truncated.append(cut)
            stats.continuations += len(pairs)
            contexts = {context for context, _ in pairs}
            stats.minimum_tokens += sum(map(len, contexts)) + sum(len(c) for _, c in pairs)
            stats.single_token_prompts += all(len(c) == 1 for _, c in pairs)
        stats.packed_units = sum(row.needs_mask for row in rows)
        stats.truncated_prompts = sum(truncated)
        if stats.truncated_prompts:
            logger.warning(
                "%d of %d prompts exceed the model's maximum length %d and were cut from the left",
                stats.truncated_prompts,
                len(encoded),
                self.max_length,
            )
        # Longest first, as lm-eval does: batch widths shrink, and an out-of-memory error shows
        # up at once rather than at the end.
        rows.sort(key=lambda row: (-row.length, row.prompt, row.continuations[0][0]))
        return rows, truncated

    def _run(
        self, rows: list[Row], stats: ScoringStats, show_progress: bool
    ) -> Iterator[tuple[Row, list[tuple[list[float], bool]]]]:
        """Run the rows in token-budgeted batches; yields each row with its per-slot results."""
        budget = self.max_batch_tokens
        with tqdm(total=stats.continuations, desc="Scoring labels", disable=not show_progress) as progress:
            start = 0
            while start < len(rows):
                stop = batch_end(rows, start, budget, self.max_batch_prompts)
                batch = rows[start:stop]
                try:
                    results = self._forward(batch, stats)
                except _OUT_OF_MEMORY as error:
                    if len(batch) == 1:
                        raise _OUT_OF_MEMORY(
                            f"out of memory scoring a single row of {batch[0].length} tokens "
                            f"(prompt #{batch[0].prompt}); lower max_length or use a smaller model"
                        ) from error
                    budget = max(1, (len(batch) // 2) * batch[0].length)
                    logger.warning("Out of memory with %d rows; batch budget lowered to %d tokens", len(batch), budget)
                    _empty_device_cache(self.device)
                    continue
                stats.batch_token_budget.append(budget)
                yield from zip(batch, results, strict=True)
                progress.update(sum(len(row.continuations) for row in batch))
                start = stop

    # -- prefix cache -----------------------------------------------------------------------------

    def _use_prefix_cache(self, rows: Sequence[Row]) -> bool:
        if not rows:
            return False
        if self.prefix_cache is not None:
            return self.prefix_cache
        if self.device.type != "cpu" or self._sliding_window is not None or len(rows) < 2:
            return False
        contexts = sorted(row.context for row in rows)
        skipped = sum(min(shared_prefix(a, b), len(b) - 1) for a, b in zip(contexts, contexts[1:]))
        return skipped >= 0.5 * sum(map(len, contexts))

    def _run_shared(
        self, rows: list[Row], stats: ScoringStats, show_progress: bool
    ) -> Iterator[tuple[Row, list[tuple[list[float], bool]]]]:
        """Rows (sorted by context tokens) one at a time, each reusing the cache of the head it shares with the last.

        Per row: the context after the reused head is fed (the cache then holds the context), its
        last position scores every continuation's first token, and each multi-token continuation
        is fed on top of the context's cache, which is cut back to the context after it. No mask
        and no position ids are built: the cache's length places every token.
        """
        from transformers import DynamicCache

        cache = DynamicCache()
        cached: tuple[int, ...] = ()
        stats.prefix_cached_rows += len(rows)
        with tqdm(total=sum(len(row.continuations) for row in rows), desc="Scoring labels (prefix cache)",
                  disable=not show_progress) as progress:
            for row in rows:
                context = tuple(row.context)
                # Keep the shared head, but never the context's last token: its logits are read.
                reuse = min(shared_prefix(cached, context), len(context) - 1)
                if reuse == 0:
                    cache = DynamicCache()
                elif reuse < len(cached):
                    cache.crop(reuse - len(cached))  # a negative count: tokens to drop (every version)
                first = self._cached_logprobs(context[reuse:], cache, keep=1, row=row)[0]
                cached = context
                stats.reused_tokens += reuse
                stats.forwarded_tokens += len(context) - reuse
                results: list[tuple[list[float], bool]] = []
                for _, ids in row.continuations:
                    values = [float(first[ids[0]])]
                    greedy = int(first.argmax()) == ids[0]
                    if len(ids) > 1:
                        rest = self._cached_logprobs(ids[:-1], cache, keep=len(ids) - 1, row=row)
                        targets = torch.tensor(ids[1:], device=rest.device)
                        picked = rest.gather(1, targets[:, None])[:, 0]
                        values += picked.float().tolist()
                        greedy = greedy and bool((rest.argmax(dim=-1) == targets).all())
                        cache.crop(1 - len(ids))
                        stats.forwarded_tokens += len(ids) - 1
                    results.append((values, greedy))
                stats.batches += 1
                yield row, results
                progress.update(len(row.continuations))

    def _cached_logprobs(self, ids: Sequence[int], cache: Any, *, keep: int, row: Row) -> torch.Tensor:
        """Log-probs (keep, vocab) of the last ``keep`` of ``ids`` fed after ``cache`` (which grows)."""
        input_ids = torch.tensor([list(ids)], dtype=torch.long, device=self.device)
        if self._cache_kwarg is None:
            self._cache_kwarg = cache_argument(self.model)
        logits = self._model_logits(input_ids, {"use_cache": True, self._cache_kwarg: cache}, keep=keep)
        logprobs = torch.log_softmax(logits[0, -keep:], dim=-1, dtype=self.logprob_dtype)
        if torch.isnan(logprobs).any():
            raise FloatingPointError(f"the model produced NaN log-probs for prompt {row.prompt}")
        return logprobs

    def _forward(self, rows: Sequence[Row], stats: ScoringStats) -> list[list[tuple[list[float], bool]]]:
        """Run one batch; per row, per continuation slot: (token log-probs, is_greedy)."""
        with_mask = any(row.needs_mask for row in rows)
        tensors = build_batch(rows, with_mask=with_mask)
        input_ids = tensors.input_ids.to(self.device)
        width = input_ids.shape[1]
        kwargs: dict[str, Any] = {"use_cache": False}
        if with_mask:
            kwargs["position_ids"] = tensors.position_ids.to(self.device)
            kwargs["attention_mask"] = attention_mask(
                tensors.segments.to(self.device),
                boolean=self._attention == "sdpa",
                dtype=_model_dtype(self.model),
            )
        # Without a mask the rows are right-padded and causal, exactly lm-eval's forward pass.
        first_read = min(len(row.context) - 1 for row in rows)
        logits = self._model_logits(input_ids, kwargs, keep=width - first_read)
        offset = width - logits.shape[1]

        # Every position from the context's last token to the row's end predicts a label token.
        spans = [(r, len(row.context) - 1, row.length) for r, row in enumerate(rows)]
        hidden = torch.cat([logits[r, begin - offset : end - offset] for r, begin, end in spans])
        logprobs = torch.log_softmax(hidden, dim=-1, dtype=self.logprob_dtype)
        argmax = logprobs.argmax(dim=-1)

        flat_positions: list[int] = []
        flat_tokens: list[int] = []
        base = 0
        for (_, begin, end), reads in zip(spans, tensors.reads, strict=True):
            for position, token, _ in reads:
                flat_positions.append(base + position - begin)
                flat_tokens.append(token)
            base += end - begin
        position_index = torch.tensor(flat_positions, device=logprobs.device)
        token_index = torch.tensor(flat_tokens, device=logprobs.device)
        values = logprobs[position_index, token_index].float().tolist()
        hits = (argmax[position_index] == token_index).tolist()
        if any(math.isnan(v) for v in values):
            bad = sorted({row.prompt for row in rows})
            raise FloatingPointError(f"the model produced NaN log-probs in a batch with prompts {bad[:10]}")

        stats.batches += 1
        stats.forwarded_tokens += sum(row.length for row in rows)
        stats.padded_tokens += len(rows) * width

        results: list[list[tuple[list[float], bool]]] = []
        cursor = 0
        for row, reads in zip(rows, tensors.reads, strict=True):
            per_slot: list[tuple[list[float], bool]] = [([], True) for _ in row.continuations]
            for _, _, slot in reads:
                tokens, is_greedy = per_slot[slot]
                tokens.append(values[cursor])
                per_slot[slot] = (tokens, is_greedy and hits[cursor])
                cursor += 1
            results.append(per_slot)
        return results

    def _model_logits(self, input_ids: torch.Tensor, kwargs: dict[str, Any], keep: int) -> torch.Tensor:
        with (
            torch.inference_mode(),
            torch.autocast(
                device_type=self.device.type,
                dtype=self.autocast_dtype or torch.bfloat16,
                enabled=self.autocast_dtype is not None,
            ),
        ):
            if self._logits_to_keep:
                try:
                    return self.model(input_ids=input_ids, logits_to_keep=keep, **kwargs).logits
                except TypeError as error:
                    if "logits_to_keep" not in str(error):
                        raise
                    # An older or remote-code model: compute all logits instead.
                    self._logits_to_keep = False
            return self.model(input_ids=input_ids, **kwargs).logits

    # -- packing probe ------------------------------------------------------------------------

    def _packing_enabled(self, encoded: list[list[EncodedPair]]) -> bool:
        if self._packing is not None:
            return self._packing
        needs = any(sum(len(c) > 1 for _, c in pairs) > 1 for pairs in encoded)
        if not needs:
            return False  # nothing to pack in this call: decide when it matters
        self._packing = self._probe_packing()
        return self._packing

    def _probe_packing(self) -> bool:
        """Check once that packed rows reproduce separate rows on this model.

        The 4D mask and restarted position ids only work if the model passes them to every
        attention layer unchanged; a model that rebuilds its own mask or ignores position ids
        would silently give wrong scores, so compare on a tiny example and fall back if needed.
        """
        ids = self.tokenizer("The capital of France is Paris, and the capital of Italy is")["input_ids"]
        first = tuple(self.tokenizer(" Rome, of course", add_special_tokens=False)["input_ids"])
        second = tuple(self.tokenizer(" Milan or maybe Turin", add_special_tokens=False)["input_ids"])
        context = tuple(ids)
        packed_row = Row(0, context, ((0, first), (1, second)))
        separate_rows = [Row(0, context, ((0, first),)), Row(0, context, ((1, second),))]
        scratch = ScoringStats()
        try:
            packed = self._forward([packed_row], scratch)[0]
            separate = [self._forward([row], scratch)[0][0] for row in separate_rows]
        except Exception as error:  # noqa: BLE001 - any failure means: do not pack
            logger.warning("Packing disabled: the model rejected a custom 4D attention mask (%s)", error)
            return False
        difference = max(abs(a - b) for got, want in zip(packed, separate) for a, b in zip(got[0], want[0]))
        half = _model_dtype(self.model) != torch.float32 or self.autocast_dtype is not None
        tolerance = 0.25 if half else 1e-3
        if difference > tolerance:
            logger.warning(
                "Packing disabled: packed and separate scoring differ by %.3g on this model "
                "(it does not honour custom masks or position ids); scoring each label in its own row",
                difference,
            )
            return False
        return True


def _resolve_max_length(config: Any, tokenizer: Any) -> int:
    # lm-eval's resolve_max_length, so both truncate at the same place.
    source = getattr(config, "text_config", None) or config
    for attribute in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(source, attribute, None)
        if value is not None:
            return int(value)
    model_max_length = getattr(tokenizer, "model_max_length", None)
    if model_max_length is not None and model_max_length != _TOKENIZER_INFINITY:
        return int(model_max_length)
    return DEFAULT_MAX_LENGTH


def _sliding_window(config: Any) -> int | None:
    source = getattr(config, "text_config", None) or config
    window = getattr(source, "sliding_window", None)
    if getattr(source, "use_sliding_window", True) is False:
        return None
    return int(window) if window else None


def _model_dtype(model: Any) -> torch.dtype:
    return next(model.parameters()).dtype


def _empty_device_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
