"""Pairwise preference: which of two outputs follows an instruction better.

- `pairs`: the preference pairs and their reader (LLMBar's fields);
- `judge`: IPO's pointwise P("Yes") judge and the both-orders pairwise judge, their decisions and
  reports;
- `dpo_pairs`: DPO pairs from a model's own samples, ranked by a judge.

The lm-eval tasks' functions are :mod:`genclf_harness.harness.verifier_tasks.pairwise`. Nothing is
imported here (the judges are loaded on first use).
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("PointwiseJudge", "PairwiseJudge"):
        from genclf_harness.verifiers.pairwise import judge

        return getattr(judge, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
