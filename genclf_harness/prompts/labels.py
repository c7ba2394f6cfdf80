"""The label set a prompt strategy asks for: natural words or numbers, with or without "uncertain".

Natural labels are the spec's ``label_words``. Numeric labels are ``"1"`` .. ``"K"`` in the spec's
label order, and the prompt states the mapping ("1 means negative."). The uncertainty label is the
word ``"uncertain"`` in both styles, appended after the K real labels; it is never a gold label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from genclf_harness.data.specs import DatasetSpec

LabelStyle = Literal["natural", "numeric"]
LABEL_STYLES: tuple[LabelStyle, ...] = ("natural", "numeric")

UNCERTAIN = "uncertain"
"""The explicit uncertainty label (the same word for natural and numeric label styles)."""


@dataclass(frozen=True)
class LabelSet:
    """What the model may answer for one data set under one strategy.

    ``choices[i]`` is the text of answer ``i`` (a continuation, without the leading space):
    indices ``0 .. K-1`` are the spec's labels in order, and index ``K`` is ``"uncertain"`` when the
    strategy has the uncertainty label.
    """

    choices: tuple[str, ...]
    words: tuple[str, ...]
    """The spec's natural label words (K), whatever the style: what numeric labels stand for."""
    names: tuple[str, ...]
    """The spec's label names (K), e.g. ``"Science/Technology"`` where the word is ``"Technology"``."""
    style: LabelStyle
    uncertainty: bool

    @classmethod
    def of(cls, spec: DatasetSpec, style: LabelStyle = "natural", uncertainty: bool = False) -> LabelSet:
        if style not in LABEL_STYLES:
            raise ValueError(f"unknown label style {style!r}; known: {', '.join(LABEL_STYLES)}")
        words = tuple(spec.label_words)
        if uncertainty and UNCERTAIN in {w.lower() for w in words}:
            raise ValueError(f"data set {spec.name!r} already has a label {UNCERTAIN!r}")
        real = words if style == "natural" else tuple(str(i + 1) for i in range(len(words)))
        return cls(
            choices=real + ((UNCERTAIN,) if uncertainty else ()),
            words=words,
            names=tuple(spec.labels),
            style=style,
            uncertainty=uncertainty,
        )

    @property
    def num_classes(self) -> int:
        """K, the number of real labels (the uncertainty label not counted)."""
        return len(self.words)

    @property
    def uncertain_index(self) -> int | None:
        """The index of ``"uncertain"`` in ``choices`` (K), or None without the uncertainty label."""
        return self.num_classes if self.uncertainty else None

    @property
    def real_choices(self) -> tuple[str, ...]:
        """The K answers of the real labels."""
        return self.choices[: self.num_classes]
