"""Stepwise judges: steps and the step-judge prompt, the judge on any backend, ProcessBench's
metric, Monte-Carlo step labels (StepWiser).

- `steps`: steps, the step-judge prompt, verdict parsing, ``first_error``, the ProcessBench metric
  and loader (plain Python; the folders themselves are :mod:`genclf_harness.data.step_sets`);
- `judge`: :class:`~genclf_harness.verifiers.stepwise.judge.StepJudge`, chunk-reset search;
- `labels`: Monte-Carlo Q estimates, the labelling rules, class balance, label files.

The lm-eval tasks' functions and task class are :mod:`genclf_harness.harness.verifier_tasks`.
Nothing is imported here (``StepJudge`` is loaded on first use).
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "StepJudge":
        from genclf_harness.verifiers.stepwise.judge import StepJudge

        return StepJudge
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
