"""DPO pairs from a model's own samples, ranked by a judge's P("Yes") (IPO's self-improvement loop).

For each prompt: sample ``n`` responses (any ``Generator``), score each with the pointwise judge
(:class:`~genclf_harness.verifiers.pairwise.judge.PointwiseJudge`, "Does the response follow the
instruction well (Yes/No)?"), and keep the highest-scored response as ``chosen`` and the lowest
as ``rejected`` when their P("Yes") differ by at least ``min_margin``. With the same model as
generator and judge this is IPO's loop: the model's own preference labels its own samples.

Rows are TRL's preference format, which ``DPOTrainer`` takes as is:

- conversational (when the tokenizer has a chat template; the default)::

      {"prompt": [{"role": "user", "content": ...}],
       "chosen": [{"role": "assistant", "content": ...}],
       "rejected": [{"role": "assistant", "content": ...}],
       "score_chosen": 0.81, "score_rejected": 0.42}

  TRL renders the prompt with the same chat template (``add_generation_prompt=True``) that the
  samples were generated after, so training sees the sampling context;
- standard (no chat template, or ``chat=False``): ``"prompt"`` is the plain text the samples
  followed (the prompt and a newline), ``"chosen"``/``"rejected"`` the sampled texts.

``score_chosen``/``score_rejected`` (the judge's P("Yes"); the column names of UltraFeedback
binarized) are extra columns that DPOTrainer ignores. Samples are drawn with a seeded generator
(the same prompts, settings and seed give the same pairs on one backend); empty samples are
dropped, and a prompt whose best and worst samples are the same text or closer than
``min_margin`` gives no pair (counted in :class:`DPOBuildStats`). The file is written atomically.

Command line::

    python -m genclf_harness.verifiers.pairwise.dpo_pairs --prompts prompts.jsonl --field prompt \\
        --out dpo_pairs.jsonl --model default --n 4 --seed 0 --min-margin 0.05
    python -m genclf_harness.verifiers.pairwise.dpo_pairs --dataset my_prefs --out dpo_pairs.jsonl   # its prompts
    python -m genclf_harness.verifiers.pairwise.dpo_pairs --dataset my_prefs --labelled --out pairs.jsonl  # its pairs
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from genclf_harness.backends.generation import Generator, SamplingSettings, chat_prompt, generate_with
from genclf_harness.data.jsonl import iter_jsonl
from genclf_harness.verifiers.pairwise.judge import PointwiseJudge


@dataclass(frozen=True, slots=True)
class DPOBuildSettings:
    """How samples are drawn and turned into pairs."""

    n: int = 4
    """Samples per prompt (at least 2)."""
    max_new_tokens: int = 256
    temperature: float = 0.8
    top_p: float = 1.0
    seed: int = 0
    """Seed of the sampling (reproducible pairs on one backend)."""
    min_margin: float = 0.0
    """Least P("Yes") difference between chosen and rejected; closer pairs are skipped."""

    def __post_init__(self) -> None:
        if self.n < 2:
            raise ValueError(f"n must be at least 2 to form a pair, got {self.n}")
        if not 0.0 <= self.min_margin < 1.0:
            raise ValueError(f"min_margin is a difference of probabilities in [0, 1), got {self.min_margin}")

    def sampling(self) -> SamplingSettings:
        return SamplingSettings(n=self.n, max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                top_p=self.top_p, seed=self.seed)


@dataclass(slots=True)
class DPOBuildStats:
    prompts: int = 0
    pairs: int = 0
    skipped_margin: int = 0
    """Prompts whose best and worst samples were closer than ``min_margin``."""
    skipped_identical: int = 0
    """Prompts with fewer than two distinct non-empty samples."""
    margins: list[float] = field(default_factory=list)
    """P("Yes") of chosen minus rejected, for every pair written."""


def build_dpo_pairs(
    prompts: Sequence[str],
    generator: Generator,
    judge: PointwiseJudge,
    settings: DPOBuildSettings = DPOBuildSettings(),
    *,
    chat: bool | None = None,
    show_progress: bool = False,
) -> tuple[list[dict[str, Any]], DPOBuildStats]:
    """Sample, judge and pair; returns the rows (in prompt order) and what was skipped."""
    if isinstance(prompts, str):
        raise TypeError("prompts must be a sequence of strings (wrap a single prompt in a list)")
    if not prompts:
        raise ValueError("no prompts to build DPO pairs from")
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"prompt #{index} must be a non-empty string, got {prompt!r}")
    tokenizer = judge.tokenizer
    use_chat = bool(getattr(tokenizer, "chat_template", None)) if chat is None else chat
    rendered = [chat_prompt(tokenizer, p) if use_chat else p.strip() + "\n" for p in prompts]
    samples = generate_with(generator, rendered, settings.sampling(), show_progress=show_progress)

    # Distinct non-empty samples, first occurrence first (a stable order breaks score ties).
    candidates = [list(dict.fromkeys(s.strip() for s in group if s.strip())) for group in samples]
    flat = [(i, text) for i, group in enumerate(candidates) for text in group]
    scores = judge.score([prompts[i] for i, _ in flat], [text for _, text in flat], show_progress=show_progress)
    scored: list[list[tuple[float, str]]] = [[] for _ in prompts]
    for (i, text), score in zip(flat, scores, strict=True):
        scored[i].append((score, text))

    stats = DPOBuildStats(prompts=len(prompts))
    rows: list[dict[str, Any]] = []
    for prompt, text_prompt, group in zip(prompts, rendered, scored, strict=True):
        if len(group) < 2:
            stats.skipped_identical += 1
            continue
        best = max(group, key=lambda item: item[0])
        worst = min(group, key=lambda item: item[0])
        margin = best[0] - worst[0]
        if margin <= 0 or margin < settings.min_margin:
            stats.skipped_margin += 1
            continue
        stats.pairs += 1
        stats.margins.append(margin)
        if use_chat:
            row = {"prompt": [{"role": "user", "content": prompt}],
                   "chosen": [{"role": "assistant", "content": best[1]}],
                   "rejected": [{"role": "assistant", "content": worst[1]}]}
        else:
            row = {"prompt": text_prompt, "chosen": best[1], "rejected": worst[1]}
        rows.append({**row, "score_chosen": best[0], "score_rejected": worst[0]})
    return rows, stats


def write_jsonl(path: str | os.PathLike[str], rows: Sequence[dict[str, Any]]) -> Path:
    """Write rows as JSONL atomically (a temporary sibling renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.tmp")
    try:
        with open(scratch, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(scratch, path)
    finally:
        scratch.unlink(missing_ok=True)
    return path


def read_prompts(path: str | os.PathLike[str], field_name: str = "prompt", limit: int | None = None) -> list[str]:
    """The ``field_name`` string of every row of a JSONL file; errors name the line and field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    prompts: list[str] = []
    for line_no, row in iter_jsonl(path):
        if limit is not None and len(prompts) >= limit:
            break
        where = f"{path}:{line_no}"
        value = row.get(field_name) if isinstance(row, dict) else None
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{where}: field {field_name!r} is missing or not a non-empty string")
        prompts.append(value)
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return prompts


def prompts_of(dataset: str, split: str | None = None, limit: int | None = None) -> list[str]:
    """The instructions of a preference folder's pairs (LLMBar's or your own), each once, in order."""
    from genclf_harness.verifiers.pairwise.pairs import load_preference_pairs

    prompts = list(dict.fromkeys(pair.instruction for pair in load_preference_pairs(dataset, split)))
    return prompts[:limit] if limit is not None else prompts


def labelled_dpo_rows(pairs: Sequence[Any], *, chat: bool = True) -> list[dict[str, Any]]:
    """A preference folder's own pairs in TRL's preference format (no sampling): conversational
    (the shared prompt's messages, else the instruction as one user message) or standard (the
    instruction and a newline, as :func:`build_dpo_pairs` writes it)."""
    rows = []
    for pair in pairs:
        chosen, rejected = (pair.output_1, pair.output_2) if pair.label == 1 else (pair.output_2, pair.output_1)
        if chat:
            prompt: Any = [dict(m) for m in pair.prompt_messages] if pair.prompt_messages else [
                {"role": "user", "content": pair.instruction}]
            rows.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
                         "rejected": [{"role": "assistant", "content": rejected}], "id": pair.id})
        else:
            rows.append({"prompt": pair.instruction + "\n", "chosen": chosen, "rejected": rejected, "id": pair.id})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genclf_harness.verifiers.pairwise.dpo_pairs",
                                     description="DPO pairs from a model's own samples ranked by its P(Yes) (IPO).")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompts", help="JSONL file of prompts")
    source.add_argument("--dataset", help="a preference folder under the data root (llmbar, or meta.json kind "
                                          "'preference'): its instructions are the prompts")
    parser.add_argument("--split", default=None, help="--dataset's split (default: its evaluated split)")
    parser.add_argument("--labelled", action="store_true",
                        help="with --dataset: write its own labelled pairs in TRL's format, no sampling")
    parser.add_argument("--field", default="prompt", help="the prompt field of each row (default: prompt)")
    parser.add_argument("--out", required=True, help="output JSONL (written atomically)")
    parser.add_argument("--model", default="default", help="generator and judge: model folder or 'default'")
    parser.add_argument("--judge", default=None, help="a different judge model (default: the same model, IPO)")
    parser.add_argument("--dtype", default="float32", help="model dtype (float32, bfloat16)")
    parser.add_argument("--limit", type=int, default=None, help="first N prompts only")
    parser.add_argument("--no-chat", action="store_true", help="plain text prompts (standard, not conversational)")
    defaults = DPOBuildSettings()
    for name in ("n", "max_new_tokens", "temperature", "top_p", "seed", "min_margin"):
        value = getattr(defaults, name)
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args(argv)
    if args.labelled:
        if not args.dataset:
            parser.error("--labelled needs --dataset (the pairs to write)")
        from genclf_harness.verifiers.pairwise.pairs import load_preference_pairs

        pairs = load_preference_pairs(args.dataset, args.split, limit=args.limit)
        write_jsonl(args.out, labelled_dpo_rows(pairs, chat=not args.no_chat))
        print(json.dumps({"out": str(args.out), "pairs": len(pairs), "dataset": args.dataset}))
        return 0

    from genclf_harness.backends.generation import HFGenerator
    from genclf_harness.backends.scorer import HFScorer

    settings = DPOBuildSettings(n=args.n, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                top_p=args.top_p, seed=args.seed, min_margin=args.min_margin)
    prompts = (prompts_of(args.dataset, args.split, args.limit) if args.dataset
               else read_prompts(args.prompts, args.field, args.limit))
    policy = HFScorer.from_pretrained(args.model, dtype=args.dtype)
    judge_scorer = policy if args.judge is None else HFScorer.from_pretrained(args.judge, dtype=args.dtype)
    chat = False if args.no_chat else None
    rows, stats = build_dpo_pairs(prompts, HFGenerator.from_scorer(policy), PointwiseJudge(judge_scorer, chat=chat),
                                  settings, chat=chat, show_progress=True)
    write_jsonl(args.out, rows)
    summary = {k: v for k, v in asdict(stats).items() if k != "margins"}
    summary["settings"] = asdict(settings)
    print(json.dumps({"out": str(args.out), **summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
