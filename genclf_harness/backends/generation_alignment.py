"""Token alignment for generation: a prompt that ends inside a word, or in whitespace.

A prompt cut at a character (``"... a beautifully sh"``, ``"Answer: "``, ``"Link: http:"``) ends with
a token the text would not have had if it continued: ``"Ġsh"`` where running text has ``"Ġshot"``,
``"Ġ"`` where it has ``"Ġ42"``. Generating after it asks the model to continue a tokenisation it
has rarely seen. Token alignment (Athiwaratkun et al., ACL 2024, "Token Alignment via Character
Matching for Subword Completion") backs off the prompt's last tokens and constrains the first
generated tokens to spell the backed-off characters again (each step: a token whose text is a
prefix of what is left, or starts with it), after which generation is free. The backed-off
characters are then cut from the front of the generated text, so the caller gets a continuation of
the prompt as written.

`plan_backoff` chooses the back-off: the prompt's last tokens, from the end, up to ``max_tokens``,
stopping after the first one that starts a word (its text begins with whitespace) or at one that
holds a line break, a special token or a stop string (lm-eval's ``until``); a prompt ending in a
line break is not backed off. transformers' ``token_healing`` instead replaces only the last token
(after stripping the prompt's whitespace), by its most likely extension.

`AlignedPrefixProcessor` is the constraint as a transformers ``LogitsProcessor`` (one per batch of
left-padded rows), so it runs inside ``model.generate`` with every other generation setting; it
also ends each row ``max_new_tokens`` after the tokens that spelt its back-off, so the answer's
budget (lm-eval's ``max_gen_toks``) does not shrink by the back-off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from genclf_harness.backends.token_alignment import AlignmentError, VocabularyTrie

DEFAULT_MAX_BACKOFF = 4
"""Tokens backed off at most (transformers' token_healing backs off one)."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """A prompt's back-off: the tokens kept and the characters the generation must spell first."""

    kept: tuple[int, ...]
    backed_off: str
    """The characters of the backed-off tokens (``""``: nothing backed off)."""
    tokens: int
    """How many tokens were backed off."""


def plan_backoff(tokenizer: Any, ids: Sequence[int], *, stop: Sequence[str] = (),
                 max_tokens: int = DEFAULT_MAX_BACKOFF, trie: VocabularyTrie | None = None,
                 where: str = "prompt") -> Backoff:
    """The back-off of a prompt's token ids (see the module docstring for the rule); with ``trie``,
    characters no vocabulary token can spell are never backed off."""
    ids = [int(t) for t in ids]
    special = set(getattr(tokenizer, "all_special_ids", ()) or ())
    full = tokenizer.decode(ids)
    backed, cut = "", len(ids)
    while cut > 1 and len(ids) - cut < max_tokens and not backed[:1].isspace():
        if ids[cut - 1] in special:
            break
        prefix = tokenizer.decode(ids[: cut - 1])
        if not full.startswith(prefix):
            break  # the prefix decodes differently on its own: no clean character boundary there
        candidate = full[len(prefix):]
        if "\ufffd" in candidate:
            raise AlignmentError(f"{where}: its last tokens are partial UTF-8 bytes ({candidate!r}); characters "
                                 "cannot be matched against byte tokens, so it cannot be token-aligned")
        if "\n" in candidate or any(s and s in candidate for s in stop):
            break
        if trie is not None and not trie.consistent(candidate):
            break
        backed, cut = candidate, cut - 1
    return Backoff(tuple(ids[:cut]), backed, len(ids) - cut)


def strip_backoff(text: str, backoff: Backoff, where: str = "generation") -> str:
    """The generated text after the backed-off characters it starts with.

    A generation that ends inside the backed-off characters (the token budget ran out, or a stop
    string spans the prompt and the first generated characters) adds nothing: ``""``.
    """
    if not backoff.backed_off:
        return text
    if text.startswith(backoff.backed_off):
        return text[len(backoff.backed_off):]
    if backoff.backed_off.startswith(text):
        return ""
    raise AlignmentError(f"{where}: the generated text {text[:40]!r} does not start with the backed-off "
                         f"characters {backoff.backed_off!r}")


@dataclass(slots=True)
class GenerationRecord:
    """What ``align_generation`` did, per task, for the run manifest."""

    align_generation: bool = False
    prompts: dict[str, int] = field(default_factory=dict)
    """Generation prompts seen, per task."""
    backed_off: dict[str, int] = field(default_factory=dict)
    """Prompts whose last tokens were backed off, per task."""
    tokens: dict[str, int] = field(default_factory=dict)
    """Tokens backed off in all, per task."""

    def add(self, task: str, backoff: Backoff) -> None:
        self.prompts[task] = self.prompts.get(task, 0) + 1
        if backoff.tokens:
            self.backed_off[task] = self.backed_off.get(task, 0) + 1
            self.tokens[task] = self.tokens.get(task, 0) + backoff.tokens

    def manifest(self) -> dict[str, Any]:
        return {"align_generation": self.align_generation, "prompts": dict(self.prompts),
                "backed_off_prompts": dict(self.backed_off), "tokens_backed_off": dict(self.tokens)}


def remaining(backed_off: str, generated: Sequence[int], trie: VocabularyTrie) -> str:
    """What is still to be spelt of ``backed_off`` after the ``generated`` tokens (``""``: all of it)."""
    return _spell(backed_off, generated, trie)[0]


def _spell(backed_off: str, generated: Sequence[int], trie: VocabularyTrie) -> tuple[str, int]:
    """(what is left to spell, how many of the ``generated`` tokens spelt the rest)."""
    left, steps = backed_off, 0
    for token in generated:
        if not left:
            break
        text = trie.text(int(token))
        left = "" if text.startswith(left) else left[len(text):] if left.startswith(text) and text else ""
        steps += 1
    return left, steps


class AlignedPrefixProcessor:
    """A transformers ``LogitsProcessor``: while a row has backed-off characters left to spell, only
    the tokens consistent with them keep their logits (the rest get ``-inf``), so the model's own
    distribution is renormalised over them; afterwards the row is free. With ``max_new_tokens``,
    a row gets that many tokens after the ones that spelt its back-off, then only ``eos_token_id``:
    each row's answer has the budget it would have had without the back-off."""

    def __init__(self, backoffs: Sequence[Backoff], prompt_width: int, trie: VocabularyTrie,
                 max_new_tokens: int | None = None, eos_token_id: int | None = None) -> None:
        self.backoffs = list(backoffs)
        self.prompt_width = int(prompt_width)
        self.trie = trie
        self.max_new_tokens = max_new_tokens
        self.eos_token_id = eos_token_id
        self._allowed: dict[str, torch.Tensor] = {}

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        rows = len(self.backoffs)
        beams = max(1, input_ids.shape[0] // rows)  # beam search repeats each row
        for index in range(input_ids.shape[0]):
            backoff = self.backoffs[index // beams]
            generated = input_ids[index, self.prompt_width:].tolist()
            left, steps = _spell(backoff.backed_off, generated, self.trie)
            if left:
                allowed = self._allowed_ids(left, scores.device)
            elif (self.max_new_tokens is not None and self.eos_token_id is not None
                  and len(generated) - steps >= self.max_new_tokens):
                allowed = torch.tensor([self.eos_token_id], device=scores.device)
            else:
                continue
            keep = scores[index, allowed].clone()
            scores[index] = -torch.inf
            scores[index, allowed] = keep
        return scores

    def _allowed_ids(self, left: str, device: torch.device) -> torch.Tensor:
        if left not in self._allowed:
            ids = self.trie.consistent(left)
            if not ids:
                raise AlignmentError(f"no token of the vocabulary is consistent with the backed-off text {left!r}")
            self._allowed[left] = torch.tensor(ids, dtype=torch.long, device=device)
        return self._allowed[left]
