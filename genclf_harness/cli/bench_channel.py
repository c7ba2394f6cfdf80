"""``genclf-bench channel``: the channel direction against the direct one, per data set, one table.

For each data set the direct task ``genclf_<name>`` and the channel task ``genclf_<name>_channel``
run through lm-eval (``simple_evaluate``, logged samples) on one model; every calibration is then
fitted on the same per-document scores (``genclf-bench calibration``'s methods: raw, ``prior``,
``bc``, ``cc``, ``prior_train``, ``auto``). ``--model_args ...,peft=<adapter>`` measures a trained
channel model (``genclf-train channel``) the same way.

Cost: a direct document is one context and K short labels; a channel document is K contexts, each
followed by the whole input. Per evaluated document the table gives the tokens stock ``hf`` feeds
(one row per request: ``len(context + continuation)`` summed over the K requests) and the compute
bound (the distinct token prefixes of the K requests: what a scorer that never feeds a prefix twice
must feed), and the wall time of each task (the anchor's extra documents included, the same number
in both directions).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from genclf_harness.cli.errors import UsageError

DATASETS = "sst2,sst5,agnews,trec"
METHODS = ("raw", "prior", "bc", "cc", "prior_train", "auto")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--datasets", default=DATASETS, help=f"comma-separated data sets (default {DATASETS})")
    parser.add_argument("--limit", type=int, default=300, help="documents per task (default 300)")
    parser.add_argument("--model", default="genclf-hf", help="lm-eval model name (default genclf-hf)")
    parser.add_argument("--model_args", default="pretrained=default,dtype=bfloat16")
    parser.add_argument("--batch_size", default="32")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--inductive-docs", type=int, default=100,
                        help="training documents for the inductive and training-prior methods (task metadata)")
    parser.add_argument("--directions", default="direct,channel",
                        help="comma-separated: direct, channel (default both; a channel adapter: channel)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")


def request_tokens(tokenizer: Any, requests: Sequence[tuple[str, str]]) -> tuple[int, int]:
    """(tokens stock hf feeds: one row per request, the compute bound: distinct token prefixes)."""
    sequences = [tuple(tokenizer(context + continuation)["input_ids"]) for context, continuation in requests]
    prefixes = {seq[:end] for seq in sequences for end in range(1, len(seq) + 1)}
    return sum(map(len, sequences)), len(prefixes)


def _requests(sample: dict[str, Any], choices: int) -> list[tuple[str, str]]:
    arguments = sample["arguments"]
    if isinstance(arguments, dict):  # lm-eval 0.4.x: {"gen_args_0": {"arg_0": context, "arg_1": continuation}}
        arguments = [(a["arg_0"], a["arg_1"]) for a in arguments.values()]
    return [(str(c), str(t)) for c, t in list(arguments)[:choices]]


def measure(args: argparse.Namespace, dataset: str, direction: str, tokenizer: Any) -> list[dict[str, Any]]:
    from genclf_harness import calibration as cal
    from genclf_harness.cli.bench_calibration import run_tasks
    from genclf_harness.harness.metrics import calibrated_logprobs, sample_items

    task = f"genclf_{dataset}" + ("_channel" if direction == "channel" else "")
    started = time.perf_counter()
    results = run_tasks(argparse.Namespace(**{**vars(args), "tasks": task, "num_fewshot": 0,
                                              "apply_chat_template": False,
                                              "metadata": {"inductive_docs": args.inductive_docs}}))
    seconds = time.perf_counter() - started
    samples = results["samples"][task]
    items = sample_items(samples)
    counts = [request_tokens(tokenizer, _requests(s, len(item.lls))) for s, item in zip(samples, items, strict=True)]
    rows = []
    for method in METHODS:
        try:
            logprobs, gold = calibrated_logprobs(items, None if method == "raw" else method)
        except ValueError as error:
            print(f"genclf-bench channel: {task} {method} left out ({error})")
            continue
        rows.append({
            "dataset": dataset, "direction": direction, "method": method, "docs": len(items),
            "acc": cal.accuracy(logprobs, gold), "f1_macro": cal.macro_f1(logprobs, gold),
            "stock_tokens_per_doc": float(np.mean([c[0] for c in counts])),
            "bound_tokens_per_doc": float(np.mean([c[1] for c in counts])),
            "seconds": round(seconds, 1),
        })
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    by_key = {(r["dataset"], r["direction"], r["method"]): r for r in rows}
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    print("| data set | direction | docs | " + " | ".join(f"acc {m}" for m in METHODS) +
          " | F1 raw | F1 auto | tokens/doc (stock) | bound/doc | seconds |")
    print("|---" * (len(METHODS) + 8) + "|")
    for dataset in datasets:
        for direction in ("direct", "channel"):
            raw = by_key.get((dataset, direction, "raw"))
            if raw is None:
                continue
            accs = [by_key.get((dataset, direction, m)) for m in METHODS]
            auto = by_key.get((dataset, direction, "auto"))
            print(f"| {dataset} | {direction} | {raw['docs']} | " +
                  " | ".join("–" if r is None else f"{r['acc']:.3f}" for r in accs) +
                  f" | {raw['f1_macro']:.3f} | {'–' if auto is None else format(auto['f1_macro'], '.3f')}"
                  f" | {raw['stock_tokens_per_doc']:.0f} | {raw['bound_tokens_per_doc']:.0f} | {raw['seconds']:.0f} |")
    for direction in ("direct", "channel"):
        means = []
        for method in METHODS:
            values = [by_key[(d, direction, method)]["acc"] for d in datasets if (d, direction, method) in by_key]
            means.append(f"{np.mean(values):.3f}" if len(values) == len(datasets) else "–")
        print(f"| **mean** | {direction} | | " + " | ".join(means) + " | | | | | |")
    direct = [by_key[(d, "direct", "raw")] for d in datasets if (d, "direct", "raw") in by_key]
    channel = [by_key[(d, "channel", "raw")] for d in datasets if (d, "channel", "raw") in by_key]
    if direct and channel:
        ratio = np.mean([c["bound_tokens_per_doc"] / d["bound_tokens_per_doc"] for d, c in zip(direct, channel, strict=True)])
        print(f"\nchannel / direct compute bound per document: {ratio:.2f}x (mean over data sets)")


def run(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from genclf_harness.backends.default_model import resolve_pretrained
    from genclf_harness.data import get_spec

    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    if not datasets:
        raise UsageError("--datasets names no data set")
    for dataset in datasets:
        get_spec(dataset)  # an unknown data set fails before any model work
    directions = [d.strip() for d in args.directions.split(",") if d.strip()]
    if not directions or set(directions) - {"direct", "channel"}:
        raise UsageError(f"--directions {args.directions!r}: use direct, channel or both")
    if args.limit < 1 or args.inductive_docs < 0:
        raise UsageError("--limit must be at least 1 and --inductive-docs non-negative")
    pretrained = dict(kv.split("=", 1) for kv in args.model_args.split(",") if "=" in kv).get("pretrained")
    tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained(pretrained))
    rows: list[dict[str, Any]] = []
    for dataset in datasets:
        for direction in directions:
            rows += measure(args, dataset, direction, tokenizer)
    print_table(rows)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=1)
    return 0
