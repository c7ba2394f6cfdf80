"""``genclf-bench seams``: how often lm-eval's context/continuation split crosses a token seam.

Tokenisation only (no model forward): the real requests of each task (zero- and k-shot, with and
without the chat template) go through :class:`LabelEncoder`'s seam check as shipped, and again
with three template variants a user might write: a cue ending in a space (``"Sentiment: "``,
which lm-eval's whitespace rule should make harmless), no space between cue and label
(``"Sentiment:positive"``), and a cue ending mid-word (the context ends with the label's first
character, one prompt per label). Each cell is the share of label continuations whose context
tokens are not a prefix of ``context + label``'s tokens.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from genclf_harness.backends.label_encoding import LabelEncoder, LabelEncodingError
from genclf_harness.backends.protocol import LabelPrompt
from genclf_harness.cli.bench_scoring import BENCH_METADATA, build_requests, load_tasks

DEFAULT_TASKS = "genclf_sst2,genclf_sst5,genclf_agnews,genclf_trec,genclf_rte,genclf_cb,genclf_subj"

Variant = Callable[[str, tuple[str, ...]], list[LabelPrompt]]


def _shipped(context: str, labels: tuple[str, ...]) -> list[LabelPrompt]:
    return [LabelPrompt(context, labels)]


def _trailing_space(context: str, labels: tuple[str, ...]) -> list[LabelPrompt]:
    if not context:  # a content-free anchor (PMI) has no cue to end in a space
        return _shipped(context, labels)
    return [LabelPrompt(context + " ", tuple(label.lstrip(" ") for label in labels))]


def _no_space(context: str, labels: tuple[str, ...]) -> list[LabelPrompt]:
    return [LabelPrompt(context, tuple(label.lstrip(" ") for label in labels))]


def _mid_word(context: str, labels: tuple[str, ...]) -> list[LabelPrompt]:
    out = []
    for label in labels:
        word = label.lstrip(" ")
        if len(word) > 1:
            out.append(LabelPrompt(context + label[: len(label) - len(word) + 1], (word[1:],)))
    return out


VARIANTS: dict[str, Variant] = {
    "shipped": _shipped, "trailing space": _trailing_space, "no space": _no_space, "mid-word": _mid_word,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", default=DEFAULT_TASKS, help="comma-separated loglikelihood tasks")
    parser.add_argument("--pretrained", default="default", help="tokenizer: a model folder, hub id or 'default'")
    parser.add_argument("--fewshot", default="0,5", help="comma-separated shot counts")
    parser.add_argument("--limit", type=int, default=500, help="documents per task (default 500)")
    parser.add_argument("--output", default=None, help="also write the rows as JSON here")


def count(encoder: LabelEncoder, prompts: list[LabelPrompt]) -> tuple[int, int, int]:
    """(label continuations, seam mismatches, prompts that cross a seam so that lm-eval's split
    leaves a label without any token: an error unless ``align_labels``)."""
    labels = sum(len(p.continuations) for p in prompts)
    mismatches = empty = 0
    for prompt in prompts:
        blocked = False
        for continuation in prompt.continuations:  # one at a time: an error must not hide the others
            try:
                mismatches += len(encoder.split([LabelPrompt(prompt.context, (continuation,))]).mismatches)
            except LabelEncodingError as error:
                if "align_labels" not in str(error):
                    raise
                mismatches += 1
                blocked = True
        empty += blocked
    return labels, mismatches, empty


def run(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from genclf_harness.backends.default_model import resolve_pretrained

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_pretrained(args.pretrained)))
    encoder = LabelEncoder(tokenizer)
    names = [n.strip() for n in args.tasks.split(",") if n.strip()]
    rows: list[dict[str, Any]] = []
    for name, task in load_tasks(names, BENCH_METADATA).items():
        for shots in [int(s) for s in args.fewshot.split(",") if s.strip()]:
            for chat in (False, True):
                requests = build_requests(name, task, shots, args.limit, chat, tokenizer)
                by_context: dict[str, dict[str, None]] = {}
                for instance in requests.instances:
                    context, continuation = instance.args
                    by_context.setdefault(context, {})[continuation] = None
                for variant, make in VARIANTS.items():
                    prompts = [p for c, labels in by_context.items() for p in make(c, tuple(labels))]
                    labels, mismatches, empty = count(encoder, prompts)
                    rows.append({"task": name, "shots": shots, "chat": chat, "variant": variant,
                                 "labels": labels, "mismatches": mismatches, "no_token": empty})
                    print(f"{name:16} {shots}-shot chat={'yes' if chat else 'no ':3} {variant:15} "
                          f"{mismatches:6d} of {labels:6d} labels cross a seam ({mismatches / max(labels, 1):6.1%});"
                          f" {empty} prompts get no continuation token", flush=True)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=1)
    return 0
