"""Generative verifiers: GenRM P("Yes") scoring, chain-of-thought voting, best-of-N, judges.

- `genrm`: :class:`~genclf_harness.verifiers.genrm.GenRM`, a verifier on any ``Scorer`` backend
  (and ``Generator`` for chain-of-thought verification);
- `format`: the verification prompt and the Yes/No answer tokens, shared by scoring, training and
  the lm-eval tasks;
- `bon`: best-of-N: the candidates file, resumable sampling, selection rules, pass@k;
- `answers`: final answers parsed from solutions (numbers, ``\\boxed{}``, "The answer is");
- `problems`, `algorithmic`: reasoning tasks (GSM8K, last-letter concatenation, word sorting);
- `data`: verifier training examples (balanced Yes/No, mixed with solution generation);
- `metrics`: AUROC and verification accuracy;
- `tasks`: the functions the ``tasks/verifiers`` YAMLs name.

Nothing is imported here, so ``import genclf_harness.verifiers.answers`` stays light (no torch).
See docs/verifiers.md.
"""
