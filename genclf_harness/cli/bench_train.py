"""``genclf-bench train``: zero-shot (raw, calibrated) -> SFT -> SFT+GRPO on one data set, one table.

One process, the same N test documents for every stage (the first ``--limit`` of the data set's
evaluation split, those ``lm_eval --limit N`` evaluates), the same prompt (the SFT config's
strategy and format):

1. zero-shot: the base model scores each label after the prompt (summed log-likelihood, lm-eval's
   ``acc``); calibrated by the unsupervised methods prior matching (``prior``), prior matching to
   an EM prior (``prior_em``) and batch calibration (``bc``), each fitted on the test documents'
   own scores (transductive, no labels); and greedy generation read by the answer parser;
2. SFT (``genclf-train sft`` with ``--sft-config``), then the test documents, scored (perplexity
   decoding: mean log-prob per label token) and generative (greedy, parsed; unparseable = wrong);
3. SFT+GRPO (``genclf-train grpo`` with ``--grpo-config``, starting from stage 2's adapter), same.

``--stages`` reruns a subset (``grpo`` alone starts from ``<output-dir>/sft``); the rows of the
stages not rerun are carried over from ``<output-dir>/bench_train.json`` when it holds them for
the same test documents (listed under ``carried_over``), so the table and its targets stay whole.

The baseline the SFT target compares to is the best calibrated zero-shot accuracy, picked on the
test documents themselves: an optimistic baseline, so the margin is a conservative one. The wall
time of each stage (training and test evaluation apart) and the machine's load are reported.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from genclf_harness.cli.errors import UsageError

CALIBRATIONS = ("prior", "prior_em", "bc")
SFT_MARGIN = 0.05
GRPO_MARGIN = 0.005
STAGE_NAMES = {"zero": "zero-shot", "sft": "SFT", "grpo": "SFT+GRPO"}


@dataclass(frozen=True)
class StageRow:
    """One row of the table."""

    stage: str
    """``zero-shot``, ``SFT`` or ``SFT+GRPO``."""
    decoding: str
    """``scored``, ``scored+<calibration>`` or ``generative``."""
    acc: float
    f1_macro: float | None
    unparseable: float | None
    train_seconds: float | None
    eval_seconds: float | None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="data set name (its configs are configs/{sft,grpo}_<name>_cpu.yaml)")
    parser.add_argument("--sft-config", default=None, help="SFT config (default: configs/sft_<dataset>_cpu.yaml)")
    parser.add_argument("--grpo-config", default=None, help="GRPO config (default: configs/grpo_<dataset>_cpu.yaml)")
    parser.add_argument("--set-sft", action="append", default=[], metavar="KEY=VALUE", help="override an SFT config field")
    parser.add_argument("--set-grpo", action="append", default=[], metavar="KEY=VALUE", help="override a GRPO config field")
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N test documents (default: all)")
    parser.add_argument("--output-dir", default=None, help="runs and results (default: runs/bench_train_<dataset>)")
    parser.add_argument("--stages", default="zero,sft,grpo",
                        help="comma-separated subset of zero,sft,grpo (grpo alone reuses <output-dir>/sft)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from genclf_harness.training.config import ConfigError, load_config
    from genclf_harness.training.grpo import GRPORecipeConfig
    from genclf_harness.training.records import setup_logging, versions, write_json
    from genclf_harness.training.sft import SFTRecipeConfig

    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in ("zero", "sft", "grpo")]
    if unknown or not stages:
        raise UsageError(f"train: unknown stage(s) {unknown}; choose from zero, sft, grpo")
    out = Path(args.output_dir or f"runs/bench_train_{args.dataset}")
    sft_path = args.sft_config or _default_config("sft", args.dataset)
    grpo_path = args.grpo_config or _default_config("grpo", args.dataset)
    # Every config problem surfaces now, before any model loads. GRPO's init_from is the SFT output.
    try:
        sft_config = load_config(SFTRecipeConfig, sft_path, [*args.set_sft, f"train.output_dir={out / 'sft'}"])
        grpo_overrides = [*args.set_grpo, f"train.output_dir={out / 'grpo'}",
                          # GRPO starts from this run's SFT output, which does not exist yet when SFT runs too
                          "model.init_from=null" if "sft" in stages else f"model.init_from={out / 'sft'}"]
        grpo_config = load_config(GRPORecipeConfig, grpo_path, grpo_overrides) if "grpo" in stages else None
    except ConfigError as err:
        raise UsageError(f"train: {err}") from None
    if sft_config.data.dataset != args.dataset:
        raise UsageError(f"train: {sft_path} trains on {sft_config.data.dataset!r}, not {args.dataset!r}")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    setup_logging(out)
    load_start = os.getloadavg()
    started = time.perf_counter()
    test = _test_prompts(sft_config, args.limit)
    rows: list[StageRow] = []
    details: dict[str, Any] = {}

    carried = _carry_over(out / "bench_train.json", stages, test)
    for stage_rows, stage_details in carried.values():
        rows += stage_rows
    details.update({stage: stage_details for stage, (_, stage_details) in carried.items()})

    if "zero" in stages:
        zero_rows, details["zero-shot"] = _zero_shot(sft_config, test)
        rows += zero_rows
        _progress(rows)
    if "sft" in stages:
        from genclf_harness.training.sft import train_classifier

        result, row_pair, details["SFT"] = _train_and_test("SFT", lambda: train_classifier(sft_config, sft_path), test)
        rows += row_pair
        del result
        gc.collect()
        _progress(rows)
    if grpo_config is not None:
        from genclf_harness.training.grpo import train_classifier as train_grpo

        grpo_config = replace(grpo_config, model=replace(grpo_config.model, init_from=str(out / "sft")))
        result, row_pair, details["SFT+GRPO"] = _train_and_test("SFT+GRPO", lambda: train_grpo(grpo_config, grpo_path),
                                                                test)
        rows += row_pair
        del result
        gc.collect()
    order = {stage: i for i, stage in enumerate(STAGE_NAMES.values())}
    rows.sort(key=lambda r: order[r.stage])  # stable: decodings keep their order within a stage

    header = {
        "dataset": args.dataset,
        "split": test["split"],
        "documents": len(test["prompts"]),
        "strategy": test["strategy"],
        "chat_template": test["chat"],
        "sft_config": sft_path,
        "grpo_config": grpo_path if grpo_config is not None else None,
        "seconds": round(time.perf_counter() - started, 1),
        "carried_over": sorted(carried),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "versions": versions(),
    }
    payload = {**header, "rows": [asdict(r) for r in rows], "targets": targets(rows), "details": details}
    write_json(out / "bench_train.json", payload)
    print(json.dumps(payload, indent=2) if args.json else format_table(header, rows))
    return 0


def _carry_over(path: Path, stages: Sequence[str], test: dict[str, Any]) -> dict[str, tuple[list[StageRow], Any]]:
    """The rows (and details) of the stages not rerun, from an earlier result on the same test documents."""
    if not path.is_file():
        return {}
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
        earlier_rows = [StageRow(**row) for row in earlier["rows"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        print(f"genclf-bench train: not carrying over stages from {path}: unreadable ({err})", file=sys.stderr)
        return {}
    keys = ("dataset", "split", "documents", "strategy", "chat_template")
    same_docs = tuple(earlier.get(k) for k in keys) == (
        test["dataset"], test["split"], len(test["prompts"]), test["strategy"], test["chat"])
    if not same_docs:
        print(f"genclf-bench train: not carrying over stages from {path}: other test documents", file=sys.stderr)
        return {}
    carried: dict[str, tuple[list[StageRow], Any]] = {}
    for key, name in STAGE_NAMES.items():
        stage_rows = [row for row in earlier_rows if row.stage == name]
        if key not in stages and stage_rows:
            carried[name] = (stage_rows, earlier.get("details", {}).get(name))
    return carried


def _default_config(recipe: str, dataset: str) -> str:
    from genclf_harness.resources import configs_dir

    return str(configs_dir() / f"{recipe}_{dataset}_cpu.yaml")


def _test_prompts(config: Any, limit: int | None) -> dict[str, Any]:
    """The test documents rendered with the SFT config's strategy and format."""
    from genclf_harness.data import get_spec, load_split
    from genclf_harness.prompts import PromptStrategy
    from genclf_harness.training.examples import uses_chat
    from genclf_harness.training.modeling import load_tokenizer

    spec = get_spec(config.data.dataset)
    strategy = PromptStrategy.parse(config.data.strategy)
    chat = uses_chat(config.data.chat_template, load_tokenizer(config.model))
    pool = load_split(spec.name, config.data.train_split) if strategy.needs_pool else None
    prompter = strategy.bind(spec, pool)
    docs = load_split(spec.name, spec.eval_split)[:limit]
    return {"dataset": spec.name, "split": spec.eval_split, "strategy": strategy.name, "chat": chat,
            "prompts": [prompter.render(d) for d in docs], "label_set": prompter.label_set}


def _zero_shot(config: Any, test: dict[str, Any]) -> tuple[list[StageRow], dict[str, Any]]:
    import numpy as np

    from genclf_harness import calibration
    from genclf_harness.training.evaluation import generate_answers, generative_figures, macro_f1, score_labels
    from genclf_harness.training.modeling import load_base_model, load_tokenizer

    model_config = replace(config.model, init_from=None)
    tokenizer = load_tokenizer(model_config)
    model = load_base_model(model_config).eval()
    prompts, label_set, chat = test["prompts"], test["label_set"], test["chat"]
    gold = np.array([p.gold for p in prompts], dtype=np.int64)
    num_classes = label_set.num_classes

    began = time.perf_counter()
    scores = score_labels(model, tokenizer, prompts, chat=chat, autocast_bf16=config.eval.autocast_bf16)["sum"]
    scored_seconds = time.perf_counter() - began
    real = scores[:, :num_classes]  # an uncertainty label is left out of calibration
    rows = [StageRow("zero-shot", "scored", float(np.mean(scores.argmax(1) == gold)),
                     macro_f1(scores.argmax(1), gold, num_classes), None, None, round(scored_seconds, 1))]
    fits: dict[str, Any] = {}
    for method in CALIBRATIONS:
        calibrated = calibration.fit(method, real).apply(real)
        predictions = np.asarray(calibrated).argmax(1)
        rows.append(StageRow("zero-shot", f"scored+{method}", float(calibration.accuracy(calibrated, gold)),
                             macro_f1(predictions, gold, num_classes), None, None, None))
        fits[method] = float(rows[-1].acc)

    began = time.perf_counter()
    answers = generate_answers(model, tokenizer, prompts, chat=chat, max_new_tokens=config.eval.max_new_tokens,
                               batch_size=config.eval.batch_size, autocast_bf16=config.eval.autocast_bf16)
    generative = generative_figures(answers, gold, label_set)
    rows.append(StageRow("zero-shot", "generative", generative["acc"], generative["f1_macro"],
                         generative["unparseable"], None, round(time.perf_counter() - began, 1)))
    del model
    gc.collect()
    return rows, {"calibrated_acc": fits, "generative": generative}


def _train_and_test(stage: str, train: Any, test: dict[str, Any]) -> tuple[Any, list[StageRow], dict[str, Any]]:
    from genclf_harness.training.evaluation import evaluate_classifier

    began = time.perf_counter()
    result = train()
    train_seconds = time.perf_counter() - began
    began = time.perf_counter()
    eval_config = _eval_config(result)
    figures = evaluate_classifier(result.model, result.tokenizer, test["prompts"], test["label_set"], chat=test["chat"],
                                  max_new_tokens=eval_config.get("max_new_tokens", 8),
                                  batch_size=eval_config.get("batch_size", 32),
                                  autocast_bf16=eval_config.get("autocast_bf16", False))
    scored, generative = figures["scored"], figures["generative"]
    rows = [
        StageRow(stage, "scored", scored["acc"], scored["f1_macro"], None, round(train_seconds, 1), scored["seconds"]),
        StageRow(stage, "generative", generative["acc"], generative["f1_macro"], generative["unparseable"],
                 None, generative["seconds"]),
    ]
    return result, rows, {"output_dir": str(result.output_dir), "validation": result.figures, "test": figures}


def _eval_config(result: Any) -> dict[str, Any]:
    try:
        record = json.loads((Path(result.output_dir) / "genclf_train.json").read_text())
        return record["config"]["eval"]
    except (OSError, KeyError, ValueError):
        return {}


def targets(rows: Sequence[StageRow]) -> dict[str, Any]:
    """The issue's targets: SFT >= best calibrated zero-shot + 5 points; SFT+GRPO >= SFT + 0.5 points."""
    def acc(stage: str, decoding: str) -> float | None:
        return next((r.acc for r in rows if r.stage == stage and r.decoding == decoding), None)

    calibrated = [r.acc for r in rows if r.stage == "zero-shot" and r.decoding.startswith("scored+")]
    best_zero = max(calibrated) if calibrated else None
    found: dict[str, Any] = {"best_calibrated_zero_shot": best_zero}
    for decoding in ("generative", "scored"):
        sft, grpo = acc("SFT", decoding), acc("SFT+GRPO", decoding)
        if sft is not None and best_zero is not None:
            found[f"sft_{decoding}_margin"] = round(sft - best_zero, 4)
            found[f"sft_{decoding}_met"] = sft >= best_zero + SFT_MARGIN - 1e-12
        if sft is not None and grpo is not None:
            found[f"grpo_{decoding}_margin"] = round(grpo - sft, 4)
            found[f"grpo_{decoding}_met"] = grpo >= sft + GRPO_MARGIN - 1e-12
    return found


def format_table(header: dict[str, Any], rows: Sequence[StageRow]) -> str:
    lines = [
        f"genclf-bench train: {header['dataset']} ({header['split']}, {header['documents']} documents), strategy "
        f"{header['strategy']}, {'chat template' if header['chat_template'] else 'plain-text prompt'}; "
        f"{header['seconds'] / 60:.1f} min, {header['torch_threads']} torch threads on {header['cpu_count']} CPUs, "
        f"load average {header['load_average_start'][0]:.1f} at start, {header['load_average_end'][0]:.1f} at end",
        "",
        "| stage | decoding | acc | macro-F1 | unparseable | train s | eval s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r.stage} | {r.decoding} | {_fmt(r.acc)} | {_fmt(r.f1_macro)} | {_fmt(r.unparseable)} | "
                     f"{_secs(r.train_seconds)} | {_secs(r.eval_seconds)} |")
    found = targets(rows)
    lines.append("")
    lines.append("scored: zero-shot by summed log-likelihood (+ calibration fitted on the test scores, no labels); "
                 "trained models by perplexity (mean log-prob per label token). generative: greedy, parsed; "
                 "unparseable answers count as wrong.")
    if found.get("best_calibrated_zero_shot") is not None:
        lines.append(f"best calibrated zero-shot (picked on the test documents): {found['best_calibrated_zero_shot']:.3f}")
    for decoding in ("generative", "scored"):
        if f"sft_{decoding}_margin" in found:
            lines.append(f"target SFT >= best calibrated zero-shot + {SFT_MARGIN * 100:.0f} points ({decoding}): "
                         f"{found[f'sft_{decoding}_margin'] * 100:+.1f} points, "
                         f"{'met' if found[f'sft_{decoding}_met'] else 'NOT met'}")
        if f"grpo_{decoding}_margin" in found:
            lines.append(f"target SFT+GRPO >= SFT + {GRPO_MARGIN * 100:.1f} points ({decoding}): "
                         f"{found[f'grpo_{decoding}_margin'] * 100:+.1f} points, "
                         f"{'met' if found[f'grpo_{decoding}_met'] else 'NOT met'}")
    return "\n".join(lines)


def _progress(rows: Sequence[StageRow]) -> None:
    last = rows[-1]
    print(f"[genclf-bench train] {last.stage} done: " + ", ".join(
        f"{r.decoding} {r.acc:.3f}" for r in rows if r.stage == last.stage), file=sys.stderr)


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    return "nan" if math.isnan(value) else f"{value:.3f}"


def _secs(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}"
