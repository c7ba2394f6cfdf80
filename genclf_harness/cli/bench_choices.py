"""``genclf-bench choices``: an arbitrary lm-eval multiple-choice task, calibrated and CircularEval'd.

The tasks are lm-eval's own MMLU template (``include:``d from the installed lm-eval, unchanged)
over lettered versions of real data sets from the data root: AG News (its 4 topics) and TREC (the
gold type and 3 of the 5 others), the options shuffled per document with a fixed seed, the
few-shot ``dev`` split drawn from the training split. For each few-shot setting one
``genclf-eval --calibrate --circular`` run (genclf-hf, float32) gives raw and calibrated accuracy,
the share of the most-chosen letter before and after calibration, and CircularEval accuracy; then
stock ``hf`` and ``genclf-hf`` score the same requests with the compute bound, as
``genclf-bench scoring`` does (``--no-speed`` skips it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

from genclf_harness.cli.errors import UsageError

TASKS = {"agnews": "lettered_agnews", "trec": "lettered_trec"}
OPTIONS = 4
COLUMNS = ("acc", "acc_prior", "acc_bc", "acc_auto", "majority_share", "majority_share_auto", "acc_circular",
           "order_changes")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--datasets", default="agnews,trec", help="comma-separated: agnews, trec")
    parser.add_argument("--limit", type=int, default=300, help="test documents per task (default 300)")
    parser.add_argument("--num_fewshot", default="0,5", help="comma-separated few-shot counts (default 0,5)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--no-speed", action="store_true", help="skip the stock hf vs genclf-hf timing")
    parser.add_argument("--json", action="store_true", help="one JSON object per task and setting")


def write_tasks(folder: Path, datasets: list[str], seed: int = 0) -> list[str]:
    """The lettered task YAMLs and their JSONL files in ``folder``; returns the task names."""
    import lm_eval

    from genclf_harness.data import get_spec, load_split

    template = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "default" / "_default_template_yaml"
    rng = random.Random(seed)
    names = []
    for dataset in datasets:
        spec = get_spec(dataset)
        labels = list(spec.label_words)
        for split, source in (("test", spec.eval_split), ("dev", spec.train_split)):
            rows = []
            for row in load_split(dataset, source):
                gold = labels[row["label"]]
                options = [gold, *rng.sample([w for w in labels if w != gold], OPTIONS - 1)]
                rng.shuffle(options)
                rows.append({"question": row[spec.input_fields[0]], "choices": options, "answer": options.index(gold)})
            (folder / f"{dataset}_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        task = TASKS[dataset]
        (folder / f"{task}.yaml").write_text(
            f"include: {template}\ntask: {task}\ndataset_path: json\ndataset_name: null\n"
            f"dataset_kwargs:\n  data_files:\n    test: {folder / f'{dataset}_test.jsonl'}\n"
            f"    dev: {folder / f'{dataset}_dev.jsonl'}\n"
            f"description: \"The following are multiple choice questions ({spec.task}) with answers.\\n\\n\"\n",
            encoding="utf-8")
        names.append(task)
    return names


def accuracy_rows(folder: Path, tasks: list[str], shots: int, limit: int, batch_size: int) -> list[dict[str, Any]]:
    from genclf_harness.cli.eval import run as eval_run

    out = folder / f"results_{shots}shot"
    with contextlib.redirect_stdout(sys.stderr):  # lm-eval's own table: this command prints its own
        eval_run(["--model", "genclf-hf", "--model_args", "pretrained=default,dtype=float32", "--tasks", ",".join(tasks),
                  "--include_path", str(folder), "--limit", str(limit), "--num_fewshot", str(shots),
                  "--batch_size", str(batch_size), "--output_path", str(out), "--calibrate", "--circular"])
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"]
    return [{"task": task, "num_fewshot": shots, "docs": results[task].get("sample_len"),
             **{c: results[task].get(f"{c},none") for c in COLUMNS}} for task in tasks]


def speed_rows(folder: Path, tasks: list[str], shots: list[int], limit: int, batch_size: int) -> list[dict[str, Any]]:
    import torch
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from genclf_harness.backends.default_model import ensure_default_model
    from genclf_harness.backends.scorer import DEFAULT_MAX_BATCH_TOKENS
    from genclf_harness.cli.bench_scoring import _warm_up, build_requests, measure
    from genclf_harness.harness.hf_model import GenclfHFLM

    path = str(ensure_default_model())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    stock = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    genclf = GenclfHFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    loaded = TaskManager(include_path=str(folder)).load(tasks)["tasks"]
    rows, turn = [], 0
    for count in shots:
        for task in tasks:
            requests = build_requests(task, loaded[task], count, limit, False, tokenizer)
            if turn == 0:
                _warm_up(stock, genclf, requests)
            row = measure(requests, stock, genclf, model, turn, batch_size, DEFAULT_MAX_BATCH_TOKENS)
            rows.append({"task": task, "num_fewshot": count, **{k: row[k] for k in (
                "stock_docs_per_s", "genclf_docs_per_s", "speedup", "genclf_over_bound", "max_abs_dll")}})
            turn += 1
    return rows


def run(args: argparse.Namespace) -> int:
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = [d for d in datasets if d not in TASKS]
    if unknown or not datasets:
        raise UsageError(f"choices: unknown data set(s) {unknown}; choose from {', '.join(TASKS)}")
    try:
        shots = [int(s) for s in args.num_fewshot.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"choices: --num_fewshot {args.num_fewshot!r}: whole numbers separated by commas") from None
    if args.limit < 2 or any(s < 0 for s in shots):
        raise UsageError("choices: --limit must be at least 2 and --num_fewshot 0 or more")
    with tempfile.TemporaryDirectory(prefix="genclf-bench-choices-") as tmp:
        folder = Path(tmp)
        tasks = write_tasks(folder, datasets)
        rows = [row for count in shots for row in accuracy_rows(folder, tasks, count, args.limit, args.batch_size)]
        if not args.no_speed:
            speeds = {(r["task"], r["num_fewshot"]): r for r in speed_rows(folder, tasks, shots, args.limit,
                                                                           args.batch_size)}
            for row in rows:
                row.update({k: v for k, v in speeds[(row["task"], row["num_fewshot"])].items()
                            if k not in ("task", "num_fewshot")})
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    extra = [] if args.no_speed else ["speedup", "genclf_over_bound"]
    header = ["task", "shots", *COLUMNS, *extra]
    print("| " + " | ".join(header) + " |\n" + "|---" * len(header) + "|")
    for row in rows:
        cells = [row["task"], str(row["num_fewshot"]), *(f"{row[c]:.3f}" if isinstance(row.get(c), float) else "-"
                                                        for c in (*COLUMNS, *extra))]
        print("| " + " | ".join(cells) + " |")
    sys.stdout.flush()
    return 0
