"""``genclf-bench bootstrap``: genclf's bootstrap stderr against lm-eval's own, side by side.

lm-eval's ``bootstrap_stderr(f, xs, iters)`` draws each resample as a Python list
(``random.choices``) and calls the metric on it, in a process pool; genclf's
(``genclf_harness.harness.metrics.bootstrap_stderr``) draws index arrays and, for raw metrics,
computes every resample at once (``calibration.resampled_metric``); calibrated metrics refit in
each resample in both. Both get the same documents, metric and resample count; the table gives
each one's seconds, the ratio, and both standard errors (different random draws, so they agree
to a few percent, not exactly).

Documents: ``--docs`` x ``--labels`` seeded synthetic label scores with a label bias (default
10,000 x 10, the issue's size), or ``--load-items FILE`` written by ``genclf-bench calibration
--save-items`` (real scores of a task).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from genclf_harness.cli.errors import UsageError

DEFAULT_METRICS = "acc,macro_f1,ece_width15,gold_nll,acc_bc,acc_prior"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--docs", type=int, default=10_000, help="synthetic documents (default 10,000)")
    parser.add_argument("--labels", type=int, default=10, help="synthetic labels (default 10)")
    parser.add_argument("--iters", type=int, default=1000, help="resamples (default 1,000)")
    parser.add_argument("--metrics", default=DEFAULT_METRICS, help=f"genclf metric names (default {DEFAULT_METRICS})")
    parser.add_argument("--load-items", default=None, help="scored documents from genclf-bench calibration "
                        "--save-items (its first task) instead of synthetic ones")
    parser.add_argument("--json", action="store_true", help="one JSON object per metric")


def synthetic_items(docs: int, labels: int, seed: int = 0) -> list[Any]:
    from genclf_harness.harness.metrics import ScoreItem

    rng = np.random.default_rng(seed)
    gold = rng.integers(0, labels, docs)
    scores = rng.normal(size=(docs, labels))
    scores[np.arange(docs), gold] += 1.5
    scores[:, 0] += 1.0  # a label bias, so that calibration changes the predictions
    return [ScoreItem(i, int(g), tuple(map(float, row)), None) for i, (g, row) in enumerate(zip(gold, scores))]


def _loaded_items(path: str) -> tuple[str, list[Any]]:
    from genclf_harness.harness.metrics import ScoreItem

    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict) or not data:
        raise UsageError(f"bootstrap: --load-items {path}: not a file written by genclf-bench calibration --save-items")
    task = sorted(data)[0]
    return task, [ScoreItem(i["doc_id"], i["gold"], tuple(i["lls"]), i["anchor"]) for i in data[task]]


class _Metric:
    """lm-eval's ``f``: the genclf metric of a resampled list of items (picklable for its pool)."""

    def __init__(self, name: str) -> None:
        self.name = self.__name__ = name

    def __call__(self, items: list[Any]) -> float:
        from genclf_harness.harness import metrics

        return float(getattr(metrics, self.name)(items))


def run(args: argparse.Namespace) -> int:
    from lm_eval.api.metrics import bootstrap_stderr as lm_eval_bootstrap

    from genclf_harness.harness import metrics

    if args.iters < 2 or args.docs < 2 or args.labels < 2:
        raise UsageError("bootstrap: --iters, --docs and --labels must be at least 2")
    names = [m.strip() for m in args.metrics.split(",") if m.strip()]
    for name in names:
        try:
            metrics.split_metric_name(name)
        except AttributeError as err:
            raise UsageError(f"bootstrap: {err}") from None
    source, items = (_loaded_items(args.load_items) if args.load_items
                     else (f"synthetic {args.docs} x {args.labels}", synthetic_items(args.docs, args.labels)))
    rows = []
    for name in names:
        clock = time.perf_counter()
        ours = metrics.bootstrap_stderr(name, items, args.iters)
        ours_s = time.perf_counter() - clock
        clock = time.perf_counter()
        stock = lm_eval_bootstrap(_Metric(name), items, args.iters)
        stock_s = time.perf_counter() - clock
        rows.append({"metric": name, "docs": len(items), "iters": args.iters, "lm_eval_s": round(stock_s, 3),
                     "genclf_s": round(ours_s, 3), "speedup": round(stock_s / max(ours_s, 1e-9), 1),
                     "lm_eval_stderr": round(float(stock), 6), "genclf_stderr": round(ours, 6),
                     "stderr_ratio": round(ours / float(stock), 3) if float(stock) else None})
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print(f"{source}, {args.iters} resamples; lm-eval's bootstrap_stderr vs genclf's\n")
    print("| metric | lm-eval s | genclf s | speedup | lm-eval stderr | genclf stderr | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['metric']} | {r['lm_eval_s']:.2f} | {r['genclf_s']:.2f} | {r['speedup']:.1f}x | "
              f"{r['lm_eval_stderr']:.5f} | {r['genclf_stderr']:.5f} | {r['stderr_ratio']} |")
    return 0
