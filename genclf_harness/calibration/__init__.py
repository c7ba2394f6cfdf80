"""Calibration of LLM label scores and classification metrics, in pure numpy.

Inputs are (N, K) matrices of label log-likelihoods (one row per document, one column per
class, unnormalised over classes). Every method fits per-class log-offsets on some scores and
applies them to others (see `core`)::

    from genclf_harness.calibration import fit, classification_report
    calibration = fit("prior", validation_scores)          # or test_scores: transductive
    report = classification_report(calibration.apply(test_scores), test_labels)

Methods (`METHODS`): "prior" (prior matching), "prior_em" (prior matching to an EM-estimated
prior), "bc" (batch calibration), "cc" (contextual calibration), "dcpmi" (domain-conditional
PMI), "pmi" (unconditional PMI, lm-eval's acc_mutual_info); with labelled calibration documents,
"bcts_em" (bias-corrected temperature scaling, then EM label-shift estimation) and "bbse"
(prior matching to the black-box shift estimate).
"""

from genclf_harness.calibration.baselines import (
    fit_batch_calibration,
    fit_contextual_calibration,
    fit_domain_pmi,
    fit_pmi,
)
from genclf_harness.calibration.bootstrap import (
    DEFAULT_SEED,
    RESAMPLED_METRICS,
    bootstrap_stderr,
    bootstrap_values,
    mean_stderr,
    paired_bootstrap,
    resample_indices,
    resampled_metric,
)
from genclf_harness.calibration.core import (
    Calibration,
    ConvergenceError,
    FitInfo,
    FitSource,
    ParamValue,
    normalize,
)
from genclf_harness.calibration.metrics import (
    accuracy,
    brier_score,
    classification_report,
    expected_calibration_error,
    macro_f1,
    majority_share,
    negative_log_likelihood,
)
from genclf_harness.calibration.oracle import oracle_accuracy, oracle_offsets
from genclf_harness.calibration.label_shift import estimate_prior_bbse, estimate_prior_em, fit_bcts, fit_bcts_em
from genclf_harness.calibration.prior_matching import fit_bbse, fit_prior_em, fit_prior_matching
from genclf_harness.calibration.registry import METHOD_INPUTS, METHODS, FitFunction, fit
from genclf_harness.calibration.conformal import (
    ConformalPredictor,
    CrossFitSets,
    SetMetrics,
    conformal_quantile,
    conformal_sets,
    cross_fit_sets,
    fit_conformal,
    set_metrics,
)
from genclf_harness.calibration.helm import (
    PlattFit,
    coverage_accuracy_area,
    equal_mass_ece,
    fit_temperature,
    helm_calibration_metrics,
    platt_scaling,
    selective_accuracy,
)
from genclf_harness.calibration.clm import (
    CLMCalibration,
    CLMConfig,
    CLMProblems,
    CLMReport,
    calibrate_clm,
    clm_grid,
    clm_outcomes,
    evaluate_clm,
    ltt_calibrate,
)

__all__ = [
    "DEFAULT_SEED",
    "METHODS",
    "METHOD_INPUTS",
    "Calibration",
    "ConvergenceError",
    "FitFunction",
    "FitInfo",
    "FitSource",
    "ParamValue",
    "accuracy",
    "bootstrap_stderr",
    "bootstrap_values",
    "brier_score",
    "classification_report",
    "estimate_prior_bbse",
    "estimate_prior_em",
    "expected_calibration_error",
    "fit",
    "fit_batch_calibration",
    "fit_bbse",
    "fit_bcts",
    "fit_bcts_em",
    "fit_contextual_calibration",
    "fit_domain_pmi",
    "fit_pmi",
    "fit_prior_em",
    "fit_prior_matching",
    "macro_f1",
    "majority_share",
    "mean_stderr",
    "negative_log_likelihood",
    "normalize",
    "oracle_accuracy",
    "oracle_offsets",
    "paired_bootstrap",
    "resampled_metric",
    "RESAMPLED_METRICS",
    "resample_indices",
    "ConformalPredictor",
    "CrossFitSets",
    "SetMetrics",
    "conformal_quantile",
    "conformal_sets",
    "cross_fit_sets",
    "fit_conformal",
    "set_metrics",
    "PlattFit",
    "coverage_accuracy_area",
    "equal_mass_ece",
    "fit_temperature",
    "helm_calibration_metrics",
    "platt_scaling",
    "selective_accuracy",
    "CLMCalibration",
    "CLMConfig",
    "CLMProblems",
    "CLMReport",
    "calibrate_clm",
    "clm_grid",
    "clm_outcomes",
    "evaluate_clm",
    "ltt_calibrate",
]
