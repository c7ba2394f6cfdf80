"""GenRM: a generative verifier's score is P("Yes") to "Is the answer correct (Yes/No)?".

:class:`GenRM` works on any backend that implements the ``Scorer`` protocol (and, for the
chain-of-thought mode, the ``Generator`` protocol): the transformers backend here, vLLM likewise.
Each (question, solution) pair becomes one ``LabelPrompt`` whose two continuations are the Yes/No
answers, so the question-and-solution prefix is encoded once and both answers are read from it;
many pairs go to the backend in one call, which batches them. The prompt format and the choice
of answer tokens are documented in :mod:`genclf_harness.verifiers.format`.

    verifier = GenRM.from_pretrained("runs/genrm_last_letter")     # or "default"
    verifier.score(["Take the last letters ..."], ['... The answer is nr.'])       # [0.93]
    verifier.score_cot(questions, solutions, k=4, seed=0)         # mean P(Yes) over 4 rationales
    verifier.verify(questions, solutions)   # as the verifier was trained: directly, or after its rationale
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from genclf_harness.backends.generation import Generator
from genclf_harness.backends.protocol import LabelPrompt, PromptScores, Scorer
from genclf_harness.verifiers.format import DEFAULT_FORMAT, VerificationFormat


@dataclass(frozen=True, slots=True)
class Verdict:
    """One verification: the normalised P(Yes) and the two answers' log-likelihoods."""

    p_yes: float
    yes_logprob: float
    no_logprob: float


@dataclass(frozen=True, slots=True)
class CoTVerdict:
    """A chain-of-thought verification: the mean P(Yes) over the sampled rationales."""

    p_yes: float
    rationales: tuple[str, ...]
    p_yes_per_rationale: tuple[float, ...]


def p_yes(scores: PromptScores) -> Verdict:
    """The normalised P(Yes) of a scored (yes, no) prompt: ``sigmoid(log P(yes) - log P(no))``."""
    yes, no = scores.logprobs[:2]
    margin = yes - no
    # A numerically stable sigmoid: exp of a large positive margin overflows.
    value = 1.0 / (1.0 + math.exp(-margin)) if margin >= 0 else math.exp(margin) / (1.0 + math.exp(margin))
    return Verdict(value, yes, no)


class GenRM:
    """A generative verifier on a scoring backend (and a generation backend for CoT).

    Args:
        scorer: any ``Scorer`` (``HFScorer``, the vLLM backend).
        tokenizer: renders the chat template; default: the scorer's ``tokenizer`` attribute.
        generator: samples CoT rationales; default: the scorer itself if it can generate.
        format: the verification prompt (:class:`VerificationFormat`).
        chat: use the chat template (``None``: when the tokenizer has one).
        cot: how :meth:`verify` scores: 0 directly, k > 0 with k chain-of-thought rationales
            (sampled at ``cot_temperature``, 0 = greedy, at most ``cot_max_new_tokens`` long).
            ``from_pretrained`` takes it from the training record of a verifier trained here.
    """

    def __init__(
        self,
        scorer: Scorer,
        *,
        tokenizer: Any = None,
        generator: Generator | None = None,
        format: VerificationFormat = DEFAULT_FORMAT,
        chat: bool | None = None,
        cot: int = 0,
        cot_temperature: float = 0.0,
        cot_max_new_tokens: int = 128,
    ) -> None:
        if cot < 0:
            raise ValueError(f"cot must be 0 (direct) or a number of rationales, not {cot}")
        self.scorer = scorer
        self.tokenizer = tokenizer if tokenizer is not None else getattr(scorer, "tokenizer", None)
        if self.tokenizer is None:
            raise ValueError("GenRM needs a tokenizer (to render the chat template): pass tokenizer=")
        if generator is None and isinstance(scorer, Generator):
            generator = scorer
        self.generator = generator
        self.format = format
        self.chat = chat
        self.cot = int(cot)
        self.cot_temperature = float(cot_temperature)
        self.cot_max_new_tokens = int(cot_max_new_tokens)

    @classmethod
    def from_pretrained(
        cls,
        pretrained: str | None = None,
        *,
        dtype: str = "float32",
        device: str | None = None,
        autocast_dtype: Any = None,
        max_batch_tokens: int = 8192,
        **kwargs: Any,
    ) -> GenRM:
        """A transformers verifier: a model folder, a LoRA adapter folder (merged on its base),
        a hub id, or ``None``/``"default"`` (the embedded model, untrained as a verifier).

        A folder written by ``genclf-train genrm`` records how its verifier scores (directly, or
        after its own rationale when trained on rationales); that is :meth:`verify`'s default
        unless ``cot=`` (and ``cot_temperature=``, ``cot_max_new_tokens=``) say otherwise."""
        from genclf_harness.backends.generation import HFGenerator
        from genclf_harness.backends.scorer import HFScorer

        kwargs = {**trained_verification(pretrained), **kwargs}
        model, tokenizer = load_verifier_model(pretrained, dtype=dtype, device=device)
        scorer = HFScorer(model, tokenizer, autocast_dtype=autocast_dtype, max_batch_tokens=max_batch_tokens)
        return cls(scorer, tokenizer=tokenizer, generator=HFGenerator.from_scorer(scorer), **kwargs)

    @classmethod
    def from_served(
        cls,
        base_url: str,
        model: str | None = None,
        *,
        trained: str | None = None,
        format: VerificationFormat = DEFAULT_FORMAT,
        chat: bool | None = None,
        cot: int | None = None,
        cot_temperature: float | None = None,
        cot_max_new_tokens: int | None = None,
        **backend_kwargs: Any,
    ) -> GenRM:
        """A verifier behind ``vllm serve`` (scores and rationales over HTTP, by
        :class:`~genclf_harness.backends.served.ServedBackend`; ``backend_kwargs`` go to it). A
        LoRA verifier is served as ``vllm serve <base> --enable-lora --lora-modules
        verifier=<adapter folder>`` and named ``model="verifier"``; ``trained=<adapter folder>``
        reads how it scores (directly or after a rationale) from its training record, as
        :meth:`from_pretrained` does; ``cot=`` and the rest override."""
        from genclf_harness.backends.served import ServedBackend

        settings = trained_verification(trained) if trained is not None else {}
        for key, value in (("cot", cot), ("cot_temperature", cot_temperature), ("cot_max_new_tokens", cot_max_new_tokens)):
            if value is not None:
                settings[key] = value
        backend = ServedBackend(base_url, model, **backend_kwargs)
        return cls(backend, tokenizer=backend.tokenizer, generator=backend, format=format, chat=chat, **settings)

    # -- direct verification -------------------------------------------------------------------

    def prompts(self, questions: Sequence[str], solutions: Sequence[str]) -> list[LabelPrompt]:
        _check_pairs(questions, solutions)
        return [self.format.label_prompt(self.tokenizer, q, s, chat=self.chat) for q, s in zip(questions, solutions)]

    def verdicts(self, questions: Sequence[str], solutions: Sequence[str], *, show_progress: bool = False) -> list[Verdict]:
        """One :class:`Verdict` per (question, solution) pair, in input order."""
        if not len(questions) and not len(solutions):
            return []
        scored = self.scorer.score(self.prompts(questions, solutions), show_progress=show_progress)
        return [p_yes(scores) for scores in scored]

    def score(self, questions: Sequence[str], solutions: Sequence[str], *, show_progress: bool = False) -> list[float]:
        """P("Yes") normalised over Yes/No for each (question, solution) pair."""
        return [verdict.p_yes for verdict in self.verdicts(questions, solutions, show_progress=show_progress)]

    def verify(self, questions: Sequence[str], solutions: Sequence[str], *, show_progress: bool = False) -> list[float]:
        """P("Yes") per pair the way this verifier scores: directly, or (``cot`` > 0) averaged over
        its chain-of-thought rationales."""
        if not self.cot:
            return self.score(questions, solutions, show_progress=show_progress)
        verdicts = self.score_cot(questions, solutions, k=self.cot, temperature=self.cot_temperature,
                                  max_new_tokens=self.cot_max_new_tokens, seed=0, show_progress=show_progress)
        return [verdict.p_yes for verdict in verdicts]

    # -- chain-of-thought verification ---------------------------------------------------------

    def score_cot(
        self,
        questions: Sequence[str],
        solutions: Sequence[str],
        *,
        k: int = 4,
        max_new_tokens: int = 256,
        temperature: float = 0.7,
        top_p: float = 1.0,
        seed: int | None = None,
        show_progress: bool = False,
    ) -> list[CoTVerdict]:
        """GenRM-CoT: sample ``k`` rationales per pair, score "Yes" after each, average."""
        if self.generator is None:
            raise ValueError("chain-of-thought verification needs a generator (a backend with generate())")
        _check_pairs(questions, solutions)
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        cot_prompts = [self.format.cot_prompt(self.tokenizer, q, s, chat=self.chat) for q, s in zip(questions, solutions)]
        rationales = self.generator.generate(
            cot_prompts,
            n=k,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            stop=(self.format.question,),
            show_progress=show_progress,
        )
        label_prompts = [
            self.format.after_rationale(prompt, rationale)
            for prompt, samples in zip(cot_prompts, rationales, strict=True)
            for rationale in samples
        ]
        scored = self.scorer.score(label_prompts, show_progress=show_progress)
        verdicts = []
        for index, samples in enumerate(rationales):
            values = tuple(p_yes(s).p_yes for s in scored[index * k : (index + 1) * k])
            verdicts.append(CoTVerdict(sum(values) / len(values), tuple(samples), values))
        return verdicts


def trained_verification(pretrained: str | None) -> dict[str, Any]:
    """``cot``, ``cot_temperature``, ``cot_max_new_tokens`` recorded by ``genclf-train genrm`` in a
    verifier folder (``genclf_train.json``); empty for anything else."""
    import json
    from pathlib import Path

    if not pretrained:
        return {}
    record_path = Path(pretrained) / "genclf_train.json"
    if not record_path.is_file():
        return {}
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{record_path}: unreadable training record ({err})") from None
    mode = record.get("verification") or {}
    if mode.get("mode") != "cot":
        return {}
    return {"cot": int(mode.get("samples", 1)), "cot_temperature": float(mode.get("temperature", 0.0)),
            "cot_max_new_tokens": int(mode.get("max_new_tokens", 128))}


def _check_pairs(questions: Sequence[str], solutions: Sequence[str]) -> None:
    if isinstance(questions, str) or isinstance(solutions, str):
        raise TypeError("questions and solutions must be sequences of strings (wrap a single pair in lists)")
    if len(questions) != len(solutions):
        raise ValueError(f"{len(questions)} questions but {len(solutions)} solutions: pass one question per solution")


def load_verifier_model(pretrained: str | None, *, dtype: str = "float32", device: str | None = None) -> tuple[Any, Any]:
    """(model in eval mode, tokenizer) from a model folder, a LoRA adapter folder or a hub id.

    A LoRA adapter is merged into its base model (recorded in ``adapter_config.json``; ``default``
    and missing bases resolve to the embedded model), so scoring runs at the base model's speed.
    """
    import json
    from pathlib import Path

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from genclf_harness.backends.default_model import DEFAULT_MODEL_NAME, resolve_pretrained

    path = str(resolve_pretrained(pretrained))
    torch_dtype = getattr(torch, dtype)
    adapter_config = Path(path) / "adapter_config.json"
    if adapter_config.is_file():
        from peft import PeftModel

        base = json.loads(adapter_config.read_text()).get("base_model_name_or_path") or None
        if base is not None and not Path(base).is_dir() and (Path(base).is_absolute() or "/" not in base):
            # A folder of another machine (or a bare name): only the embedded model can stand in.
            if DEFAULT_MODEL_NAME not in base:
                raise FileNotFoundError(f"{adapter_config}: the adapter's base model {base!r} is not available")
            base = None
        base_path = str(resolve_pretrained(base))
        model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch_dtype)
        model = PeftModel.from_pretrained(model, path).merge_and_unload()
        tokenizer_source = path if (Path(path) / "tokenizer_config.json").is_file() else base_path
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
        tokenizer_source = path
    if device:
        model.to(device)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    return model.eval(), tokenizer
