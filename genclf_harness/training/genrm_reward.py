"""``GenRMReward``: a generative verifier as a TRL reward function.

TRL no longer ships judges; RL scripts need "how likely is this completion correct" as a reward.
``GenRMReward`` scores every completion with a GenRM verifier (P("Yes") to "Is the answer correct
(Yes/No)?", normalised over Yes/No; :mod:`genclf_harness.verifiers.genrm.verifier`) in one batched call
per reward computation. It is a picklable callable class with a ``__name__`` and TRL's signature::

    reward(prompts, completions, completion_ids=None, **columns) -> list[float]

The question each completion answers is the dataset column ``question`` (set ``question_key``;
keep ``remove_unused_columns=False`` so it reaches the reward), or, when there is no such column,
the prompt itself (a string, or the last user message of a conversational prompt). The verifier
model loads on first use, on the reward's own device, so the object pickles as its settings (for
multiprocessing or accelerate) and costs nothing until called. No TRL import is needed::

    from genclf_harness.training.genrm_reward import GenRMReward
    reward = GenRMReward("runs/genrm_last_letter")          # a verifier folder (adapter or model)
    GRPOTrainer(model=..., reward_funcs=[reward], args=GRPOConfig(remove_unused_columns=False, ...), ...)

See ``examples/grpo_with_genrm_reward.py`` for a complete script.

A verifier behind ``vllm serve`` (``GenRM.from_served(url, model)``) is passed as a ready object;
``AsyncGenRMReward`` is the same reward as a coroutine: TRL (1.16) awaits async reward functions
together on its event loop, so the HTTP round trips of a served verifier run while other async
rewards do, and the blocking scoring runs in a worker thread, not on the loop.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from genclf_harness.training.rewards import completion_text

Transform = Literal["probability", "logit", "binary"]


class GenRMReward:
    """Reward = the verifier's P("Yes") for each (question, completion).

    Args:
        verifier: a verifier folder (LoRA adapter or full model), a hub id, ``"default"`` (the
            embedded model, not trained as a verifier), or a ready ``GenRM`` object (then the
            reward pickles it as it is).
        question_key: the dataset column with the question (``None``: always use the prompt).
        transform: ``probability`` (P(Yes) in [0, 1]), ``logit`` (log P(Yes) - log P(No),
            clipped to ±``logit_clip``) or ``binary`` (1 if P(Yes) > 0.5).
        cot: 0 for direct verification, the number of chain-of-thought rationales averaged, or
            ``None``: the verifier's own way (a verifier trained on rationales writes one first).
        dtype, device, autocast_bf16: how the verifier model is loaded and run.
        name: the ``__name__`` TRL logs the reward under.
    """

    def __init__(
        self,
        verifier: Any = "default",
        *,
        question_key: str | None = "question",
        transform: Transform = "probability",
        logit_clip: float = 10.0,
        cot: int | None = None,
        cot_max_new_tokens: int = 128,
        dtype: str = "float32",
        device: str | None = None,
        autocast_bf16: bool = False,
        name: str = "genrm",
    ) -> None:
        if transform not in ("probability", "logit", "binary"):
            raise ValueError(f"transform must be probability, logit or binary, not {transform!r}")
        if cot is not None and cot < 0:
            raise ValueError(f"cot must be >= 0 rationales (or None), not {cot}")
        self.verifier_source = verifier if isinstance(verifier, str) else None
        self._verifier = None if isinstance(verifier, str) else verifier
        self.question_key = question_key
        self.transform = transform
        self.logit_clip = float(logit_clip)
        self.cot = None if cot is None else int(cot)
        self.cot_max_new_tokens = int(cot_max_new_tokens)
        self.dtype = dtype
        self.device = device
        self.autocast_bf16 = autocast_bf16
        self.__name__ = name

    @property
    def verifier(self) -> Any:
        if self._verifier is None:
            import torch

            from genclf_harness.verifiers.genrm.verifier import GenRM

            self._verifier = GenRM.from_pretrained(
                self.verifier_source, dtype=self.dtype, device=self.device,
                autocast_dtype=torch.bfloat16 if self.autocast_bf16 else None,
            )
        return self._verifier

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Any = None, **columns: Any
    ) -> list[float]:
        if len(prompts) != len(completions):
            raise ValueError(f"{self.__name__}: {len(prompts)} prompts for {len(completions)} completions")
        questions = self._questions(prompts, columns)
        solutions = [completion_text(c) for c in completions]
        if self.cot is None:
            scores = self.verifier.verify(questions, solutions)
        elif self.cot:
            scores = [v.p_yes for v in self.verifier.score_cot(questions, solutions, k=self.cot,
                                                                max_new_tokens=self.cot_max_new_tokens)]
        else:
            scores = self.verifier.score(questions, solutions)
        return [self._transform(p) for p in scores]

    def _questions(self, prompts: Sequence[Any], columns: Mapping[str, Any]) -> list[str]:
        if self.question_key is not None and self.question_key in columns:
            questions = [str(q) for q in columns[self.question_key]]
            if len(questions) != len(prompts):
                raise ValueError(f"{self.__name__}: {len(questions)} questions for {len(prompts)} completions")
            return questions
        return [prompt_text(p) for p in prompts]

    def _transform(self, p_yes: float) -> float:
        if self.transform == "probability":
            return float(p_yes)
        if self.transform == "binary":
            return 1.0 if p_yes > 0.5 else 0.0
        eps = 1e-12
        logit = math.log(max(p_yes, eps)) - math.log(max(1.0 - p_yes, eps))
        return max(-self.logit_clip, min(self.logit_clip, logit))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.verifier_source is not None:
            state["_verifier"] = None  # reloaded from verifier_source on first use
        return state

    def __repr__(self) -> str:
        source = self.verifier_source if self.verifier_source is not None else type(self._verifier).__name__
        return f"GenRMReward({source!r}, transform={self.transform!r}, cot={self.cot}, name={self.__name__!r})"


def prompt_text(prompt: Any) -> str:
    """A prompt as the question text: a string as is; chat messages: the last user message."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, Sequence):
        for message in reversed(prompt):
            if isinstance(message, Mapping) and message.get("role") == "user":
                return str(message.get("content") or "")
    return completion_text(prompt)


class AsyncGenRMReward(GenRMReward):
    """:class:`GenRMReward` as an async callable (TRL's ``is_async_callable`` sees its ``__call__``):
    the same rewards, computed in a worker thread so TRL's event loop is not blocked."""

    async def __call__(  # type: ignore[override]
        self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Any = None, **columns: Any
    ) -> list[float]:
        return await asyncio.to_thread(GenRMReward.__call__, self, prompts, completions, completion_ids, **columns)
