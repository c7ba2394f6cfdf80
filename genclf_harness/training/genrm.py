"""``genclf-train genrm``: SFT of a generative verifier (GenRM) on exactly-labelled Yes/No examples.

``genclf-train genrm --config configs/genrm_last_letter_cpu.yaml [--set data.num_problems=500 ...]``

The examples (:mod:`genclf_harness.verifiers.genrm.training_data`): verification of a generator's own sampled
solutions (``data.candidates``: candidates files from ``genclf-bench bon`` or
`genclf_harness.verifiers.genrm.bon.sample_candidates`, sampled on *training* problems) and of
synthetic pairs (each training problem's reference solution and corruptions of it), balanced
Yes/No, mixed with solution-generation examples at ratio λ (``data.generation_weight``). TRL's
``SFTTrainer`` trains through the shared runner (`genclf_harness.training.sft.run_sft`): a LoRA
adapter or the whole model, loss on the completion (the verdict) only.

At the end the verifier is evaluated on held-out problems: verification accuracy and AUROC on
synthetic test pairs, and on ``eval.candidates`` (held-out sampled candidates) also best-of-N.
The output folder loads as a verifier with ``GenRM.from_pretrained(output_dir)`` (an adapter is
merged on its base) and as a model with ``genclf-eval --model genclf-hf --model_args
pretrained=default,peft=<output_dir> --tasks genclf_gsm8k_verify --apply_chat_template``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from genclf_harness.training.config import ModelConfig, Section, to_dict
from genclf_harness.training.recipe_cli import add_resume_argument, load_recipe_config
from genclf_harness.training.sft import SFTTrainConfig, TrainResult, run_sft

logger = logging.getLogger(__name__)


@dataclass
class GenRMDataConfig(Section):
    """Which verification and generation examples to train on."""

    task: str = field(
        default="last_letter",
        metadata={"help": "The reasoning task: gsm8k, last_letter, word_sorting or a reasoning folder under the data root "
                          "(meta.json kind 'reasoning')."},
    )
    candidates: list[str] = field(
        default_factory=list,
        metadata={"help": "Candidates files sampled on training problems; each candidate becomes a verification "
                          "example labelled by the exact answer check."},
    )
    num_problems: int = field(
        default=1000, metadata={"help": "Training problems for synthetic pairs and generation examples (0: none)."}
    )
    problem_seed: int = field(default=0, metadata={"help": "Seed of the generated training problems."})
    synthetic_positives: int = field(
        default=1, metadata={"help": "Reference solutions ('Yes') per training problem (0 or 1)."}
    )
    synthetic_negatives: int = field(default=1, metadata={"help": "Corrupted solutions ('No') per training problem."})
    generation_weight: float = field(
        default=0.25,
        metadata={"help": "λ: solution-generation examples per verification example (0: verification only)."},
    )
    balance: Literal["downsample", "upsample", "none"] = field(
        default="downsample", metadata={"help": "How Yes and No are made equally frequent."}
    )
    chat_template: bool | Literal["auto"] = field(
        default="auto", metadata={"help": "Conversational examples with the model's chat template ('auto': if it has one)."}
    )
    rationale: Literal["none", "reference"] = field(
        default="none",
        metadata={"help": "none: direct Yes/No examples; reference: chain-of-thought examples whose rationale solves "
                          "the problem again (the task's reference solution) and states the checked answer "
                          "(GenRM-CoT; the verifier then scores with its own greedy rationale)."},
    )
    max_examples: int | None = field(
        default=None, metadata={"help": "Keep at most this many rows after mixing and shuffling (null: all)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of balancing, mixing, shuffling and corruptions."})

    def check(self) -> None:
        from pathlib import Path

        from genclf_harness.verifiers.genrm.problems import get_task

        try:
            get_task(self.task)  # an unknown task or a bad reasoning folder fails here, before any model work
        except ValueError as err:
            raise ValueError(f"task: {err}") from None
        for path in self.candidates:
            if not Path(path).is_file():
                raise ValueError(f"candidates: {path!r} does not exist")
        if self.num_problems < 0:
            raise ValueError(f"num_problems: must be >= 0, not {self.num_problems}")
        if self.synthetic_positives not in (0, 1):
            raise ValueError(f"synthetic_positives: 0 or 1 (a reference solution is one text), not {self.synthetic_positives}")
        if self.synthetic_negatives < 0:
            raise ValueError(f"synthetic_negatives: must be >= 0, not {self.synthetic_negatives}")
        if self.generation_weight < 0:
            raise ValueError(f"generation_weight: must be >= 0, not {self.generation_weight}")
        if not self.candidates and not self.num_problems:
            raise ValueError("num_problems: 0 and no candidates files leave nothing to train on")
        if self.max_examples is not None and self.max_examples < 1:
            raise ValueError(f"max_examples: must be at least 1 or null, not {self.max_examples}")


@dataclass
class GenRMEvalConfig(Section):
    """The held-out evaluation at the end of training."""

    num_problems: int = field(
        default=100, metadata={"help": "Held-out (test split) problems: reference and corruption pairs (0: skip)."}
    )
    candidates: str | None = field(
        default=None, metadata={"help": "A held-out candidates file: verification metrics and best-of-N."}
    )
    autocast_bf16: bool = field(default=False, metadata={"help": "Score under bfloat16 autocast (faster, less exact)."})
    cot_samples: int = field(
        default=1, metadata={"help": "Rationales averaged per pair when data.rationale is set (1: one greedy rationale)."}
    )
    cot_temperature: float = field(default=0.0, metadata={"help": "Rationale sampling temperature (0: greedy)."})
    cot_max_new_tokens: int = field(default=128, metadata={"help": "The longest rationale, in tokens."})

    def check(self) -> None:
        from pathlib import Path

        if self.num_problems < 0:
            raise ValueError(f"num_problems: must be >= 0, not {self.num_problems}")
        if self.cot_samples < 1:
            raise ValueError(f"cot_samples: must be at least 1, not {self.cot_samples}")
        if self.cot_temperature < 0:
            raise ValueError(f"cot_temperature: must be >= 0 (0 = greedy), not {self.cot_temperature}")
        if self.cot_max_new_tokens < 1:
            raise ValueError(f"cot_max_new_tokens: must be at least 1, not {self.cot_max_new_tokens}")
        if self.candidates is not None and not Path(self.candidates).is_file():
            raise ValueError(f"candidates: {self.candidates!r} does not exist")


@dataclass
class GenRMTrainConfig(SFTTrainConfig):
    """TRL ``SFTConfig`` fields (anything else under ``trainer_kwargs``)."""

    output_dir: str = field(default="runs/genrm", metadata={"help": "The verifier (adapter or model), logs, figures."})
    max_length: int | None = field(default=384, metadata={"help": "Truncate examples to this many tokens."})
    learning_rate: float = field(default=5e-4, metadata={"help": "Peak learning rate (AdamW)."})


@dataclass
class GenRMRecipeConfig:
    """``genclf-train genrm``: model, data, trainer and held-out evaluation sections."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: GenRMDataConfig = field(default_factory=GenRMDataConfig)
    train: GenRMTrainConfig = field(default_factory=GenRMTrainConfig)
    eval: GenRMEvalConfig = field(default_factory=GenRMEvalConfig)


def build_examples(data: GenRMDataConfig, chat: bool, extra_candidates: Sequence[Any] = ()) -> Any:
    """The training rows (`GenRMExamples`) a data section describes, plus candidate sets given directly."""
    from genclf_harness.verifiers.genrm.bon import read_candidates
    from genclf_harness.verifiers.genrm.training_data import (
        build_genrm_examples,
        examples_from_candidates,
        synthetic_examples,
        with_reference_rationales,
    )
    from genclf_harness.verifiers.genrm.problems import get_task

    task = get_task(data.task)
    sets = [s for path in data.candidates for s in read_candidates(path)] + list(extra_candidates)
    verification = examples_from_candidates(sets)
    problems = task.problems("train", data.num_problems, seed=data.problem_seed) if data.num_problems else []
    verification += synthetic_examples(task, problems, positives=data.synthetic_positives,
                                       negatives=data.synthetic_negatives, seed=data.seed)
    without_reference = 0
    if data.rationale == "reference":
        verification, without_reference = with_reference_rationales(task, verification)
        if not verification:
            raise ValueError(f"data.rationale: reference, but no {data.task} question has a reference solution")
    generation = [(p.question, p.solution) for p in problems if p.solution]
    generation += [(s.question, c.text) for s in sets for c in s.candidates if c.correct]
    examples = build_genrm_examples(verification, generation=generation, generation_weight=data.generation_weight,
                                    task=task, balance=data.balance, chat=chat, seed=data.seed)
    if data.rationale == "reference":
        examples.counts["without_reference"] = without_reference
    if data.max_examples is not None:
        examples.rows = examples.rows[: data.max_examples]
    return examples


def verifier_eval_fn(config: GenRMRecipeConfig, chat: bool) -> Any:
    """``eval_fn(model, tokenizer)`` for `run_sft`: held-out verification figures (None: nothing to do)."""
    ev = config.eval
    if not ev.num_problems and not ev.candidates:
        return None

    def evaluate(model: Any, tokenizer: Any) -> dict[str, Any]:
        model.eval()
        cot = ev.cot_samples if config.data.rationale != "none" else 0
        return evaluate_verifier(model, tokenizer, config.data.task, num_problems=ev.num_problems,
                                 candidates=ev.candidates, chat=chat, autocast_bf16=ev.autocast_bf16, cot=cot,
                                 cot_temperature=ev.cot_temperature, cot_max_new_tokens=ev.cot_max_new_tokens)

    return evaluate


def evaluate_verifier(model: Any, tokenizer: Any, task_name: str, *, num_problems: int = 100,
                      candidates: str | None = None, chat: bool | None = None, seed: int = 0,
                      autocast_bf16: bool = False, cot: int = 0, cot_temperature: float = 0.0,
                      cot_max_new_tokens: int = 128) -> dict[str, Any]:
    """Verification accuracy/AUROC on held-out synthetic pairs and candidates; best-of-N on candidates.

    ``cot=k`` scores with k chain-of-thought rationales per pair (GenRM-CoT) instead of directly."""
    import torch

    from genclf_harness.backends.generation import HFGenerator
    from genclf_harness.backends.scorer import HFScorer
    from genclf_harness.verifiers.genrm.bon import evaluate_selection, read_candidates, score_candidates
    from genclf_harness.verifiers.genrm.training_data import synthetic_examples
    from genclf_harness.verifiers.genrm.verifier import GenRM
    from genclf_harness.verifiers.genrm.metrics import auroc, balanced_accuracy, verification_accuracy
    from genclf_harness.verifiers.genrm.problems import get_task

    task = get_task(task_name)
    scorer = HFScorer(model, tokenizer, autocast_dtype=torch.bfloat16 if autocast_bf16 else None)
    generator = HFGenerator.from_scorer(scorer) if cot else None
    verifier = GenRM(scorer, tokenizer=tokenizer, generator=generator, chat=chat, cot=cot,
                     cot_temperature=cot_temperature, cot_max_new_tokens=cot_max_new_tokens)
    figures: dict[str, Any] = {"task": task_name, "verification": f"cot x{cot}" if cot else "direct"}
    if num_problems:
        pairs = synthetic_examples(task, task.problems("test", num_problems, seed=seed), seed=seed + 1)
        scores = verifier.verify([p.question for p in pairs], [p.solution for p in pairs])
        labels = [p.correct for p in pairs]
        figures["synthetic"] = _verification_figures(scores, labels, auroc, verification_accuracy, balanced_accuracy)
    if candidates:
        sets = score_candidates(verifier, read_candidates(candidates), show_progress=False)
        scores = [c.score for s in sets for c in s.candidates]
        labels = [c.correct for s in sets for c in s.candidates]
        figures["candidates"] = {
            **_verification_figures(scores, labels, auroc, verification_accuracy, balanced_accuracy),
            "best_of_n": evaluate_selection(sets),
        }
    logger.info("Held-out verification: %s", figures)
    return figures


def _verification_figures(scores: Sequence[float], labels: Sequence[bool], auroc: Any, accuracy: Any,
                          balanced: Any) -> dict[str, Any]:
    return {"pairs": len(scores), "correct_share": sum(labels) / len(labels), "auroc": auroc(scores, labels),
            "accuracy": accuracy(scores, labels), "balanced_accuracy": balanced(scores, labels)}


def train_genrm(config: GenRMRecipeConfig, *, extra_candidates: Sequence[Any] = (),
                config_path: str | None = None) -> TrainResult:
    """The ``genrm`` recipe on a loaded config: build the examples, train, evaluate, record."""
    from genclf_harness.training.examples import uses_chat
    from genclf_harness.training.modeling import load_tokenizer

    chat = uses_chat(config.data.chat_template, load_tokenizer(config.model))
    examples = build_examples(config.data, chat, extra_candidates)
    logger.info("GenRM examples for %s (%s): %s", config.data.task, "chat" if chat else "plain text", examples.counts)
    return run_sft(
        config,
        examples.rows,
        eval_fn=verifier_eval_fn(config, chat),
        record={"recipe": "genrm", "config": to_dict(config), "config_file": config_path, "chat_template": chat,
                "example_counts": examples.counts, "verification": verification_record(config)},
    )


def verification_record(config: GenRMRecipeConfig) -> dict[str, Any]:
    """How the trained verifier is meant to score (read back by ``GenRM.from_pretrained``)."""
    if config.data.rationale == "none":
        return {"mode": "direct"}
    ev = config.eval
    return {"mode": "cot", "rationale": config.data.rationale, "samples": ev.cot_samples,
            "temperature": ev.cot_temperature, "max_new_tokens": ev.cot_max_new_tokens}


add_arguments = add_resume_argument


def run(args: argparse.Namespace) -> int:
    config = load_recipe_config(GenRMRecipeConfig, args)  # every error before a model loads
    if config is None:
        return 2
    result = train_genrm(config, config_path=args.config)
    print(_summary(result.figures) if result.figures else f"saved to {result.output_dir}")
    return 0


def _summary(figures: dict[str, Any]) -> str:
    parts = []
    for name in ("synthetic", "candidates"):
        if name in figures:
            part = figures[name]
            parts.append(f"{name}: AUROC {part['auroc']:.3f}, accuracy {part['accuracy']:.3f} ({part['pairs']} pairs)")
            if "best_of_n" in part:
                parts.append("best-of-N " + ", ".join(f"{k} {v:.3f}" for k, v in part["best_of_n"].items()))
    return "; ".join(parts)
