"""``genclf-bench clm``: Conformal Language Modeling over best-of-N candidate pools.

    genclf-bench bon --task last_letter --output-dir runs/bon_ll          # the pools (and a verifier)
    genclf-bench clm --candidates runs/bon_ll/test_candidates_scored.jsonl --epsilons 0.3,0.5

Each problem's N sampled candidates (in sampling order) become a set by the CLM procedure
(:mod:`genclf_harness.calibration.clm`): a candidate joins when its quality reaches
``lambda_qual`` and its extracted final answer is not already in the set, and sampling stops once
the set's best quality reaches ``lambda_stop``. The configuration is calibrated by Learn-Then-Test
with Pareto testing on a random half of the problems so that P(no correct answer in the set) <= eps
with probability >= 1 - delta, and measured on the other half: achieved loss, mean set size and
mean samples drawn, over ``--splits`` random calibration/test splits (the share of splits whose
held-out loss exceeds eps should stay near delta or below).

Quality: the verifier's P("Yes") where the file is scored (``--quality verifier``), or the
generator's own geometric-mean token probability of the sample (``--quality likelihood``, scored
here with ``genclf-hf``'s scorer: the prompt encoded once per problem). No configuration can reach
an eps below the share of problems with no correct sample at all (1 - pass@N): CLM then abstains,
which the table says.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--candidates", required=True, help="a candidates JSONL of genclf-bench bon (scored or not)")
    parser.add_argument("--quality", choices=("auto", "verifier", "likelihood"), default="auto",
                        help="candidate quality: the verifier's P(Yes) (scored files), the generator's likelihood, "
                             "or auto (verifier where scored)")
    parser.add_argument("--generator", default="default", help="for --quality likelihood: the generator's folder or id")
    parser.add_argument("--epsilons", default="0.3,0.5", help="comma-separated risk levels eps")
    parser.add_argument("--delta", type=float, default=0.05, help="LTT's failure probability delta")
    parser.add_argument("--set-score", choices=("max", "sum"), default="max")
    parser.add_argument("--splits", type=int, default=20, help="random calibration/test splits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="write the figures here as JSON")


def run(args: argparse.Namespace) -> int:
    from genclf_harness.calibration.clm import CLMProblems
    from genclf_harness.cli.errors import UsageError
    from genclf_harness.verifiers.genrm.bon import read_candidates

    epsilons = _epsilons(args.epsilons)
    if not 0.0 < args.delta < 1.0:
        raise UsageError(f"--delta {args.delta}: must lie in (0, 1)")
    if args.splits < 1:
        raise UsageError(f"--splits {args.splits}: must be 1 or more")
    path = Path(args.candidates)
    if not path.is_file():
        raise UsageError(f"--candidates {path}: no such file")
    sets = read_candidates(path)
    if len(sets) < 4:
        raise UsageError(f"--candidates {path}: {len(sets)} problems; CLM needs at least 4 (two to calibrate, two to test)")
    sizes = {len(s.candidates) for s in sets}
    if len(sizes) != 1:
        raise UsageError(f"--candidates {path}: problems have different numbers of candidates {sorted(sizes)}")
    quality_kind = args.quality
    if quality_kind == "auto":
        quality_kind = "verifier" if all(s.scored for s in sets) else "likelihood"
    if quality_kind == "verifier" and not all(s.scored for s in sets):
        raise UsageError(f"--candidates {path}: --quality verifier needs a scored file (test_candidates_scored.jsonl)")
    quality = (np.array([[c.score for c in s.candidates] for s in sets], dtype=np.float64) if quality_kind == "verifier"
               else _likelihoods(sets, args.generator))
    problems = CLMProblems(quality=quality,
                           correct=np.array([[c.correct for c in s.candidates] for s in sets], dtype=bool),
                           groups=_groups(sets))
    figures = {"candidates": str(path), "problems": problems.num_problems, "n": sizes.pop(), "quality": quality_kind,
               "delta": args.delta, "set_score": args.set_score, "splits": args.splits,
               "pass_at_n": float(problems.correct.any(axis=1).mean()),
               "rows": [_measure(problems, eps, args) for eps in epsilons]}
    print(_table(figures))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def _epsilons(text: str) -> list[float]:
    from genclf_harness.cli.errors import UsageError

    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--epsilons {text!r}: comma-separated numbers in (0, 1)") from None
    if not values or any(not 0.0 < v < 1.0 for v in values):
        raise UsageError(f"--epsilons {text!r}: comma-separated numbers in (0, 1)")
    return values


def _groups(sets: list[Any]) -> np.ndarray:
    """Candidates with the same extracted final answer share a group id; an unreadable answer is a
    group of its own (never a duplicate)."""
    groups = np.zeros((len(sets), len(sets[0].candidates)), dtype=np.int64)
    for i, candidate_set in enumerate(sets):
        seen: dict[str, int] = {}
        for k, candidate in enumerate(candidate_set.candidates):
            key = candidate.answer if candidate.answer is not None else f"\0unreadable {k}"
            groups[i, k] = seen.setdefault(key.strip().lower(), len(seen))
    return groups


def _likelihoods(sets: list[Any], generator: str) -> np.ndarray:
    """exp(mean token log-probability) of each candidate given its problem's sampling prompt."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from genclf_harness.backends.default_model import resolve_pretrained
    from genclf_harness.backends.protocol import LabelPrompt
    from genclf_harness.backends.scorer import HFScorer
    from genclf_harness.verifiers.genrm.problems import get_task

    folder = str(resolve_pretrained(generator))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    scorer = HFScorer(model, tokenizer)
    task = get_task(sets[0].task or "gsm8k")
    prompts = [LabelPrompt(task.prompt(tokenizer, s.question), tuple(c.text for c in s.candidates)) for s in sets]
    scored = scorer.score(prompts, show_progress=True)
    return np.array([[math.exp(c.mean_logprob) if c.num_tokens else 0.0 for c in p.continuations] for p in scored],
                    dtype=np.float64)


def _measure(problems: Any, epsilon: float, args: argparse.Namespace) -> dict[str, Any]:
    from genclf_harness.calibration.clm import calibrate_clm, clm_grid, evaluate_clm

    grid = clm_grid(problems, set_score=args.set_score)
    rng = np.random.default_rng(args.seed)
    reports, abstained, chosen = [], 0, []
    for split in range(args.splits):
        order = rng.permutation(problems.num_problems)
        half = problems.num_problems // 2
        calibration, test = problems.subset(order[:half]), problems.subset(order[half:])
        fitted = calibrate_clm(calibration, grid, epsilon=epsilon, delta=args.delta, set_score=args.set_score,
                               seed=args.seed + split)
        if fitted.chosen is None:
            abstained += 1
            continue
        chosen.append(fitted.chosen.to_dict())
        reports.append(evaluate_clm(test, fitted.chosen, set_score=args.set_score).to_dict())
    row: dict[str, Any] = {"epsilon": epsilon, "abstained_splits": abstained, "calibrated_splits": len(reports)}
    if reports:
        losses = np.array([r["loss"] for r in reports])
        row.update({"held_out_loss": float(losses.mean()), "loss_above_epsilon_share": float((losses > epsilon).mean()),
                    "mean_set_size": float(np.mean([r["mean_size"] for r in reports])),
                    "mean_samples": float(np.mean([r["mean_samples"] for r in reports])),
                    "first_config": chosen[0]})
    return row


def _table(figures: dict[str, Any]) -> str:
    lines = [f"CLM on {figures['problems']} problems x {figures['n']} candidates ({figures['quality']} quality, "
             f"set score {figures['set_score']}, delta {figures['delta']}, {figures['splits']} random half/half "
             f"splits); pass@N {figures['pass_at_n']:.3f}, so no eps below {1 - figures['pass_at_n']:.3f} can be met",
             "", "| eps | splits calibrated | held-out loss | share of splits with loss > eps | mean set size | "
             "mean samples drawn |", "|---|---|---|---|---|---|"]
    for row in figures["rows"]:
        if row["calibrated_splits"]:
            lines.append(f"| {row['epsilon']} | {row['calibrated_splits']}/{figures['splits']} | "
                         f"{row['held_out_loss']:.3f} | {row['loss_above_epsilon_share']:.2f} | "
                         f"{row['mean_set_size']:.2f} | {row['mean_samples']:.2f} |")
        else:
            lines.append(f"| {row['epsilon']} | 0/{figures['splits']} (abstains: no configuration certified) | - | - | "
                         "- | - |")
    return "\n".join(lines)
