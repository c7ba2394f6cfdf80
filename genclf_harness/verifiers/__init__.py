"""Generative verifiers, one subpackage per family, with what they share beside them.

- `genrm/`: GenRM P("Yes") verification, chain-of-thought voting, best-of-N, the reasoning problems
  and their answers (docs/verifiers.md);
- `stepwise/`: stepwise judges, ProcessBench's metric, StepWiser's Monte-Carlo step labels
  (docs/stepwise.md);
- `pairwise/`: pointwise and pairwise preference judges, preference pairs, DPO pairs
  (docs/pairwise.md);
- `format`: the Yes/No verification prompt and answer tokens all three families use.

The lm-eval glue of each family (what the ``genclf_harness/tasks/verifiers`` YAMLs name) is
:mod:`genclf_harness.harness.verifier_tasks`; the data folders they read are read through
:mod:`genclf_harness.data`. Nothing is imported here, so ``import genclf_harness.verifiers.genrm.answers``
stays light (no torch).
"""
