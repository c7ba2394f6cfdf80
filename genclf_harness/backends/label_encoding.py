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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from genclf_harness.backends.protocol import LabelPrompt

TokenIds = tuple[int, ...]
EncodedPair = tuple[TokenIds, TokenIds]
"""(context ids, continuation ids) for one label of one prompt."""


class LabelEncodingError(ValueError):
    """A context or continuation cannot be split into tokens the way scoring needs."""


class LabelEncoder:
    """Tokenises label prompts with lm-eval's context/continuation split."""

    def __init__(
        self,
        tokenizer: Any,
        *,
        add_special_tokens: bool | None = None,
        prefix_token_id: int | None = None,
    ) -> None:
        self.tokenizer = tokenizer
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
        """One list of (context ids, continuation ids) per prompt, one pair per continuation."""
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

        encoded: list[list[EncodedPair]] = []
        for index, (prompt, pairs) in enumerate(zip(prompts, layout, strict=True)):
            out: list[EncodedPair] = []
            for position, (context, text, empty_context) in enumerate(pairs):
                if empty_context:
                    continuation_ids = bare_ids[text]
                    if continuation_ids and continuation_ids[0] == self.prefix_token_id:
                        context_ids, continuation_ids = continuation_ids[:1], continuation_ids[1:]
                    else:
                        context_ids = (self.prefix_token_id,)
                else:
                    context_ids = ids[context]
                    continuation_ids = ids[text][len(context_ids) :]
                    if not context_ids:
                        raise LabelEncodingError(
                            f"prompt #{index}: the context {prompt.context!r} encodes to no tokens "
                            "once its trailing whitespace is moved to the continuation"
                        )
                if not continuation_ids:
                    raise LabelEncodingError(
                        f"prompt #{index}: continuation #{position} {prompt.continuations[position]!r} "
                        f"encodes to no tokens after the context {_tail(prompt.context)!r}"
                    )
                out.append((context_ids, continuation_ids))
            encoded.append(out)
        return encoded

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

    def _special_tokens_rule(self, text: str, special: bool | None) -> bool | None:
        # Mirrors HFLM.tok_encode: an explicit request wins; otherwise the configured default,
        # except that a text already starting with the prefix token gets no second one.
        if special is not None:
            return special
        if text.startswith(self._prefix_text):
            return False
        return self.add_special_tokens


def _tail(text: str, length: int = 40) -> str:
    return text if len(text) <= length else "…" + text[-length:]
