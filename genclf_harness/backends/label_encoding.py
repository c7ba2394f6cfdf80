"""Split (context, label) texts into token ids exactly as lm-eval's hf backend does.

lm-eval (``TemplateLM.loglikelihood`` / ``_encode_pair`` and ``HFLM.tok_encode``, 0.4.x):

- trailing whitespace of the context is moved to the front of the continuation;
- the continuation's tokens are those of ``tokenize(context + continuation)`` after the first
  ``len(tokenize(context))`` tokens, so a word boundary is tokenised as in running text;
- an empty context becomes the prefix token (BOS, else EOS) unless the continuation already
  starts with it, in which case that first token becomes the context;
- special tokens follow the tokenizer's default, or ``add_special_tokens`` when given, and are
  never added to a text that already starts with the prefix token's text (a rendered chat
  template that begins with BOS).

The scores only match lm-eval's if the split matches, so this module is the one place it lives.
The tokenizer is called on lists of distinct strings, never once per pair.

The seam check: that split is only the continuation when the context's tokens are a prefix of
``tokenize(context + continuation)``. Where the two tokenise differently at the seam
(``"Link: http:" + "//a.com"``: ``... Ġhttp :`` against ``... Ġhttp :// a``), lm-eval scores
another text (here ``"a.com"`` after ``"http:"``) without a word. Every such pair is a
:class:`SeamMismatch`: logged with both tokenisations, counted in the scores
(``PromptScores.seam_mismatches``) and, through the lm-eval adapters, in the manifest. By default
the pair keeps lm-eval's split (so results stay comparable with stock ``hf``) unless that leaves
no continuation token, which is an error; ``align_labels=True`` scores the label's own text
instead (:mod:`genclf_harness.backends.token_alignment`). Where the check passes, ids are
lm-eval's, byte for byte.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from genclf_harness.backends.protocol import LabelPrompt, PromptScores
from genclf_harness.backends.token_alignment import (
    AlignedPrompt,
    AlignmentError,
    VocabularyTrie,
    align_prompt,
    shared_prefix,
)

logger = logging.getLogger(__name__)

TokenIds = tuple[int, ...]
EncodedPair = tuple[TokenIds, TokenIds]
"""(context ids, continuation ids) for one label of one prompt."""


class LabelEncodingError(ValueError):
    """A context or continuation cannot be split into tokens the way scoring needs."""


@dataclass(frozen=True, slots=True)
class SeamMismatch:
    """A (context, continuation) pair whose context tokens are not a prefix of the whole text's."""

    prompt: int
    continuation: int
    context: str
    text: str
    context_pieces: tuple[str, ...]
    """The context's last tokens as the tokenizer writes them."""
    whole_pieces: tuple[str, ...]
    """The whole text's tokens from the same position."""
    scored: str | None
    """What lm-eval's split scores as the continuation (``None``: no token at all)."""

    def describe(self) -> str:
        scored = "no token at all" if self.scored is None else f"the text {self.scored!r}"
        return (
            f"prompt #{self.prompt} continuation #{self.continuation}: {_tail(self.context)!r} + {self.text!r} "
            f"tokenises as ...{list(self.context_pieces)} alone but ...{list(self.whole_pieces)} together, "
            f"so lm-eval's split scores {scored}"
        )


@dataclass(slots=True)
class Encoding:
    """The pairs a backend scores for some prompts, and what turns their scores into the prompts'."""

    pairs: list[list[EncodedPair]]
    """Per prompt, the (context ids, continuation ids) pairs to score; one per label unless aligned."""
    continuations: list[tuple[str, ...]]
    mismatches: list[SeamMismatch] = field(default_factory=list)
    aligned: dict[int, AlignedPrompt] = field(default_factory=dict)

    def texts(self) -> list[tuple[str, ...]]:
        """Per prompt, a text for each scored pair (aligned prompts' extra pairs get ``""``)."""
        return [
            ("",) * len(pairs) if index in self.aligned else self.continuations[index]
            for index, pairs in enumerate(self.pairs)
        ]

    def finish(self, scores: list[PromptScores]) -> list[PromptScores]:
        """One score per label again, with each prompt's seam mismatches counted."""
        counts: dict[int, int] = {}
        for mismatch in self.mismatches:
            counts[mismatch.prompt] = counts.get(mismatch.prompt, 0) + 1
        out = []
        for index, prompt_scores in enumerate(scores):
            plan = self.aligned.get(index)
            if plan is not None:
                prompt_scores = replace(prompt_scores, continuations=plan.fold(
                    prompt_scores.continuations, self.continuations[index]), aligned=True)
            if counts.get(index):
                prompt_scores = replace(prompt_scores, seam_mismatches=counts[index])
            out.append(prompt_scores)
        return out


class LabelEncoder:
    """Tokenises label prompts with lm-eval's context/continuation split."""

    def __init__(
        self,
        tokenizer: Any,
        *,
        add_special_tokens: bool | None = None,
        prefix_token_id: int | None = None,
        align_labels: bool = False,
    ) -> None:
        self.tokenizer = tokenizer
        self.align_labels = bool(align_labels)
        self._trie: VocabularyTrie | None = None
        self.add_special_tokens = add_special_tokens
        if prefix_token_id is None:
            prefix_token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if prefix_token_id is None:
            raise LabelEncodingError(
                "the tokenizer has neither a BOS nor an EOS token; pass prefix_token_id for empty contexts"
            )
        self.prefix_token_id = int(prefix_token_id)
        self._prefix_text = tokenizer.decode(self.prefix_token_id)

    def encode(self, prompts: Sequence[LabelPrompt]) -> list[list[EncodedPair]]:
        """One list of (context ids, continuation ids) per prompt, one pair per continuation
        (lm-eval's split; seam mismatches are logged, see :meth:`plan`)."""
        encoding = self.split(prompts, align=False)
        _log_mismatches(encoding.mismatches, aligned=False)
        return encoding.pairs

    def plan(self, prompts: Sequence[LabelPrompt]) -> Encoding:
        """What to score for these prompts: lm-eval's split, or token-aligned pairs where a label
        crosses a token seam and ``align_labels`` is on. Mismatches are logged and counted."""
        encoding = self.split(prompts, align=self.align_labels)
        _log_mismatches(encoding.mismatches, aligned=self.align_labels)
        return encoding

    def split(self, prompts: Sequence[LabelPrompt], *, align: bool = False) -> Encoding:
        """The encoding of :meth:`plan`, without logging the mismatches (for counting them)."""
        plain: dict[str, None] = {}  # texts tokenised with the default special-token rule
        bare: dict[str, None] = {}  # texts tokenised without special tokens
        layout: list[list[tuple[str, str, bool]]] = []
        for prompt in prompts:
            pairs = []
            if prompt.context == "":
                for continuation in prompt.continuations:
                    bare[continuation] = None
                    pairs.append(("", continuation, True))
            else:
                stripped = prompt.context.rstrip()
                moved = prompt.context[len(stripped) :]
                plain[stripped] = None
                for continuation in prompt.continuations:
                    whole = stripped + moved + continuation
                    plain[whole] = None
                    pairs.append((stripped, whole, False))
            layout.append(pairs)

        ids = self._tokenize(list(plain), special=None)
        bare_ids = self._tokenize(list(bare), special=False)

        encoding = Encoding(pairs=[], continuations=[p.continuations for p in prompts])
        for index, (prompt, pairs) in enumerate(zip(prompts, layout, strict=True)):
            out: list[EncodedPair] = []
            crossed = False
            for position, (context, text, empty_context) in enumerate(pairs):
                mismatched = False
                if empty_context:
                    continuation_ids = bare_ids[text]
                    if continuation_ids and continuation_ids[0] == self.prefix_token_id:
                        context_ids, continuation_ids = continuation_ids[:1], continuation_ids[1:]
                    else:
                        context_ids = (self.prefix_token_id,)
                else:
                    context_ids = ids[context]
                    whole_ids = ids[text]
                    continuation_ids = whole_ids[len(context_ids) :]
                    if not context_ids:
                        raise LabelEncodingError(
                            f"prompt #{index}: the context {prompt.context!r} encodes to no tokens "
                            "once its trailing whitespace is moved to the continuation"
                        )
                    mismatched = whole_ids[: len(context_ids)] != context_ids
                    if mismatched:
                        encoding.mismatches.append(self._mismatch(index, position, prompt, context_ids, whole_ids))
                crossed |= mismatched
                if not continuation_ids and not (align and mismatched):
                    hint = (" (the context ends inside the token this label completes; align_labels=true scores it)"
                            if mismatched else "")
                    raise LabelEncodingError(
                        f"prompt #{index}: continuation #{position} {prompt.continuations[position]!r} "
                        f"encodes to no tokens after the context {_tail(prompt.context)!r}{hint}"
                    )
                out.append((context_ids, continuation_ids))
            if align and crossed:
                out, encoding.aligned[index] = self._align(index, prompt, pairs, ids)
            encoding.pairs.append(out)
        return encoding

    def _align(self, index: int, prompt: LabelPrompt, pairs: list[tuple[str, str, bool]],
               ids: dict[str, TokenIds]) -> tuple[list[EncodedPair], AlignedPrompt]:
        context = pairs[0][0]
        offsets = self.tokenizer(context, return_offsets_mapping=True,
                                 **self._special_kwargs(context))["offset_mapping"]
        if self._trie is None:
            self._trie = VocabularyTrie(self.tokenizer)
        try:
            aligned, plan = align_prompt(index, context, ids[context], [end for _, end in offsets],
                                         [ids[text] for _, text, _ in pairs], prompt.continuations, self._trie)
        except AlignmentError as error:
            raise LabelEncodingError(str(error)) from None
        return aligned, plan

    def _mismatch(self, index: int, position: int, prompt: LabelPrompt, context_ids: TokenIds,
                  whole_ids: TokenIds) -> SeamMismatch:
        start = max(0, shared_prefix(context_ids, whole_ids) - 1)
        pieces = self.tokenizer.convert_ids_to_tokens
        rest = whole_ids[len(context_ids):]
        return SeamMismatch(
            prompt=index,
            continuation=position,
            context=prompt.context,
            text=prompt.continuations[position],
            context_pieces=tuple(pieces(list(context_ids[start:]))),
            whole_pieces=tuple(pieces(list(whole_ids[start : len(context_ids) + 2]))),
            scored=self.tokenizer.decode(list(rest)) if rest else None,
        )

    def _tokenize(self, texts: list[str], *, special: bool | None) -> dict[str, TokenIds]:
        """Tokenise distinct texts in as few tokenizer calls as there are special-token rules."""
        groups: dict[bool | None, list[str]] = {}
        for text in texts:
            groups.setdefault(self._special_tokens_rule(text, special), []).append(text)
        result: dict[str, TokenIds] = {}
        for rule, group in groups.items():
            kwargs = {} if rule is None else {"add_special_tokens": rule}
            for text, token_ids in zip(group, self.tokenizer(group, **kwargs)["input_ids"], strict=True):
                result[text] = tuple(token_ids)
        return result

    def _special_kwargs(self, text: str) -> dict[str, bool]:
        rule = self._special_tokens_rule(text, None)
        return {} if rule is None else {"add_special_tokens": rule}

    def _special_tokens_rule(self, text: str, special: bool | None) -> bool | None:
        # Mirrors HFLM.tok_encode: an explicit request wins; otherwise the configured default,
        # except that a text already starting with the prefix token gets no second one.
        if special is not None:
            return special
        if text.startswith(self._prefix_text):
            return False
        return self.add_special_tokens


def _log_mismatches(mismatches: list[SeamMismatch], *, aligned: bool) -> None:
    if not mismatches:
        return
    prompts = len({m.prompt for m in mismatches})
    action = ("scored with token alignment (align_labels)" if aligned else
              "scored with lm-eval's split, which is not the label's text; pass align_labels=true to score the text")
    logger.warning("%d label continuation(s) of %d prompt(s) cross a token seam, %s. First: %s",
                   len(mismatches), prompts, action, mismatches[0].describe())


def _tail(text: str, length: int = 40) -> str:
    return text if len(text) <= length else "…" + text[-length:]
