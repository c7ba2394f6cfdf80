"""Accuracy of a (trained) generative classifier, two ways, on rendered prompts.

- scored (perplexity decoding): every label of the strategy is scored after the prompt by the
  genclf scorer (`genclf_harness.backends.scorer.HFScorer`: the context is fed once per document),
  and the label with the highest mean log-prob per token wins (``acc``; ``acc_sum`` ranks by the
  summed log-likelihood, lm-eval's ``acc``). Plain-text prompts are scored exactly as lm-eval's
  ``genclf_<dataset>`` task scores them; chat prompts score the label tokens right after the
  rendered assistant header (the tokens the model was trained to produce);
- generative: greedy decoding, read by the prompts package's answer parser; an unparseable answer
  counts as wrong and is counted (``unparseable``).

The returned figures are plain JSON data.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from genclf_harness.prompts import AnswerParser, LabelSet, RenderedPrompt

logger = logging.getLogger(__name__)


def evaluate_classifier(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[RenderedPrompt],
    label_set: LabelSet,
    *,
    chat: bool,
    scored: bool = True,
    generate: bool = True,
    max_new_tokens: int = 8,
    batch_size: int = 32,
    autocast_bf16: bool = False,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Figures of ``model`` on ``prompts``: ``{"documents", "scored": {...}, "generative": {...}}``."""
    gold = np.array([p.gold for p in prompts], dtype=np.int64)
    figures: dict[str, Any] = {"documents": len(prompts), "chat_template": chat}
    was_training = model.training
    model.eval()
    try:
        if scored:
            started = time.perf_counter()
            scores = score_labels(model, tokenizer, prompts, chat=chat, autocast_bf16=autocast_bf16,
                                  show_progress=show_progress)
            figures["scored"] = {
                **scored_figures(scores["mean_token"], gold, label_set),
                "acc_sum": float(np.mean(scores["sum"].argmax(axis=1) == gold)),
                "seconds": round(time.perf_counter() - started, 2),
            }
        if generate:
            started = time.perf_counter()
            answers = generate_answers(model, tokenizer, prompts, chat=chat, max_new_tokens=max_new_tokens,
                                       batch_size=batch_size, autocast_bf16=autocast_bf16,
                                       show_progress=show_progress)
            figures["generative"] = {
                **generative_figures(answers, gold, label_set),
                "seconds": round(time.perf_counter() - started, 2),
            }
    finally:
        model.train(was_training)
    return figures


def score_labels(model: Any, tokenizer: Any, prompts: Sequence[RenderedPrompt], *, chat: bool,
                 autocast_bf16: bool = False, show_progress: bool = True) -> dict[str, np.ndarray]:
    """(N, choices) label scores: ``sum`` (log-likelihood) and ``mean_token`` (per label token)."""
    from genclf_harness.backends.protocol import LabelPrompt, TokenPrompt
    from genclf_harness.backends.scorer import HFScorer

    scorer = HFScorer(model, tokenizer, autocast_dtype=torch.bfloat16 if autocast_bf16 else None)
    if chat:
        token_prompts = [
            TokenPrompt(
                context=chat_prompt_ids(tokenizer, p.messages()),
                continuations=tuple(tuple(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in p.choices),
            )
            for p in prompts
        ]
        results = scorer.score_tokens(token_prompts, show_progress=show_progress)
    else:
        # lm-eval's split: the context is the prompt, each continuation " " + label.
        results = scorer.score([LabelPrompt(p.prompt, tuple(" " + c for c in p.choices)) for p in prompts],
                               show_progress=show_progress)
    return {
        "sum": np.array([r.normalized("sum") for r in results], dtype=np.float64),
        "mean_token": np.array([r.normalized("mean_token") for r in results], dtype=np.float64),
    }


def chat_prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[int, ...]:
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding
        ids = ids["input_ids"]
    return tuple(int(t) for t in ids)


def generate_answers(model: Any, tokenizer: Any, prompts: Sequence[RenderedPrompt], *, chat: bool,
                     max_new_tokens: int = 8, batch_size: int = 32, autocast_bf16: bool = False,
                     show_progress: bool = True) -> list[str]:
    """Greedy answers (new text only, special tokens dropped), in prompt order."""
    encoded = [
        list(chat_prompt_ids(tokenizer, p.messages())) if chat else tokenizer(p.prompt)["input_ids"]
        for p in prompts
    ]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))  # similar lengths share a batch
    answers: list[str] = [""] * len(encoded)
    for start in tqdm(range(0, len(order), batch_size), desc="Generating answers", disable=not show_progress,
                      unit="batch"):
        batch = order[start:start + batch_size]
        width = max(len(encoded[i]) for i in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, index in enumerate(batch):  # left padding: every row ends where generation starts
            ids = encoded[index]
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            attention[row, width - len(ids):] = 1
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast_bf16):
            output = model.generate(
                input_ids=input_ids.to(device), attention_mask=attention.to(device),
                max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id,
                temperature=None, top_p=None, top_k=None,
            )
        for row, index in enumerate(batch):
            answers[index] = tokenizer.decode(output[row, width:], skip_special_tokens=True)
    return answers


def scored_figures(scores: np.ndarray, gold: np.ndarray, label_set: LabelSet) -> dict[str, Any]:
    predictions = scores.argmax(axis=1)
    return {
        "acc": float(np.mean(predictions == gold)),
        "f1_macro": macro_f1(predictions, gold, label_set.num_classes),
        "predicted_share": _shares(predictions, label_set),
    }


def generative_figures(answers: Sequence[str], gold: np.ndarray, label_set: LabelSet) -> dict[str, Any]:
    parser = AnswerParser.of(label_set)
    parsed = [parser.parse(a) for a in answers]
    predictions = np.array([-1 if p.index is None else p.index for p in parsed], dtype=np.int64)
    unparseable = [a for a, p in zip(answers, parsed, strict=True) if p.index is None]
    return {
        "acc": float(np.mean(predictions == gold)),
        "f1_macro": macro_f1(predictions, gold, label_set.num_classes),
        "unparseable": float(np.mean(predictions < 0)),
        "statuses": dict(Counter(p.status for p in parsed)),
        "predicted_share": _shares(predictions, label_set),
        "unparseable_examples": unparseable[:3],
        "answer_examples": list(answers[:3]),
    }


def macro_f1(predictions: np.ndarray, gold: np.ndarray, num_classes: int) -> float:
    """Macro-F1 over the real classes; a prediction outside them (unparseable, uncertain) is never right."""
    scores = []
    for label in range(num_classes):
        tp = int(np.sum((predictions == label) & (gold == label)))
        fp = int(np.sum((predictions == label) & (gold != label)))
        fn = int(np.sum((predictions != label) & (gold == label)))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else float("nan")


def _shares(predictions: np.ndarray, label_set: LabelSet) -> dict[str, float]:
    total = max(len(predictions), 1)
    shares = {choice: float(np.sum(predictions == i)) / total for i, choice in enumerate(label_set.choices)}
    if np.any(predictions < 0):
        shares["(unparseable)"] = float(np.sum(predictions < 0)) / total
    return shares
