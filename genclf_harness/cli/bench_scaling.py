"""``genclf-bench scaling``: one process vs two CPU ranks, and a served model vs the in-process engine.

    genclf-bench scaling --ranks-limit 1000 --served-limit 300 --output runs/bench_scaling.json

1. **Ranks**: ``genclf-eval --model genclf-hf`` on ``--task`` (``--ranks-limit`` documents,
   zero-shot, float32) as one process, then under ``torchrun --nproc_per_node 2`` with
   ``ACCELERATE_USE_CPU`` (gloo), each rank one thread (``OMP_NUM_THREADS=1``) and the single
   process ``--threads`` threads; wall time of each, the documents and tokens each rank scored
   (from its log line), and whether the results agree (largest label log-likelihood difference,
   metrics equal to 1e-6).
2. **Served**: a ``vllm serve`` of the same model on a loopback port (started here, stopped after),
   ``genclf-served`` against it and ``genclf-vllm`` in-process on ``--served-limit`` documents
   ``--fewshot``-shot: wall time (the server's start-up apart), HTTP calls the server logged, the
   share of documents with the same prediction and the largest log-likelihood difference.

Each run is a fresh ``genclf-eval`` process, one after the other, never two at once.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", default="genclf_agnews")
    parser.add_argument("--ranks-limit", type=int, default=1000, help="documents for 1 vs 2 ranks (0: skip)")
    parser.add_argument("--served-limit", type=int, default=300, help="documents for served vs in-process (0: skip)")
    parser.add_argument("--fewshot", type=int, default=5, help="shots for the served comparison")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the single process")
    parser.add_argument("--output", default=None, help="write the figures here as JSON")


def run(args: argparse.Namespace) -> int:
    from genclf_harness.backends.default_model import resolve_pretrained

    model_dir = str(resolve_pretrained("default"))
    figures: dict[str, Any] = {"task": args.task}
    with tempfile.TemporaryDirectory(prefix="genclf_scaling_") as scratch:
        work = Path(scratch)
        if args.ranks_limit:
            figures["ranks"] = _ranks(args, work / "ranks")
        if args.served_limit:
            figures["served"] = _served(args, work / "served", model_dir)
    print(_table(figures))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def _eval(arguments: list[str], out: Path, *, launch: list[str] | None = None, env: dict[str, str] | None = None
          ) -> tuple[float, str]:
    command = [*(launch or [sys.executable]), "-m", "genclf_harness.cli.eval", *arguments, "--log_samples",
               "--output_path", str(out)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return seconds, done.stderr


def _samples(out: Path, task: str) -> dict[Any, list[float]]:
    path = next(out.rglob(f"samples_{task}_*.jsonl"))
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    # the label log-likelihoods genclf logs per document (resps also hold the calibration anchors'
    # extra requests, scored once per rank)
    return {row["doc"].get("id", row["doc_id"]): [float(x) for x in row["genclf"]["label_loglikelihoods"]] for row in rows}


def _results(out: Path, task: str) -> dict[str, Any]:
    return json.loads(next(out.rglob("results_*.json")).read_text())["results"][task]


def _compare(a: Path, b: Path, task: str) -> dict[str, Any]:
    first, second = _samples(a, task), _samples(b, task)
    if sorted(first) != sorted(second):
        raise RuntimeError(f"the two runs scored different documents ({len(first)} vs {len(second)})")
    diff = max(abs(x - y) for doc in first for x, y in zip(first[doc], second[doc], strict=True))
    same = sum(max(range(len(v)), key=v.__getitem__) == max(range(len(second[d])), key=second[d].__getitem__)
               for d, v in first.items())
    ra, rb = _results(a, task), _results(b, task)
    metrics_equal = all(
        (math.isnan(v) and math.isnan(rb[k])) or abs(v - rb[k]) <= 1e-6
        for k, v in ra.items() if isinstance(v, float) and isinstance(rb.get(k), float) and "stderr" not in k
    )
    return {"documents": len(first), "max_abs_loglikelihood_diff": diff, "same_prediction": same / len(first),
            "metrics_equal_1e-6": metrics_equal, "acc": [ra.get("acc,none"), rb.get("acc,none")]}


def _ranks(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    common = ["--model", "genclf-hf", "--model_args", "pretrained=default,dtype=float32", "--tasks", args.task,
              "--limit", str(args.ranks_limit), "--batch_size", "16"]
    one_s, _ = _eval(common, work / "one", env={"OMP_NUM_THREADS": str(args.threads)})
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    two_s, stderr = _eval(common, work / "two", launch=launch, env={"ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"})
    per_rank = {int(r): {"documents": int(d), "requests": int(q), "tokens": int(t)} for r, d, q, t in re.findall(
        r"genclf-hf rank (\d+)/2 scored (\d+) documents \((\d+) loglikelihood requests, (\d+) tokens fed\)", stderr)}
    return {"one_process_seconds": round(one_s, 1), "two_ranks_seconds": round(two_s, 1),
            "speed_up": round(one_s / two_s, 2), "per_rank": per_rank,
            "agreement": _compare(work / "one", work / "two", args.task)}


def _served(args: argparse.Namespace, work: Path, model_dir: str) -> dict[str, Any]:
    from genclf_harness.backends.vllm_server import serve

    env = {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "OMP_NUM_THREADS": "2"}
    common = ["--tasks", args.task, "--limit", str(args.served_limit), "--num_fewshot", str(args.fewshot)]
    log = work / "server.log"
    with serve(model_dir, served_name="default", log=log, max_model_len=4096, env=env) as server:
        startup = server.startup_seconds
        calls_before = log.read_text().count("POST /v1/completions")
        served_s, _ = _eval(["--model", "genclf-served", "--model_args", f"base_url={server.url},model=default",
                             *common], work / "served")
        calls = log.read_text().count("POST /v1/completions") - calls_before
    vllm_env = {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "OMP_NUM_THREADS": "2",
                "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    local_s, _ = _eval(["--model", "genclf-vllm", "--model_args",
                        "pretrained=default,dtype=float32,enforce_eager=True,max_model_len=4096", *common],
                       work / "local", env=vllm_env)
    return {"server_startup_seconds": round(startup, 1), "served_seconds": round(served_s, 1),
            "in_process_seconds": round(local_s, 1), "served_over_in_process": round(served_s / local_s, 2),
            "http_calls": calls, "agreement": _compare(work / "served", work / "local", args.task)}


def _table(figures: dict[str, Any]) -> str:
    lines = []
    if "ranks" in figures:
        r = figures["ranks"]
        a = r["agreement"]
        lines += ["| run | documents | wall s | per rank (documents / tokens fed) |", "|---|---|---|---|",
                  f"| 1 process | {a['documents']} | {r['one_process_seconds']} | - |",
                  f"| 2 ranks (gloo) | {a['documents']} | {r['two_ranks_seconds']} | "
                  + "; ".join(f"rank {k}: {v['documents']} / {v['tokens']}" for k, v in sorted(r["per_rank"].items()))
                  + " |",
                  f"\nspeed-up {r['speed_up']}x; max |d log-likelihood| {a['max_abs_loglikelihood_diff']:.2e}; "
                  f"same prediction {a['same_prediction']:.3f}; metrics equal: {a['metrics_equal_1e-6']}\n"]
    if "served" in figures:
        s = figures["served"]
        a = s["agreement"]
        lines += ["| backend | documents | wall s | HTTP calls |", "|---|---|---|---|",
                  f"| genclf-served (vllm serve) | {a['documents']} | {s['served_seconds']} | {s['http_calls']} |",
                  f"| genclf-vllm (in-process) | {a['documents']} | {s['in_process_seconds']} | - |",
                  f"\nserved / in-process time {s['served_over_in_process']}x (server start-up "
                  f"{s['server_startup_seconds']} s apart); max |d log-likelihood| {a['max_abs_loglikelihood_diff']:.2e}; "
                  f"same prediction {a['same_prediction']:.3f}; acc {a['acc']}"]
    return "\n".join(lines)
