"""genclf's lm-eval task YAMLs: ``classification/``, ``strategies/``, ``verifiers/``.

A package so that lm-eval can find the folder from the ``lm_eval.tasks`` entry point (the import
path of a package holding YAMLs, lm-eval PR #4015) in a wheel and in an editable install alike;
``genclf_harness.resources.tasks_dir`` names it for ``--include_path`` on lm-eval 0.4.13.
"""
