"""``genclf-bench scoring``: stock lm-eval ``hf`` vs ``genclf-hf`` label scoring, side by side.

One model is loaded once and shared by both wrappers (lm-eval's ``HFLM`` and ``GenclfHFLM``, each
given the model object and its tokenizer). Each task's ``loglikelihood`` requests are built once
by lm-eval's task API per few-shot setting; both wrappers score exactly those requests, in turns
(the order alternates from one task/setting to the next), after an untimed warm-up on a few
documents. Only the log-likelihood phase is timed: from handing over the requests to getting
the scores back; loading and task building are not.

Per task and setting it reports:

- docs/s of each and the speedup (stock time / genclf time);
- tokens forwarded over the minimum, for each: the minimum is every distinct context once plus
  every label once, in tokens as lm-eval splits them. Stock's count is what ``HFLM`` puts into
  its batches (before padding); genclf's comes from the scorer's statistics. Padded counts are
  reported too (``*_padded_tokens``);
- the compute bound: plain forward passes of the model over the minimum-token sequences (each
  document's context followed by all its labels), batched like genclf (``--batch_size`` rows,
  within ``--max_batch_tokens``), longest first, the LM head on the last position only. The
  bound is that time; ``*_over_bound`` = phase time / bound (1.0 = as fast as the raw forward
  passes over the minimum tokens);
- exactness: the largest |difference| of the request log-likelihoods, and the share of
  documents whose predicted label is the same (argmax of the summed log-likelihood over the
  document's own labels; ``agreement_norm`` also for lm-eval's ``acc_norm``, divided by the
  label's length in characters);
- peak memory: ``torch.cuda.max_memory_allocated`` per phase on a GPU; on CPU the process's peak
  resident set size (``ru_maxrss``) after the phase, a high-water mark that never goes down.

``--json`` prints one JSON object per task and setting (one a line) with the keys
task, num_fewshot, docs, requests, stock_docs_per_s, genclf_docs_per_s, speedup,
stock_tokens_over_min, genclf_tokens_over_min, stock_over_bound, genclf_over_bound,
max_abs_dll, agreement, agreement_norm, peak_mem_mb, and more detail (times, token counts,
bound throughput, settings). ``--output FILE`` writes the same lines to FILE.

``--random-init-llama SIZE`` replaces the model with a randomly initialised Llama built from a
config (no hub access; the default model's tokenizer): see ``scripts/gpu_scoring_check.py``.
``--backend vllm`` hands over to ``genclf-bench scoring-vllm``.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import json
import math
import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genclf_harness.cli.errors import UsageError

JSON_KEYS = (
    "task", "num_fewshot", "docs", "stock_docs_per_s", "genclf_docs_per_s", "speedup",
    "stock_tokens_over_min", "genclf_tokens_over_min", "stock_over_bound", "genclf_over_bound",
    "max_abs_dll", "agreement", "peak_mem_mb",
)

# name -> LlamaConfig fields; the parameter counts hold with the default model's 49,152-token
# vocabulary and untied embeddings (printed at start-up, and in every JSON line).
RANDOM_LLAMA_SIZES: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2},
    # Llama-3.2-1B's shape: 1.17 B parameters.
    "1.2b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
             "num_attention_heads": 32, "num_key_value_heads": 8},
    # Mistral-7B's shape: 7.38 B parameters.
    "7.4b": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 8},
}


class BenchError(UsageError):
    """A bad argument or task: one line ``genclf-bench: scoring: ...`` and exit status 2."""

    def __init__(self, message: str) -> None:
        super().__init__(f"scoring: {message}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (parser.description or "") + (
        ". --json prints one object per task and setting with the keys " + ", ".join(JSON_KEYS)
        + " (and more detail)."
    )
    parser.add_argument("--tasks", default="genclf_agnews,genclf_sst5,genclf_sst2",
                        help="comma-separated genclf classification tasks")
    parser.add_argument("--num_fewshot", default="0,5", help="comma-separated few-shot counts (default 0,5)")
    parser.add_argument("--limit", type=int, default=300, help="documents per task (default 300)")
    parser.add_argument("--dtype", default="bfloat16", help="model dtype (default bfloat16)")
    parser.add_argument("--batch_size", type=int, default=32,
                        help="stock: requests per forward pass; genclf and the bound: rows per pass (default 32)")
    parser.add_argument("--max_batch_tokens", type=int, default=None,
                        help="genclf's and the bound's rows x padded length per pass (default: genclf-hf's, 8192)")
    parser.add_argument("--pretrained", default="default",
                        help="model folder or hub id (default: the default model); with --random-init-llama, "
                             "where the tokenizer comes from")
    parser.add_argument("--random-init-llama", dest="random_init_llama", default=None,
                        choices=sorted(RANDOM_LLAMA_SIZES),
                        help="use a randomly initialised Llama of this size instead of --pretrained")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--softmax_dtype", default=None,
                        help="log-softmax dtype for both (default: each its own: stock the model dtype, genclf float32)")
    parser.add_argument("--apply_chat_template", action="store_true")
    parser.add_argument("--metadata", default=BENCH_METADATA,
                        help="task metadata as JSON, as lm_eval --metadata (default %(default)s: no training "
                             "documents for the inductive calibration metrics, which are not what is measured; "
                             "'{}' keeps the task's own 100)")
    parser.add_argument("--backend", choices=("hf", "vllm"), default="hf",
                        help="hf (this benchmark) or vllm (runs genclf-bench scoring-vllm per few-shot setting)")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per task and setting, keys: " + ", ".join(JSON_KEYS))
    parser.add_argument("--output", default=None, help="also write the JSON lines to this file")


# -- inputs -------------------------------------------------------------------------------------


def _split(text: str, what: str) -> list[str]:
    items = [item.strip() for item in str(text).split(",") if item.strip()]
    if not items:
        raise BenchError(f"{what} is empty")
    return items


def _fewshots(text: str) -> list[int]:
    values = []
    for item in _split(text, "--num_fewshot"):
        try:
            value = int(item)
        except ValueError:
            raise BenchError(f"--num_fewshot: {item!r} is not an integer") from None
        if value < 0:
            raise BenchError(f"--num_fewshot must not be negative, got {value}")
        values.append(value)
    return values


def _check_args(args: argparse.Namespace) -> tuple[list[str], list[int]]:
    tasks = _split(args.tasks, "--tasks")
    fewshots = _fewshots(args.num_fewshot)
    if args.limit is None or args.limit < 1:
        raise BenchError(f"--limit must be at least 1, got {args.limit}")
    if args.batch_size < 1:
        raise BenchError(f"--batch_size must be at least 1, got {args.batch_size}")
    if args.max_batch_tokens is not None and args.max_batch_tokens < 1:
        raise BenchError(f"--max_batch_tokens must be at least 1, got {args.max_batch_tokens}")
    return tasks, fewshots


def _progress(message: str) -> None:
    print(f"[scoring] {message}", file=sys.stderr, flush=True)


@dataclass
class TaskRequests:
    """One task at one few-shot setting: its loglikelihood requests and label counts per document."""

    task: str
    num_fewshot: int
    instances: list[Any]
    choices: dict[int, int]


BENCH_METADATA = '{"inductive_docs": 0}'
"""Scoring benchmarks time the evaluated documents: the ``*_ind`` calibration contexts are left out."""


def load_tasks(names: list[str], metadata: str | None = None) -> dict[str, Any]:
    """name -> lm-eval Task, with clear errors for unknown names and groups."""
    from lm_eval.api.task import Task
    from lm_eval.tasks import TaskManager

    from genclf_harness.harness.local_tasks import local_include_path
    from genclf_harness.harness.registry import register
    from genclf_harness.resources import tasks_dir

    try:
        parsed = json.loads(metadata) if metadata else None
    except json.JSONDecodeError as error:
        raise BenchError(f"--metadata is not valid JSON ({error}): {metadata!r}") from None
    if parsed is not None and not isinstance(parsed, dict):
        raise BenchError(f"--metadata must be a JSON object, got {metadata!r}")
    register()
    manager = TaskManager(include_path=[str(tasks_dir()), *local_include_path(names)], metadata=parsed)
    known = set(manager.all_tasks)
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(t for t in known if t.startswith("genclf_")) or known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise BenchError(f"unknown task {name!r}{hint}")
    loaded = manager.load(names)["tasks"]
    tasks = {}
    for name in names:
        task = loaded.get(name)
        if not isinstance(task, Task):
            raise BenchError(f"{name!r} is a group, not a task; name its tasks in --tasks")
        if task.OUTPUT_TYPE not in ("multiple_choice", "loglikelihood"):
            raise BenchError(f"task {name!r} is not a classification task: its output_type is "
                             f"{task.OUTPUT_TYPE!r}, which makes no loglikelihood requests")
        tasks[name] = task
    return tasks


def build_requests(task_name: str, task: Any, num_fewshot: int, limit: int,
                   apply_chat_template: bool, tokenizer: Any) -> TaskRequests:
    task.set_config("num_fewshot", num_fewshot)
    task.set_fewshot_seed(1234)
    chat_template = None
    if apply_chat_template:
        def chat_template(history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
            return tokenizer.apply_chat_template(history, tokenize=False, add_generation_prompt=add_generation_prompt)
    task.build_all_requests(limit=limit, rank=0, world_size=1, apply_chat_template=apply_chat_template,
                            chat_template=chat_template, tokenizer_name="bench-scoring")
    instances = [i for i in task.instances if i.request_type == "loglikelihood"]
    if not instances:
        kinds = sorted({i.request_type for i in task.instances}) or ["none"]
        raise BenchError(f"task {task_name!r} is not a classification task: it makes no loglikelihood "
                         f"requests (its requests: {', '.join(kinds)})")
    choices: dict[int, int] = {}
    for instance in instances:
        choices.setdefault(instance.doc_id, len(task.doc_to_choice(instance.doc)))
    return TaskRequests(task_name, num_fewshot, instances, choices)


# -- model --------------------------------------------------------------------------------------


def random_llama(size: str, tokenizer: Any, dtype: Any, device: str) -> Any:
    """A randomly initialised Llama (seed 0) built on ``device`` from a config: no hub access."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), max_position_embeddings=8192, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, **RANDOM_LLAMA_SIZES[size],
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def load_model(args: argparse.Namespace, device: str) -> tuple[Any, Any, str]:
    """(model, tokenizer, description)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from genclf_harness.backends.default_model import resolve_pretrained

    dtype = getattr(torch, args.dtype, None)
    if not isinstance(dtype, torch.dtype):
        raise BenchError(f"--dtype {args.dtype!r} is not a torch dtype (try bfloat16, float16, float32)")
    # With --random-init-llama, --pretrained only names the tokenizer (a folder without weights will do).
    path = resolve_pretrained(args.pretrained)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if args.random_init_llama:
        model = random_llama(args.random_init_llama, tokenizer, dtype, device)
        parameters = sum(p.numel() for p in model.parameters())
        return model, tokenizer, f"random-init llama {args.random_init_llama} ({parameters / 1e9:.3f} B parameters)"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    return model, tokenizer, str(args.pretrained)


@contextlib.contextmanager
def count_stock_tokens() -> Iterator[dict[str, int]]:
    """Count what HFLM puts into its causal batches: real tokens and padded rows x width.

    HFLM builds each batch with ``pad_and_concat(width, inputs)``; wrapping that one function in
    its module sees every unpadded input exactly as HFLM forwards it.
    """
    import lm_eval.models.huggingface as hf_module

    counts = {"tokens": 0, "padded_tokens": 0, "batches": 0}
    original = hf_module.pad_and_concat

    def counting(max_length: int, tensors: list[Any], padding_side: str = "right") -> Any:
        counts["tokens"] += sum(int(t.shape[-1]) for t in tensors)
        counts["padded_tokens"] += int(max_length) * len(tensors)
        counts["batches"] += 1
        return original(max_length, tensors, padding_side=padding_side)

    hf_module.pad_and_concat = counting
    try:
        yield counts
    finally:
        hf_module.pad_and_concat = original


# -- measuring ----------------------------------------------------------------------------------


@dataclass
class Phase:
    seconds: float = math.nan
    scores: list[float] = field(default_factory=list)
    tokens: int = 0
    padded_tokens: int = 0
    peak_mem_mb: float = math.nan


def _synchronize(device: Any) -> None:
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize()


def _reset_peak(device: Any) -> None:
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def _peak_mb(device: Any) -> float:
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def run_stock(stock: Any, instances: list[Any]) -> Phase:
    _reset_peak(stock.device)
    with count_stock_tokens() as counts:
        began = time.perf_counter()
        results = stock.loglikelihood(instances, disable_tqdm=True)
        _synchronize(stock.device)
        elapsed = time.perf_counter() - began
    return Phase(elapsed, [float(ll) for ll, _ in results], counts["tokens"], counts["padded_tokens"],
                 _peak_mb(stock.device))


def run_genclf(genclf: Any, instances: list[Any]) -> Phase:
    _reset_peak(genclf.device)
    began = time.perf_counter()
    results = genclf.loglikelihood(instances, disable_tqdm=True)
    _synchronize(genclf.device)
    elapsed = time.perf_counter() - began
    stats = genclf.scorer.last_stats
    return Phase(elapsed, [float(ll) for ll, _ in results], stats.forwarded_tokens, stats.padded_tokens,
                 _peak_mb(genclf.device))


def minimum_sequences(genclf: Any, instances: list[Any]) -> list[list[int]]:
    """Per distinct context: its tokens then every distinct label's, as lm-eval splits them."""
    from genclf_harness.backends.protocol import LabelPrompt

    by_context: dict[str, dict[str, None]] = {}
    for instance in instances:
        context, continuation = instance.args
        by_context.setdefault(context, {})[continuation] = None
    prompts = [LabelPrompt(context, tuple(labels)) for context, labels in by_context.items()]
    sequences = []
    for pairs in genclf.scorer.encoder.encode(prompts):
        sequence = list(pairs[0][0])
        for _, continuation in pairs:
            sequence.extend(continuation)
        sequences.append(sequence)
    return sequences


def run_bound(model: Any, sequences: list[list[int]], batch_size: int, max_batch_tokens: int) -> Phase:
    """Plain forward passes over the minimum-token sequences, batched like genclf, timed."""
    import torch

    device = next(model.parameters()).device
    ordered = sorted(sequences, key=len, reverse=True)
    batches = []
    start = 0
    while start < len(ordered):
        width = len(ordered[start])
        stop = start + 1
        while stop < len(ordered) and stop - start < batch_size and (stop - start + 1) * width <= max_batch_tokens:
            stop += 1
        batch = torch.zeros((stop - start, width), dtype=torch.long)
        for row, sequence in enumerate(ordered[start:stop]):
            batch[row, : len(sequence)] = torch.tensor(sequence)
        batches.append(batch)
        start = stop
    _reset_peak(device)
    began = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            model(input_ids=batch.to(device), use_cache=False, logits_to_keep=1)
    _synchronize(device)
    elapsed = time.perf_counter() - began
    return Phase(elapsed, [], sum(map(len, sequences)), sum(b.numel() for b in batches), _peak_mb(device))


def compare(requests: TaskRequests, stock: Phase, genclf: Phase) -> dict[str, float]:
    """max |Δ log-likelihood| over requests; prediction agreement over documents (raw and acc_norm)."""
    max_abs = max(abs(a - b) for a, b in zip(stock.scores, genclf.scores, strict=True))
    by_doc: dict[int, list[tuple[int, float, float, int]]] = {}
    for instance, a, b in zip(requests.instances, stock.scores, genclf.scores, strict=True):
        if instance.idx < requests.choices[instance.doc_id]:  # the document's labels, not calibration extras
            by_doc.setdefault(instance.doc_id, []).append((instance.idx, a, b, max(1, len(instance.args[1]))))
    same = same_norm = 0
    for rows in by_doc.values():
        rows.sort()
        indices = range(len(rows))
        same += max(indices, key=lambda i: rows[i][1]) == max(indices, key=lambda i: rows[i][2])
        same_norm += (max(indices, key=lambda i: rows[i][1] / rows[i][3])
                      == max(indices, key=lambda i: rows[i][2] / rows[i][3]))
    return {"max_abs_dll": max_abs, "agreement": same / len(by_doc), "agreement_norm": same_norm / len(by_doc)}


def _warm_up(stock: Any, genclf: Any, requests: TaskRequests) -> None:
    """Untimed: first kernels, lazy set-up (genclf's packing probe) on a few documents."""
    docs = sorted(requests.choices)[:2]
    subset = [i for i in requests.instances if i.doc_id in docs]
    with count_stock_tokens():
        stock.loglikelihood(subset, disable_tqdm=True)
    genclf.loglikelihood(subset, disable_tqdm=True)


def measure(requests: TaskRequests, stock: Any, genclf: Any, model: Any, turn: int,
            batch_size: int, max_batch_tokens: int) -> dict[str, Any]:
    import gc

    sequences = minimum_sequences(genclf, requests.instances)
    minimum = sum(map(len, sequences))
    phases: dict[str, Phase] = {}
    runners = {
        "stock": lambda: run_stock(stock, requests.instances),
        "genclf": lambda: run_genclf(genclf, requests.instances),
        "bound": lambda: run_bound(model, sequences, batch_size, max_batch_tokens),
    }
    order = ["stock", "genclf", "bound"] if turn % 2 == 0 else ["bound", "genclf", "stock"]
    for name in order:
        gc.collect()
        phases[name] = runners[name]()
        _progress(f"{requests.task} {requests.num_fewshot}-shot {name}: {phases[name].seconds:.2f} s")
    stock_phase, genclf_phase, bound = phases["stock"], phases["genclf"], phases["bound"]
    docs = len(requests.choices)
    return {
        "task": requests.task,
        "num_fewshot": requests.num_fewshot,
        "docs": docs,
        "requests": len(requests.instances),
        "stock_docs_per_s": docs / stock_phase.seconds,
        "genclf_docs_per_s": docs / genclf_phase.seconds,
        "speedup": stock_phase.seconds / genclf_phase.seconds,
        "stock_tokens_over_min": stock_phase.tokens / minimum,
        "genclf_tokens_over_min": genclf_phase.tokens / minimum,
        "stock_over_bound": stock_phase.seconds / bound.seconds,
        "genclf_over_bound": genclf_phase.seconds / bound.seconds,
        **compare(requests, stock_phase, genclf_phase),
        "peak_mem_mb": max(stock_phase.peak_mem_mb, genclf_phase.peak_mem_mb),
        "stock_peak_mem_mb": stock_phase.peak_mem_mb,
        "genclf_peak_mem_mb": genclf_phase.peak_mem_mb,
        "bound_peak_mem_mb": bound.peak_mem_mb,
        "stock_s": stock_phase.seconds,
        "genclf_s": genclf_phase.seconds,
        "bound_s": bound.seconds,
        "bound_tokens_per_s": minimum / bound.seconds,
        "min_tokens": minimum,
        "stock_tokens": stock_phase.tokens,
        "genclf_tokens": genclf_phase.tokens,
        "stock_padded_tokens": stock_phase.padded_tokens,
        "genclf_padded_tokens": genclf_phase.padded_tokens,
        "bound_padded_tokens": bound.padded_tokens,
        "order": ",".join(order),
    }


# -- output -------------------------------------------------------------------------------------


def _write_lines(path: str, lines: list[str]) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, scratch = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(handle, "w") as out:
            out.write("".join(line + "\n" for line in lines))
        os.replace(scratch, target)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise


def _table(rows: list[dict[str, Any]]) -> str:
    header = (f"{'task':<15} {'shots':>5} {'docs':>5} {'stock d/s':>9} {'genclf d/s':>10} {'speedup':>7} "
              f"{'tok/min st':>10} {'tok/min gc':>10} {'bound st':>8} {'bound gc':>8} {'max|Δll|':>9} "
              f"{'agree':>6} {'peak MB':>8}")
    lines = [header]
    for r in rows:
        lines.append(
            f"{r['task']:<15} {r['num_fewshot']:>5} {r['docs']:>5} {r['stock_docs_per_s']:>9.2f} "
            f"{r['genclf_docs_per_s']:>10.2f} {r['speedup']:>6.2f}x {r['stock_tokens_over_min']:>10.2f} "
            f"{r['genclf_tokens_over_min']:>10.2f} {r['stock_over_bound']:>8.2f} {r['genclf_over_bound']:>8.2f} "
            f"{r['max_abs_dll']:>9.2g} {100 * r['agreement']:>5.1f}% {r['peak_mem_mb']:>8.0f}")
    lines.append("(tok/min: tokens forwarded over the minimum; bound: phase time over the raw forward time of "
                 "the minimum tokens; agree: same argmax label)")
    return "\n".join(lines)


# -- entry points -------------------------------------------------------------------------------


def run_vllm(args: argparse.Namespace, tasks: list[str], fewshots: list[int]) -> int:
    from genclf_harness.cli import bench_scoring_vllm

    parser = argparse.ArgumentParser()
    bench_scoring_vllm.add_arguments(parser)
    lines = []
    for shots in fewshots:
        vllm_args = parser.parse_args([])
        vllm_args.tasks = ",".join(tasks)
        vllm_args.limit = args.limit
        vllm_args.num_fewshot = shots
        vllm_args.pretrained = args.pretrained
        vllm_args.dtype = args.dtype
        vllm_args.apply_chat_template = args.apply_chat_template
        vllm_args.metadata = args.metadata
        vllm_args.json = args.json or bool(args.output)
        captured = io.StringIO()
        with contextlib.redirect_stdout(captured):
            code = bench_scoring_vllm.run(vllm_args)
        if code:
            return code
        text = captured.getvalue()
        sys.stdout.write(text)
        lines.extend(line for line in text.splitlines() if line.startswith("{"))
    if args.output:
        _write_lines(args.output, lines)
    return 0


def run(args: argparse.Namespace) -> int:
    tasks, fewshots = _check_args(args)
    if args.backend == "vllm":
        if args.random_init_llama:
            raise BenchError("--random-init-llama works with --backend hf only")
        return run_vllm(args, tasks, fewshots)

    import lm_eval
    import torch
    import transformers

    from genclf_harness.backends.scorer import DEFAULT_MAX_BATCH_TOKENS

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    max_batch_tokens = args.max_batch_tokens or DEFAULT_MAX_BATCH_TOKENS
    loaded_tasks = load_tasks(tasks, args.metadata)  # before the model: a bad name fails fast

    from lm_eval.models.huggingface import HFLM

    from genclf_harness.harness.hf_model import GenclfHFLM

    began = time.perf_counter()
    model, tokenizer, description = load_model(args, device)
    _progress(f"model {description} on {device} in {args.dtype}, loaded in {time.perf_counter() - began:.1f} s")
    common = {"tokenizer": tokenizer, "batch_size": args.batch_size, "softmax_dtype": args.softmax_dtype}
    stock = HFLM(pretrained=model, **common)
    genclf = GenclfHFLM(pretrained=model, max_batch_tokens=max_batch_tokens, **common)

    settings = {
        "model": description, "dtype": args.dtype, "device": device, "batch_size": args.batch_size,
        "max_batch_tokens": max_batch_tokens, "softmax_dtype": args.softmax_dtype,
        "apply_chat_template": args.apply_chat_template, "metadata": args.metadata, "lm_eval": lm_eval.__version__,
        "transformers": transformers.__version__, "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    rows = []
    turn = 0
    for shots in fewshots:
        for name in tasks:
            began = time.perf_counter()
            requests = build_requests(name, loaded_tasks[name], shots, args.limit, args.apply_chat_template, tokenizer)
            _progress(f"{name} {shots}-shot: {len(requests.choices)} docs, {len(requests.instances)} requests "
                      f"built in {time.perf_counter() - began:.1f} s")
            if turn == 0:
                _warm_up(stock, genclf, requests)
            row = measure(requests, stock, genclf, model, turn, args.batch_size, max_batch_tokens)
            rows.append(row | settings)
            turn += 1
            if args.json:
                print(json.dumps(rows[-1]), flush=True)
            if args.output:  # rewritten whole after every row: a stopped run keeps what it measured
                _write_lines(args.output, [json.dumps(row) for row in rows])

    if args.output:
        _progress(f"wrote {args.output}")
    if not args.json:
        print(_table(rows))
        print(f"({description}, {args.dtype} on {device}, batch {args.batch_size}, limit {args.limit})")
    return 0
