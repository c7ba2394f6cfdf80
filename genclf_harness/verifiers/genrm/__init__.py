"""GenRM and best-of-N: a generative verifier's P("Yes"), chain-of-thought voting, the reasoning
problems it verifies and their answers.

- `verifier`: :class:`~genclf_harness.verifiers.genrm.verifier.GenRM` on any ``Scorer`` backend
  (and ``Generator`` for chain-of-thought verification);
- `bon`: best-of-N: the candidates file, resumable sampling, selection rules, pass@k;
- `answers`: final answers parsed from solutions (numbers, ``\\boxed{}``, "The answer is");
- `problems`, `algorithmic`: reasoning tasks (GSM8K, last-letter concatenation, word sorting);
- `training_data`: verifier training examples (balanced Yes/No, mixed with solution generation);
- `metrics`: AUROC and verification accuracy.

The lm-eval tasks' functions are :mod:`genclf_harness.harness.verifier_tasks.genrm`. Nothing is
imported here (``GenRM`` is loaded on first use), so ``answers`` stays light (no torch).
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "GenRM":
        from genclf_harness.verifiers.genrm.verifier import GenRM

        return GenRM
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
