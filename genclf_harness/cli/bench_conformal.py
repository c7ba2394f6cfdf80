"""``genclf-bench conformal``: conformal label sets per task, raw and after calibration.

    genclf-bench conformal --limit 500 --alphas 0.1,0.2 --output runs/bench_conformal.json

Every genclf classification task is scored once through lm-eval (as ``genclf-bench calibration``
does; ``--load-items`` reuses scores that ``genclf-bench calibration --save-items`` kept), then for
each miscoverage level, score (LAC, APS, RAPS) and calibration (raw, uniform prior matching,
``auto``) the split-conformal sets are built exactly as the task metrics build them
(:mod:`genclf_harness.harness.conformal_metrics`): calibrated on the training split's documents
(``--inductive-docs`` of them, labelled), or by cross-fitting over the evaluated documents
(``--calibration cross_fit``, and wherever a task has no training split apart from the evaluated
one). Prints coverage, mean set size and the singleton share per row, and a summary per method:
the better the calibration, the smaller the sets at the same coverage.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

METHODS = ("raw", "prior", "auto")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from genclf_harness.cli.bench_calibration import add_arguments as calibration_arguments

    calibration_arguments(parser)
    parser.add_argument("--alphas", default="0.1,0.2", help="comma-separated miscoverage levels")
    parser.add_argument("--scores", default="lac,aps,raps", help="comma-separated conformal scores")
    parser.add_argument("--calibration", choices=("train", "cross_fit"), default="train",
                        help="calibration documents: the training split's (default) or a cross-fit of the evaluated")
    parser.add_argument("--inductive-docs", type=int, default=100,
                        help="training documents scored per task, the calibration set (default 100, the task default)")
    parser.add_argument("--output", default=None, help="write the rows here as JSON")


def run(args: argparse.Namespace) -> int:
    from genclf_harness.cli.bench_calibration import load_items, save_items, score_tasks
    from genclf_harness.cli.errors import UsageError
    from genclf_harness.harness import conformal_metrics as cm

    try:
        alphas = [float(a) for a in args.alphas.split(",") if a.strip()]
    except ValueError:
        raise UsageError(f"--alphas {args.alphas!r}: comma-separated numbers in (0, 1)") from None
    if not alphas or any(not 0 < a < 1 for a in alphas):
        raise UsageError(f"--alphas {args.alphas!r}: comma-separated numbers in (0, 1)")
    scores = [s.strip() for s in args.scores.split(",") if s.strip()]
    unknown = [s for s in scores if s not in cm.SCORES]
    if unknown:
        raise UsageError(f"--scores: {unknown[0]!r} is not one of {', '.join(cm.SCORES)}")
    args.metadata = {"inductive_docs": args.inductive_docs}
    items = load_items(args.load_items) if args.load_items else score_tasks(args)
    if args.save_items:
        save_items(items, args.save_items)
    rows = [row for task, task_items in items.items()
            for row in _task_rows(task, task_items, alphas, scores, args.calibration)]
    print(_table(rows))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


def _task_rows(task: str, items: list[Any], alphas: list[float], scores: list[str], source: str) -> list[dict[str, Any]]:
    from genclf_harness.calibration.conformal import set_metrics
    from genclf_harness.harness import conformal_metrics as cm
    from genclf_harness.harness.metrics import arrays

    logits, gold, anchor = arrays(items)
    rows = []
    for alpha in alphas:
        options = {**(anchor or {"task": task}), cm.ALPHA_KEY: alpha, cm.SOURCE_KEY: source}
        for method in METHODS:
            for score in scores:
                try:
                    sets, info = cm.label_sets(logits, gold, options, score, None if method == "raw" else method)
                except ValueError as err:
                    print(f"genclf-bench conformal: {task} {method} {score} alpha {alpha} left out ({err})",
                          file=sys.stderr)
                    continue
                summary = set_metrics(sets, gold)
                rows.append({"task": task, "docs": len(gold), "alpha": alpha, "method": method, "score": score,
                             "coverage": summary.coverage, "set_size": summary.mean_size,
                             "singleton": summary.singleton_share, "empty": summary.empty_share,
                             "calibration_documents": info["calibration_documents"], "n": info["n"]})
    return rows


def _table(rows: list[dict[str, Any]]) -> str:
    lines = ["| task | docs | alpha | method | score | coverage | set size | singletons | calibrated on |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['docs']} | {r['alpha']} | {r['method']} | {r['score']} | {r['coverage']:.3f} | "
                     f"{r['set_size']:.2f} | {r['singleton']:.3f} | {r['n']} {'train' if 'training' in r['calibration_documents'] else 'cross-fit'} |")
    lines += ["", "Mean over tasks:", "", "| alpha | method | score | coverage | set size | singletons | tasks under 1-alpha |",
              "|---|---|---|---|---|---|---|"]
    keys = sorted({(r["alpha"], r["method"], r["score"]) for r in rows},
                  key=lambda k: (k[0], METHODS.index(k[1]), k[2]))
    for alpha, method, score in keys:
        chosen = [r for r in rows if (r["alpha"], r["method"], r["score"]) == (alpha, method, score)]
        under = sum(r["coverage"] < 1 - alpha for r in chosen)
        lines.append(f"| {alpha} | {method} | {score} | {np.mean([r['coverage'] for r in chosen]):.3f} | "
                     f"{np.mean([r['set_size'] for r in chosen]):.2f} | {np.mean([r['singleton'] for r in chosen]):.3f} | "
                     f"{under}/{len(chosen)} |")
    return "\n".join(lines)
