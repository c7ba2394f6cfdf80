"""Registration of genclf's models and metric names with lm-eval: lazy (no torch import), idempotent.

lm-eval 0.4.13 has no plugin discovery, so :func:`register` (called by ``genclf_harness.plugin``)
fills its registries. lm-eval after 0.4.13 (PRs #4013, #4014) reads the same names from this
package's entry points (``pyproject.toml``: ``lm_eval.models``, ``lm_eval.metrics``,
``lm_eval.aggregations``), which point at the same objects, so a name registered either way is the
same registration (``tests/test_plugin.py`` keeps the two lists equal).
"""

from __future__ import annotations

# name -> "module:Class"; lm-eval imports the module only when the model is asked for.
MODELS: dict[str, str] = {
    "genclf-hf": "genclf_harness.harness.hf_model:GenclfHFLM",
    "genclf-vllm": "genclf_harness.harness.vllm_model:GenclfVLLM",
    "genclf-served": "genclf_harness.harness.served_model:GenclfServed",
    "genclf-mlm": "genclf_harness.harness.mlm_model:GenclfMLM",
    "genclf-nli": "genclf_harness.harness.nli_model:GenclfNLI",
}

METRICS: dict[str, bool] = {
    "acc_auto": True, "macro_f1_auto": True, "ece_width15_auto": False, "acc_prior": True, "acc_prior_em": True,
    "acc_bc": True, "acc_prior_ind": True, "acc_prior_em_ind": True, "acc_bc_ind": True, "acc_prior_train": True,
    "acc_prior_train_ind": True, "acc_bcts_em": True, "acc_bbse": True, "acc_cc": True, "acc_dcpmi": True,
    "acc_pmi": True, "macro_f1": True, "macro_f1_prior": True, "macro_f1_prior_em": True,
    "macro_f1_prior_ind": True, "macro_f1_prior_train": True, "macro_f1_bcts_em": True, "macro_f1_bc": True,
    "macro_f1_cc": True, "macro_f1_dcpmi": True, "ece_width15": False, "ece_width15_prior": False,
    "ece_width15_bc": False, "majority_share": False, "majority_share_prior": False, "ece_mass10": False,
    "ece_mass1": False, "ece_platt_mass10": False, "selective_acc_at_10": True, "cov_acc_area": True,
    "ece_width15_ts": False, "ece_mass10_ts": False, "coverage_lac": True, "set_size_lac": False,
    "singleton_lac": True, "empty_lac": False, "coverage_aps": True, "set_size_aps": False, "singleton_aps": True,
    "empty_aps": False, "coverage_raps": True, "set_size_raps": False, "singleton_raps": True, "empty_raps": False,
    "coverage_lac_auto": True, "set_size_lac_auto": False, "coverage_aps_auto": True, "set_size_aps_auto": False,
    "coverage_raps_auto": True, "set_size_raps_auto": False,
}
"""genclf's metric names as its classification tasks report them (the classification template's,
``acc`` apart: lm-eval's own is the raw accuracy), with whether higher is better: calibrated
accuracy, macro-F1, ECE, majority share, HELM's calibration metrics, temperature scaling, conformal
set metrics (``genclf_harness.harness.metrics``, ``conformal_metrics``). Registered as
lm-eval metrics (the per-document value is the document's :class:`~genclf_harness.harness.metrics.ScoreItem`,
kept as it is) whose default aggregation is genclf's, so a task YAML of one's own may name them
without ``aggregation:``. None is a name lm-eval registers or has in an open pull request
(``LM_EVAL_METRIC_NAMES``)."""

LM_EVAL_METRIC_NAMES: frozenset[str] = frozenset("""
acc acc_all acc_bytes acc_mutual_info acc_norm acc_norm_bytes acc_norm_tokens acc_per_token all_in_group
balanced_acc balanced_accuracy behavioral_drift bits_per_byte bits_per_byte_corr bleu bpb bpb_corpus bpb_macro
bpb_total_bytes bpb_total_loglikelihood brier_score brier_score_binary brier_temp_tuned bypass byte_perplexity
choice_logprob choice_logprob_norm choice_prob_norm chrf chrf++ dwacc ece exact_match exact_match_mc f1 f1_macro
f1_macro_score f1_micro grammar_compliance iberbench_seqeval inst_level_acc json_answer_match json_validity
judge_score likelihood llm_judge logprob mae matthews_corrcoef mcc mean mean_squared_error median mse
multi_choice_em_unordered my_accuracy nanmean nll pass@1 pass@k pearson pearsonr perplexity pt_acc rms_ce rmsce
rmsce_temp_tuned sas_cross_encoder sas_encoder seqeval squad squad_f1 sum ter token_perplexity weighted_mean
weighted_perplexity word_in_set word_perplexity
""".split())
"""Every metric and aggregation name lm-eval registers on its main branch or in an open pull request
(``register_metric(metric=...)`` / ``register_aggregation(...)`` over all of lm-eval's branches and
pull-request heads, read on 2026-12-07). genclf's names avoid all of them: ``ece`` (PR #3913, other
binning), ``f1_macro``, ``nll``, ``f1`` and ``balanced_acc`` were genclf's names before and are
now ``ece_width15``, ``macro_f1``, ``gold_nll``, ``step_f1`` and ``acc_balanced``."""


def register() -> None:
    """Register this package's models and metric names with lm-eval's registries (idempotent)."""
    # lm-eval fills its registry with the built-in models only when it finds it empty; registering
    # ours first would hide `--model hf`. Importing lm_eval.models fills it now.
    import lm_eval.api.metrics  # noqa: F401 - lm-eval's own metrics first, for the same reason
    import lm_eval.models  # noqa: F401
    from lm_eval.api.registry import model_registry

    for name, target in MODELS.items():
        if name not in model_registry:
            model_registry.register(name, target=target)
    import genclf_harness.harness.lm_eval_metrics  # noqa: F401 - registers the metric names on import
