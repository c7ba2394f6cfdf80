"""``genclf-bench bon``: best-of-N with a generative verifier trained here, against first sample,
majority vote and pass@N, on held-out problems.

    genclf-bench bon --task last_letter --output-dir runs/bench_bon_last_letter

Stages (each one's output is kept in ``--output-dir``, and a rerun reuses what is there):

1. the generator (default: the embedded SmolLM2-135M-Instruct) samples N solutions for each
   held-out test problem (``test_candidates.jsonl``, resumable);
2. unless ``--verifier`` names one, a verifier is trained (``genclf-train genrm`` with
   ``--config``): the generator's samples on *training* problems (``train_candidates.jsonl``),
   labelled by the exact checker, plus synthetic reference/corruption pairs, balanced Yes/No,
   mixed with solution generation (λ); LoRA SFT of the same base model;
3. the verifier scores every test candidate (P("Yes"), ``test_candidates_scored.jsonl``) the way it
   was trained: directly, or after its own greedy rationale for a verifier trained on
   reference-guided rationales (``data.rationale: reference``, the default config); ``--cot K``
   overrides;
4. the selection rules on the first k = 1, 2, 4, ..., N candidates: first sample, majority vote,
   verifier best-of-N, weighted vote, pass@N; and the share of the first-sample-to-pass@N gap
   that best-of-N closes. ``results.json`` and a markdown table (``results.md``).

``--sample-only`` stops after stage 1 (a candidates file for the lm-eval task ``genclf_gsm8k_bon``).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TASK_CHOICES = ("last_letter", "word_sorting", "gsm8k")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", default="last_letter",
                        help=f"the reasoning task: {', '.join(TASK_CHOICES)} or a reasoning folder under the data root "
                             "(meta.json kind 'reasoning')")
    parser.add_argument("--n", type=int, default=8, help="candidates per problem (N)")
    parser.add_argument("--test-problems", type=int, default=200, help="held-out test problems")
    parser.add_argument("--train-problems", type=int, default=256,
                        help="training problems the generator samples N solutions for (verifier data; 0: none)")
    parser.add_argument("--generator", default="default", help="generator model folder or hub id (default: embedded)")
    parser.add_argument("--verifier", default=None,
                        help="an existing verifier folder (adapter or model): skip training")
    parser.add_argument("--config", default=None,
                        help="verifier training config (default: configs/genrm_<task>_cpu.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field of the training config (repeatable)")
    parser.add_argument("--temperature", type=float, default=0.7, help="sampling temperature")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the task's")
    parser.add_argument("--seed", type=int, default=0, help="sampling and problem seed")
    parser.add_argument("--batch-sequences", type=int, default=64, help="sequences per generation batch")
    parser.add_argument("--dtype", default="float32",
                        help="generator and verifier dtype (float32: on CPUs bfloat16 decoding was 6x slower)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's; use 1 on a machine busy with other jobs)")
    parser.add_argument("--cot", type=int, default=None, metavar="K",
                        help="score with K chain-of-thought rationales (0: directly; default: the way the verifier "
                             "was trained, i.e. one greedy rationale for a verifier trained with data.rationale)")
    parser.add_argument("--cot-temperature", type=float, default=None,
                        help="rationale sampling temperature with --cot (default: 0 = greedy for K=1, else 0.7)")
    parser.add_argument("--baseline-verifier", action="store_true",
                        help="also score with the untrained generator model as verifier (zero-shot GenRM)")
    parser.add_argument("--sample-only", action="store_true", help="stop after sampling the test candidates")
    parser.add_argument("--output-dir", default=None, help="default: runs/bench_bon_<task>")


def run(args: argparse.Namespace) -> int:
    from genclf_harness.training.records import setup_logging
    from genclf_harness.verifiers.genrm.problems import get_task

    try:
        get_task(args.task)  # an unknown task or a bad reasoning folder: before any folder is made
    except ValueError as err:
        print(f"genclf-bench bon: {err}", file=sys.stderr)
        return 2
    out = Path(args.output_dir or f"runs/bench_bon_{args.task}")
    out.mkdir(parents=True, exist_ok=True)
    setup_logging(out)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    try:
        results = _run(args, out, timings)
    except (ValueError, FileNotFoundError) as err:
        print(f"genclf-bench bon: {err}", file=sys.stderr)
        return 2
    if results is None:
        return 0
    results["seconds"] = {**timings, "total": round(time.perf_counter() - started, 1)}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown_table(results)
    (out / "results.md").write_text(table + "\n")
    print(table)
    print(f"\nresults: {out / 'results.json'}  ({results['seconds']['total'] / 60:.1f} min)")
    return 0


def _run(args: argparse.Namespace, out: Path, timings: dict[str, float]) -> dict[str, Any] | None:
    from genclf_harness.backends.generation import HFGenerator, SamplingSettings
    from genclf_harness.verifiers.genrm.bon import read_candidates, sample_candidates, write_candidates
    from genclf_harness.verifiers.genrm.problems import get_task

    task = get_task(args.task)
    if args.n < 1 or args.test_problems < 1:
        raise ValueError("--n and --test-problems must be at least 1")
    if args.verifier is not None and not Path(args.verifier).is_dir():  # found now, not after sampling
        raise ValueError(f"--verifier {args.verifier}: no such folder (a trained verifier, e.g. genclf-train genrm's "
                         "train.output_dir)")
    config_path = args.config or _default_config(args.task)
    settings = SamplingSettings(
        n=args.n, max_new_tokens=args.max_new_tokens or task.max_new_tokens, temperature=args.temperature,
        top_p=args.top_p, seed=args.seed, stop=task.stop,
    )
    test_problems = task.problems("test", args.test_problems, seed=args.seed)

    clock = time.perf_counter()
    generator = HFGenerator.from_pretrained(args.generator, dtype=args.dtype, max_batch_sequences=args.batch_sequences)
    test_sets = sample_candidates(generator, task, test_problems, out / "test_candidates.jsonl", settings,
                                  generator_name=args.generator)
    timings["sample_test"] = round(time.perf_counter() - clock, 1)
    if args.sample_only:
        print(f"{len(test_sets)} problems x {args.n} candidates in {out / 'test_candidates.jsonl'}")
        return None

    verifier_dir = args.verifier
    train_summary: dict[str, Any] = {}
    if verifier_dir is None:
        verifier_dir = str(out / "verifier")
        if (Path(verifier_dir) / "genclf_train.json").is_file():
            logger.info("Reusing the verifier trained before in %s", verifier_dir)
            train_summary = _train_record(Path(verifier_dir))
        else:
            clock = time.perf_counter()
            train_sets = []
            if args.train_problems:
                train_problems = task.problems("train", args.train_problems, seed=args.seed + 1)
                train_sets = sample_candidates(generator, task, train_problems, out / "train_candidates.jsonl",
                                               settings, generator_name=args.generator)
            timings["sample_train"] = round(time.perf_counter() - clock, 1)
            del generator
            gc.collect()
            clock = time.perf_counter()
            train_summary = _train_verifier(args, config_path, verifier_dir, train_sets)
            timings["train_verifier"] = round(time.perf_counter() - clock, 1)
    else:
        del generator
        gc.collect()

    results: dict[str, Any] = {
        "task": args.task,
        "n": args.n,
        "test_problems": len(test_sets),
        "generator": args.generator,
        "verifier": verifier_dir,
        "sampling": settings.to_dict(),
        "train": train_summary,
        "verifiers": {},
    }
    scored_path = out / "test_candidates_scored.jsonl"
    clock = time.perf_counter()
    scored, results["verification"] = _score(verifier_dir, read_candidates(out / "test_candidates.jsonl"), args)
    write_candidates(scored_path, scored)
    timings["score_test"] = round(time.perf_counter() - clock, 1)
    results["verifiers"]["trained"] = _selection_table(scored, args.n)
    if args.baseline_verifier:
        clock = time.perf_counter()
        baseline, _ = _score(args.generator, read_candidates(out / "test_candidates.jsonl"), args)
        write_candidates(out / "test_candidates_scored_baseline.jsonl", baseline)
        timings["score_test_baseline"] = round(time.perf_counter() - clock, 1)
        results["verifiers"]["untrained"] = _selection_table(baseline, args.n)
    results["command"] = "genclf-bench bon " + " ".join(sys.argv[2:] if len(sys.argv) > 2 else [])
    return results


def _default_config(task: str) -> str:
    from genclf_harness.resources import configs_dir

    path = configs_dir() / f"genrm_{task}_cpu.yaml"
    if not path.is_file() and task not in TASK_CHOICES:  # a reasoning folder: GSM8K's recipe
        path = configs_dir() / "genrm_gsm8k_cpu.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no default verifier config {path}; pass --config")
    return str(path)


def _train_verifier(args: argparse.Namespace, config_path: str, verifier_dir: str, train_sets: list) -> dict[str, Any]:
    from genclf_harness.training.config import load_config
    from genclf_harness.training.genrm import GenRMRecipeConfig, train_genrm

    overrides = [f"data.task={args.task}", f"train.output_dir={verifier_dir}", *args.set]
    config = load_config(GenRMRecipeConfig, config_path, overrides)
    result = train_genrm(config, extra_candidates=train_sets, config_path=config_path)
    del result.model
    gc.collect()
    return _train_record(Path(verifier_dir))


def _train_record(folder: Path) -> dict[str, Any]:
    record = json.loads((folder / "genclf_train.json").read_text())
    return {
        "examples": record.get("examples"),
        "example_counts": record.get("example_counts"),
        "train_seconds": record.get("train_seconds"),
        "held_out": record.get("figures"),
        "config_file": record.get("config_file"),
    }


def _score(verifier_source: str, sets: list, args: argparse.Namespace) -> tuple[list, str]:
    """Scored candidate sets and how they were scored ("direct" or "cot xK, temperature T")."""
    from genclf_harness.verifiers.genrm.bon import score_candidates
    from genclf_harness.verifiers.genrm.verifier import GenRM

    overrides: dict[str, Any] = {}
    if args.cot is not None:
        if args.cot < 0:
            raise ValueError(f"--cot must be >= 0, not {args.cot}")
        overrides["cot"] = args.cot
        overrides["cot_temperature"] = args.cot_temperature if args.cot_temperature is not None else (
            0.0 if args.cot == 1 else 0.7)
    elif args.cot_temperature is not None:
        overrides["cot_temperature"] = args.cot_temperature
    verifier = GenRM.from_pretrained(verifier_source, dtype=args.dtype, **overrides)
    how = f"cot x{verifier.cot}, temperature {verifier.cot_temperature:g}" if verifier.cot else "direct"
    logger.info("Scoring %d problems' candidates with %s (%s)", len(sets), verifier_source, how)
    scored = score_candidates(verifier, sets, verifier_name=verifier_source)
    del verifier
    gc.collect()
    return scored, how


def _selection_table(sets: list, n: int) -> dict[str, Any]:
    from genclf_harness.verifiers.genrm.bon import evaluate_selection, gap_closed
    from genclf_harness.verifiers.genrm.metrics import auroc

    ks = sorted({k for k in (1, 2, 4, 8, 16, 32, 64, n) if k <= n})
    by_k = {str(k): evaluate_selection(sets, n=k) for k in ks}
    full = by_k[str(n)]
    scores = [c.score for s in sets for c in s.candidates]
    labels = [c.correct for s in sets for c in s.candidates]
    return {
        "by_k": by_k,
        "gap_closed_best_of_n": gap_closed(full["first_sample"], full["best_of_n"], full["pass_at_n"]),
        "gap_closed_weighted_vote": gap_closed(full["first_sample"], full["weighted_vote"], full["pass_at_n"]),
        "gap_closed_majority": gap_closed(full["first_sample"], full["majority"], full["pass_at_n"]),
        "candidate_auroc": auroc(scores, labels),
        "candidate_correct_share": sum(labels) / len(labels),
        "unparseable_share": sum(c.answer is None for s in sets for c in s.candidates) / len(labels),
    }


def markdown_table(results: dict[str, Any]) -> str:
    names = {"first_sample": "first sample", "majority": "majority vote", "best_of_n": "verifier best-of-k",
             "weighted_vote": "verifier-weighted vote", "pass_at_n": "pass@k (ceiling)"}
    how = f", {results['verification']}" if results.get("verification") else ""
    lines = [f"Best-of-N on {results['test_problems']} held-out {results['task']} problems "
             f"(generator {results['generator']}, verifier {results['verifier']}{how})", ""]
    for label, table in results["verifiers"].items():
        ks = list(table["by_k"])
        lines.append(f"**{label} verifier**: candidate AUROC {table['candidate_auroc']:.3f}, "
                     f"{100 * table['candidate_correct_share']:.1f}% of candidates correct, "
                     f"gap closed by best-of-{results['n']}: {_percent(table['gap_closed_best_of_n'])}, "
                     f"by weighted vote: {_percent(table['gap_closed_weighted_vote'])}")
        lines.append("")
        lines.append("| selection | " + " | ".join(f"k={k}" for k in ks) + " |")
        lines.append("|---|" + "---|" * len(ks))
        for rule, name in names.items():
            if rule in table["by_k"][ks[-1]]:
                lines.append(f"| {name} | " + " | ".join(f"{100 * table['by_k'][k][rule]:.1f}" for k in ks) + " |")
        lines.append("")
    return "\n".join(lines).rstrip()


def _percent(value: float) -> str:
    return "n/a" if value != value else f"{100 * value:.0f}%"
