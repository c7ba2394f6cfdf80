"""Reading a generated answer as a label, robustly and without guessing.

Text is compared after normalisation: Unicode NFKC, lower case, every run of characters other than
letters and digits (punctuation, quotes, markdown, underscores, slashes) made one space. Each label
is recognised by its answer (``choices[i]``: the label word, or the number for numeric labels), its
natural word and its name (``not_entailment`` -> "not entailment"); with the uncertainty label,
``uncertain`` also by "unsure", "not sure", "unknown", "cannot tell", "can't tell", "don't know".
Numbers are labels only in the numeric style.

The lines of the answer are read in order; the first line that mentions a label decides:
1. ``exact``: the whole line is one label ("Positive.", "**2**", "uncertain");
2. ``leading``: the line's first clause (up to ``. , ; : ! ? ( ) [ ]``) is one label
   ("Positive. The review praises ...");
3. ``embedded``: the line mentions exactly one label, counting each mention once, longest first
   ("very negative" is not also "negative"), and mentions right after "not"/"no"/"never"/"n't"
   ignored ("The sentiment is positive.", "2 (positive)" for numeric labels);
4. ``ambiguous``: the line mentions two or more labels: unparseable, reading stops.
A line whose only mentions are negated is passed over (``negated`` if no later line decides). No
mention anywhere is ``no_label``; an empty answer is ``empty``. Unparseable answers have index None
and are counted, never mapped to a label.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

from genclf_harness.prompts.labels import UNCERTAIN, LabelSet

AnswerStatus = Literal["exact", "leading", "embedded", "ambiguous", "negated", "no_label", "empty"]
PARSED_STATUSES: tuple[AnswerStatus, ...] = ("exact", "leading", "embedded")

UNCERTAIN_ALIASES: tuple[str, ...] = (
    UNCERTAIN, "unsure", "not sure", "unknown", "cannot tell", "can't tell", "don't know",
)
_NEGATIONS = frozenset({"not", "no", "never", "t"})  # "t" is what normalisation leaves of "n't"
_NON_ALNUM = re.compile(r"[\W_]+")
_CLAUSE_END = re.compile(r"[.,;:!?()\[\]]")


def normalize_answer(text: str) -> str:
    """``"  **Science/Technology**."`` -> ``"science technology"``."""
    text = unicodedata.normalize("NFKC", text).lower().replace("\u2019", "'")
    return _NON_ALNUM.sub(" ", text).strip()


@dataclass(frozen=True)
class ParsedAnswer:
    """A generated answer read as a label: ``index`` into the label set's ``choices``, or None."""

    index: int | None
    status: AnswerStatus

    @property
    def parsed(self) -> bool:
        return self.index is not None


@dataclass(frozen=True)
class AnswerParser:
    """Parses answers against one label set; build it once with `AnswerParser.of`."""

    label_set: LabelSet
    aliases: tuple[tuple[tuple[str, ...], int], ...]
    """(normalised tokens, choice index), longest first."""

    @classmethod
    def of(cls, label_set: LabelSet) -> AnswerParser:
        by_alias: dict[tuple[str, ...], int] = {}

        def add(text: str, index: int) -> None:
            tokens = tuple(normalize_answer(text).split())
            if not tokens:
                return
            if by_alias.setdefault(tokens, index) != index:
                raise ValueError(f"answer {text!r} would name two labels of {label_set.choices}")

        for index in range(label_set.num_classes):
            if not normalize_answer(label_set.choices[index]):
                raise ValueError(f"answer {label_set.choices[index]!r} has no letter or digit to read an "
                                 "answer by")
            add(label_set.choices[index], index)
            add(label_set.words[index], index)
            add(label_set.names[index], index)
        if label_set.uncertain_index is not None:
            for alias in UNCERTAIN_ALIASES:
                add(alias, label_set.uncertain_index)
        ordered = sorted(by_alias.items(), key=lambda item: (-len(item[0]), item[0]))
        return cls(label_set, tuple(ordered))

    def parse(self, text: str) -> ParsedAnswer:
        lines = [line for line in text.splitlines() if normalize_answer(line)]
        if not lines:
            return ParsedAnswer(None, "empty")
        negated_only = False
        for line in lines:
            whole = self._exact(normalize_answer(line))
            if whole is not None:
                return ParsedAnswer(whole, "exact")
            first_clause = self._exact(normalize_answer(_CLAUSE_END.split(line, maxsplit=1)[0]))
            if first_clause is not None:
                return ParsedAnswer(first_clause, "leading")
            mentions = self._mentions(normalize_answer(line).split())
            if not mentions:
                continue
            kept = {index for index, negated in mentions if not negated}
            if len(kept) == 1:
                return ParsedAnswer(kept.pop(), "embedded")
            if len(kept) > 1:
                return ParsedAnswer(None, "ambiguous")
            negated_only = True
        return ParsedAnswer(None, "negated" if negated_only else "no_label")

    def _exact(self, normalised: str) -> int | None:
        tokens = tuple(normalised.split())
        for alias, index in self.aliases:
            if alias == tokens:
                return index
        return None

    def _mentions(self, tokens: list[str]) -> list[tuple[int, bool]]:
        """(choice index, negated) of each mention, leftmost-longest, not overlapping."""
        found: list[tuple[int, bool]] = []
        position = 0
        while position < len(tokens):
            for alias, index in self.aliases:
                end = position + len(alias)
                if tuple(tokens[position:end]) == alias:
                    found.append((index, position > 0 and tokens[position - 1] in _NEGATIONS))
                    position = end
                    break
            else:
                position += 1
        return found


def parse_answer(text: str, label_set: LabelSet) -> ParsedAnswer:
    """Read ``text`` as one of ``label_set.choices`` (see the module docstring for the rules)."""
    return AnswerParser.of(label_set).parse(text)
