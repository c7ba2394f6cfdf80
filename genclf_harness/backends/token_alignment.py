"""Token alignment for label scoring: score a label's text when the context ends inside a token.

"Token Alignment via Character Matching for Subword Completion" (Athiwaratkun et al., ACL 2024)
backs off the last tokens of a prompt and constrains the first generated tokens to those whose
characters agree with what was backed off. Applied to scoring: when the context's tokens are not
a prefix of ``context + label``'s tokens (a *seam mismatch*: ``"Sentiment: pos" + "itive"``
tokenises as ``... Ġpositive``; ``"Link: http:" + "//a.com"`` as ``... Ġhttp :// a ...``),

1. back off to ``P``, the longest token prefix the context shares with every ``context + label``;
   the context characters after ``P`` are the backed-off text ``B``;
2. each label's remaining tokens ``R = tokens(context + label)[len(P):]`` spell ``B + label``;
3. while the characters of ``B`` are not yet all spelt out, each step is renormalised over the
   tokens consistent with what is left of ``B`` (a token's text is a prefix of it, or starts with
   it), so the label is scored given that the text continues with ``B``:

   ``log p(label | context) = Σ_{j ≤ m} [log p(R_j | P R_<j) − log Σ_{t ∈ A(B_j)} p(t | P R_<j)]
   + Σ_{j > m} log p(R_j | P R_<j)``, with ``m`` the step that spells the last character of ``B``
   and ``B_j`` the part of ``B`` still unspelt before step ``j``.

Every quantity is a log-probability that the backends already compute: a constrained step is the
context ``P R_<j`` with each consistent token as a single-token continuation (one context, all
read from its last position), the rest of the label one ordinary continuation. So the same plan
runs on every backend, batched, cached and truncated as usual, and :meth:`AlignedPrompt.fold`
turns those scores into the label's.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

TokenIds = tuple[int, ...]
_REPLACEMENT = "\ufffd"


class AlignmentError(ValueError):
    """A prompt cannot be token-aligned (nothing left after back-off, byte tokens, odd pieces)."""


class VocabularyTrie:
    """A vocabulary's token texts, searched for tokens consistent with a string.

    A token's text is what it adds after another token (``decode([a, t])`` minus ``decode([a])``),
    so SentencePiece's word-initial ``▁`` reads as the space it is. Special and added tokens are
    never consistent with text. Tokens whose text is a partial UTF-8 sequence (byte tokens) are
    counted: characters cannot be matched against them.
    """

    def __init__(self, tokenizer: object) -> None:
        size = len(tokenizer)  # type: ignore[arg-type]
        excluded = set(getattr(tokenizer, "all_special_ids", ()) or ())
        excluded.update(getattr(tokenizer, "added_tokens_decoder", {}) or {})
        anchor = tokenizer("a", add_special_tokens=False)["input_ids"][-1]  # type: ignore[operator]
        head = tokenizer.decode([anchor])  # type: ignore[attr-defined]
        pieces = tokenizer.batch_decode([[anchor, token] for token in range(size)])  # type: ignore[attr-defined]
        self.texts: list[str] = []
        self.byte_tokens = 0
        by_text: dict[str, list[int]] = {}
        for token, piece in enumerate(pieces):
            text = piece[len(head):] if piece.startswith(head) else tokenizer.decode([token])  # type: ignore[attr-defined]
            if token in excluded or not text:
                text = ""
            elif _REPLACEMENT in text:
                self.byte_tokens += 1
                text = ""
            self.texts.append(text)
            if text:
                by_text.setdefault(text, []).append(token)
        self._by_text = by_text
        self._sorted = sorted(by_text)

    def text(self, token: int) -> str:
        return self.texts[token] if 0 <= token < len(self.texts) else ""

    def consistent(self, text: str) -> TokenIds:
        """Ids of the tokens whose text is a non-empty prefix of ``text`` or starts with it."""
        found: set[int] = set()
        for end in range(1, len(text) + 1):
            found.update(self._by_text.get(text[:end], ()))
        start = bisect.bisect_left(self._sorted, text)
        for candidate in self._sorted[start:]:
            if not candidate.startswith(text):
                break
            found.update(self._by_text[candidate])
        return tuple(sorted(found))


@dataclass(frozen=True, slots=True)
class AlignedLabel:
    """Where one label's pieces sit among its prompt's scored pairs."""

    steps: tuple[tuple[int, int], ...]
    """Per constrained step: (pair index of this label's token, index of the step's group)."""
    tail: int | None
    """Pair index of the unconstrained rest of the label (``None`` when nothing is left)."""


@dataclass(frozen=True, slots=True)
class AlignedPrompt:
    """How the scores of an aligned prompt's pairs fold back into one score per label."""

    backed_off: str
    """The context characters given back to the labels (``B``)."""
    groups: tuple[tuple[int, ...], ...]
    """Per constrained step context: the pair indices of its consistent tokens."""
    labels: tuple[AlignedLabel, ...]

    def fold(self, scores: Sequence[object], texts: Sequence[str]) -> tuple[object, ...]:
        """The labels' :class:`ContinuationScore`s from the pairs' scores (same order as ``texts``)."""
        from genclf_harness.backends.protocol import ContinuationScore

        values = [score.logprob for score in scores]  # type: ignore[attr-defined]
        norms = [_logsumexp([values[i] for i in group]) for group in self.groups]
        best = [max(values[i] for i in group) for group in self.groups]
        out = []
        for label, text in zip(self.labels, texts, strict=True):
            token_values = [values[pair] - norms[group] for pair, group in label.steps]
            greedy = all(values[pair] >= best[group] for pair, group in label.steps)
            if label.tail is not None:
                tail = scores[label.tail]
                token_values.extend(tail.token_logprobs)  # type: ignore[attr-defined]
                greedy = greedy and tail.is_greedy  # type: ignore[attr-defined]
            out.append(ContinuationScore(logprob=math.fsum(token_values), is_greedy=greedy,
                                         token_logprobs=tuple(token_values), text=text))
        return tuple(out)


def align_prompt(
    index: int,
    context: str,
    context_ids: TokenIds,
    context_end_offsets: Sequence[int],
    wholes: Sequence[TokenIds],
    continuations: Sequence[str],
    trie: VocabularyTrie,
) -> tuple[list[tuple[TokenIds, TokenIds]], AlignedPrompt]:
    """The (context ids, continuation ids) pairs to score for one prompt, and how to fold them.

    ``context`` is the context as tokenised (trailing whitespace already moved to the labels),
    ``context_end_offsets[i]`` the character where its token ``i`` ends, and ``wholes[k]`` the ids
    of ``context + label k`` as one text.
    """
    shared = min(shared_prefix(context_ids, whole) for whole in wholes)
    if shared == 0:
        raise AlignmentError(
            f"prompt #{index}: nothing of the context {_tail(context)!r} is left after backing off to the "
            "tokens it shares with every label; give the context a clean end (a space or a newline) "
            "before the answer slot"
        )
    head = context_ids[:shared]
    backed_off = context[context_end_offsets[shared - 1]:]
    if trie.byte_tokens and not backed_off.isascii():
        raise AlignmentError(
            f"prompt #{index}: the backed-off text {backed_off!r} has non-ASCII characters and this vocabulary "
            f"has {trie.byte_tokens} byte tokens, which characters cannot be matched against; align_labels "
            "supports ASCII seams only with such a tokenizer"
        )
    pairs: list[tuple[TokenIds, TokenIds]] = []
    groups: dict[TokenIds, tuple[int, dict[int, int]]] = {}  # step context -> (group, token -> pair)
    labels: list[AlignedLabel] = []
    for position, (whole, continuation) in enumerate(zip(wholes, continuations, strict=True)):
        rest = whole[shared:]
        covered = 0
        steps: list[tuple[int, int]] = []
        tail: int | None = None
        for step, token in enumerate(rest):
            if covered >= len(backed_off):
                pairs.append((head + rest[:step], rest[step:]))
                tail = len(pairs) - 1
                break
            remaining = backed_off[covered:]
            piece = trie.text(token)
            if not piece or not (piece.startswith(remaining) or remaining.startswith(piece)):
                raise AlignmentError(
                    f"prompt #{index}: continuation #{position} {continuation!r}: token {step} after the back-off "
                    f"({piece!r}) does not spell the backed-off text {remaining!r}"
                )
            step_context = head + rest[:step]
            if step_context not in groups:
                members: dict[int, int] = {}
                for candidate in trie.consistent(remaining):
                    pairs.append((step_context, (candidate,)))
                    members[candidate] = len(pairs) - 1
                groups[step_context] = (len(groups), members)
            group, members = groups[step_context]
            steps.append((members[token], group))
            covered += len(piece)
        labels.append(AlignedLabel(steps=tuple(steps), tail=tail))
    ordered = sorted(groups.values(), key=lambda item: item[0])
    plan = AlignedPrompt(
        backed_off=backed_off,
        groups=tuple(tuple(members.values()) for _, members in ordered),
        labels=tuple(labels),
    )
    return pairs, plan


def shared_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return -math.inf
    return top + math.log(math.fsum(math.exp(v - top) for v in values))


def _tail(text: str, length: int = 40) -> str:
    return text if len(text) <= length else "…" + text[-length:]
