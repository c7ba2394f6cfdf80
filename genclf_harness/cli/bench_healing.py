"""``genclf-bench healing``: generation after a prompt cut mid-word or in whitespace.

Real sentences of the data sets are cut at a character, the way a user's template or an
autocompletion prompt is cut: inside a word (``"... a beautifully sh"``), after a space
(``"... a beautifully "``), and at a word's end (a control: a clean token boundary). The default
model continues each prompt greedily three ways, one prompt at a time:

- ``stock``: lm-eval's ``hf`` generation (``genclf-hf`` with ``align_generation=false``, which is
  HFLM's ``generate_until``);
- ``token_healing``: transformers' ``generate(token_healing=True)`` (the prompt is stripped of
  whitespace and its last token replaced by its most likely extension);
- ``aligned``: ``genclf-hf`` with ``align_generation=true`` (this project's token alignment: up to
  four tokens backed off, the first generated tokens constrained to spell them again).

Each cell: the share of prompts whose text, continued, has the original word where it was cut
(``word right``: for a mid-word cut, the word that was cut; after a space, the next word; at a
word's end, the word is not changed), the share whose word there is one of the data set's words
(``known word``: the cut word completed to some real word, not left a fragment), the share whose
continuation keeps the prompt as written (``prompt kept``), the share with two spaces at the seam (``double space``), and the seconds.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from genclf_harness.cli.errors import UsageError

_WORD = re.compile(r"[A-Za-z0-9'-]+")
KINDS = ("mid-word", "after a space", "word end")
METHODS = ("stock", "token_healing", "aligned")


@dataclass(frozen=True, slots=True)
class Cut:
    text: str
    prompt: str
    word: str
    """The original word at the cut (see the module docstring)."""
    start: int
    """Where that word starts in ``text``."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--datasets", default="sst2,agnews", help="comma-separated data sets whose texts are cut")
    parser.add_argument("--pretrained", default="default", help="a model folder, hub id or 'default'")
    parser.add_argument("--limit", type=int, default=100, help="prompts per data set and kind (default 100)")
    parser.add_argument("--max_gen_toks", type=int, default=8, help="tokens generated per prompt (default 8)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--json", default=None, help="also write the table's rows as JSON here")


def cuts(texts: list[str], kind: str, limit: int, seed: int) -> list[Cut]:
    """Up to ``limit`` prompts of one kind, one per text, chosen with ``seed``."""
    rng = random.Random(f"{seed}-{kind}")
    out: list[Cut] = []
    for text in texts:
        words = [m for m in _WORD.finditer(text) if m.start() > 0 and text[m.start() - 1] == " "]
        if kind == "mid-word":
            words = [m for m in words if len(m.group()) >= 4 and m.group().isalpha()]
        if not words:
            continue
        match = rng.choice(words)
        if kind == "mid-word":
            cut = match.start() + rng.randint(1, len(match.group()) - 2)
        elif kind == "after a space":
            cut = match.start()
        else:
            cut = match.end()
        out.append(Cut(text, text[:cut], match.group(), match.start()))
        if len(out) == limit:
            break
    return out


def judge(cut: Cut, continued: str, words: set[str]) -> dict[str, bool]:
    """How one continuation of a cut prompt came out (``continued``: the prompt and what follows;
    ``words``: the lower-cased words of the data set's texts)."""
    found = _WORD.match(continued, cut.start)
    seam = continued[len(cut.prompt) - 1: len(cut.prompt) + 1]
    return {"word right": bool(found) and found.group() == cut.word,
            "known word": bool(found) and found.group().lower() in words,
            "prompt kept": continued.startswith(cut.prompt),
            "double space": seam.startswith(" ") and seam[1:2].isspace()}


def _lm_generate(lm: Any, prompts: list[str], max_gen_toks: int) -> list[str]:
    from genclf_harness.harness.label_requests import new_instance

    gen_kwargs = {"until": ["\n"], "max_gen_toks": max_gen_toks, "do_sample": False}
    requests = [new_instance("generate_until", {}, (p, dict(gen_kwargs)), 0, task_name="healing", doc_id=i)
                for i, p in enumerate(prompts)]
    return [p + text for p, text in zip(prompts, lm.generate_until(requests, disable_tqdm=True), strict=True)]


def _healing_generate(model: Any, tokenizer: Any, prompts: list[str], max_gen_toks: int,
                      errors: list[str]) -> list[str]:
    """transformers' token healing, one prompt at a time. Where ``generate(token_healing=True)``
    raises (transformers 5.x looks the space up as a token, ``convert_tokens_to_ids(" ")``, which is
    ``<|endoftext|>`` for byte-level BPE, so a last token that starts a word is searched with ``<``
    for its space, and some prompts end in a ``KeyError``), the prompt is generated without healing
    and the error is counted."""
    import torch

    out = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
        settings = {"attention_mask": torch.ones_like(ids), "max_new_tokens": max_gen_toks, "do_sample": False,
                    "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                    else tokenizer.eos_token_id}
        with torch.no_grad():
            try:
                generated = model.generate(ids, token_healing=True, tokenizer=tokenizer, **settings)
            except (KeyError, IndexError, ValueError) as error:
                errors.append(f"{type(error).__name__}: {error}")
                generated = model.generate(ids, **settings)
        text = tokenizer.decode(generated[0], skip_special_tokens=True)
        out.append(text if "\n" in prompt else text.split("\n")[0])
    return out


def run(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from genclf_harness.backends.default_model import resolve_pretrained
    from genclf_harness.data import get_spec, load_split
    from genclf_harness.harness.hf_model import GenclfHFLM

    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    if not names:
        raise UsageError("--datasets names no data set")
    if args.limit < 1 or args.max_gen_toks < 1:
        raise UsageError("--limit and --max_gen_toks must be at least 1")
    specs = {name: get_spec(name) for name in names}  # an unknown data set fails before any model work
    path = str(resolve_pretrained(args.pretrained))
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    stock = GenclfHFLM(pretrained=model, tokenizer=tokenizer, batch_size=1)
    aligned = GenclfHFLM(pretrained=model, tokenizer=tokenizer, batch_size=1, align_generation=True)
    errors: list[str] = []
    methods: dict[str, Callable[[list[str]], list[str]]] = {
        "stock": lambda p: _lm_generate(stock, p, args.max_gen_toks),
        "token_healing": lambda p: _healing_generate(model, tokenizer, p, args.max_gen_toks, errors),
        "aligned": lambda p: _lm_generate(aligned, p, args.max_gen_toks),
    }
    rows: list[dict[str, Any]] = []
    for name, spec in specs.items():
        texts = [str(row[spec.input_fields[0]]) for row in load_split(name, spec.eval_split)]
        words = {w.lower() for text in texts for w in _WORD.findall(text)}
        for kind in KINDS:
            prompts = cuts(texts, kind, args.limit, args.seed)
            for method, generate in methods.items():
                errors.clear()
                start = time.perf_counter()
                continued = generate([c.prompt for c in prompts])
                seconds = time.perf_counter() - start
                marks = [judge(c, text, words) for c, text in zip(prompts, continued, strict=True)]
                row = {"data set": name, "kind": kind, "method": method, "prompts": len(prompts),
                       "errors": len(errors),
                       **{k: sum(m[k] for m in marks) / max(len(marks), 1) for k in marks[0]},
                       "seconds": round(seconds, 1),
                       "examples": [[c.prompt[-30:], text[max(0, len(c.prompt) - 30):][:60]]
                                    for c, text in list(zip(prompts, continued, strict=True))[:3]]}
                rows.append(row)
                print(f"{name:8} {kind:13} {method:13} errors {row['errors']:4d}  word right "
                      f"{row['word right']:6.1%}  known word {row['known word']:6.1%}  prompt kept "
                      f"{row['prompt kept']:6.1%}  double space {row['double space']:6.1%}  {seconds:6.1f} s",
                      flush=True)
    record = aligned.generation_record.manifest()
    print(f"aligned: {sum(record['backed_off_prompts'].values())} of {sum(record['prompts'].values())} prompts "
          f"backed off, {sum(record['tokens_backed_off'].values())} tokens")
    print(_table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"rows": rows, "aligned": record}, handle, indent=1)
    return 0


def _table(rows: list[dict[str, Any]]) -> str:
    lines = ["| data set | cut | method | prompts | errors | word right | known word | prompt kept | double space "
             "| seconds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['data set']} | {r['kind']} | {r['method']} | {r['prompts']} | {r['errors']} | "
                     f"{r['word right']:.3f} | {r['known word']:.3f} | "
                     f"{r['prompt kept']:.3f} | {r['double space']:.3f} | {r['seconds']} |")
    return "\n".join(lines)
