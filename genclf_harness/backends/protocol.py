"""The scoring protocol every backend implements, and its typed inputs and results.

A classification prompt is one context followed by K label continuations. Backends score all K at
once so that the context is encoded a single time; the results carry the per-token log-probs, so
every normalisation (sum, mean per token, per character, per byte) is a view of the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

Normalization = Literal["sum", "mean_token", "per_char", "per_byte"]
"""How to turn a continuation's token log-probs into one score.

- ``sum``: the log-likelihood (lm-eval's ``acc``);
- ``mean_token``: mean log-prob per token (perplexity decoding, GenCLS++);
- ``per_char``: log-likelihood over the continuation's characters (lm-eval's ``acc_norm``);
- ``per_byte``: log-likelihood over its UTF-8 bytes (lm-eval's ``acc_bytes``).
"""


@dataclass(frozen=True, slots=True)
class LabelPrompt:
    """One document: a rendered context and the label continuations to score after it.

    The text is split into tokens the way lm-eval does it: trailing whitespace of the context
    belongs to the continuation, and an empty context is replaced by the prefix token.
    """

    context: str
    continuations: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.context, str):
            raise TypeError(f"LabelPrompt.context must be a str, got {type(self.context).__name__}: {self.context!r}")
        if isinstance(self.continuations, str) or not isinstance(self.continuations, Sequence):
            raise TypeError(
                "LabelPrompt.continuations must be a sequence of str (one per label), "
                f"got {type(self.continuations).__name__}: {self.continuations!r}"
            )
        object.__setattr__(self, "continuations", tuple(self.continuations))
        _check_continuations(self.continuations, str)


@dataclass(frozen=True, slots=True)
class TokenPrompt:
    """A prompt already split into token ids: the context and each label's continuation."""

    context: tuple[int, ...]
    continuations: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "context", tuple(int(t) for t in self.context))
        object.__setattr__(self, "continuations", tuple(tuple(int(t) for t in c) for c in self.continuations))
        if not self.context:
            raise ValueError("TokenPrompt.context is empty: put a prefix token (BOS or EOS) there")
        _check_continuations(self.continuations, tuple)


def _check_continuations(continuations: tuple, kind: type) -> None:
    if not continuations:
        raise ValueError("a prompt needs at least one label continuation, got none")
    for position, continuation in enumerate(continuations):
        if not isinstance(continuation, kind):
            raise TypeError(
                f"continuation #{position} must be a {kind.__name__}, "
                f"got {type(continuation).__name__}: {continuation!r}"
            )


@dataclass(frozen=True, slots=True)
class ContinuationScore:
    """The score of one label continuation after its context."""

    logprob: float
    """Summed log-probability of the continuation's tokens (lm-eval's log-likelihood)."""
    is_greedy: bool
    """Whether greedy decoding would produce exactly these tokens (lm-eval's ``is_greedy``)."""
    token_logprobs: tuple[float, ...]
    """One log-probability per continuation token."""
    text: str | None = None
    """The continuation as requested (``None`` for token-level requests); the per-character and
    per-byte normalisations divide by its length, as lm-eval's ``acc_norm``/``acc_bytes`` do."""

    @property
    def num_tokens(self) -> int:
        return len(self.token_logprobs)

    @property
    def mean_logprob(self) -> float:
        return self.logprob / self.num_tokens

    def normalized(self, how: Normalization = "sum") -> float:
        if how == "sum":
            return self.logprob
        if how == "mean_token":
            return self.mean_logprob
        if how in ("per_char", "per_byte"):
            if self.text is None:
                raise ValueError(f"{how} normalisation needs the continuation text (token-level request)")
            length = len(self.text) if how == "per_char" else len(self.text.encode("utf-8"))
            return self.logprob / length if length else -math.inf
        raise ValueError(f"unknown normalisation {how!r}; choose sum, mean_token, per_char or per_byte")


@dataclass(frozen=True, slots=True)
class PromptScores:
    """The scores of all label continuations of one prompt, in the order they were given."""

    continuations: tuple[ContinuationScore, ...]
    context_tokens: int
    """Tokens of the context as encoded, before any truncation."""
    truncated: bool = False
    """Whether the context was cut from the left to fit the model's maximum length."""
    seam_mismatches: int = 0
    """Labels whose ``context + label`` tokenises across the context's last token (see
    :mod:`genclf_harness.backends.label_encoding`): scored with lm-eval's split unless ``aligned``."""
    aligned: bool = False
    """Whether the labels were scored with token alignment (``align_labels``)."""

    @property
    def logprobs(self) -> tuple[float, ...]:
        return tuple(c.logprob for c in self.continuations)

    def normalized(self, how: Normalization = "sum") -> tuple[float, ...]:
        return tuple(c.normalized(how) for c in self.continuations)

    def best(self, how: Normalization = "sum") -> int:
        """Index of the highest-scoring continuation (the first one on ties, like numpy's argmax)."""
        scores = self.normalized(how)
        return max(range(len(scores)), key=scores.__getitem__)


@dataclass(slots=True)
class ScoringStats:
    """What one scoring call did; useful to check that work was not repeated."""

    prompts: int = 0
    continuations: int = 0
    batches: int = 0
    forwarded_tokens: int = 0
    """Real (unpadded) tokens fed to the model."""
    padded_tokens: int = 0
    """Batch rows times padded length, summed over batches."""
    minimum_tokens: int = 0
    """Each context once plus each continuation once: what a naive 'encode the context once'
    scheme would feed (the last continuation token never needs feeding, so this can be beaten)."""
    single_token_prompts: int = 0
    """Prompts whose labels are all one token: scored from the context's last position alone."""
    packed_units: int = 0
    """Contexts scored with several multi-token continuations packed behind them in one row."""
    truncated_prompts: int = 0
    prefix_cached_rows: int = 0
    """Rows run with the prefix cache (one at a time, reusing the head shared with the row before)."""
    reused_tokens: int = 0
    """Context tokens taken from the prefix cache instead of being fed again."""
    seam_mismatches: int = 0
    """Label continuations whose context tokens are not a prefix of ``context + label``'s tokens."""
    aligned_prompts: int = 0
    """Prompts scored with token alignment (``align_labels``) because of such a mismatch."""
    batch_token_budget: list[int] = field(default_factory=list)
    """The token budget used for each batch (it shrinks after an out-of-memory error)."""


@runtime_checkable
class Scorer(Protocol):
    """A backend that scores label continuations for many prompts at once.

    Implementations: :class:`genclf_harness.backends.scorer.HFScorer` (transformers).
    """

    def score(self, prompts: Sequence[LabelPrompt], *, show_progress: bool = True) -> list[PromptScores]:
        """Score every continuation of every prompt; results come back in input order."""
        ...

    # Generation (``generate(prompts, ...)``, for verifiers' rationales and RL rollouts) belongs to
    # this protocol too; it is added with the generation backends.
