"""``genclf-bench strategies``: GenCLS++ prompt strategies x decoding on one data set, one table.

One process, one loaded model: each strategy task of the data set (``genclf_<name>[_<strategy>]``
scored, ``..._gen`` generative; see docs/strategies.md) runs through lm-eval's ``simple_evaluate``
in turn, and the table is computed from the logged samples:

- ``ppl-sum``: argmax of the label's summed log-likelihood (what the lm-eval tasks report);
- ``ppl-mean``: argmax of the mean log-likelihood per label token (same scores, no extra model
  call; token counts from the model's own context/continuation split);
- ``gen``: greedy generation read by the answer parser (with the model's chat template when it has
  one, unless ``--chat-template off``); unparseable answers count as wrong and are reported.

``acc_prior`` is the accuracy after prior matching (`genclf_harness.calibration`, fitted on the
evaluated documents' scores, no labels); for the uncertainty strategy it matches the priors of the
K real labels (``uncertain`` left out). Scored decoding uses plain text, as the default tasks do.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from genclf_harness.cli.errors import UsageError
from genclf_harness.prompts import SWEEP_STRATEGIES, PromptStrategy

DECODINGS = ("ppl", "gen")
DEFAULT_STRATEGIES = ",".join(SWEEP_STRATEGIES)
"""``--strategies`` when not given: every swept strategy the data set can run (others are left out)."""


@dataclass(frozen=True)
class StrategyResult:
    """One row of the table."""

    strategy: str
    decoding: str
    """``ppl-sum``, ``ppl-mean`` or ``gen``."""
    task: str
    documents: int
    acc: float
    f1_macro: float
    acc_prior: float | None
    """None for generative decoding, or when the calibration package is missing."""
    coverage: float | None
    """Share answered with a real label (uncertainty strategies only)."""
    unparseable: float | None
    """Share of unreadable answers (generative decoding only)."""
    seconds: float | None
    """Wall time of the task's lm-eval run (None for ppl-mean: the same run as ppl-sum)."""
    unparseable_examples: tuple[str, ...] = ()
    """Up to three unreadable generated answers, as generated (generative decoding only)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="data set name (genclf_harness.data.list_specs())")
    parser.add_argument("--limit", type=int, default=100,
                        help="evaluate the first N documents of the evaluation split (default 100)")
    parser.add_argument("--model", default=None,
                        help="lm-eval model name (default: genclf-hf, else hf); genclf-vllm when installed")
    parser.add_argument("--model_args", default="pretrained=default",
                        help="lm-eval model arguments; pretrained=default is the embedded default model")
    parser.add_argument("--strategies", default=DEFAULT_STRATEGIES,
                        help=f"comma-separated strategy names with tasks (default: {','.join(SWEEP_STRATEGIES)})")
    parser.add_argument("--decoding", default="ppl,gen", help="comma-separated: ppl, gen (default both)")
    parser.add_argument("--chat-template", choices=("auto", "on", "off"), default="auto",
                        help="generative decoding with the model's chat template (auto: when it has one)")
    parser.add_argument("--batch_size", default="16", help="lm-eval batch size (default 16)")
    parser.add_argument("--device", default=None, help="lm-eval device (default: the model's default)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    parser.add_argument("--output", default=None,
                        help="also write the JSON to this file (rewritten after every task)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the tasks already in --output (same settings) and run the rest")


def run(args: argparse.Namespace) -> int:
    from genclf_harness.data import get_spec
    from genclf_harness.harness.tasks import strategy_task_name

    spec = get_spec(args.dataset)
    strategies = [PromptStrategy.parse(s).name for s in _split(args.strategies)]
    decodings = _split(args.decoding)
    bad = [d for d in decodings if d not in DECODINGS]
    if bad:
        raise UsageError(f"strategies: unknown decoding {bad}; known: {', '.join(DECODINGS)}")
    plan = []
    for d in decodings:
        for s in strategies:
            try:  # before the model loads: a strategy this data set cannot run is known now
                PromptStrategy.parse(s).check(spec, generative=d == "gen")
            except ValueError as err:
                if args.strategies != DEFAULT_STRATEGIES:
                    raise UsageError(f"strategies: {err}") from None
                print(f"genclf-bench strategies: leaving out {s} ({d}): {err}", file=sys.stderr)
                continue
            plan.append((s, d, strategy_task_name(spec.name, s, d)))

    if os.environ.get("HF_HUB_OFFLINE") == "1":
        # lm-eval looks every template metric name up in HF evaluate first; offline, skip the waits.
        os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
    lm, model_name, model_args = _load_model(args)
    task_manager = _task_manager(model_args, [task for _, _, task in plan])
    tokenizer = getattr(lm, "tokenizer", None)
    has_template = bool(getattr(tokenizer, "chat_template", None))
    chat = args.chat_template == "on" or (args.chat_template == "auto" and has_template)

    header = {
        "dataset": spec.name,
        "split": spec.eval_split,
        "limit": args.limit,
        "model": model_name,
        "model_args": model_args,
        "generation_chat_template": chat,
        "prior_matching": _calibration() is not None,
    }
    rows = _resumed_rows(args.output, header) if args.resume else []
    done = {row.task for row in rows}
    for number, (strategy, decoding, task) in enumerate(plan, start=1):
        if task in done:
            print(f"[{number}/{len(plan)}] {task}: kept from {args.output}", file=sys.stderr)
            continue
        started = time.perf_counter()
        samples = _evaluate(lm, task_manager, task, args.limit, chat and decoding == "gen")
        seconds = time.perf_counter() - started
        print(f"[{number}/{len(plan)}] {task}: {len(samples)} documents, {seconds:.1f} s", file=sys.stderr)
        if decoding == "gen":
            rows.append(_generative_row(strategy, task, samples, seconds))
        else:
            rows += _scored_rows(strategy, task, samples, seconds, lm)
        if args.output:
            _write(args.output, header, rows, complete=False)

    wanted = {task for _, _, task in plan}
    rows = [row for row in rows if row.task in wanted]
    if args.output:
        _write(args.output, header, rows, complete=True)
    payload = {**header, "complete": True, "rows": [asdict(r) for r in rows]}
    print(json.dumps(payload, indent=2) if args.json else format_table(header, rows))
    return 0


def _write(path: str, header: dict[str, Any], rows: Sequence[StrategyResult], complete: bool) -> None:
    """Write the JSON after every task (atomically), so an interrupted sweep can be resumed."""
    payload = {**header, "complete": complete, "rows": [asdict(r) for r in rows]}
    partial = f"{path}.partial"
    with open(partial, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2)
    os.replace(partial, path)


def _resumed_rows(path: str | None, header: dict[str, Any]) -> list[StrategyResult]:
    """The rows of an earlier run written to ``path`` with the same settings (none otherwise)."""
    if not path or not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as handle:
        earlier = json.load(handle)
    differing = [key for key, value in header.items() if earlier.get(key) != value]
    if differing:
        raise UsageError(f"strategies: cannot resume from {path}: its {', '.join(differing)} differ")
    return [StrategyResult(**{**row, "unparseable_examples": tuple(row.get("unparseable_examples", ()))})
            for row in earlier["rows"]]


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _load_model(args: argparse.Namespace) -> tuple[Any, str, str]:
    from lm_eval.api.registry import get_model

    from genclf_harness.backends.default_model import resolve_model_args
    from genclf_harness.harness.registry import register

    register()
    name = args.model or _default_model_name()
    model_args = resolve_model_args(args.model_args)
    extra: dict[str, Any] = {"batch_size": args.batch_size, "device": args.device or _default_device()}
    return get_model(name).create_from_arg_string(model_args, extra), name, model_args


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _default_model_name() -> str:
    try:
        import genclf_harness.harness.hf_model  # noqa: F401
    except ImportError:
        return "hf"
    return "genclf-hf"


def _task_manager(model_args: str, tasks: list[str]) -> Any:
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import simple_parse_args_string

    from genclf_harness.harness.local_tasks import local_include_path
    from genclf_harness.resources import tasks_dir

    include = [str(tasks_dir()), *local_include_path(tasks)]  # a local data set's tasks, as genclf-eval
    return TaskManager(include_path=include, include_defaults=False,
                       metadata=simple_parse_args_string(model_args))


def _evaluate(lm: Any, task_manager: Any, task: str, limit: int | None, chat: bool) -> list[dict[str, Any]]:
    from lm_eval.evaluator import simple_evaluate

    results = simple_evaluate(
        model=lm, tasks=[task], limit=limit, log_samples=True, task_manager=task_manager,
        apply_chat_template=chat, fewshot_as_multiturn=False, bootstrap_iters=0, verbosity="ERROR",
    )
    if results is None:  # a non-zero rank of a distributed run
        return []
    return sorted(results["samples"][task], key=lambda s: s["doc_id"])


def _calibration() -> Any:
    try:
        from genclf_harness import calibration
    except ImportError:
        return None
    return calibration


def _scored_rows(strategy: str, task: str, samples: Sequence[dict[str, Any]], seconds: float, lm: Any) -> list[StrategyResult]:
    from genclf_harness.harness.strategy_metrics import Prediction, f1_macro

    uncertain = PromptStrategy.parse(strategy).uncertainty
    gold = np.array([int(s["doc"]["gold"]) for s in samples], dtype=np.int64)
    sums = np.array([[float(r[0]) for r in s["filtered_resps"][: len(s["doc"]["choices"])]] for s in samples])
    token_counts = _token_counts(lm, samples)
    rows = []
    for decoding, scores in (("ppl-sum", sums), ("ppl-mean", None if token_counts is None else sums / token_counts)):
        if scores is None:
            continue
        predictions = [
            Prediction(s["doc"].get("id"), int(g), int(p), len(s["doc"]["choices"]) - int(uncertain), "scored")
            for s, g, p in zip(samples, gold, scores.argmax(axis=1), strict=True)
        ]
        real = scores[:, :-1] if uncertain else scores
        rows.append(StrategyResult(
            strategy=strategy, decoding=decoding, task=task, documents=len(samples),
            acc=float(np.mean([p.correct for p in predictions])),
            f1_macro=f1_macro(predictions),
            acc_prior=_prior_matched_accuracy(real, gold),
            coverage=float(np.mean([p.covered for p in predictions])) if uncertain else None,
            unparseable=None,
            seconds=seconds if decoding == "ppl-sum" else None,
        ))
    return rows


def _token_counts(lm: Any, samples: Sequence[dict[str, Any]]) -> np.ndarray | None:
    """(N, choices) continuation lengths in tokens, split from the context as the model does."""
    encode_pair = getattr(lm, "_encode_pair", None)
    if encode_pair is None:
        return None
    counts = [
        [max(1, len(encode_pair(context, continuation)[1]))
         for context, continuation in s["arguments"][: len(s["doc"]["choices"])]]
        for s in samples
    ]
    return np.array(counts, dtype=np.float64)


def _prior_matched_accuracy(scores: np.ndarray, gold: np.ndarray) -> float | None:
    calibration = _calibration()
    if calibration is None or len(scores) == 0:
        return None
    calibrated = calibration.fit("prior", scores).apply(scores)
    return float(calibration.accuracy(calibrated, gold))


def _generative_row(strategy: str, task: str, samples: Sequence[dict[str, Any]], seconds: float) -> StrategyResult:
    from genclf_harness.harness.strategy_metrics import f1_macro, parse_prediction

    answers = [str(s["filtered_resps"][0]) for s in samples]
    predictions = [parse_prediction(s["doc"], answer) for s, answer in zip(samples, answers, strict=True)]
    return StrategyResult(
        strategy=strategy, decoding="gen", task=task, documents=len(samples),
        acc=float(np.mean([p.correct for p in predictions])),
        f1_macro=f1_macro(predictions),
        acc_prior=None,
        coverage=float(np.mean([p.covered for p in predictions])) if PromptStrategy.parse(strategy).uncertainty else None,
        unparseable=float(np.mean([p.pred is None for p in predictions])),
        seconds=seconds,
        unparseable_examples=tuple(a for a, p in zip(answers, predictions, strict=True) if p.pred is None)[:3],
    )


def format_table(header: dict[str, Any], rows: Sequence[StrategyResult]) -> str:
    """A Markdown table, strategies in the order asked, decodings side by side."""
    lines = [
        f"genclf-bench strategies: {header['dataset']} ({header['split']}, first {header['limit']} documents), "
        f"model {header['model']} ({header['model_args']}); generation "
        f"{'with' if header['generation_chat_template'] else 'without'} the chat template",
    ]
    if not header["prior_matching"]:
        lines.append("(acc_prior left out: genclf_harness.calibration is not importable)")
    columns = ["strategy", "decoding", "acc", "macro-F1"]
    columns += ["acc_prior"] if header["prior_matching"] else []
    columns += ["coverage", "unparseable", "seconds"]
    lines += ["", "| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    order = {name: i for i, name in enumerate(dict.fromkeys(r.strategy for r in rows))}
    for row in sorted(rows, key=lambda r: (order[r.strategy], ("ppl-sum", "ppl-mean", "gen").index(r.decoding))):
        cells = [row.strategy, row.decoding, _fmt(row.acc), _fmt(row.f1_macro)]
        cells += [_fmt(row.acc_prior)] if header["prior_matching"] else []
        cells += [_fmt(row.coverage), _fmt(row.unparseable),
                  "" if row.seconds is None else f"{row.seconds:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    return "nan" if math.isnan(value) else f"{value:.3f}"
