"""The channel direction: the input scored given each label, ``log p(x | prompt(y_k))``.

A direct prompt asks for the label after the input (``"Review: ...\\nSentiment:" + " positive"``).
The noisy-channel prompt (Min et al. 2022, "Noisy Channel Language Model Prompting for Few-Shot
Text Classification"; dos Santos et al. 2020, "Beyond [CLS] through Ranking by Generation", rank
by the likelihood of the query given the document) puts the label first and scores the input
after it, once per label::

    <instruction>                          unchanged
    [<cue> <label>\\n<input>               each demonstration, blank-line separated
    <blank line>] ...
    <cue> <label_k>                        one context per label k
    "\\n" + <input>                         the continuation, the same text under every label

The data set's template is split at its last input field: what comes before is the input
(``"Review: {text}"``), what comes after is the answer cue (``"Sentiment:"``). A template that ends
with its last field has no cue, and the label word stands alone on its line.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

from genclf_harness.data.specs import DataError, DatasetSpec

CHANNEL_DELIMITER = "\n"
"""Between a label's context and the input it scores (the task's ``target_delimiter``)."""


def _after_last_field(spec: DatasetSpec) -> str:
    """The template's literal text after its last input field, as it renders (``{{`` as ``{``)."""
    after = ""
    for literal, field_name, _, _ in string.Formatter().parse(spec.template):
        after += literal
        if field_name is not None:
            after = ""
    return after


def answer_cue(spec: DatasetSpec) -> str:
    """The template's text after its last input field: ``"Review: {text}\\nSentiment:"`` -> ``"Sentiment:"``."""
    return _after_last_field(spec).strip()


def render_body(spec: DatasetSpec, doc: Mapping[str, Any]) -> str:
    """The document as the template renders it, without the answer cue: ``"Review: ..."``."""
    try:
        rendered = spec.template.format(**{name: doc[name] for name in spec.input_fields})
    except KeyError as err:
        raise DataError(f"data set {spec.name!r}: document {doc.get('id', '?')!r} has no field {err}.") from None
    after = _after_last_field(spec)
    return (rendered[: len(rendered) - len(after)] if after else rendered).rstrip()


def label_line(spec: DatasetSpec, word: str) -> str:
    """The line that states a label before the input: ``"Sentiment: positive"``."""
    cue = answer_cue(spec)
    return f"{cue} {word}" if cue else word
