"""The lm-eval side of the verifier families: the functions and task classes that the YAMLs under
``genclf_harness/tasks/verifiers/`` name (loaders, per-document results, aggregations).

- `genrm`: ``genclf_gsm8k_verify`` and ``genclf_gsm8k_bon`` (GenRM P("Yes"), best-of-N);
- `stepwise`, `step_task`: the step-judge tasks ``genclf_<folder>_<split>`` (ProcessBench's splits
  and step-labelled folders of your own) and the task class that asks one Yes/No pair per step;
- `pairwise`: ``genclf_llmbar`` and ``genclf_llmbar_pairwise``.

What each family computes lives in :mod:`genclf_harness.verifiers`; these modules only adapt it to
lm-eval's task interface.
"""
