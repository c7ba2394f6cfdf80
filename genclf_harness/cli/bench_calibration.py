"""``genclf-bench calibration``: raw vs calibrated metrics per task and method, from one scoring pass.

Every genclf classification task is scored once through lm-eval (``simple_evaluate`` with logged
samples); each calibration method is then fitted on the same per-document scores. Prints, per
task and method, accuracy, macro-F1 and ECE, the oracle, and a summary across tasks: the mean
change over raw, the tasks where macro-F1 rose, the worst accuracy loss on tasks of at least
``--min-docs-for-loss`` documents, and the share of the raw-to-oracle accuracy gap closed.
``--json`` prints one JSON object per line instead, with the keys
``task, method, docs, acc, f1_macro, ece, oracle_acc``.

Controlled label shift: ``--shift genclf_sst2=80/20`` (repeatable) adds the task's scored
documents subsampled (seeded) to that label prior, as the task ``genclf_sst2@80/20``, where the
true prior is known; for those the estimated priors of ``prior_em``, ``bcts_em`` and ``bbse`` are
printed with their L1 error. ``--save-items`` / ``--load-items`` keep the scores, so the methods
can be compared again without scoring.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np

from genclf_harness.cli.errors import UsageError

METHODS = ("raw", "prior", "prior_em", "bc", "cc", "dcpmi", "pmi", "prior_train", "bcts_em", "bbse", "auto")
ALL_TASKS = "genclf_sst2,genclf_sst5,genclf_agnews,genclf_trec,genclf_rte,genclf_cb,genclf_subj"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", default=ALL_TASKS, help="comma-separated genclf classification tasks")
    parser.add_argument("--limit", type=int, default=500, help="documents per task (default 500)")
    parser.add_argument("--model", default="genclf-hf", help="lm-eval model name (default genclf-hf)")
    parser.add_argument("--model_args", default="pretrained=default,dtype=bfloat16")
    parser.add_argument("--num_fewshot", type=int, default=0)
    parser.add_argument("--batch_size", default="32")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--apply_chat_template", action="store_true")
    parser.add_argument("--min-docs-for-loss", type=int, default=200,
                        help="only tasks with at least this many documents count for the worst loss")
    parser.add_argument("--json", action="store_true", help="one JSON object per task and method")
    parser.add_argument("--shift", action="append", default=[], metavar="TASK=P1/P2/...",
                        help="also evaluate TASK's documents subsampled to this label prior (percent, repeatable)")
    parser.add_argument("--save-items", default=None, help="write the scored documents (JSON) here")
    parser.add_argument("--load-items", default=None, help="read scored documents written by --save-items "
                        "instead of scoring")


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def score_tasks(args: argparse.Namespace) -> dict[str, list[Any]]:
    """task -> its documents' ScoreItems, from one lm-eval run with logged samples."""
    from genclf_harness.harness.metrics import sample_items

    results = run_tasks(args)
    return {task: sample_items(samples) for task, samples in results["samples"].items()}


def run_tasks(args: argparse.Namespace) -> dict[str, Any]:
    """lm-eval's results (with logged samples, no bootstrap) of ``args.tasks`` on ``args.model``;
    ``args.metadata`` (optional) reaches every task as ``--metadata`` does."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from genclf_harness.backends.default_model import resolve_model_args
    from genclf_harness.harness.local_tasks import local_include_path
    from genclf_harness.harness.registry import register
    from genclf_harness.resources import tasks_dir

    register()
    model_args = resolve_model_args(args.model_args)
    metadata = task_metadata(model_args, getattr(args, "metadata", None))
    return lm_eval.simple_evaluate(
        model=args.model,
        model_args=model_args,
        tasks=args.tasks.split(","),
        num_fewshot=args.num_fewshot,
        limit=args.limit,
        batch_size=args.batch_size,
        device=args.device or default_device(),
        log_samples=True,
        apply_chat_template=args.apply_chat_template,
        task_manager=TaskManager(include_path=[str(tasks_dir()), *local_include_path(args.tasks.split(","))],
                                 metadata=metadata),
        bootstrap_iters=0,
        metadata=metadata,
    )


def task_metadata(model_args: str | dict[str, Any], metadata: dict[str, Any] | None) -> dict[str, Any]:
    """What lm-eval's ``simple_evaluate`` gives every task as metadata when it builds the task manager
    itself: the model arguments, then ``--metadata`` over them. It drops ``metadata`` when a manager is
    passed in (0.4.13), so ours must carry it, or ``--inductive-docs`` would never reach the tasks."""
    from lm_eval.utils import simple_parse_args_string

    parsed = simple_parse_args_string(model_args) if isinstance(model_args, str) else dict(model_args or {})
    return parsed | (metadata or {})


def evaluate_methods(items: list[Any]) -> list[dict[str, Any]]:
    from genclf_harness import calibration as cal
    from genclf_harness.harness.metrics import calibrated_logprobs

    oracle, gold = calibrated_logprobs(items, "oracle")
    oracle_acc = cal.accuracy(oracle, gold)
    rows = []
    for method in METHODS:
        try:
            logprobs, gold = calibrated_logprobs(items, None if method == "raw" else method)
        except ValueError as error:  # e.g. no labelled training split: say so, leave the method out
            print(f"genclf-bench calibration: {method} left out ({error})", file=sys.stderr)
            continue
        rows.append({
            "method": method,
            "docs": len(items),
            "acc": cal.accuracy(logprobs, gold),
            "f1_macro": cal.macro_f1(logprobs, gold),
            "ece": cal.expected_calibration_error(logprobs, gold),
            "oracle_acc": oracle_acc,
        })
    return rows


def summarise(table: dict[str, list[dict[str, Any]]], min_docs: int) -> list[dict[str, Any]]:
    raw = {task: rows[0] for task, rows in table.items()}
    summary = []
    for method in METHODS:
        rows = {task: row for task, task_rows in table.items() for row in task_rows if row["method"] == method}
        if len(rows) < len(table):
            continue  # left out on some task (said when it was fitted): a mean over fewer tasks misleads
        d_acc = [rows[t]["acc"] - raw[t]["acc"] for t in table]
        d_f1 = [rows[t]["f1_macro"] - raw[t]["f1_macro"] for t in table]
        big = [rows[t]["acc"] - raw[t]["acc"] for t in table if raw[t]["docs"] >= min_docs]
        gaps = [(raw[t]["oracle_acc"] - raw[t]["acc"]) for t in table]
        closed = sum(d_acc) / sum(gaps) if sum(gaps) > 0 else float("nan")
        summary.append({
            "method": method,
            "mean_acc": float(np.mean([rows[t]["acc"] for t in table])),
            "mean_f1_macro": float(np.mean([rows[t]["f1_macro"] for t in table])),
            "mean_d_acc": float(np.mean(d_acc)),
            "mean_d_f1_macro": float(np.mean(d_f1)),
            "tasks_f1_up": sum(d > 0 for d in d_f1),
            "worst_d_acc": float(min(big)) if big else float("nan"),
            "oracle_gap_closed": closed,
        })
    return summary


SHIFT_SEED = 1234


def shifted(items: list[Any], percents: list[float], seed: int = SHIFT_SEED) -> list[Any]:
    """The largest seeded subsample of ``items`` whose label shares are ``percents`` (the anchor kept)."""
    if len(percents) != 1 + max(item.gold for item in items) or min(percents) <= 0:
        raise UsageError(f"calibration: --shift needs one positive share per label, got {percents}")
    shares = np.asarray(percents, dtype=np.float64) / sum(percents)
    by_label = [[item for item in items if item.gold == k] for k in range(len(shares))]
    total = int(min(len(rows) / share for rows, share in zip(by_label, shares, strict=True)))
    rng = np.random.default_rng(seed)
    kept = []
    for rows, share in zip(by_label, shares, strict=True):
        chosen = rng.choice(len(rows), size=max(1, round(total * share)), replace=False)
        kept.extend(rows[i] for i in sorted(chosen))
    anchor = next(item.anchor for item in items if item.anchor)
    kept = [item._replace(anchor=None) for item in kept]
    kept[0] = kept[0]._replace(anchor=anchor)
    return kept


def prior_errors(items: list[Any]) -> dict[str, Any]:
    """Estimated priors of the label-shift methods and their L1 distance to the true one."""
    from genclf_harness.harness.metrics import FITTED, calibrated_logprobs

    gold = np.array([item.gold for item in items])
    truth = np.bincount(gold, minlength=len(items[0].lls)) / len(gold)
    task = next(item.anchor["task"] for item in items if item.anchor)
    out: dict[str, Any] = {"true_prior": truth.round(3).tolist()}
    for method in ("prior_em", "bcts_em", "bbse"):
        try:
            calibrated_logprobs(items, method)
        except ValueError as error:
            out[method] = f"left out ({error})"
            continue
        estimated = np.asarray(FITTED[task][method]["params"]["estimated_prior"])
        out[method] = {"prior": estimated.round(3).tolist(), "l1": round(float(np.abs(estimated - truth).sum()), 3)}
    return out


def load_items(path: str) -> dict[str, list[Any]]:
    """Scored documents written by ``--save-items``."""
    from genclf_harness.harness.metrics import ScoreItem

    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    return {task: [ScoreItem(i["doc_id"], i["gold"], tuple(i["lls"]), i["anchor"]) for i in rows]
            for task, rows in data.items()}


def save_items(items: dict[str, list[Any]], path: str) -> None:
    """Keep the scored documents (``--save-items``) for ``--load-items``."""
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({task: [item._asdict() for item in rows] for task, rows in items.items()}, handle)


def parse_shifts(specs: list[str], tasks: list[str] | None) -> dict[str, list[float]]:
    """``--shift TASK=P1/P2/...`` as ``{spec: percents}``, checked before any scoring (the number of
    labels is checked once the task is scored)."""
    parsed = {}
    for spec in specs:
        task, sep, prior = spec.partition("=")
        if not sep or not task:
            raise UsageError(f"calibration: --shift {spec!r}: write TASK=P1/P2/... (percent per label)")
        if tasks is not None and task not in tasks:
            raise UsageError(f"calibration: --shift {spec!r}: {task!r} is not among --tasks ({', '.join(tasks)})")
        try:
            percents = [float(p) for p in prior.split("/")]
        except ValueError:
            raise UsageError(f"calibration: --shift {spec!r}: {prior!r} is not numbers separated by '/'") from None
        if len(percents) < 2 or min(percents) <= 0:
            raise UsageError(f"calibration: --shift {spec!r}: needs a positive share for every label")
        parsed[spec] = percents
    return parsed


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    tasks = None if args.load_items else [t.strip() for t in args.tasks.split(",") if t.strip()]
    parse_shifts(args.shift, tasks)  # before the model scores anything
    items = load_items(args.load_items) if args.load_items else score_tasks(args)
    if args.save_items:
        save_items(items, args.save_items)
    shifts = {}
    for spec in args.shift:
        task, _, prior = spec.partition("=")
        if task not in items:
            raise UsageError(f"calibration: --shift {spec!r}: {task!r} is not among the scored tasks")
        shifts[f"{task}@{prior}"] = shifted(items[task], parse_shifts([spec], None)[spec])
    items.update(shifts)
    table = {task: evaluate_methods(task_items) for task, task_items in sorted(items.items())}
    estimates = {task: prior_errors(task_items) for task, task_items in shifts.items()}
    summary = summarise({t: rows for t, rows in table.items() if t not in shifts}, args.min_docs_for_loss)
    shifted_summary = summarise({t: table[t] for t in shifts}, args.min_docs_for_loss) if shifts else []
    if args.json:
        for task, rows in table.items():
            for row in rows:
                print(json.dumps({"task": task, **row}))
        for row in summary:
            print(json.dumps({"task": "mean", **row}))
        for row in shifted_summary:
            print(json.dumps({"task": "mean shifted", **row}))
        for task, estimate in estimates.items():
            print(json.dumps({"task": task, "estimated_priors": estimate}))
        return 0
    out = sys.stdout
    out.write(f"{'task':<24} {'method':<11} {'docs':>5} {'acc':>6} {'f1_macro':>8} {'ece':>6} {'oracle':>6}\n")
    for task, rows in table.items():
        for row in rows:
            out.write(f"{task:<24} {row['method']:<11} {row['docs']:>5} {row['acc']:>6.3f} "
                      f"{row['f1_macro']:>8.3f} {row['ece']:>6.3f} {row['oracle_acc']:>6.3f}\n")
    for title, rows, count in ((f"across {len(table) - len(shifts)} tasks", summary, len(table) - len(shifts)),
                               (f"across the {len(shifts)} shifted sets", shifted_summary, len(shifts))):
        if not rows:
            continue
        out.write(f"\n{title}\n")
        out.write(f"{'method':<11} {'mean acc':>8} {'Δacc':>7} {'mean F1':>8} {'ΔF1':>7} {'F1 up':>6} "
                  f"{'worst Δacc':>10} {'gap closed':>10}\n")
        for row in rows:
            out.write(f"{row['method']:<11} {row['mean_acc']:>8.3f} {row['mean_d_acc']:>+7.3f} "
                      f"{row['mean_f1_macro']:>8.3f} {row['mean_d_f1_macro']:>+7.3f} "
                      f"{row['tasks_f1_up']:>3}/{count:<2} {row['worst_d_acc']:>+10.3f} "
                      f"{row['oracle_gap_closed']:>10.2f}\n")
    for task, estimate in estimates.items():
        out.write(f"\n{task}: estimated priors {json.dumps(estimate)}")
    out.write(f"\n(one scoring pass, {time.perf_counter() - started:.0f} s; worst Δacc over tasks with "
              f">= {args.min_docs_for_loss} documents; gap closed = Σ Δacc / Σ (oracle - raw))\n")
    return 0
