"""Plan rows for label scoring: one context, then its label continuations packed behind it.

A row holds a context window and the continuations scored after it. The context is fed once;
each continuation feeds all but its last token (the last token is only predicted, never read),
so single-token labels add nothing and a prompt whose labels are all one token costs exactly one
context. With packing, a row holds several multi-token continuations one after another; a 4D
attention mask lets each see only the context and its own earlier tokens, and its position ids
restart where the context ends, so every continuation is computed as if it were alone.

Left truncation follows lm-eval's hf backend: the model sees the last ``max_length`` tokens of
``context + continuation[:-1]``. Continuations of different lengths therefore may see different
context windows; they go into different rows, each with its own window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from genclf_harness.backends.label_encoding import EncodedPair, TokenIds


class ContinuationTooLongError(ValueError):
    """A continuation does not fit the model's maximum length on its own."""


@dataclass(frozen=True, slots=True)
class Row:
    """One batch row: a context window and the continuations scored after it."""

    prompt: int
    context: TokenIds
    continuations: tuple[tuple[int, TokenIds], ...]
    """(index of the continuation in its prompt, its token ids)."""

    @property
    def length(self) -> int:
        return len(self.context) + sum(len(ids) - 1 for _, ids in self.continuations)

    @property
    def needs_mask(self) -> bool:
        # One multi-token continuation after its context is plain causal attention.
        return sum(len(ids) > 1 for _, ids in self.continuations) > 1


def plan_rows(
    prompt: int,
    pairs: Sequence[EncodedPair],
    *,
    max_length: int,
    max_row_tokens: int,
    pack: bool,
    max_packed_length: int | None = None,
) -> tuple[list[Row], bool]:
    """Rows that score every pair of one prompt, and whether any context was truncated.

    ``max_row_tokens`` bounds a packed row (a row with one continuation may exceed it: it cannot
    be split further). ``max_packed_length`` (a sliding attention window) bounds packed rows too,
    because the custom mask bypasses the model's own windowing.
    """
    windows: dict[tuple[TokenIds, int], list[tuple[int, TokenIds]]] = {}
    truncated = False
    for position, (context, continuation) in enumerate(pairs):
        if len(continuation) > max_length:
            raise ContinuationTooLongError(
                f"prompt #{prompt}: continuation #{position} has {len(continuation)} tokens, more than "
                f"the model's maximum length {max_length}"
            )
        cut = max(0, len(context) + len(continuation) - 1 - max_length)
        truncated |= cut > 0
        windows.setdefault((context, cut), []).append((position, continuation))

    limit = max_row_tokens if max_packed_length is None else min(max_row_tokens, max_packed_length)
    rows: list[Row] = []
    for (context, cut), continuations in windows.items():
        window = context[cut:]
        singles = [item for item in continuations if len(item[1]) == 1]
        multis = [item for item in continuations if len(item[1]) > 1]
        groups = _pack(len(window), multis, limit) if pack else [[item] for item in multis]
        if not groups:
            groups = [[]]
        # Single-token labels are read from the context's last position: free in any row.
        groups[0] = singles + groups[0]
        rows.extend(Row(prompt, window, tuple(group)) for group in groups)
    return rows, truncated


def _pack(context_length: int, multis: list[tuple[int, TokenIds]], limit: int) -> list[list]:
    groups: list[list] = []
    length = 0
    for item in multis:
        extra = len(item[1]) - 1
        if groups and length + extra <= limit:
            groups[-1].append(item)
            length += extra
        else:
            groups.append([item])
            length = context_length + extra
    return groups


# A row shorter than this fraction of its batch's width starts a new batch: padding is pure
# waste on a CPU, and on an accelerator a long sorted request list keeps batches full anyway.
MIN_ROW_FILL = 0.6


def batch_end(rows: Sequence[Row], start: int, budget: int, max_rows: int | None) -> int:
    """End of the batch that starts at ``start``: rows whose padded size fits the token budget.

    ``rows`` must be sorted by decreasing length, so the first row of a batch sets its width.
    A row longer than the budget gets a batch of its own.
    """
    width = rows[start].length
    count = max(1, budget // max(width, 1))
    if max_rows is not None:
        count = min(count, max_rows)
    stop = start + 1
    limit = min(len(rows), start + count)
    while stop < limit and rows[stop].length >= MIN_ROW_FILL * width:
        stop += 1
    return stop


@dataclass(slots=True)
class BatchTensors:
    input_ids: torch.Tensor
    position_ids: torch.Tensor | None
    segments: torch.Tensor | None
    """Per token: 0 for the context, k for the k-th packed continuation, -1 for padding."""
    reads: list[list[tuple[int, int, int]]]
    """Per row, per scored token: (row position whose prediction scores it, token id, continuation slot)."""


def build_batch(rows: Sequence[Row], *, with_mask: bool, pad_id: int = 0) -> BatchTensors:
    width = max(row.length for row in rows)
    ids = [[pad_id] * width for _ in rows]
    positions = [[0] * width for _ in rows] if with_mask else None
    segments = [[-1] * width for _ in rows] if with_mask else None
    reads: list[list[tuple[int, int, int]]] = []
    for r, row in enumerate(rows):
        context = len(row.context)
        ids[r][:context] = row.context
        if with_mask:
            positions[r][:context] = range(context)
            segments[r][:context] = [0] * context
        cursor = context
        row_reads = []
        for slot, (_, continuation) in enumerate(row.continuations):
            # The first token is predicted by the context's last position, token j by the
            # position that holds token j-1 of this continuation.
            row_reads.append((context - 1, continuation[0], slot))
            fed = len(continuation) - 1
            ids[r][cursor : cursor + fed] = continuation[:-1]
            if with_mask:
                positions[r][cursor : cursor + fed] = range(context, context + fed)
                segments[r][cursor : cursor + fed] = [slot + 1] * fed
            row_reads.extend((cursor + j - 1, continuation[j], slot) for j in range(1, len(continuation)))
            cursor += fed
        reads.append(row_reads)
    return BatchTensors(
        input_ids=torch.tensor(ids, dtype=torch.long),
        position_ids=torch.tensor(positions, dtype=torch.long) if with_mask else None,
        segments=torch.tensor(segments, dtype=torch.long) if with_mask else None,
        reads=reads,
    )


def attention_mask(segments: torch.Tensor, *, boolean: bool, dtype: torch.dtype) -> torch.Tensor:
    """The (batch, 1, T, T) mask: causal, and a continuation sees only the context and itself.

    Boolean (True = attend) for sdpa; additive (0 or the dtype's minimum) for eager attention,
    which adds the mask to the attention scores.
    """
    width = segments.shape[1]
    index = torch.arange(width, device=segments.device)
    causal = index[None, :] <= index[:, None]
    same = segments[:, :, None] == segments[:, None, :]
    context_key = (segments == 0)[:, None, :]
    allowed = (causal[None] & (same | context_key))[:, None]
    if boolean:
        return allowed
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segments.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)
