"""The losses of channel training (dos Santos et al. 2020, "Beyond [CLS] through Ranking by
Generation"), on the per-token log-probabilities of a document's input under each label's prompt.

For a document with gold label ``g`` and the input's tokens ``x_1..x_T`` scored after each label
``k``'s context, ``l_{k,t} = log p(x_t | prompt(y_k), x_<t)``:

- likelihood (``mle``): ``-1/T Σ_t l_{g,t}``, maximum likelihood of the input under the gold prompt;
- unlikelihood (``lul`` adds it to ``mle``, weighted): ``-1/T Σ_t log(1 - exp(l_{k,t}))`` averaged
  over the other labels ``k != g`` (Welleck et al. 2020's token-level unlikelihood): pushes the
  input's tokens down under the wrong labels' prompts. ``log(1 - exp(l))`` is computed as
  ``log1mexp`` (Mächler 2012), finite for every ``l < 0``, with ``p`` capped at ``1 - 1e-6``;
- ranking (``rank``): ``max(0, margin - (s_g - max_{k != g} s_k))`` with ``s_k`` the mean token
  log-probability: a hinge on the gold label against the hardest other label.

Each returns a per-document value; `channel_loss` averages them over the batch and reports each
term (a term the loss does not use is exactly zero).
"""

from __future__ import annotations

import math
from typing import Literal

import torch

ChannelLoss = Literal["mle", "lul", "rank"]
CHANNEL_LOSSES: tuple[str, ...] = ("mle", "lul", "rank")
_LOG_HALF = -math.log(2.0)
_MAX_UNLIKELY_LOGP = math.log1p(-1e-6)
"""A token the model is certain of (p = 1 in float32) costs -log(1e-6), not infinity, under unlikelihood;
so both branches of `log1mexp` stay finite and its gradient has no NaN."""


def log1mexp(logp: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(logp))`` for ``logp <= 0``, stable at both ends (``-inf`` at exactly 0)."""
    logp = logp.clamp(max=0.0)
    return torch.where(logp > _LOG_HALF, torch.log(-torch.expm1(logp)), torch.log1p(-torch.exp(logp)))


def sequence_means(token_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the masked tokens: ``(..., T) -> (...)``."""
    kept = torch.where(mask, token_logprobs, torch.zeros_like(token_logprobs))  # padding may be -inf or nan
    return kept.sum(-1) / mask.sum(-1).clamp(min=1).to(token_logprobs.dtype)


def channel_loss(
    token_logprobs: torch.Tensor,
    mask: torch.Tensor,
    gold: torch.Tensor,
    *,
    loss: ChannelLoss = "mle",
    unlikelihood_weight: float = 1.0,
    margin: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(the loss, its terms) for a batch: ``token_logprobs`` and ``mask`` are ``(B, K, T)`` (the
    input's tokens under each of K label prompts, padded), ``gold`` is ``(B,)``."""
    if loss not in CHANNEL_LOSSES:
        raise ValueError(f"unknown channel loss {loss!r}; choose {', '.join(CHANNEL_LOSSES)}")
    batch, labels, _ = token_logprobs.shape
    if labels < 2 and loss != "mle":
        raise ValueError(f"the {loss!r} loss needs at least two labels per document, not {labels}")
    means = sequence_means(token_logprobs, mask)  # (B, K)
    rows = torch.arange(batch, device=gold.device)
    others = torch.ones_like(means, dtype=torch.bool)
    others[rows, gold] = False
    zero = means.new_zeros(())
    likelihood = -means[rows, gold].mean()
    unlikelihood = rank = zero
    if loss == "lul":
        per_label = -sequence_means(log1mexp(token_logprobs.clamp(max=_MAX_UNLIKELY_LOGP)), mask)  # (B, K)
        unlikelihood = (per_label * others).sum(-1).div(others.sum(-1)).mean()
    if loss == "rank":
        hardest = means.masked_fill(~others, -torch.inf).amax(-1)
        rank = torch.relu(margin - (means[rows, gold] - hardest)).mean()
    total = {"mle": likelihood, "lul": likelihood + unlikelihood_weight * unlikelihood, "rank": rank}[loss]
    return total, {"likelihood": likelihood.detach(), "unlikelihood": unlikelihood.detach(), "rank": rank.detach()}


def training_margin(means: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """Per document, the gold label's mean token log-probability minus the best other label's."""
    rows = torch.arange(means.shape[0], device=gold.device)
    others = means.clone()
    others[rows, gold] = -torch.inf
    return means[rows, gold] - others.amax(-1)
