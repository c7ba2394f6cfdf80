"""Choosing in-context demonstrations from a pool of labelled documents (the training split).

- ``random``: k documents drawn at random;
- ``balanced``: one document of each class first (classes in random order; with k < K, k of the
  classes), then random documents up to k, then the k shuffled;
- ``similar``: the k documents most similar to the input by a local retriever (BM25 or TF-IDF),
  ordered from least to most similar, so the nearest sits next to the input.

Every draw is seeded by the strategy's seed and the document's id, so a document gets the same
demonstrations in every run, on every rank, whatever the order or subset evaluated. A pool document
with the input's id or the input's exact text is never used as its demonstration (no answer leaks
from a duplicate between splits).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from genclf_harness.data.specs import DataError, DatasetSpec
from genclf_harness.prompts.retrieval import Retriever, RetrieverName, build_retriever

ICLMode = Literal["zero", "random", "balanced", "similar"]
ICL_MODES: tuple[ICLMode, ...] = ("zero", "random", "balanced", "similar")


def document_text(spec: DatasetSpec, doc: Mapping[str, Any]) -> str:
    """The input fields of a document joined by newlines: what retrieval and de-duplication compare."""
    try:
        return "\n".join(str(doc[name]) for name in spec.input_fields)
    except KeyError as err:
        raise DataError(f"data set {spec.name!r}: document {doc.get('id', '?')!r} has no field {err}.") from None


@dataclass(frozen=True, eq=False)
class DemonstrationPool:
    """Labelled documents to draw demonstrations from, indexed once."""

    spec: DatasetSpec
    docs: tuple[Mapping[str, Any], ...]
    labels: tuple[int, ...]
    by_label: Mapping[int, tuple[int, ...]]
    retriever: Retriever | None
    _by_id: Mapping[str, tuple[int, ...]]
    _by_text: Mapping[str, tuple[int, ...]]

    @classmethod
    def build(
        cls, spec: DatasetSpec, docs: Sequence[Mapping[str, Any]], retriever: RetrieverName | None = None
    ) -> DemonstrationPool:
        """Index ``docs`` (rows as the loader gives them: input fields, ``label``, ``id``); build a
        retriever over their texts when ``retriever`` is named."""
        if not docs:
            raise DataError(f"data set {spec.name!r}: the demonstration pool is empty.")
        texts = [document_text(spec, d) for d in docs]
        labels = tuple(int(d["label"]) for d in docs)
        by_label: dict[int, list[int]] = {}
        by_id: dict[str, list[int]] = {}
        by_text: dict[str, list[int]] = {}
        for index, (doc, text, label) in enumerate(zip(docs, texts, labels, strict=True)):
            by_label.setdefault(label, []).append(index)
            if "id" in doc:
                by_id.setdefault(str(doc["id"]), []).append(index)
            by_text.setdefault(text, []).append(index)
        return cls(
            spec=spec,
            docs=tuple(docs),
            labels=labels,
            by_label=MappingProxyType({k: tuple(v) for k, v in sorted(by_label.items())}),
            retriever=build_retriever(retriever, texts) if retriever is not None else None,
            _by_id=MappingProxyType({k: tuple(v) for k, v in by_id.items()}),
            _by_text=MappingProxyType({k: tuple(v) for k, v in by_text.items()}),
        )

    def __len__(self) -> int:
        return len(self.docs)

    def excluded_for(self, doc: Mapping[str, Any]) -> frozenset[int]:
        """Pool indices that must not demonstrate ``doc``: its own id, or its exact text."""
        same_id = self._by_id.get(str(doc["id"]), ()) if "id" in doc else ()
        return frozenset(same_id) | frozenset(self._by_text.get(document_text(self.spec, doc), ()))

    def select(self, mode: ICLMode, k: int, doc: Mapping[str, Any], seed: int) -> list[int]:
        """Pool indices of the demonstrations for ``doc``, in prompt order."""
        if mode == "zero" or k == 0:
            return []
        exclude = self.excluded_for(doc)
        if len(self.docs) - len(exclude) < k:
            raise DataError(
                f"data set {self.spec.name!r}: the pool has {len(self.docs)} documents, too few for "
                f"{k} demonstrations of document {doc.get('id', '?')!r}."
            )
        if mode == "similar":
            if self.retriever is None:
                raise ValueError("similar demonstrations need a pool built with a retriever")
            nearest_first = self.retriever.top_k(document_text(self.spec, doc), k, exclude)
            return nearest_first[::-1]
        rng = random.Random(f"{seed}:{doc.get('id', document_text(self.spec, doc))}")
        if mode == "random":
            return self._draw_random(rng, k, set(exclude))
        if mode == "balanced":
            return self._draw_balanced(rng, k, set(exclude))
        raise ValueError(f"unknown in-context mode {mode!r}; known: {', '.join(ICL_MODES)}")

    def _draw_random(self, rng: random.Random, k: int, taken: set[int]) -> list[int]:
        picked: list[int] = []
        while len(picked) < k:
            index = _draw(rng, range(len(self.docs)), taken)
            if index is None:  # cannot happen: select() checked the pool size
                break
            picked.append(index)
            taken.add(index)
        return picked

    def _draw_balanced(self, rng: random.Random, k: int, taken: set[int]) -> list[int]:
        classes = list(self.by_label)
        rng.shuffle(classes)
        picked: list[int] = []
        for label in classes[:k]:
            index = _draw(rng, self.by_label[label], taken)
            if index is not None:
                picked.append(index)
                taken.add(index)
        picked += self._draw_random(rng, k - len(picked), taken)
        rng.shuffle(picked)
        return picked


def _draw(rng: random.Random, candidates: Sequence[int], taken: set[int]) -> int | None:
    """A uniformly random member of ``candidates`` not in ``taken`` (None if there is none)."""
    for _ in range(32):
        index = candidates[rng.randrange(len(candidates))]
        if index not in taken:
            return index
    free = [i for i in candidates if i not in taken]
    return free[rng.randrange(len(free))] if free else None
