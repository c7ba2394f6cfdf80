"""Local lexical retrievers for "most similar training examples" demonstrations: BM25 and TF-IDF.

Pure numpy, no network. A corpus is indexed once (an inverted index: for each term, the documents
holding it and their weights); a query then costs one vector addition per distinct query term.

Tokens are lower-cased runs of letters and digits (``\\w+`` without the underscore). Ties in score
are broken by corpus order, so results are deterministic.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

RetrieverName = Literal["bm25", "tfidf"]
RETRIEVERS: tuple[RetrieverName, ...] = ("bm25", "tfidf")

_TOKEN = re.compile(r"[^\W_]+")


def tokenize(text: str) -> list[str]:
    """``"Don't panic, 42!"`` -> ``["don", "t", "panic", "42"]``."""
    return _TOKEN.findall(text.lower())


class Retriever(Protocol):
    """Ranks the documents of a fixed corpus by similarity to a query."""

    def scores(self, query: str) -> npt.NDArray[np.float64]:
        """One score per corpus document (higher is more similar)."""
        ...

    def top_k(self, query: str, k: int, exclude: Container[int] = ()) -> list[int]:
        """The corpus indices of the ``k`` most similar documents, most similar first."""
        ...


@dataclass(frozen=True, eq=False)
class _InvertedIndex:
    """term -> (document indices, per-document weights); weights are the retriever's."""

    num_docs: int
    postings: dict[str, tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]]

    def accumulate(self, weighted_terms: dict[str, float]) -> npt.NDArray[np.float64]:
        scores = np.zeros(self.num_docs, dtype=np.float64)
        for term, query_weight in weighted_terms.items():
            posting = self.postings.get(term)
            if posting is not None:
                docs, weights = posting
                # a term occurs once per document in a posting list, so fancy-index += is exact
                scores[docs] += query_weight * weights
        return scores

    def top_k(self, scores: npt.NDArray[np.float64], k: int, exclude: Container[int]) -> list[int]:
        if k <= 0 or self.num_docs == 0:
            return []
        # Sort only the candidates at or above the m-th best score (every tie included), by score
        # descending then corpus index; the full sort is the fallback when exclusions eat them.
        m = min(self.num_docs, k + 16)
        threshold = np.partition(scores, self.num_docs - m)[self.num_docs - m]
        for candidates in (np.flatnonzero(scores >= threshold), np.arange(self.num_docs)):
            order = candidates[np.lexsort((candidates, -scores[candidates]))]
            picked = [int(i) for i in order if int(i) not in exclude][:k]
            if len(picked) == k or len(candidates) == self.num_docs:
                return picked
        return picked


def _build_postings(
    corpus_counts: Sequence[Counter[str]], weight: Callable[[str, int, int], float]
) -> dict[str, tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]]:
    lists: dict[str, tuple[list[int], list[float]]] = {}
    for doc_index, counts in enumerate(corpus_counts):
        for term, count in counts.items():
            docs, weights = lists.setdefault(term, ([], []))
            docs.append(doc_index)
            weights.append(weight(term, count, doc_index))
    return {
        term: (np.asarray(docs, dtype=np.int64), np.asarray(weights, dtype=np.float64))
        for term, (docs, weights) in lists.items()
    }


def _document_frequencies(corpus_counts: Sequence[Counter[str]]) -> Counter[str]:
    df: Counter[str] = Counter()
    for counts in corpus_counts:
        df.update(counts.keys())
    return df


@dataclass(frozen=True, eq=False)
class BM25Retriever:
    """Okapi BM25 (Robertson et al.): ``sum_t idf(t) * tf (k1 + 1) / (tf + k1 (1 - b + b |d| / avgdl))``
    over the distinct query terms, with ``idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5))`` (never negative)."""

    k1: float
    b: float
    _index: _InvertedIndex

    @classmethod
    def build(cls, corpus: Sequence[str], k1: float = 1.5, b: float = 0.75) -> BM25Retriever:
        counts = [Counter(tokenize(text)) for text in corpus]
        num_docs = len(counts)
        lengths = [sum(c.values()) for c in counts]
        avgdl = (sum(lengths) / num_docs) if num_docs else 0.0
        df = _document_frequencies(counts)
        idf = {t: math.log(1.0 + (num_docs - n + 0.5) / (n + 0.5)) for t, n in df.items()}

        def weight(term: str, tf: int, doc: int) -> float:
            norm = 1.0 - b + b * (lengths[doc] / avgdl if avgdl else 0.0)
            return idf[term] * tf * (k1 + 1.0) / (tf + k1 * norm)

        return cls(k1=k1, b=b, _index=_InvertedIndex(num_docs, _build_postings(counts, weight)))

    def scores(self, query: str) -> npt.NDArray[np.float64]:
        return self._index.accumulate(dict.fromkeys(tokenize(query), 1.0))

    def top_k(self, query: str, k: int, exclude: Container[int] = ()) -> list[int]:
        return self._index.top_k(self.scores(query), k, exclude)


@dataclass(frozen=True, eq=False)
class TfidfRetriever:
    """Cosine similarity of L2-normalised TF-IDF vectors, with sublinear term frequency
    ``1 + ln tf`` and smoothed ``idf(t) = ln((1 + N) / (1 + df)) + 1`` (scikit-learn's defaults)."""

    _idf: dict[str, float]
    _index: _InvertedIndex

    @classmethod
    def build(cls, corpus: Sequence[str]) -> TfidfRetriever:
        counts = [Counter(tokenize(text)) for text in corpus]
        num_docs = len(counts)
        df = _document_frequencies(counts)
        idf = {t: math.log((1 + num_docs) / (1 + n)) + 1.0 for t, n in df.items()}
        norms = [
            math.sqrt(sum(((1.0 + math.log(tf)) * idf[t]) ** 2 for t, tf in c.items())) or 1.0
            for c in counts
        ]

        def weight(term: str, tf: int, doc: int) -> float:
            return (1.0 + math.log(tf)) * idf[term] / norms[doc]

        return cls(_idf=idf, _index=_InvertedIndex(num_docs, _build_postings(counts, weight)))

    def scores(self, query: str) -> npt.NDArray[np.float64]:
        counts = Counter(t for t in tokenize(query) if t in self._idf)
        weights = {t: (1.0 + math.log(tf)) * self._idf[t] for t, tf in counts.items()}
        norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
        return self._index.accumulate({t: w / norm for t, w in weights.items()})

    def top_k(self, query: str, k: int, exclude: Container[int] = ()) -> list[int]:
        return self._index.top_k(self.scores(query), k, exclude)


def build_retriever(name: RetrieverName, corpus: Sequence[str]) -> Retriever:
    """A retriever over ``corpus`` by name: ``"bm25"`` or ``"tfidf"``."""
    if name == "bm25":
        return BM25Retriever.build(corpus)
    if name == "tfidf":
        return TfidfRetriever.build(corpus)
    raise ValueError(f"unknown retriever {name!r}; known: {', '.join(RETRIEVERS)}")
