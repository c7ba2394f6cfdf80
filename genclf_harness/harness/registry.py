"""Registration of genclf models with lm-eval: lazy (no torch import) and idempotent."""

from __future__ import annotations

# name -> "module:Class"; lm-eval imports the module only when the model is asked for.
MODELS: dict[str, str] = {
    "genclf-hf": "genclf_harness.harness.hf_model:GenclfHFLM",
    "genclf-vllm": "genclf_harness.harness.vllm_model:GenclfVLLM",
}


def register() -> None:
    """Register this package's models with lm-eval's model registry. Safe to call many times."""
    # lm-eval fills its registry with the built-in models only when it finds it empty; registering
    # ours first would hide `--model hf`. Importing lm_eval.models fills it now.
    import lm_eval.models  # noqa: F401
    from lm_eval.api.registry import model_registry

    for name, target in MODELS.items():
        if name not in model_registry:
            model_registry.register(name, target=target)
