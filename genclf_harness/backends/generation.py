"""Text generation: the ``Generator`` protocol and its transformers implementation.

Verifiers sample chain-of-thought rationales and best-of-N samples candidate solutions through
this one protocol, so any backend that implements it (transformers here; vLLM with the same
signature) serves both. The protocol is deliberately small and self-contained so that it can move
into :mod:`genclf_harness.backends.protocol` beside ``Scorer`` unchanged.

Contract of ``generate``:

- ``prompts`` are fully rendered strings (apply the chat template first, see :func:`chat_prompt`);
  they are tokenised as given, with no special tokens added in front of a text that already
  starts with the tokenizer's BOS text;
- the result has one list per prompt, each with ``n`` completions (the generated text only,
  without the prompt, the end-of-sequence token or the stop string that ended it);
- ``temperature == 0`` means greedy decoding (then the ``n`` completions are identical);
- ``seed`` makes a call reproducible: the same prompts, settings and seed give the same texts
  on the same backend and hardware (not across backends);
- ``stop``: generation of a completion ends at the first occurrence of any of these strings,
  which is cut off together with everything after it (vLLM's default behaviour).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SamplingSettings:
    """The sampling settings of one ``generate`` call, recorded beside what it produced."""

    n: int = 1
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if isinstance(self.stop, str):
            raise TypeError(f"stop must be a sequence of strings, got the string {self.stop!r}")
        object.__setattr__(self, "stop", tuple(self.stop))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["stop"] = list(self.stop)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamplingSettings:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        if "stop" in known:
            known["stop"] = tuple(known["stop"])
        return cls(**known)


@runtime_checkable
class Generator(Protocol):
    """A backend that samples completions for many prompts at once (see the module docstring)."""

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
        """``n`` completions for each prompt, in input order."""
        ...


def generate_with(
    generator: Generator, prompts: Sequence[str], settings: SamplingSettings, *, show_progress: bool = False
) -> list[list[str]]:
    """Call ``generator.generate`` with a :class:`SamplingSettings`."""
    return generator.generate(
        prompts,
        n=settings.n,
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        seed=settings.seed,
        stop=settings.stop,
        show_progress=show_progress,
    )


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def chat_prompt(
    tokenizer: Any,
    user: str,
    *,
    system: str | None = None,
    demonstrations: Sequence[tuple[str, str]] = (),
    assistant_prefix: str = "",
) -> str:
    """Render a user turn with the tokenizer's chat template, ready for the assistant's answer.

    ``system=None`` keeps the template's default system prompt (SmolLM2 adds its own);
    ``demonstrations`` are (user, assistant) turns placed before it; ``assistant_prefix`` is text
    the answer starts with. Without a chat template the turns are joined by blank lines.
    """
    if not has_chat_template(tokenizer):
        turns = [f"{question}\n{answer}" for question, answer in demonstrations]
        return "\n\n".join([*turns, user]) + "\n" + assistant_prefix
    messages = [{"role": "system", "content": system}] if system is not None else []
    for question, answer in demonstrations:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    messages.append({"role": "user", "content": user})
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return rendered + assistant_prefix


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cut ``text`` at the earliest occurrence of any stop string."""
    cut = len(text)
    for marker in stop:
        if marker:
            at = text.find(marker)
            if 0 <= at < cut:
                cut = at
    return text[:cut]


class HFGenerator:
    """Samples completions with a transformers causal LM (implements :class:`Generator`).

    Each prompt is encoded once: a batch of distinct prompts (left-padded) is prefilled, and its
    key/value cache is repeated ``n`` times for the samples (``model.generate`` with
    ``num_return_sequences`` would prefill every copy). Finished sequences leave the batch.
    Batches hold at most ``max_batch_sequences`` sequences (prompts times ``n``).
    Pass the model object of an :class:`~genclf_harness.backends.scorer.HFScorer` to share it
    (:meth:`from_scorer`).

    Sampling: temperature, then nucleus (top-p) filtering, then a draw from a ``torch.Generator``
    seeded with ``seed`` (the global RNG is left alone), so a call is reproducible for the same
    prompts, settings and ``max_batch_sequences``.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_batch_sequences: int = 64,
        autocast_dtype: Any = None,
        device: Any = None,
    ) -> None:
        import torch

        if max_batch_sequences < 1:
            raise ValueError(f"max_batch_sequences must be positive, got {max_batch_sequences}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_sequences = int(max_batch_sequences)
        self.autocast_dtype = autocast_dtype
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.eos_ids = _eos_ids(model, tokenizer)
        self._cache_kwarg = cache_argument(model)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ValueError("the tokenizer has neither a pad nor an EOS token; generation needs one to pad")
        self._pad_id = int(pad)
        bos = tokenizer.bos_token
        self._bos_text = bos if isinstance(bos, str) and bos else None

    @classmethod
    def from_scorer(cls, scorer: Any, **kwargs: Any) -> HFGenerator:
        """A generator sharing the model and tokenizer of an ``HFScorer`` (no second copy)."""
        kwargs.setdefault("autocast_dtype", getattr(scorer, "autocast_dtype", None))
        return cls(scorer.model, scorer.tokenizer, **kwargs)

    @classmethod
    def from_pretrained(
        cls, pretrained: str | None = None, *, dtype: str = "float32", device: str | None = None, **kwargs: Any
    ) -> HFGenerator:
        """Load a model folder or hub id (``None``/``"default"``: the embedded default model)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from genclf_harness.backends.default_model import resolve_pretrained

        path = resolve_pretrained(pretrained)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).eval()
        if device:
            model.to(device)
        return cls(model, AutoTokenizer.from_pretrained(path), **kwargs)

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
        import torch
        from tqdm.auto import tqdm

        settings = SamplingSettings(n, max_new_tokens, temperature, top_p, seed, tuple(stop))
        for index, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise TypeError(f"prompt #{index} must be a str, got {type(prompt).__name__}")
        if not prompts:
            return []
        encoded = [self._encode(prompt) for prompt in prompts]
        # Longest first, so a batch pads little and memory trouble shows at once.
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        per_batch = max(1, self.max_batch_sequences // settings.n)
        batches = [order[i : i + per_batch] for i in range(0, len(order), per_batch)]
        rng = torch.Generator(device=self.device)
        rng.manual_seed(settings.seed if settings.seed is not None else int(torch.seed() % (2**63)))
        results: list[list[str]] = [[] for _ in prompts]
        for batch in tqdm(batches, desc="Generating", disable=not show_progress):
            texts = self._generate_batch([encoded[i] for i in batch], settings, rng)
            for position, prompt_index in enumerate(batch):
                results[prompt_index] = texts[position * settings.n : (position + 1) * settings.n]
        return results

    # -- internals ------------------------------------------------------------------------------

    def _encode(self, prompt: str) -> list[int]:
        special = False if self._bos_text and prompt.startswith(self._bos_text) else None
        kwargs = {} if special is None else {"add_special_tokens": special}
        ids = self.tokenizer(prompt, **kwargs)["input_ids"]
        if not ids:
            raise ValueError(f"prompt {prompt[:60]!r} encodes to no tokens")
        return list(ids)

    def _generate_batch(self, encoded: list[list[int]], settings: SamplingSettings, rng: Any) -> list[str]:
        import torch

        width = max(map(len, encoded))
        input_ids = torch.full((len(encoded), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, ids in enumerate(encoded):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            mask[row, width - len(ids) :] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)

        total = len(encoded) * settings.n
        generated: list[list[int]] = [[] for _ in range(total)]
        alive = torch.arange(total, device=self.device)  # sequence index of each batch row
        stop_window = max((len(s) for s in settings.stop), default=0) + 2
        with torch.inference_mode(), self._autocast():
            output = self.model(
                input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1
            )
            cache = _output_cache(output)
            logits = output.logits[:, -1, :]
            if settings.n > 1:
                cache.batch_repeat_interleave(settings.n)
                logits = logits.repeat_interleave(settings.n, dim=0)
                mask = mask.repeat_interleave(settings.n, dim=0)
                positions = positions.repeat_interleave(settings.n, dim=0)
            next_position = positions[:, -1:] + 1
            for step in range(settings.max_new_tokens):
                tokens = _sample(logits.float(), settings.temperature, settings.top_p, rng)
                keep: list[int] = []
                for row, (sequence, token) in enumerate(zip(alive.tolist(), tokens.tolist(), strict=True)):
                    if token in self.eos_ids:
                        continue
                    generated[sequence].append(token)
                    if settings.stop and self._hits_stop(generated[sequence], settings.stop, stop_window):
                        continue
                    keep.append(row)
                if not keep or step == settings.max_new_tokens - 1:
                    break
                if len(keep) < len(alive):
                    index = torch.tensor(keep, device=self.device)
                    cache.batch_select_indices(index)
                    alive, tokens = alive[index], tokens[index]
                    mask, next_position = mask[index], next_position[index]
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                output = self.model(
                    input_ids=tokens[:, None],
                    attention_mask=mask,
                    position_ids=next_position,
                    use_cache=True,
                    **{self._cache_kwarg: cache},
                )
                cache = _output_cache(output)
                logits = output.logits[:, -1, :]
                next_position = next_position + 1
        texts = [self.tokenizer.decode(tokens, skip_special_tokens=True) for tokens in generated]
        return [truncate_at_stop(text, settings.stop) for text in texts]

    def _hits_stop(self, tokens: list[int], stop: tuple[str, ...], window: int) -> bool:
        tail = self.tokenizer.decode(tokens[-window:], skip_special_tokens=True)
        return any(marker and marker in tail for marker in stop)

    def _autocast(self) -> Any:
        import torch

        return torch.autocast(
            device_type=self.device.type,
            dtype=self.autocast_dtype or torch.bfloat16,
            enabled=self.autocast_dtype is not None,
        )


def _sample(logits: Any, temperature: float, top_p: float, rng: Any) -> Any:
    """One token per row: greedy at temperature 0, else temperature and nucleus sampling.

    The draw inverts the cumulative distribution with one uniform number per row: exact, and on
    CPU much faster than ``torch.multinomial`` or Gumbel noise over a large vocabulary.
    """
    import torch

    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, sorted_ids = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the top token always stays).
        outside = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p
        probs = torch.zeros_like(probs).scatter_(-1, sorted_ids, sorted_probs.masked_fill(outside, 0.0))
    cdf = probs.cumsum(dim=-1)
    uniform = torch.rand((probs.shape[0], 1), generator=rng, device=probs.device, dtype=cdf.dtype)
    tokens = torch.searchsorted(cdf, uniform * cdf[:, -1:], right=True).squeeze(-1)
    return tokens.clamp(max=probs.shape[-1] - 1)


def cache_argument(model: Any) -> str:
    # transformers 5.2x renamed the key/value cache argument from past_key_values to cache.
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _output_cache(output: Any) -> Any:
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    config = getattr(model, "generation_config", None)
    value = getattr(config, "eos_token_id", None)
    if isinstance(value, int):
        ids.add(value)
    elif value:
        ids.update(int(v) for v in value)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)
